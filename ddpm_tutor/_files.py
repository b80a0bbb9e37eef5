"""Checks on where results will be written, made before the work that produces them, and the mode new files get."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["default_mode", "check_writable_folder", "check_output_file", "image_format"]


def default_mode() -> int:
    """The mode a plainly created file would get (0o666 minus the umask); ``mkstemp`` creates 0o600."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def check_writable_folder(folder: str | os.PathLike, what: str) -> Path:
    """Create ``folder`` if missing and make sure a file can be written into it; ``ValueError`` naming ``what`` if not.

    Run this before long work (training, sampling) whose result goes there, so that a typo or a read-only
    folder fails in a second instead of after the work.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{what}={str(folder)!r} is a file, not a folder; pass a folder (it is created if missing)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test.", suffix=".tmp")
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        raise ValueError(
            f"{what}={str(folder)!r} cannot be written ({exc.strerror or exc}); pass a folder you can write to"
        ) from exc
    return folder


def check_output_file(path: str | os.PathLike, what: str) -> Path:
    """Make sure ``path`` can be written as a file (its folder is created if missing); ``ValueError`` naming ``what``."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what}={str(path)!r} is a folder; pass a file name")
    check_writable_folder(path.parent, f"the folder of {what}")
    return path


def image_format(path: str | os.PathLike) -> str:
    """The Pillow format that ``path``'s suffix names (``.png`` -> ``PNG``, ``.jpg`` -> ``JPEG``); ``ValueError`` if none."""
    from PIL import Image

    suffix = Path(path).suffix.lower()
    formats = Image.registered_extensions()
    common = ".png, .jpg, .webp, .gif, .bmp, .tif"
    if not suffix:
        raise ValueError(f"{str(path)!r} has no suffix to name the image format; end it with one of {common}")
    if suffix not in formats or formats[suffix] not in Image.SAVE:
        raise ValueError(f"{str(path)!r}: Pillow cannot write {suffix!r} images; end the name with one of {common}")
    return formats[suffix]
