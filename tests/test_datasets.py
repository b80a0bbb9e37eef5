"""Tests for ddpm_tutor.datasets (load_dataset: Fashion-MNIST, CIFAR-10, folders of images), the data folder's
layouts, and train --dataset."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ddpm_tutor import data, datasets
from ddpm_tutor.data import DatasetError, MNISTError
from ddpm_tutor.datasets import load_dataset

REAL_ROOT = os.environ.get("DDPM_TUTOR_DATA")
URLOPEN = data.urllib.request.urlopen  # file:// URLs only, in the download test


# ----------------------------------------------------------------------------- IDX datasets and folder layouts


def _idx(n: int, seed: int) -> dict[str, bytes]:
    """Decompressed contents of a tiny IDX dataset (n train, n test images) drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, (img_name, lab_name) in data.FILES.items():
        pixels = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        out[img_name] = struct.pack(">IIII", 0x803, n, 28, 28) + pixels.tobytes()
        out[lab_name] = struct.pack(">II", 0x801, n) + labels.tobytes()
    return out


MNIST_FAKE, FASHION_FAKE = _idx(4, seed=1), _idx(5, seed=2)


@pytest.fixture
def fake_hashes(monkeypatch):
    """The tiny files stand in for the official ones; no network."""
    monkeypatch.setattr(data, "SHA256", {k: hashlib.sha256(v).hexdigest() for k, v in MNIST_FAKE.items()})
    monkeypatch.setattr(data, "FASHION_SHA256", {k: hashlib.sha256(v).hexdigest() for k, v in FASHION_FAKE.items()})

    def refuse(*args, **kwargs):
        raise AssertionError("the test tried to use the network")

    monkeypatch.setattr(data.urllib.request, "urlopen", refuse)
    monkeypatch.delenv("DDPM_TUTOR_DATA", raising=False)


