"""Tests for ddpm_tutor.data: IDX parsing, checks, root resolution, download, scaling."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import struct

import numpy as np
import pytest
import torch

from ddpm_tutor import data
from ddpm_tutor.data import MNISTError

REAL_ROOT = os.environ.get("DDPM_TUTOR_DATA")

N_TRAIN, N_TEST = 6, 3


# ----------------------------------------------------------------------------- fixtures


def idx_images(n: int, h: int = 28, w: int = 28, seed: int = 0, magic: int = 0x803) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(n, h, w), dtype=np.uint8)
    return struct.pack(">IIII", magic, n, h, w) + pixels.tobytes()


def idx_labels(n: int, seed: int = 0, magic: int = 0x801) -> bytes:
    labels = (np.arange(n) + seed) % 10
    return struct.pack(">II", magic, n) + labels.astype(np.uint8).tobytes()


def contents() -> dict[str, bytes]:
    """Decompressed contents of a tiny, valid MNIST folder."""
    return {
        "train-images-idx3-ubyte.gz": idx_images(N_TRAIN, seed=1),
        "train-labels-idx1-ubyte.gz": idx_labels(N_TRAIN, seed=1),
        "t10k-images-idx3-ubyte.gz": idx_images(N_TEST, seed=2),
        "t10k-labels-idx1-ubyte.gz": idx_labels(N_TEST, seed=2),
    }


@pytest.fixture
def fake_sha(monkeypatch):
    """Make the tiny files the 'official' ones, so verification passes on them."""
    sha = {name: hashlib.sha256(raw).hexdigest() for name, raw in contents().items()}
    monkeypatch.setattr(data, "SHA256", sha)
    return sha


@pytest.fixture
def mnist_dir(tmp_path, fake_sha, monkeypatch):
    """A folder holding the four tiny files, gzip-compressed; no env var set."""
    monkeypatch.delenv("DDPM_TUTOR_DATA", raising=False)
    root = tmp_path / "mnist"
    root.mkdir()
    for name, raw in contents().items():
        (root / name).write_bytes(gzip.compress(raw))
    return root


@pytest.fixture
def no_network(monkeypatch):
    """Fail the test if anything tries to open a URL."""

    def refuse(*args, **kwargs):
        raise AssertionError("the test tried to use the network")

    monkeypatch.setattr(data.urllib.request, "urlopen", refuse)


def assert_names_fix(exc: pytest.ExceptionInfo, path, *fixes: str) -> None:
    msg = str(exc.value)
    assert str(path) in msg, msg
    for fix in fixes:
        assert fix in msg, msg


# ----------------------------------------------------------------------------- loading


def test_load_valid_gzip(mnist_dir, no_network):
    images, labels = data.load_mnist("train", root=mnist_dir, download=False)
    assert images.shape == (N_TRAIN, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (N_TRAIN,) and labels.dtype == torch.int64
    raw = contents()["train-images-idx3-ubyte.gz"]
    expected = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(N_TRAIN, 28, 28)
    assert torch.equal(images, torch.from_numpy(expected.copy()))
    assert labels.tolist() == [(i + 1) % 10 for i in range(N_TRAIN)]
    images, labels = data.load_mnist("test", root=mnist_dir, download=False)
    assert images.shape == (N_TEST, 28, 28) and labels.shape == (N_TEST,)
    images.add_(1)  # the tensor owns writable memory (not a view of read-only bytes)


def test_load_uncompressed(mnist_dir, no_network):
    for name in data.FILES["train"]:
        path = mnist_dir / name
        path.with_suffix("").write_bytes(gzip.decompress(path.read_bytes()))
        path.unlink()
    images, labels = data.load_mnist("train", root=str(mnist_dir), download=False)
    assert images.shape == (N_TRAIN, 28, 28) and labels.shape == (N_TRAIN,)


def test_bad_split(mnist_dir):
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        data.load_mnist("valid", root=mnist_dir)


def test_missing_file_without_download(mnist_dir, no_network):
    (mnist_dir / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(MNISTError) as exc:
        data.load_mnist("test", root=mnist_dir, download=False)
    assert_names_fix(exc, mnist_dir / "t10k-labels-idx1-ubyte.gz", "download=True", "DDPM_TUTOR_DATA")


def test_truncated_gzip(mnist_dir, no_network):
    path = mnist_dir / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(MNISTError) as exc:
        data.load_mnist("train", root=mnist_dir, download=False)
    assert_names_fix(exc, path, "gzip", "delete it and re-run with download=True")


def test_not_gzip_at_all(mnist_dir, no_network):
    path = mnist_dir / "train-labels-idx1-ubyte.gz"
    path.write_bytes(b"<html>404 not found</html>")
    with pytest.raises(MNISTError) as exc:
        data.load_mnist("train", root=mnist_dir, download=False)
    assert_names_fix(exc, path, "gzip", "delete it and re-run with download=True")


def test_bad_magic(mnist_dir, no_network):
    path = mnist_dir / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_images(N_TRAIN, magic=0x801)))
    with pytest.raises(MNISTError) as exc:
        data.load_mnist("train", root=mnist_dir, download=False)
    assert_names_fix(exc, path, "magic number", "0x00000803", "delete it and re-run with download=True")


def test_labels_file_in_images_place(mnist_dir, no_network):
    path = mnist_dir / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_images(N_TEST)))
    with pytest.raises(MNISTError) as exc:
        data.load_mnist("test", root=mnist_dir, download=False)
    assert_names_fix(exc, path, "magic number", "0x00000801")


def test_wrong_image_size(mnist_dir, no_network):
    path = mnist_dir / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_images(N_TRAIN, h=27, w=28)))
    with pytest.raises(MNISTError) as exc:
        data.load_mnist("train", root=mnist_dir, download=False)
    assert_names_fix(exc, path, "27x28", "expected 28x28", "delete it and re-run with download=True")


def test_payload_shorter_than_header_says(mnist_dir, no_network):
    path = mnist_dir / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_images(N_TRAIN)[:-28]))  # valid gzip, missing a row
    with pytest.raises(MNISTError) as exc:
        data.load_mnist("train", root=mnist_dir, download=False)
    assert_names_fix(exc, path, "truncated", "delete it and re-run with download=True")


def test_header_shorter_than_idx_header(mnist_dir, no_network):
    path = mnist_dir / "train-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(b"\x00\x00"))
    with pytest.raises(MNISTError) as exc:
        data.load_mnist("train", root=mnist_dir, download=False)
    assert_names_fix(exc, path, "IDX header", "delete it and re-run with download=True")


def test_count_mismatch(mnist_dir, monkeypatch, no_network):
    path = mnist_dir / "train-labels-idx1-ubyte.gz"
    raw = idx_labels(N_TRAIN - 1, seed=1)
    path.write_bytes(gzip.compress(raw))
    monkeypatch.setitem(data.SHA256, path.name, hashlib.sha256(raw).hexdigest())
    with pytest.raises(MNISTError) as exc:
        data.load_mnist("train", root=mnist_dir, download=False)
    assert_names_fix(exc, mnist_dir, f"{N_TRAIN} images", f"{N_TRAIN - 1} labels", "download=True")


def test_label_out_of_range(mnist_dir, monkeypatch, no_network):
    path = mnist_dir / "t10k-labels-idx1-ubyte.gz"
    raw = struct.pack(">II", 0x801, N_TEST) + bytes([1, 12, 3])
    path.write_bytes(gzip.compress(raw))
    monkeypatch.setitem(data.SHA256, path.name, hashlib.sha256(raw).hexdigest())
    with pytest.raises(MNISTError) as exc:
        data.load_mnist("test", root=mnist_dir, download=False)
    assert_names_fix(exc, path, "0..9", "download=True")


def test_sha_mismatch_and_verify_false(mnist_dir, no_network):
    path = mnist_dir / "t10k-images-idx3-ubyte.gz"
    raw = bytearray(contents()[path.name])
    raw[-1] ^= 0xFF  # one altered pixel: structurally valid, not the original content
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(MNISTError) as exc:
        data.load_mnist("test", root=mnist_dir, download=False)
    assert_names_fix(exc, path, "sha256", data.SHA256[path.name], "delete it and re-run with download=True", "verify=False")
    images, _ = data.load_mnist("test", root=mnist_dir, download=False, verify=False)
    assert int(images[-1, -1, -1]) == raw[-1]


def test_recompressed_copy_is_accepted(mnist_dir, no_network):
    """Verification is on the decompressed content, so a re-compressed copy still loads."""
    path = mnist_dir / "train-images-idx3-ubyte.gz"
    before = path.read_bytes()
    path.write_bytes(gzip.compress(contents()[path.name], compresslevel=1, mtime=12345))
    assert path.read_bytes() != before
    images, _ = data.load_mnist("train", root=mnist_dir, download=False)
    assert images.shape == (N_TRAIN, 28, 28)


# ----------------------------------------------------------------------------- where


def test_root_argument_must_exist(tmp_path, monkeypatch):
    monkeypatch.delenv("DDPM_TUTOR_DATA", raising=False)
    missing = tmp_path / "nope"
    with pytest.raises(MNISTError) as exc:
        data.load_mnist("train", root=missing)
    assert_names_fix(exc, missing, "not an existing folder", "create it")
    assert not missing.exists()  # nothing was created or downloaded


def test_root_type_checked():
    with pytest.raises(TypeError, match="root must be a path"):
        data.resolve_root(3)


def test_env_var_used(mnist_dir, monkeypatch, no_network):
    monkeypatch.setenv("DDPM_TUTOR_DATA", str(mnist_dir))
    assert data.resolve_root() == mnist_dir
    images, _ = data.load_mnist("test", download=False)
    assert images.shape[0] == N_TEST


def test_root_argument_beats_env_var(mnist_dir, tmp_path, monkeypatch):
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.setenv("DDPM_TUTOR_DATA", str(other))
    assert data.resolve_root(mnist_dir) == mnist_dir


def test_env_var_must_exist(tmp_path, monkeypatch):
    missing = tmp_path / "typo"
    monkeypatch.setenv("DDPM_TUTOR_DATA", str(missing))
    with pytest.raises(MNISTError) as exc:
        data.load_mnist("train")
    assert_names_fix(exc, missing, "DDPM_TUTOR_DATA", "unset DDPM_TUTOR_DATA")
    assert not missing.exists()


def test_default_cache_honours_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv("DDPM_TUTOR_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.resolve_root() == tmp_path / "xdg" / "ddpm_tutor" / "mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.resolve_root() == tmp_path / "home" / ".cache" / "ddpm_tutor" / "mnist"


def test_default_cache_missing_without_download(tmp_path, monkeypatch, no_network):
    monkeypatch.delenv("DDPM_TUTOR_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with pytest.raises(MNISTError) as exc:
        data.load_mnist("test", download=False)
    assert_names_fix(exc, tmp_path / "xdg" / "ddpm_tutor" / "mnist", "download=True", "DDPM_TUTOR_DATA")


# ----------------------------------------------------------------------------- download


@pytest.fixture
def mirror(mnist_dir):
    """The tiny folder served as a file:// mirror."""
    return mnist_dir.as_uri() + "/"


