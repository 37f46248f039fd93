"""Whether the state folder and its database are still the ones this process opened.

After ``rm -rf``, a move or a replacement of the state folder, a running
engine must write nothing more: not into a new state, nor SQLite pages into a
file that is no longer its database.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path


class StateLost(Exception):
    """The state folder or its database is no longer the one this process opened (deleted, moved or replaced)."""


SQLITE_HEADER = b"SQLite format 3\0"


def identity(database: Path) -> tuple[int, int, int, int, bool] | None:
    """(device, inode) of the state folder and of the database at their paths, and whether the database
    still starts with a SQLite header; None when either path is gone."""
    try:
        folder, file = os.stat(database.parent), os.stat(database)
    except OSError:
        return None
    return (folder.st_dev, folder.st_ino, file.st_dev, file.st_ino, _header(database) == SQLITE_HEADER)


def _header(database: Path) -> bytes | None:
    """The first bytes of ``database``, read through a descriptor SQLite already holds.

    Opening and closing the file here would drop every POSIX lock this process
    holds on it (closing any descriptor of a file does), SQLite's included,
    and let another process write under a reader's feet. So the bytes are read
    with ``pread`` on SQLite's own descriptor, found in ``/proc/self/fd``; None
    where there is no such listing.
    """
    target = os.path.realpath(database)
    try:
        entries = list(os.scandir("/proc/self/fd"))
    except OSError:
        return None
    for entry in entries:
        try:
            if os.readlink(entry.path) == target:
                return os.pread(int(entry.name), len(SQLITE_HEADER), 0)
        except (OSError, ValueError):
            continue
    return None


SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE = 1006


def keep_wal_at_close(db: sqlite3.Connection, path: Path) -> None:
    """Stop SQLite from writing the WAL back into the database file when ``db`` closes.

    The file under that name is no longer the store (replaced in place, say):
    a checkpoint would write pages into it. Python 3.12 offers ``setconfig``;
    on 3.11 the connection's handle is reached through ctypes, and used only
    when SQLite confirms it is the handle of ``path``.
    """
    if hasattr(db, "setconfig"):
        db.setconfig(SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, True)
        return
    try:
        import _sqlite3
        import ctypes

        library = ctypes.CDLL(_sqlite3.__file__)
        library.sqlite3_db_filename.restype = ctypes.c_char_p
        library.sqlite3_db_filename.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        library.sqlite3_db_config.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
        handle = ctypes.c_void_p.from_address(id(db) + object.__basicsize__)  # CPython: the first field after the header
        if library.sqlite3_db_filename(handle, b"main") == os.fsencode(path.resolve()):
            library.sqlite3_db_config(handle, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, None)
    except (OSError, AttributeError, ValueError):
        pass
