"""The file helpers: atomic writes, sha256, verify-then-load, and the clean-up after a killed process."""

import hashlib
import json
import os

import pytest

from ddpm_tutor import files


def test_atomic_write_replaces_the_file_and_uses_the_umask(tmp_path):
    path = tmp_path / "sub" / "x.bin"
    files.atomic_write(path, lambda tmp: tmp.write_bytes(b"one"))
    files.atomic_write(path, lambda tmp: tmp.write_bytes(b"two"))
    assert path.read_bytes() == b"two" and sorted(p.name for p in path.parent.iterdir()) == ["x.bin"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "x.txt"
    files.atomic_write_text(path, "old")

    def fail(tmp):
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        files.atomic_write(path, fail)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_remove_orphans_deletes_only_this_files_temporaries(tmp_path):
    for name in (".checkpoint.pt.abc123.tmp", ".train.gz.xyz.part", ".checkpoint.pt.keep", "checkpoint.pt", ".other.pt.q.tmp"):
        (tmp_path / name).write_bytes(b"x")
    removed = files.remove_orphans(tmp_path / "checkpoint.pt")
    assert [p.name for p in removed] == [".checkpoint.pt.abc123.tmp"]
    assert files.remove_orphans(tmp_path / "train.gz")[0].name == ".train.gz.xyz.part"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".checkpoint.pt.keep", ".other.pt.q.tmp", "checkpoint.pt"]


def test_sha256_file_and_load_verified(tmp_path):
    path, record = tmp_path / "w.bin", tmp_path / "w.json"
    path.write_bytes(b"\x00" * (3 << 20) + b"end")  # several read chunks
    assert files.sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    record.write_text(json.dumps({"sha256": files.sha256_file(path)}))
    assert files.load_verified(path, record, lambda p: p.read_bytes()[-3:], fix="reinstall") == b"end"
    path.write_bytes(path.read_bytes()[:-1] + b"E")  # one byte changed
    loaded = []
    with pytest.raises(ValueError, match=r"w\.bin has sha256 [0-9a-f]{64}, expected .*corrupt.*; reinstall"):
        files.load_verified(path, record, loaded.append, fix="reinstall")
    assert loaded == []  # refused before the loader saw the file
    with pytest.raises(FileNotFoundError, match=r"missing\.json is missing; reinstall"):
        files.load_verified(path, tmp_path / "missing.json", loaded.append, fix="reinstall")
