"""MNIST and Fashion-MNIST in their original IDX form: find, download, verify and load them.

Both datasets use the same four file names and format (Fashion-MNIST, Xiao et al. 2017, was made
as a drop-in replacement for MNIST); the files are the ones the original distributions and
torchvision use::

    train-images-idx3-ubyte.gz   60000 images, 28 x 28, uint8
    train-labels-idx1-ubyte.gz   60000 labels, 0..9
    t10k-images-idx3-ubyte.gz    10000 images
    t10k-labels-idx1-ubyte.gz    10000 labels

Where the files live (first match wins):

1. the ``root`` argument of :func:`load_mnist`;
2. the environment variable ``DDPM_TUTOR_DATA``;
3. a user cache folder, ``$XDG_CACHE_HOME/ddpm_tutor/mnist`` (``~/.cache/ddpm_tutor/mnist``
   when ``XDG_CACHE_HOME`` is unset; ``.../fashion-mnist`` for Fashion-MNIST), created on
   first download.

A folder named by 1 or 2 may hold the files itself, or one subfolder per dataset
(``mnist/``, ``fashion-mnist/``, ...): a subfolder named after the dataset is used when there
is one.

A folder named explicitly (1 or 2) must exist: a typo there should fail loudly
instead of silently downloading 11 MB into a fresh folder.

The model sees images scaled linearly from ``{0, ..., 255}`` to ``[-1, 1]``, as in
Ho et al. (2020), Section 3.3; :func:`to_model_range` and :func:`from_model_range`
do that conversion and its inverse.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from .files import atomic_write, probe_writable, remove_orphans

__all__ = [
    "DatasetError",
    "MNISTError",
    "IDX_DATASETS",
    "FASHION_MIRRORS",
    "FASHION_SHA256",
    "MIRRORS",
    "FILES",
    "SHA256",
    "ENV_VAR",
    "resolve_root",
    "download_mnist",
    "load_mnist",
    "to_model_range",
    "from_model_range",
    "mnist_dataloader",
]

ENV_VAR = "DDPM_TUTOR_DATA"

# Tried in order, like torchvision: two maintained copies first, the original site last
# (it is often slow or refuses plain scripted downloads).
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

# split -> (images file, labels file), gzip-compressed names as distributed.
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

# sha256 of the DECOMPRESSED content, not of the .gz bytes. Why: the same pixels can be
# gzip-compressed into different bytes (another compression level, another tool, a
# different header timestamp), and at least one distributed copy of
# train-images-idx3-ubyte.gz was re-compressed that way, so its compressed md5 differs
# from the original's although every pixel is identical. Hashing what we actually parse
# accepts every faithful copy, compressed or not, and rejects any altered pixel.
SHA256 = {
    "train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

# Fashion-MNIST: the dataset's own mirror (the URL its README gives), then its GitHub repository.
FASHION_MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)

# sha256 of the decompressed content, as for MNIST.
FASHION_SHA256 = {
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}

#: The IDX datasets by name: (title in messages, name of this module's mirror tuple, name of its hash table).
#: The tables are looked up by name when used, so each stays one module attribute.
IDX_DATASETS = {
    "mnist": ("MNIST", "MIRRORS", "SHA256"),
    "fashion-mnist": ("Fashion-MNIST", "FASHION_MIRRORS", "FASHION_SHA256"),
}

# IDX magic numbers: two zero bytes, the element type (0x08 = unsigned byte), the rank.
_MAGIC_IMAGES = 0x00000803
_MAGIC_LABELS = 0x00000801
_SIZE = 28


class DatasetError(ValueError):
    """A dataset's file or folder is missing, unreadable or not what it should be.

    The message names the path (or the argument), what was expected and how to fix it.
    """


class MNISTError(DatasetError):
    """An MNIST or Fashion-MNIST (IDX) file or folder is missing, unreadable or not what it should be."""


def _title(dataset: str) -> str:
    return IDX_DATASETS[dataset][0]


def _mirrors(dataset: str) -> tuple[str, ...]:
    return globals()[IDX_DATASETS[dataset][1]]


def _hashes(dataset: str) -> dict[str, str]:
    return globals()[IDX_DATASETS[dataset][2]]


# ----------------------------------------------------------------------------- where


def _default_cache(dataset: str = "mnist") -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ddpm_tutor" / dataset


def _holds_files(folder: Path) -> bool:
    return any(_find(folder, name) is not None for pair in FILES.values() for name in pair)


def _dataset_folder(base: Path, dataset: str) -> Path:
    """``base/dataset`` if that subfolder exists; else ``base`` if it holds IDX files itself (or is
    MNIST's folder, as it always was); else ``base/dataset``, where a download creates it."""
    sub = base / dataset
    if sub.is_dir() or (dataset != "mnist" and not _holds_files(base)):
        return sub
    return base


def resolve_root(root: str | os.PathLike | None = None, dataset: str = "mnist") -> Path:
    """Return the folder holding the files of ``dataset`` (``"mnist"`` or ``"fashion-mnist"``).

    ``root`` if given, else ``$DDPM_TUTOR_DATA``, else the user cache folder
    (``$XDG_CACHE_HOME/ddpm_tutor/<dataset>`` or ``~/.cache/ddpm_tutor/<dataset>``).
    ``root`` and ``DDPM_TUTOR_DATA`` may name the dataset's folder itself or a folder with one
    subfolder per dataset (``mnist/``, ``fashion-mnist/``); the subfolder wins when it exists.
    The cache folder need not exist yet; an explicit ``root`` or ``DDPM_TUTOR_DATA``
    must name an existing folder, otherwise :class:`MNISTError` is raised.
    """
    if dataset not in IDX_DATASETS:
        raise ValueError(f"dataset must be one of {sorted(IDX_DATASETS)}, got {dataset!r}")
    if root is not None:
        if not isinstance(root, (str, os.PathLike)):
            raise TypeError(f"root must be a path (str or os.PathLike) or None, got {type(root).__name__}")
        path = Path(root).expanduser()
        if not path.is_dir():
            raise MNISTError(
                f"root={str(root)!r} is not an existing folder; create it (files are downloaded "
                f"into it with download=True) or pass the folder that holds the {_title(dataset)} .gz files"
            )
        return _dataset_folder(path, dataset)
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise MNISTError(
                f"{ENV_VAR}={env!r} is not an existing folder; point {ENV_VAR} at the folder that "
                f"holds the {_title(dataset)} .gz files (or one subfolder per dataset), create it, or unset "
                f"{ENV_VAR} to use the cache folder {_default_cache(dataset)}"
            )
        return _dataset_folder(path, dataset)
    return _default_cache(dataset)


def _find(root: Path, name: str) -> Path | None:
    """The ``.gz`` file if present, else the uncompressed file of the same name."""
    for candidate in (root / name, root / name[: -len(".gz")]):
        if candidate.is_file():
            return candidate
    return None


# ----------------------------------------------------------------------------- download


def _decompressed(path: Path, raw: bytes) -> bytes:
    """Decompress ``raw`` if ``path`` is a ``.gz`` file; a clear error if it is damaged."""
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise MNISTError(
            f"{path} is not a complete gzip file ({type(exc).__name__}: {exc}); it is truncated "
            f"or corrupt: delete it and re-run with download=True, or copy a good file there"
        ) from exc


def _sha_error(path: Path, name: str, got: str, fix: str, dataset: str = "mnist") -> MNISTError:
    other = [d for d in IDX_DATASETS if d != dataset and _hashes(d).get(name) == got]
    hint = (f"this is the {_title(other[0])} file: point root= / {ENV_VAR} at the {_title(dataset)} folder "
            f"(or at a folder with a {dataset}/ subfolder); otherwise ") if other else ""
    return MNISTError(
        f"{path}: sha256 of the decompressed content is {got}, expected {_hashes(dataset)[name]} "
        f"(the original {_title(dataset)} {name}); {hint}{fix}"
    )


def _fetch(url: str, dest: Path, name: str, progress: bool, dataset: str = "mnist") -> None:
    """Stream ``url`` into a temp file next to ``dest``, verify it, then rename atomically.

    The temp file is removed on any failure (network error, Ctrl-C, bad checksum), so an
    interrupted download never leaves a half-written file under the real name.
    """
    from tqdm.auto import tqdm

    def download(tmp: Path) -> None:
        with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            length = response.headers.get("Content-Length") if getattr(response, "headers", None) else None
            total = int(length) if length and length.isdigit() else None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                while True:
                    chunk = response.read(1 << 16)
                    if not chunk:
                        break
                    out.write(chunk)
                    bar.update(len(chunk))
            if total is not None and out.tell() != total:
                raise MNISTError(f"{url}: connection closed after {out.tell()} of {total} bytes")
        content = tmp.read_bytes()
        if dest.suffix == ".gz":
            try:
                content = gzip.decompress(content)
            except (OSError, EOFError, zlib.error) as exc:
                raise MNISTError(f"{url}: served a damaged gzip file ({type(exc).__name__}: {exc})") from exc
        got = hashlib.sha256(content).hexdigest()  # of the decompressed content, not of the file
        expected = _hashes(dataset)[name]
        if got != expected:
            raise MNISTError(
                f"{url}: sha256 of the decompressed content is {got}, expected {expected}; "
                f"the mirror served a different or damaged file"
            )

    atomic_write(dest, download, suffix=".part")


def download_mnist(
    root: str | os.PathLike | None = None,
    splits: tuple[str, ...] = ("train", "test"),
    mirrors: tuple[str, ...] | None = None,
    progress: bool = True,
    dataset: str = "mnist",
) -> Path:
    """Download the files of ``splits`` of ``dataset`` (``"mnist"`` or ``"fashion-mnist"``) that are
    missing from the data folder.

    Each file is tried on every mirror in ``mirrors`` (default :data:`MIRRORS`, or
    :data:`FASHION_MIRRORS` for Fashion-MNIST) in order,
    streamed into a temporary file in the same folder with a progress bar, checked against
    :data:`SHA256` (of the decompressed content) and only then renamed into place with
    ``os.replace``. Files already present are left alone (:func:`load_mnist` verifies them).

    Returns:
        The data folder (see :func:`resolve_root`).

    Raises:
        MNISTError: if every mirror failed for some file; the message lists each attempt.
    """
    for split in splits:
        if split not in FILES:
            raise ValueError(f"splits must contain only 'train' or 'test', got {split!r}")
    root = resolve_root(root, dataset)
    return _download(root, splits, _mirrors(dataset) if mirrors is None else tuple(mirrors), progress, dataset)


def _download(root: Path, splits: tuple[str, ...], mirrors: tuple[str, ...], progress: bool,
              dataset: str = "mnist") -> Path:
    """:func:`download_mnist` on an already resolved folder (created if missing)."""
    missing = [name for split in splits for name in FILES[split] if _find(root, name) is None]
    if missing:  # a folder we cannot write into is not a network problem: say so before trying any mirror
        try:
            probe_writable(root)
        except OSError as exc:
            raise MNISTError(
                f"cannot download {', '.join(missing)} into {root}: the folder cannot be written "
                f"({exc.strerror or exc}); make it writable, or download into another folder (set {ENV_VAR} "
                f"or pass root=), or copy the files into {root} yourself"
            ) from exc
    for split in splits:
        for name in FILES[split]:
            if _find(root, name) is not None:
                continue
            remove_orphans(root / name)  # the .part files of a download that was killed
            errors = []
            for mirror in mirrors:
                url = mirror.rstrip("/") + "/" + name
                try:
                    _fetch(url, root / name, name, progress, dataset)
                    break
                except (OSError, MNISTError) as exc:  # URLError is an OSError
                    errors.append(f"  {url}: {exc}")
            else:
                raise MNISTError(
                    f"could not download {name} into {root}; tried:\n" + "\n".join(errors) + "\n"
                    f"Check your connection, or download the file yourself, put it in a folder "
                    f"and set {ENV_VAR} to that folder (or pass root=...)"
                )
    return root


# ----------------------------------------------------------------------------- parse


def _read_idx(root: Path, name: str, kind: str, download: bool, verify: bool, dataset: str = "mnist") -> np.ndarray:
    """Read one IDX file (``kind`` is 'images' or 'labels') of ``dataset`` and check its header."""
    path = _find(root, name)
    if path is None:
        hint = (
            "re-run with download=True" if not download else "the download did not produce it"
        )
        raise MNISTError(
            f"{_title(dataset)} file {root / name} (or uncompressed {root / name[:-3]}) not found; {hint}, "
            f"or set {ENV_VAR} / pass root= to the folder that holds it"
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:  # e.g. PermissionError: no read permission on the file or the folder
        raise MNISTError(
            f"cannot read {path} ({exc.strerror or exc}); make it readable (e.g. chmod a+r), or copy the MNIST "
            f"files into a folder you can read and set {ENV_VAR} / pass root= to it"
        ) from exc
    data = _decompressed(path, raw)
    fix = "delete it and re-run with download=True, or copy a good file there"

    magic, rank = (_MAGIC_IMAGES, 3) if kind == "images" else (_MAGIC_LABELS, 1)
    header = 4 + 4 * rank
    if len(data) < header:
        raise MNISTError(f"{path} holds {len(data)} bytes, fewer than an IDX header ({header}); {fix}")
    got_magic = int.from_bytes(data[:4], "big")
    if got_magic != magic:
        raise MNISTError(
            f"{path}: IDX magic number is 0x{got_magic:08x}, expected 0x{magic:08x} "
            f"({kind}: unsigned bytes, rank {rank}); this is not an {_title(dataset)} {kind} file; {fix}"
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank))
    if kind == "images" and dims[1:] != (_SIZE, _SIZE):
        raise MNISTError(f"{path}: images are {dims[1]}x{dims[2]}, expected 28x28; {fix}")
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        raise MNISTError(
            f"{path}: header promises shape {dims} ({expected} bytes) but the file holds "
            f"{len(data)} bytes; it is truncated or corrupt; {fix}"
        )
    if verify and name in _hashes(dataset):
        got = hashlib.sha256(data).hexdigest()
        if got != _hashes(dataset)[name]:
            raise _sha_error(path, name, got, fix + " (or pass verify=False to load it anyway)", dataset)
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def load_mnist(
    split: str = "train",
    root: str | os.PathLike | None = None,
    download: bool = True,
    verify: bool = True,
    dataset: str = "mnist",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load an MNIST (or Fashion-MNIST) split from its IDX files, downloading them first if needed.

    Args:
        split: ``"train"`` (60000 examples) or ``"test"`` (10000).
        root: folder holding the files; default ``$DDPM_TUTOR_DATA`` or the user cache
            (see :func:`resolve_root`). Either ``name.gz`` or the uncompressed ``name``
            is accepted.
        download: fetch missing files with :func:`download_mnist`. With ``False`` a
            missing file raises :class:`MNISTError`.
        verify: check the sha256 of the decompressed content against :data:`SHA256`.
            On by default, every load: the bytes must be decompressed anyway to be
            parsed, and hashing the 47 MB of training images costs about 0.03 s next to
            about 0.2 s of decompression (measured on one CPU core), so a cached
            "verified" marker would save little while
            adding a file that can go stale (the file replaced after the marker was
            written) and that cannot be written into read-only shared data folders.
        dataset: ``"mnist"`` (the default) or ``"fashion-mnist"`` (the same format and
            sizes, ten classes of clothing; its hashes are :data:`FASHION_SHA256`).

    Returns:
        ``(images, labels)``: ``images`` is a ``torch.uint8`` tensor of shape
        ``(N, 28, 28)`` with values 0..255 (0 = background), ``labels`` a
        ``torch.int64`` tensor of shape ``(N,)`` with values 0..9.

    Raises:
        MNISTError: (a ``ValueError``) naming the file, what was expected and the fix,
            for a missing folder or file, a truncated gzip, a wrong magic number, wrong
            dimensions, a count mismatch between images and labels, or a sha256 mismatch.
    """
    if split not in FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = resolve_root(root, dataset)
    images_name, labels_name = FILES[split]
    if download and (_find(root, images_name) is None or _find(root, labels_name) is None):
        _download(root, (split,), _mirrors(dataset), progress=True, dataset=dataset)
    if not root.is_dir():
        raise MNISTError(
            f"{_title(dataset)} folder {root} does not exist; re-run with download=True, or set "
            f"{ENV_VAR} / pass root= to the folder that holds the files"
        )
    images = _read_idx(root, images_name, "images", download, verify, dataset)
    labels = _read_idx(root, labels_name, "labels", download, verify, dataset)
    if images.shape[0] != labels.shape[0]:
        raise MNISTError(
            f"{root}: {images_name} holds {images.shape[0]} images but {labels_name} holds "
            f"{labels.shape[0]} labels; expected the same count. One of them is from another "
            f"split or damaged: delete both and re-run with download=True"
        )
    if labels.size and int(labels.max()) > 9:
        raise MNISTError(
            f"{root / labels_name}: labels must lie in 0..9, found {int(labels.max())}; "
            f"delete it and re-run with download=True"
        )
    # np.frombuffer gives a read-only view of the bytes; copy once into torch-owned memory.
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


# ----------------------------------------------------------------------------- scaling


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """Scale ``uint8`` pixels ``{0..255}`` linearly to ``[-1, 1]``: ``x0 = images / 127.5 - 1``.

    This is the data scaling of Ho et al. (2020), Section 3.3 ("integers in
    {0, 1, ..., 255} scaled linearly to [-1, 1]").

    Args:
        images: ``torch.uint8``, shape ``(N, H, W)`` (grey) or ``(N, C, H, W)``.

    Returns:
        ``torch.float32`` of shape ``(N, C, H, W)`` in ``[-1, 1]`` (``C = 1`` for ``(N, H, W)``).
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise TypeError(
            f"images must be torch.uint8 pixels 0..255, got dtype {images.dtype}; "
            f"pass the output of load_mnist (images already in [-1, 1] need no conversion)"
        )
    if images.dim() == 3:
        images = images.unsqueeze(1)  # (N, H, W) -> (N, 1, H, W)
    elif images.dim() != 4:
        raise ValueError(f"images must have shape (N, H, W) or (N, C, H, W), got {tuple(images.shape)}")
    return images.to(torch.float32) / 127.5 - 1.0


def from_model_range(x: torch.Tensor) -> torch.Tensor:
    """Map model-range images back to ``uint8`` pixels: ``round((clamp(x, -1, 1) + 1) * 127.5)``.

    The inverse of :func:`to_model_range` (exact on its outputs). Values outside
    ``[-1, 1]``, which samplers can produce, are clipped first.

    Args:
        x: floating tensor of any shape, nominally in ``[-1, 1]``.

    Returns:
        ``torch.uint8`` tensor of the same shape, on the same device.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"x must be a floating-point torch.Tensor in [-1, 1], got {got}")
    return ((x.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)


def mnist_dataloader(
    split: str = "train",
    batch_size: int = 128,
    root: str | os.PathLike | None = None,
    shuffle: bool = True,
    generator: torch.Generator | None = None,
    num_workers: int = 0,
    drop_last: bool = True,
    limit: int | None = None,
    download: bool = True,
) -> DataLoader:
    """A ``DataLoader`` of ``(x0, label)`` batches of MNIST in model range.

    Args:
        split, root, download: as in :func:`load_mnist`.
        batch_size: examples per batch ``B``.
        shuffle: reshuffle every epoch, drawing from ``generator`` (pass a seeded
            ``torch.Generator`` for a reproducible order).
        num_workers, drop_last: passed to ``DataLoader``.
        limit: keep only the first ``limit`` examples (for quick runs); ``None`` keeps all.

    Yields:
        ``x0`` of shape ``(B, 1, 28, 28)``, ``torch.float32`` in ``[-1, 1]``, and
        ``labels`` of shape ``(B,)``, ``torch.int64``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    images, labels = load_mnist(split, root=root, download=download)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    if drop_last and images.shape[0] < batch_size:
        raise ValueError(
            f"batch_size={batch_size} exceeds the {images.shape[0]} examples available "
            f"(limit={limit}), so drop_last=True would yield no batch; lower batch_size, "
            f"raise limit or pass drop_last=False"
        )
    dataset = TensorDataset(to_model_range(images), labels)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=num_workers,
        drop_last=drop_last,
    )
