"""File I/O shared by the package: atomic writes, sha256 of a file, and "verify, then load".

Every file the package writes (checkpoints, exports and their records, image grids, downloads)
goes through :func:`atomic_write`, so a reader sees the old file or the new one, never half of one,
and a crash or Ctrl-C leaves no half-written file under the real name.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, TypeVar

__all__ = ["atomic_write", "atomic_write_text", "sha256_file", "verify_sha256", "load_verified", "remove_orphans"]

T = TypeVar("T")


def _default_mode() -> int:
    """The mode a plainly created file would get: 0o666 minus the user's umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any], suffix: str = ".tmp") -> Path:
    """Write ``path`` atomically: ``write(tmp)`` fills a temporary file in the same folder, which is then
    flushed to disk (fsync) and renamed onto ``path`` (``os.replace``).

    The temporary file (``.NAME.XXXX<suffix>``) is removed on any failure, including an exception raised by
    ``write`` itself (a failed checksum, a full disk, Ctrl-C). The file gets the user's usual mode (0o666
    minus the umask), not the 0600 of ``mkstemp``. The folder is created if missing. Returns ``path``.
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
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


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
