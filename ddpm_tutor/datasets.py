"""Datasets beyond MNIST: one loader, :func:`load_dataset`, for every kind of data the book trains on.

=====================  ========================================================  =============
``name``               what                                                      ``(C, H, W)``
=====================  ========================================================  =============
``"mnist"``            handwritten digits (IDX files, :mod:`ddpm_tutor.data`)    ``(1, 28, 28)``
``"fashion-mnist"``    ten classes of clothing, the same IDX format              ``(1, 28, 28)``
``"cifar10"``          ten classes of photos, the official python archive        ``(3, 32, 32)``
``"folder:PATH"``      every image file under ``PATH``, resized and centre-      ``(1 or 3, S, S)``
                       cropped to ``image_size = S``
=====================  ========================================================  =============

Every loader returns ``(images, labels)``: ``images`` a ``torch.uint8`` tensor ``(N, C, H, W)`` of pixels
``0..255``, ``labels`` an ``int64`` tensor ``(N,)``, or ``None`` for a folder of images (which has no
classes). The U-Net's ``in_channels`` and ``image_size`` come from ``images.shape`` (:func:`dataset_shape`).

Where the files live follows :mod:`ddpm_tutor.data`: the ``root`` argument, else ``$DDPM_TUTOR_DATA``, else
``~/.cache/ddpm_tutor/<name>``; ``root`` and ``$DDPM_TUTOR_DATA`` may hold one subfolder per dataset
(``mnist/``, ``fashion-mnist/``, ``cifar10/``). Downloads are verified by sha256 before use.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch

from .data import ENV_VAR, DatasetError, _default_cache, load_mnist
from .files import atomic_write, probe_writable

__all__ = [
    "DATASETS",
    "CIFAR10_URL",
    "CIFAR10_SHA256",
    "IMAGE_SUFFIXES",
    "load_dataset",
    "load_cifar10",
    "load_image_folder",
    "dataset_shape",
]

#: The names :func:`load_dataset` knows, besides ``"folder:PATH"``.
DATASETS = ("mnist", "fashion-mnist", "cifar10")

#: The official CIFAR-10 archive (Krizhevsky 2009), python version, 170,498,071 bytes.
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
#: Its sha256 (its md5, the one the dataset's page gives, is c58f30108f718f92721af3b95e74349a).
CIFAR10_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
_CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
_CIFAR10_BATCHES = {
    "train": tuple(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)),
    "test": ("cifar-10-batches-py/test_batch",),
}

#: The file suffixes :func:`load_image_folder` reads (case-insensitive).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def load_dataset(
    name: str,
    split: str = "train",
    root: str | os.PathLike | None = None,
    download: bool = True,
    image_size: int | None = None,
    verify: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Load a dataset's split as uint8 pixels ``(N, C, H, W)`` and its labels.

    Args:
        name: ``"mnist"``, ``"fashion-mnist"``, ``"cifar10"``, or ``"folder:PATH"`` (every image under
            the folder ``PATH``, see :func:`load_image_folder`).
        split: ``"train"`` or ``"test"`` (a folder has no splits: it is read whole, whatever ``split``).
        root: folder holding the dataset's files, or one subfolder per dataset; default ``$DDPM_TUTOR_DATA``,
            else the user cache. Unused by ``"folder:PATH"``.
        download: fetch missing files (verified by sha256 before they are used).
        image_size: for ``"folder:PATH"``: resize the shorter side to this and centre-crop to a square;
            ``None`` keeps the images' own size (they must then all be square and of one size).
            Other datasets have a fixed size; ``image_size`` must be ``None`` or that size.
        verify: check the files' sha256 (on by default; a small home-made archive needs ``False``).

    Returns:
        ``(images, labels)``: ``torch.uint8`` ``(N, C, H, W)`` and ``torch.int64`` ``(N,)``, or ``None``
        for a folder of images.

    Raises:
        DatasetError: (a ``ValueError``) a missing folder or file, a corrupt archive, a checksum mismatch, a
            folder with no images, unreadable images, or images of mixed sizes without ``image_size``; the
            message names the argument or the file and the fix.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str such as 'fashion-mnist' or 'folder:PATH', got {type(name).__name__}")
    if name.startswith("folder:"):
        return load_image_folder(name[len("folder:"):], image_size=image_size), None
    if name not in DATASETS:
        raise ValueError(
            f"name={name!r} is not a dataset this package knows; choose one of {', '.join(DATASETS)}, "
            f"or 'folder:PATH' for a folder of your own images"
        )
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if name == "cifar10":
        images, labels = load_cifar10(split, root=root, download=download, verify=verify)
    else:
        images, labels = load_mnist(split, root=root, download=download, verify=verify, dataset=name)
        images = images.unsqueeze(1)  # (N, 28, 28) -> (N, 1, 28, 28)
    if image_size is not None and image_size != images.shape[-1]:
        raise ValueError(
            f"image_size={image_size} but {name} images are {images.shape[-1]} x {images.shape[-1]}; "
            f"leave image_size=None (it is only for folders of images)"
        )
    return images, labels


def dataset_shape(images: torch.Tensor) -> dict[str, int]:
    """The U-Net fields a dataset fixes: ``{"in_channels": C, "out_channels": C, "image_size": H}``."""
    if images.dim() != 4 or images.shape[2] != images.shape[3]:
        raise ValueError(f"images must have shape (N, C, S, S), got {tuple(images.shape)}")
    c, size = int(images.shape[1]), int(images.shape[2])
    return {"in_channels": c, "out_channels": c, "image_size": size}


# ----------------------------------------------------------------------------- CIFAR-10


def _cifar_root(root: str | os.PathLike | None) -> Path:
    """The folder of the CIFAR-10 archive: as :func:`ddpm_tutor.data.resolve_root`, with ``cifar10/``."""
    if root is not None:
        base, what = Path(root).expanduser(), f"root={str(root)!r}"
    elif os.environ.get(ENV_VAR):
        base, what = Path(os.environ[ENV_VAR]).expanduser(), f"{ENV_VAR}={os.environ[ENV_VAR]!r}"
    else:
        return _default_cache("cifar10")
    if not base.is_dir():
        raise DatasetError(
            f"{what} is not an existing folder; create it (the archive is downloaded into it with "
            f"download=True) or name the folder that holds {_CIFAR10_ARCHIVE} (or a cifar10/ subfolder)"
        )
    sub = base / "cifar10"
    return sub if sub.is_dir() or not (base / _CIFAR10_ARCHIVE).is_file() else base


def _download_cifar10(folder: Path) -> None:
    import urllib.request

    from tqdm.auto import tqdm

    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe_writable(folder)
    except OSError as exc:
        raise DatasetError(
            f"cannot download {_CIFAR10_ARCHIVE} into {folder} ({exc.strerror or exc}); make it writable, or "
            f"download {CIFAR10_URL} yourself and pass root= (or set {ENV_VAR}) to its folder"
        ) from exc

    def fetch(tmp: Path) -> None:
        digest = hashlib.sha256()
        with open(tmp, "wb") as out, urllib.request.urlopen(CIFAR10_URL, timeout=60) as response:
            length = response.headers.get("Content-Length") if getattr(response, "headers", None) else None
            total = int(length) if length and length.isdigit() else None
            with tqdm(total=total, unit="B", unit_scale=True, desc=_CIFAR10_ARCHIVE) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        if digest.hexdigest() != CIFAR10_SHA256:
            raise DatasetError(
                f"{CIFAR10_URL}: sha256 {digest.hexdigest()}, expected {CIFAR10_SHA256}; the download was damaged: "
                f"try again, or download the file yourself into {folder}"
            )

    try:
        atomic_write(folder / _CIFAR10_ARCHIVE, fetch, suffix=".part")
    except OSError as exc:  # URLError is an OSError
        raise DatasetError(
            f"could not download {CIFAR10_URL} into {folder} ({exc}); check your connection, or download it "
            f"yourself and pass root= (or set {ENV_VAR}) to its folder"
        ) from exc


class _ArraysOnly(pickle.Unpickler):
    """Unpickles the CIFAR-10 batches (dicts of bytes, lists and numpy arrays) and nothing else, so a
    replaced archive cannot run code when it is read."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}  # protocol 2 writes bytes with it

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR-10 batch")
        return super().find_class(module, name)


