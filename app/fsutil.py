"""Small file-system helpers shared by the store, snapshots and serving files."""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from pathlib import Path

CHUNK_BYTES = 1 << 20
FILE_MODE = 0o644
_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


class NotRegularFile(OSError):
    """The path names a folder, FIFO, socket or device: there are no batch bytes to read."""


def file_kind(mode: int) -> str:
    """What a ``st_mode`` names, in words: "a regular file", "a FIFO", "a folder", ..."""
    if stat.S_ISREG(mode):
        return "a regular file"
    return next((kind for test, kind in _KINDS if test(mode)), "not a regular file")


def regular_file_opener(path: str, flags: int) -> int:
    """An ``opener`` for :func:`open` that opens regular files only (NotRegularFile for the rest).

    The file is opened non-blocking (opening a FIFO without a writer would
    wait forever) and checked on the open descriptor, so a path swapped for a
    FIFO or a device after it was looked at is still refused.
    """
    fd = os.open(path, flags | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(f"not a regular file ({file_kind(mode)}); only regular files are read")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a regular file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb", opener=regular_file_opener) as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never half.

    The bytes go to a temporary file in the same folder, are fsynced, and the
    temporary file is renamed over ``path``; the folder is fsynced so the
    rename survives a crash.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)  # mkstemp makes 0600; the folder decides who may read
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
