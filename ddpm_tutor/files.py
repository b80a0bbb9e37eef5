"""File I/O shared by the package: atomic writes, sha256 of a file, "verify, then load", and the checks
on where results will be written, made before the work that produces them.

Every file the package writes (checkpoints, exports and their records, image grids, downloads)
goes through :func:`atomic_write`, so a reader sees the old file or the new one, never half of one,
and a crash, Ctrl-C or a full disk leaves no half-written file under the real name.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, TypeVar

__all__ = [
    "atomic_write",
    "atomic_write_text",
    "sha256_file",
    "verify_sha256",
    "load_verified",
    "remove_orphans",
    "default_mode",
    "probe_writable",
    "check_writable_folder",
    "check_output_file",
    "image_format",
]

T = TypeVar("T")


def default_mode() -> int:
    """The mode a plainly created file would get: 0o666 minus the user's umask (``mkstemp`` creates 0o600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any], suffix: str = ".tmp") -> Path:
    """Write ``path`` atomically: ``write(tmp)`` fills a temporary file in the same folder, which is then
    flushed to disk (fsync) and renamed onto ``path`` (``os.replace``).

    The temporary file (``.NAME.XXXX<suffix>``) is removed on any failure, including an exception raised by
    ``write`` itself (a failed checksum, a full disk, Ctrl-C). A full disk (``ENOSPC``, or torch's
    ``RuntimeError`` "file write failed") becomes an ``OSError`` that names ``path``, says the disk is full
    and that the previous file is unchanged; other errors pass through as they are. The file gets the user's
    usual mode (0o666 minus the umask), not the 0600 of ``mkstemp``. The folder is created if missing.
    Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:  # the bytes reach the disk before the rename makes them visible
            os.fsync(fh.fileno())
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if _disk_full(exc):
            raise _disk_full_error(path, exc) from exc
        raise
    return path


def _disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or the user's quota) is full; torch reports it as "enforce fail ... file write failed"."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(exc, RuntimeError) and "file write failed" in str(exc)


def _disk_full_error(path: Path, exc: BaseException) -> OSError:
    """An ``OSError`` saying that ``path`` could not be written because the disk is full, and that nothing was lost."""
    free = shutil.disk_usage(path.parent).free if path.parent.is_dir() else 0
    kept = f"the previous {path.name} there is unchanged" if path.exists() else "nothing was written"
    return OSError(errno.ENOSPC, f"could not write {path}: the disk is full ({free / 1e6:.0f} MB free in {path.parent}; "
                   f"{type(exc).__name__}: {exc}); {kept}. Free some space (or write to another folder) and run again")


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write` of a text file (UTF-8)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def remove_orphans(path: str | os.PathLike, suffixes: tuple[str, ...] = (".tmp", ".part")) -> list[Path]:
    """Delete the temporary files that an :func:`atomic_write` of ``path`` leaves when its process is killed
    (``kill -9`` runs no cleanup): ``.NAME.*.tmp`` and ``.NAME.*.part`` beside ``path``. Returns what was removed.

    Call it where one process owns ``path`` (a training run's checkpoint, a download), before writing it again.
    """
    path = Path(path)
    removed = []
    if path.parent.is_dir():
        for orphan in path.parent.glob(f".{path.name}.*"):
            if orphan.suffix in suffixes and orphan.is_file():
                orphan.unlink(missing_ok=True)
                removed.append(orphan)
    return removed


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, as 64 hex digits (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str, fix: str) -> None:
    """Raise ``ValueError`` naming ``path``, both hashes and ``fix`` unless the file's sha256 is ``expected``."""
    got = sha256_file(path)
    if got != expected:
        raise ValueError(f"{path} has sha256 {got}, expected {expected} (its record): the file is corrupt or modified; {fix}")


def load_verified(path: str | os.PathLike, record: str | os.PathLike, load: Callable[[Path], T], fix: str) -> T:
    """Check ``path`` against the sha256 in its JSON ``record``, then return ``load(path)``.

    Raises ``FileNotFoundError`` if either file is missing and ``ValueError`` if the hashes differ
    (before ``load`` sees a byte of the file); both messages end with ``fix``.
    """
    path, record = Path(path), Path(record)
    for p in (path, record):
        if not p.is_file():
            raise FileNotFoundError(f"{p} is missing; {fix}")
    verify_sha256(path, json.loads(record.read_text())["sha256"], fix)
    return load(path)


def probe_writable(folder: str | os.PathLike) -> Path:
    """Create ``folder`` if missing and write (then remove) a probe file in it; the ``OSError`` if that fails."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test.", suffix=".tmp")
    os.close(fd)
    os.remove(probe)
    return folder


def check_writable_folder(folder: str | os.PathLike, what: str) -> Path:
    """Create ``folder`` if missing and make sure a file can be written into it; ``ValueError`` naming ``what`` if not.

    Run this before long work (training, sampling) whose result goes there, so that a typo or a read-only
    folder fails in a second instead of after the work.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{what}={str(folder)!r} is a file, not a folder; pass a folder (it is created if missing)")
    try:
        return probe_writable(folder)
    except OSError as exc:
        raise ValueError(
            f"{what}={str(folder)!r} cannot be written ({exc.strerror or exc}); pass a folder you can write to"
        ) from exc


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