def load_cifar10(
    split: str = "train", root: str | os.PathLike | None = None, download: bool = True, verify: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 from the official python archive ``cifar-10-python.tar.gz``, read without unpacking it.

    The archive holds ``cifar-10-batches-py/data_batch_1..5`` (train, 50,000 images) and ``test_batch``
    (10,000), each a pickled dict whose ``b"data"`` is a uint8 array ``(n, 3072)`` (rows of 1024 red, then
    green, then blue pixels of a 32 x 32 image) and ``b"labels"`` a list of classes 0..9.

    Args:
        split: ``"train"`` or ``"test"``.
        root: the folder holding the archive (or a ``cifar10/`` subfolder); see :func:`load_dataset`.
        download: fetch the archive (163 MiB) from :data:`CIFAR10_URL` when it is missing.
        verify: check the archive's sha256 against :data:`CIFAR10_SHA256` before reading it.

    Returns:
        ``torch.uint8`` ``(N, 3, 32, 32)`` and ``torch.int64`` ``(N,)``.
    """
    if split not in _CIFAR10_BATCHES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = _cifar_root(root)
    path = folder / _CIFAR10_ARCHIVE
    if not path.is_file():
        if not download:
            raise DatasetError(
                f"CIFAR-10 archive {path} not found; re-run with download=True, or set {ENV_VAR} / pass root= "
                f"to the folder that holds {_CIFAR10_ARCHIVE}"
            )
        _download_cifar10(folder)
    raw = path.read_bytes()
    fix = "delete it and re-run with download=True, or copy a good archive there"
    if verify:
        got = hashlib.sha256(raw).hexdigest()
        if got != CIFAR10_SHA256:
            raise DatasetError(
                f"{path}: sha256 {got}, expected {CIFAR10_SHA256} (the official {_CIFAR10_ARCHIVE}); it is "
                f"damaged or another file: {fix} (or pass verify=False to read it anyway)"
            )
    images, labels = [], []
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
            names = set(tar.getnames())
            for member in _CIFAR10_BATCHES[split]:
                handle = tar.extractfile(member) if member in names else None
                if handle is None:
                    raise KeyError(member)
                batch = _ArraysOnly(handle, encoding="bytes").load()
                images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
    except KeyError as exc:
        raise DatasetError(f"{path} has no member {exc.args[0]}: it is not the CIFAR-10 python archive; {fix}") from exc
    except (tarfile.TarError, OSError, EOFError, pickle.UnpicklingError, ValueError) as exc:
        raise DatasetError(f"{path} is not a readable CIFAR-10 archive ({type(exc).__name__}: {exc}); {fix}") from exc
    x, y = np.concatenate(images), np.concatenate(labels)
    if x.shape[0] != y.shape[0] or (y.size and (y.min() < 0 or y.max() > 9)):
        raise DatasetError(f"{path}: {x.shape[0]} images but {y.shape[0]} labels (or labels outside 0..9); {fix}")
    return torch.from_numpy(x.copy()), torch.from_numpy(y)


# ----------------------------------------------------------------------------- a folder of images


def load_image_folder(path: str | os.PathLike, image_size: int | None = None) -> torch.Tensor:
    """Every image file under ``path`` (subfolders included, in sorted order) as uint8 ``(N, C, S, S)``.

    Greyscale images give ``C = 1``; if any image has colour, all are read as RGB (``C = 3``); transparency
    is dropped. With ``image_size = S`` each image's shorter side is resized to ``S`` (Lanczos) and the
    centre ``S x S`` cropped, so any mix of sizes and aspect ratios works; with ``None`` the images are
    kept as they are and must all be square and of one size.

    Raises:
        DatasetError: ``path`` is not a folder, holds no image file (by suffix: :data:`IMAGE_SUFFIXES`), an
            image cannot be read, or (without ``image_size``) the sizes differ or are not square.
    """
    from PIL import Image, UnidentifiedImageError

    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise ValueError(f"image_size must be a positive int (e.g. 32) or None, got {image_size!r}")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DatasetError(
            f"folder:{path}: {folder} is not an existing folder; give the folder that holds your images, "
            f"e.g. --dataset folder:~/pictures/faces"
        )
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DatasetError(
            f"folder:{path}: no image files in {folder} or its subfolders (looked for "
            f"{', '.join(IMAGE_SUFFIXES)}); put your images there, or name the folder that holds them"
        )
    pictures = []
    for file in files:
        try:
            with Image.open(file) as img:
                img.load()
                pictures.append(img.copy())
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise DatasetError(
                f"folder:{path}: cannot read {file} as an image ({type(exc).__name__}: {exc}); "
                f"delete it, convert it to PNG, or move it out of the folder"
            ) from exc
    grey = all(p.mode in ("1", "L", "LA", "I", "I;16", "F") for p in pictures)
    mode = "L" if grey else "RGB"
    if image_size is None:
        sizes = sorted({p.size for p in pictures})
        if len(sizes) > 1 or sizes[0][0] != sizes[0][1]:
            first = {p.size: f for p, f in zip(pictures, files)}
            examples = "; ".join(f"{first[s].name}: {s[0]} x {s[1]}" for s in sizes[:3])
            raise DatasetError(
                f"folder:{path}: the images are not all square and of one size ({examples}); pass "
                f"image_size=S (train --image-size S) to resize and centre-crop them all to S x S"
            )
    arrays = []
    for picture in pictures:
        picture = _to_mode(picture, mode)
        if image_size is not None:
            picture = _resize_centre_crop(picture, image_size)
        a = np.asarray(picture, dtype=np.uint8)
        arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))  # (C, S, S)
    return torch.from_numpy(np.stack(arrays))


def _to_mode(picture, mode: str):
    """``picture`` in ``"L"`` or ``"RGB"``; 16-bit and float greys are scaled to 0..255 first."""
    if picture.mode in ("I", "I;16", "F"):
        a = np.asarray(picture, dtype=np.float64)
        top = 65535.0 if picture.mode.startswith("I") and a.max() > 255 else 255.0
        from PIL import Image

        picture = Image.fromarray(np.clip(a / top * 255.0, 0, 255).round().astype(np.uint8), "L")
    if picture.mode in ("RGBA", "LA", "PA") or (picture.mode == "P" and "transparency" in picture.info):
        picture = picture.convert("RGBA" if mode == "RGB" else "LA").convert(mode)  # transparency dropped
    return picture.convert(mode)


def _resize_centre_crop(picture, size: int):
    """Scale the shorter side to ``size`` (Lanczos), then crop the centre ``size x size``."""
    from PIL import Image

    w, h = picture.size
    scale = size / min(w, h)
    new = (max(size, round(w * scale)), max(size, round(h * scale)))
    picture = picture.resize(new, Image.Resampling.LANCZOS)
    left, top = (new[0] - size) // 2, (new[1] - size) // 2
    return picture.crop((left, top, left + size, top + size))