def _write(folder: Path, contents: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, raw in contents.items():
        (folder / name).write_bytes(gzip.compress(raw))
    return folder


def test_parent_folder_with_one_subfolder_per_dataset(tmp_path, fake_hashes, monkeypatch):
    _write(tmp_path / "mnist", MNIST_FAKE)
    _write(tmp_path / "fashion-mnist", FASHION_FAKE)
    monkeypatch.setenv("DDPM_TUTOR_DATA", str(tmp_path))
    for name, n in (("mnist", 4), ("fashion-mnist", 5)):
        images, labels = load_dataset(name, "test", download=False)
        assert images.shape == (n, 1, 28, 28) and images.dtype == torch.uint8 and labels.shape == (n,)
    raw = FASHION_FAKE["t10k-images-idx3-ubyte.gz"]
    expected = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(5, 1, 28, 28)
    assert torch.equal(load_dataset("fashion-mnist", "test", download=False)[0], torch.from_numpy(expected.copy()))
    assert data.resolve_root(dataset="fashion-mnist") == tmp_path / "fashion-mnist"
    assert data.resolve_root(tmp_path) == tmp_path / "mnist"  # root= is read the same way


def test_folder_that_holds_the_mnist_files_itself_keeps_working(tmp_path, fake_hashes, monkeypatch):
    folder = _write(tmp_path / "digits", MNIST_FAKE)
    monkeypatch.setenv("DDPM_TUTOR_DATA", str(folder))
    images, _ = load_dataset("mnist", "train", download=False)
    assert images.shape == (4, 1, 28, 28)
    assert data.load_mnist("train", download=False)[0].shape == (4, 28, 28)  # load_mnist's own shape is kept


def test_fashion_asked_of_a_folder_of_mnist_files_names_the_mix_up(tmp_path, fake_hashes):
    folder = _write(tmp_path / "digits", MNIST_FAKE)
    with pytest.raises(MNISTError) as exc:
        load_dataset("fashion-mnist", "train", root=folder, download=False)
    msg = str(exc.value)
    assert "this is the MNIST file" in msg and "Fashion-MNIST folder" in msg and "fashion-mnist/ subfolder" in msg


def test_fashion_download_goes_into_its_subfolder(tmp_path, fake_hashes, monkeypatch):
    served = _write(tmp_path / "served", FASHION_FAKE)
    monkeypatch.setattr(data, "FASHION_MIRRORS", ((tmp_path / "dead").as_uri() + "/", served.as_uri() + "/"))
    monkeypatch.setattr(data.urllib.request, "urlopen", lambda url, **kw: URLOPEN(url, **kw) if url.startswith("file:")
                        else pytest.fail(f"the test tried to use the network: {url}"))
    parent = tmp_path / "data"
    _write(parent / "mnist", MNIST_FAKE)
    images, labels = load_dataset("fashion-mnist", "test", root=parent)
    assert images.shape == (5, 1, 28, 28)
    assert sorted(os.listdir(parent / "fashion-mnist")) == sorted(data.FILES["test"])
    assert sorted(os.listdir(parent / "mnist")) == sorted(MNIST_FAKE)  # MNIST's folder untouched


def test_fashion_checksum_mismatch_is_refused(tmp_path, fake_hashes):
    folder = _write(tmp_path / "fashion-mnist", FASHION_FAKE)
    bad = dict(FASHION_FAKE)
    bad["train-labels-idx1-ubyte.gz"] = bad["train-labels-idx1-ubyte.gz"][:-1] + b"\x09"
    _write(folder, bad)
    with pytest.raises(MNISTError) as exc:
        load_dataset("fashion-mnist", "train", root=tmp_path, download=False)
    msg = str(exc.value)
    assert "train-labels-idx1-ubyte.gz" in msg and "Fashion-MNIST" in msg and "download=True" in msg


def test_missing_data_folder_named_by_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DDPM_TUTOR_DATA", str(tmp_path / "typo"))
    for name in ("fashion-mnist", "cifar10"):
        with pytest.raises(DatasetError, match="DDPM_TUTOR_DATA=.*typo.*not an existing folder"):
            load_dataset(name, "train")
    assert not (tmp_path / "typo").exists()


def test_unknown_names_and_arguments():
    with pytest.raises(ValueError, match="'imagenet' is not a dataset.*fashion-mnist.*folder:PATH"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        load_dataset("fashion-mnist", "valid")
    with pytest.raises(TypeError, match="name must be a str"):
        load_dataset(3)


@pytest.mark.skipif(not REAL_ROOT, reason="needs DDPM_TUTOR_DATA")
def test_real_fashion_mnist_is_not_mnist():
    """The shipped hashes accept the real files; the test split is ten balanced classes of clothing."""
    root = Path(REAL_ROOT)
    if not (root / "fashion-mnist").is_dir():
        pytest.skip("DDPM_TUTOR_DATA has no fashion-mnist/ subfolder")
    fashion, labels = load_dataset("fashion-mnist", "test")
    assert fashion.shape == (10000, 1, 28, 28) and torch.bincount(labels).tolist() == [1000] * 10
    digits, _ = load_dataset("mnist", "test")
    assert digits.shape == fashion.shape and not torch.equal(digits, fashion)
    # clothes cover far more of the frame than strokes of ink do
    assert (fashion > 0).float().mean() > 1.5 * (digits > 0).float().mean()


# ----------------------------------------------------------------------------- CIFAR-10


def _cifar_archive(path: Path, n: int = 3, members: tuple[str, ...] | None = None, payload=None) -> np.ndarray:
    """A small archive with the official layout: n images per batch. Returns the train batches' data rows."""
    rng = np.random.default_rng(0)
    names = members or tuple(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)) + (
        "cifar-10-batches-py/test_batch",)
    rows = []
    with tarfile.open(path, "w:gz") as tar:
        for name in names:
            rows.append(rng.integers(0, 256, size=(n, 3072), dtype=np.uint8))
            batch = payload if payload is not None else {b"batch_label": b"x", b"data": rows[-1],
                                                         b"labels": [int(v) for v in rng.integers(0, 10, n)]}
            raw = pickle.dumps(batch, protocol=2)
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return np.concatenate(rows[:5]) if members is None else rows[0]


def test_cifar10_reads_the_official_layout(tmp_path):
    rows = _cifar_archive(tmp_path / "cifar-10-python.tar.gz")
    images, labels = load_dataset("cifar10", "train", root=tmp_path, download=False, verify=False)
    assert images.shape == (15, 3, 32, 32) and images.dtype == torch.uint8 and labels.shape == (15,)
    # each row is 1024 red, then 1024 green, then 1024 blue pixels, row-major over the 32 x 32 image
    for c, y, x in ((0, 0, 0), (1, 5, 7), (2, 31, 30)):
        assert int(images[4, c, y, x]) == int(rows[4, c * 1024 + y * 32 + x])
    test, _ = load_dataset("cifar10", "test", root=tmp_path, download=False, verify=False)
    assert test.shape == (3, 3, 32, 32)


def test_cifar10_checksum(tmp_path, monkeypatch):
    archive = tmp_path / "cifar10" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    _cifar_archive(archive)
    with pytest.raises(DatasetError) as exc:  # not the official archive: refused by its sha256
        load_dataset("cifar10", "train", root=tmp_path, download=False)
    msg = str(exc.value)
    assert str(archive) in msg and datasets.CIFAR10_SHA256 in msg and "verify=False" in msg
    monkeypatch.setattr(datasets, "CIFAR10_SHA256", hashlib.sha256(archive.read_bytes()).hexdigest())
    assert load_dataset("cifar10", "test", root=tmp_path, download=False)[0].shape == (3, 3, 32, 32)


def test_cifar10_corrupt_archive(tmp_path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    _cifar_archive(archive)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DatasetError, match="not a readable CIFAR-10 archive.*delete it and re-run with download=True"):
        load_dataset("cifar10", "train", root=tmp_path, download=False, verify=False)


def test_cifar10_archive_without_the_batches(tmp_path):
    _cifar_archive(tmp_path / "cifar-10-python.tar.gz", members=("cifar-10-batches-py/readme.html",))
    with pytest.raises(DatasetError, match="no member cifar-10-batches-py/test_batch.*not the CIFAR-10 python"):
        load_dataset("cifar10", "test", root=tmp_path, download=False, verify=False)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_cifar10_pickles_cannot_run_code(tmp_path):
    _cifar_archive(tmp_path / "cifar-10-python.tar.gz", payload={b"data": _Exploit(), b"labels": []})
    with pytest.raises(DatasetError, match="system is not allowed"):
        load_dataset("cifar10", "test", root=tmp_path, download=False, verify=False)


def test_cifar10_missing_archive_without_download(tmp_path):
    with pytest.raises(DatasetError) as exc:
        load_dataset("cifar10", "train", root=tmp_path, download=False)
    msg = str(exc.value)
    assert "cifar-10-python.tar.gz" in msg and "download=True" in msg and "DDPM_TUTOR_DATA" in msg


# ----------------------------------------------------------------------------- folders of images


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_folder_of_grey_images(tmp_path):
    a = np.arange(64, dtype=np.uint8).reshape(8, 8)
    _save(tmp_path / "imgs" / "a.png", a)
    _save(tmp_path / "imgs" / "sub" / "b.png", 255 - a)  # subfolders are read too
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    images, labels = load_dataset(f"folder:{tmp_path / 'imgs'}")
    assert labels is None and images.shape == (2, 1, 8, 8) and images.dtype == torch.uint8
    assert torch.equal(images[0, 0], torch.from_numpy(a)) and torch.equal(images[1, 0], torch.from_numpy(255 - a))


def test_folder_with_colour_reads_every_image_as_rgb(tmp_path):
    grey = np.full((6, 6), 100, dtype=np.uint8)
    rgb = np.zeros((6, 6, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 2] = 200, 50
    _save(tmp_path / "a.png", grey)
    _save(tmp_path / "b.jpg" if False else tmp_path / "b.png", rgb)
    images, _ = load_dataset(f"folder:{tmp_path}")
    assert images.shape == (2, 3, 6, 6)
    assert images[0].unique().tolist() == [100]  # grey spread over three equal channels
    assert images[1, :, 0, 0].tolist() == [200, 0, 50]  # channels in R, G, B order


def test_folder_resize_and_centre_crop(tmp_path):
    wide = np.zeros((10, 30), dtype=np.uint8)  # three bands: 0 | 200 | 50, the middle one is the centre
    wide[:, 10:20], wide[:, 20:] = 200, 50
    _save(tmp_path / "wide.png", wide)
    _save(tmp_path / "big.png", np.full((40, 40), 77, dtype=np.uint8))
    images, _ = load_dataset(f"folder:{tmp_path}", image_size=10)
    assert images.shape == (2, 1, 10, 10)
    assert images[0].unique().tolist() == [77]  # 40 x 40 scaled down to 10 x 10
    assert images[1].unique().tolist() == [200]  # 30 x 10: the centre 10 x 10 is kept


def test_folder_bad_input(tmp_path):
    with pytest.raises(DatasetError, match=r"folder:.*missing.*not an existing folder.*--dataset folder:"):
        load_dataset(f"folder:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("no images here")
    with pytest.raises(DatasetError, match=r"no image files in .*empty.*\.png.*put your images there"):
        load_dataset(f"folder:{tmp_path / 'empty'}")
    _save(tmp_path / "mixed" / "a.png", np.zeros((8, 8), dtype=np.uint8))
    _save(tmp_path / "mixed" / "b.png", np.zeros((12, 16), dtype=np.uint8))
    with pytest.raises(DatasetError, match=r"not all square and of one size.*b.png: 16 x 12.*image_size=S"):
        load_dataset(f"folder:{tmp_path / 'mixed'}")
    assert load_dataset(f"folder:{tmp_path / 'mixed'}", image_size=8)[0].shape == (2, 1, 8, 8)  # the fix works
    (tmp_path / "mixed" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DatasetError, match=r"cannot read .*broken.png as an image.*delete it"):
        load_dataset(f"folder:{tmp_path / 'mixed'}", image_size=8)
    with pytest.raises(ValueError, match="image_size must be a positive int"):
        load_dataset(f"folder:{tmp_path / 'mixed'}", image_size=0)


def test_image_size_is_only_for_folders(tmp_path):
    _cifar_archive(tmp_path / "cifar-10-python.tar.gz")
    with pytest.raises(ValueError, match="image_size=28 but cifar10 images are 32 x 32"):
        load_dataset("cifar10", "test", root=tmp_path, download=False, verify=False, image_size=28)


# ----------------------------------------------------------------------------- training on them


def test_train_dataset_on_a_folder_of_colour_images(tmp_path, capsys):
    """train --dataset folder:PATH --image-size S: a 3-channel U-Net of that size, recorded in the checkpoint,
    and sample draws colour images from it."""
    from ddpm_tutor.__main__ import main
    from ddpm_tutor.checkpoints import load_model

    rng = np.random.default_rng(0)
    for i in range(4):
        _save(tmp_path / "pics" / f"{i}.png", rng.integers(0, 256, size=(12, 10, 3), dtype=np.uint8))
    out = tmp_path / "run"
    main(["train", "--profile", "smoke", "--steps", "2", "--set", "checkpoint_every=2", "--set", "sample_every=0",
          "--dataset", f"folder:{tmp_path / 'pics'}", "--image-size", "8", "--out", str(out)])
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["train_config"]["dataset"] == f"folder:{tmp_path / 'pics'}"
    unet = ckpt["train_config"]["unet"]
    assert (unet["in_channels"], unet["out_channels"], unet["image_size"]) == (3, 3, 8)
    model, _, _ = load_model(out / "checkpoint.pt")
    assert model.config.in_channels == 3
    main(["sample", "--checkpoint", str(out / "checkpoint.pt"), "--n", "4", "--steps", "2",
          "--out", str(tmp_path / "grid.png")])
    assert Image.open(tmp_path / "grid.png").mode == "RGB"


def test_train_dataset_bad_input(tmp_path):
    from ddpm_tutor.__main__ import main

    with pytest.raises(SystemExit, match=r"--dataset folder:.*nowhere.*not an existing folder"):
        main(["train", "--profile", "smoke", "--dataset", f"folder:{tmp_path / 'nowhere'}", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="--image-size goes with --dataset folder:PATH"):
        main(["train", "--profile", "smoke", "--image-size", "8", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="'svhn' is not a dataset"):
        main(["train", "--profile", "smoke", "--dataset", "svhn", "--out", str(tmp_path)])
    _save(tmp_path / "pics" / "a.png", np.zeros((8, 8), dtype=np.uint8))
    with pytest.raises(SystemExit, match=r"conditional U-Net .*needs labels, and folder:.*pics has none"):
        main(["train", "--profile", "smoke", "--conditional", "--dataset", f"folder:{tmp_path / 'pics'}",
              "--out", str(tmp_path / "run")])


def test_config_records_the_dataset():
    from ddpm_tutor.config import TrainConfig

    assert "dataset" not in TrainConfig().to_dict()  # an MNIST run's record is what it always was
    cfg = TrainConfig(dataset="fashion-mnist")
    assert TrainConfig.from_dict(cfg.to_dict()).dataset == "fashion-mnist"
    with pytest.raises(ValueError, match="TrainConfig.dataset must be"):
        TrainConfig(dataset="fashion")


@pytest.mark.skipif(not REAL_ROOT, reason="needs DDPM_TUTOR_DATA with a fashion-mnist/ subfolder")
def test_evaluate_measures_a_fashion_checkpoint_with_the_fashion_classifier(tmp_path):
    """evaluate reads the dataset from the checkpoint: Fashion-MNIST's classifier, test features and training set."""
    import json

    from ddpm_tutor.__main__ import main

    if not (Path(REAL_ROOT) / "fashion-mnist").is_dir():
        pytest.skip("DDPM_TUTOR_DATA has no fashion-mnist/ subfolder")
    run = tmp_path / "run"
    main(["train", "--profile", "smoke", "--steps", "2", "--set", "checkpoint_every=2", "--set", "sample_every=0",
          "--dataset", "fashion-mnist", "--out", str(run)])
    out = tmp_path / "eval.json"
    main(["evaluate", "--checkpoint", str(run / "checkpoint.pt"), "--n", "8", "--sampler", "ddim", "--steps", "2",
          "--floor-draws", "2", "--json", str(out)])
    record = json.loads(out.read_text())
    assert record["dataset"] == "fashion-mnist" and record["train_step"] == 2
    assert record["features"].startswith("fashion-mnist classifier")
    # the floor is real Fashion-MNIST training images against the Fashion-MNIST test set: far below noise's FID
    assert record["fid_floor"]["mean"] < record["fid"]


def test_cifar10_download_is_verified_before_it_is_kept(tmp_path, monkeypatch):
    served = tmp_path / "served" / "cifar-10-python.tar.gz"
    served.parent.mkdir()
    _cifar_archive(served)
    monkeypatch.setattr(datasets, "CIFAR10_URL", served.as_uri())
    data_root = tmp_path / "data"
    data_root.mkdir()
    with pytest.raises(DatasetError, match="sha256 .* expected .*the download was damaged"):
        load_dataset("cifar10", "test", root=data_root)  # the served file is not the official archive
    assert not any(p.is_file() for p in data_root.rglob("*"))  # nothing kept, not even a partial file
    monkeypatch.setattr(datasets, "CIFAR10_SHA256", hashlib.sha256(served.read_bytes()).hexdigest())
    images, _ = load_dataset("cifar10", "test", root=data_root)
    assert images.shape == (3, 3, 32, 32)
    assert (data_root / "cifar10" / "cifar-10-python.tar.gz").read_bytes() == served.read_bytes()