def listing(folder) -> list[str]:
    return sorted(os.listdir(folder))


def test_download_from_mirror_into_cache(tmp_path, mirror, monkeypatch):
    monkeypatch.delenv("DDPM_TUTOR_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    dead = (tmp_path / "dead").as_uri() + "/"  # first mirror fails, second serves
    monkeypatch.setattr(data, "MIRRORS", (dead, mirror))
    cache = tmp_path / "xdg" / "ddpm_tutor" / "mnist"
    cache.mkdir(parents=True)
    (cache / f".{data.FILES['test'][0]}.k1ll3d.part").write_bytes(b"half")  # a download killed with kill -9
    images, labels = data.load_mnist("test")  # download=True by default
    assert listing(cache) == sorted(data.FILES["test"])  # only the split asked for, no temp files (old or new)
    umask = os.umask(0)
    os.umask(umask)
    assert (cache / data.FILES["test"][0]).stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    assert images.shape == (N_TEST, 28, 28) and labels.shape == (N_TEST,)


def test_download_into_explicit_root(tmp_path, mirror, monkeypatch):
    monkeypatch.delenv("DDPM_TUTOR_DATA", raising=False)
    root = tmp_path / "fresh"
    root.mkdir()
    assert data.download_mnist(root, mirrors=(mirror,), progress=False) == root
    assert listing(root) == sorted(name for pair in data.FILES.values() for name in pair)


class FakeResponse(io.BytesIO):
    """What urlopen returns: a readable body with headers, usable as a context manager."""

    def __init__(self, body: bytes, length: int | None = None, fail_after: int | None = None, exc=None):
        super().__init__(body)
        self.headers = {"Content-Length": str(len(body) if length is None else length)}
        self.fail_after, self.exc = fail_after, exc

    def read(self, size=-1):
        if self.fail_after is not None and self.tell() >= self.fail_after:
            raise self.exc
        return super().read(min(size, 1000) if size > 0 else size)


def serve(monkeypatch, make_response):
    urls = []

    def fake_urlopen(url, timeout=None):
        urls.append(url)
        return make_response(url)

    monkeypatch.setattr(data.urllib.request, "urlopen", fake_urlopen)
    return urls


def good_body(url: str) -> bytes:
    return gzip.compress(contents()[url.rsplit("/", 1)[1]])


@pytest.mark.parametrize("exc", [ConnectionResetError("reset by peer"), KeyboardInterrupt()])
def test_interrupted_download_leaves_no_file(tmp_path, fake_sha, monkeypatch, exc):
    root = tmp_path / "dl"
    root.mkdir()
    serve(monkeypatch, lambda url: FakeResponse(good_body(url), fail_after=1000, exc=exc))
    with pytest.raises(MNISTError if isinstance(exc, OSError) else KeyboardInterrupt) as info:
        data.download_mnist(root, splits=("train",), mirrors=("https://a.example/", "https://b.example/"), progress=False)
    assert listing(root) == []
    if isinstance(exc, OSError):  # every mirror was tried and is named in the message
        assert_names_fix(info, root, "https://a.example/train-images", "https://b.example/train-images", "DDPM_TUTOR_DATA")


def test_short_download_rejected(tmp_path, fake_sha, monkeypatch):
    root = tmp_path / "dl"
    root.mkdir()
    serve(monkeypatch, lambda url: FakeResponse(good_body(url)[:-10], length=len(good_body(url))))
    with pytest.raises(MNISTError, match="connection closed after"):
        data.download_mnist(root, splits=("test",), mirrors=("https://a.example/",), progress=False)
    assert listing(root) == []


def test_corrupt_download_rejected_then_next_mirror(tmp_path, fake_sha, monkeypatch):
    root = tmp_path / "dl"
    root.mkdir()

    def respond(url):
        raw = contents()[url.rsplit("/", 1)[1]]
        if url.startswith("https://bad.example/"):
            raw = raw[:-1] + bytes([raw[-1] ^ 1])  # valid gzip of the wrong content
        return FakeResponse(gzip.compress(raw))

    urls = serve(monkeypatch, respond)
    with pytest.raises(MNISTError) as info:
        data.download_mnist(root, splits=("test",), mirrors=("https://bad.example/",), progress=False)
    assert "sha256" in str(info.value) and "https://bad.example/t10k-images" in str(info.value)
    assert listing(root) == []

    urls.clear()
    data.download_mnist(root, splits=("test",), mirrors=("https://bad.example/", "https://good.example/"), progress=False)
    assert listing(root) == sorted(data.FILES["test"])
    assert [u.split("/")[2] for u in urls] == ["bad.example", "good.example"] * 2
    images, _ = data.load_mnist("test", root=root, download=False)
    assert images.shape == (N_TEST, 28, 28)


def test_damaged_gzip_download_rejected(tmp_path, fake_sha, monkeypatch):
    root = tmp_path / "dl"
    root.mkdir()
    serve(monkeypatch, lambda url: FakeResponse(b"<html>rate limited</html>"))
    with pytest.raises(MNISTError, match="damaged gzip"):
        data.download_mnist(root, splits=("test",), mirrors=("https://a.example/",), progress=False)
    assert listing(root) == []


def test_present_files_not_downloaded_again(mnist_dir, no_network):
    data.download_mnist(mnist_dir, mirrors=("https://a.example/",), progress=False)


def test_download_bad_split(tmp_path):
    with pytest.raises(ValueError, match="splits must contain only"):
        data.download_mnist(tmp_path, splits=("val",))


# ----------------------------------------------------------------------------- scaling


def test_model_range_values_and_round_trip():
    images = torch.arange(256, dtype=torch.uint8).reshape(1, 16, 16)
    x0 = data.to_model_range(images)
    assert x0.shape == (1, 1, 16, 16) and x0.dtype == torch.float32
    assert float(x0.min()) == -1.0 and float(x0.max()) == 1.0
    torch.testing.assert_close(x0.flatten(), torch.arange(256, dtype=torch.float32) / 127.5 - 1)
    assert torch.equal(data.from_model_range(x0), images.unsqueeze(1))
    assert torch.equal(data.to_model_range(images.unsqueeze(1)), x0)  # (N, 1, H, W) accepted


def test_from_model_range_clips():
    x = torch.tensor([-3.0, -1.0, 0.0, 1.0, 2.5])
    assert data.from_model_range(x).tolist() == [0, 0, 128, 255, 255]


def test_scaling_argument_checks():
    with pytest.raises(TypeError, match="torch.uint8"):
        data.to_model_range(torch.zeros(2, 28, 28))
    with pytest.raises(ValueError, match=r"\(N, H, W\) or \(N, C, H, W\)"):
        data.to_model_range(torch.zeros(2, 1, 3, 28, 28, dtype=torch.uint8))
    with pytest.raises(TypeError, match="floating-point"):
        data.from_model_range(torch.zeros(2, dtype=torch.uint8))


# ----------------------------------------------------------------------------- loader


def test_dataloader(mnist_dir, no_network):
    loader = data.mnist_dataloader("train", batch_size=4, root=mnist_dir, download=False)
    batches = list(loader)
    assert len(batches) == 1  # 6 examples, drop_last=True
    x0, labels = batches[0]
    assert x0.shape == (4, 1, 28, 28) and x0.dtype == torch.float32
    assert labels.shape == (4,) and labels.dtype == torch.int64
    assert float(x0.min()) >= -1.0 and float(x0.max()) <= 1.0

    def order(seed):
        g = torch.Generator().manual_seed(seed)
        loader = data.mnist_dataloader("train", batch_size=2, root=mnist_dir, generator=g, download=False)
        return torch.cat([labels for _, labels in loader]).tolist()

    assert order(0) == order(0)
    assert sorted(order(0)) == sorted((i + 1) % 10 for i in range(N_TRAIN))

    loader = data.mnist_dataloader("train", batch_size=2, root=mnist_dir, shuffle=False, limit=3, drop_last=False, download=False)
    assert torch.cat([labels for _, labels in loader]).tolist() == [1, 2, 3]


def test_dataloader_argument_checks(mnist_dir):
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        data.mnist_dataloader(batch_size=0, root=mnist_dir)
    with pytest.raises(ValueError, match="limit must be a positive int"):
        data.mnist_dataloader(limit=0, root=mnist_dir)
    with pytest.raises(ValueError, match="drop_last=False"):
        data.mnist_dataloader(batch_size=10, limit=5, root=mnist_dir, download=False)


# ----------------------------------------------------------------------------- real files


@pytest.mark.skipif(not REAL_ROOT, reason="set DDPM_TUTOR_DATA to the folder holding the real MNIST files")
def test_real_mnist(no_network):
    counts = {}
    for split, n in (("train", 60000), ("test", 10000)):
        images, labels = data.load_mnist(split, root=REAL_ROOT, download=False, verify=True)
        assert images.shape == (n, 28, 28) and images.dtype == torch.uint8
        assert labels.shape == (n,) and labels.dtype == torch.int64
        hist = torch.bincount(labels, minlength=10)
        assert hist.numel() == 10 and int(hist.sum()) == n
        assert (hist > 0.08 * n).all() and (hist < 0.12 * n).all()  # roughly balanced digits
        assert int(images.max()) == 255 and int(images.min()) == 0
        counts[split] = hist.tolist()
    # the well-known class counts of the test split
    assert counts["test"] == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
