"""The file ledger: every file seen and what became of it, and the files being read right now.

A name that is not valid UTF-8 is kept as its bytes, so no name is lost.
"""

from __future__ import annotations

import os
import sqlite3
import time

from app.events import displayable
from app.store.connection import StoreConnection
from app.store.records import FileRecord, FileStat


class Ledger(StoreConnection):
    """The ``files`` and ``reading`` tables."""

    def record_file(
        self,
        name: str,
        sha256: str | None,
        status: str,
        *,
        reason: str = "",
        rows: int = 0,
        labeled: bool = False,
        seen: FileStat | None = None,
        db: sqlite3.Connection | None = None,
    ) -> int:
        """Add a ledger row; ``seen`` is the file's stat when it was read (what :meth:`knows_file` compares)."""
        seen = seen or FileStat(None, None, None, None)
        sql = (
            "INSERT INTO files (name, sha256, size, mtime_ns, ctime_ns, inode, status, reason, rows, labeled, seen_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        params = (_name_value(name), sha256, seen.size, seen.mtime_ns, seen.ctime_ns, seen.inode, status,
                  displayable(reason), rows, int(labeled), time.time())
        if db is not None:
            return db.execute(sql, params).lastrowid
        with self.transaction() as tx:
            return tx.execute(sql, params).lastrowid

    def file_by_sha(self, sha256: str) -> FileRecord | None:
        rows = self._query(
            "SELECT * FROM files WHERE sha256 = ? AND status IN ('ingested', 'labels') ORDER BY id LIMIT 1", (sha256,)
        )
        return _file_record(rows[0]) if rows else None

    def knows_file(self, name: str, seen: FileStat) -> bool:
        """True if this name was already handled as it is now: same size and mtime, and the same ctime and
        inode where the ledger has them (a copy that keeps the mtime, ``cp -p``, still changes the ctime)."""
        rows = self._query(
            "SELECT 1 FROM files WHERE name = ? AND size = ? AND mtime_ns = ?"
            " AND (ctime_ns IS NULL OR ctime_ns = ?) AND (inode IS NULL OR inode = ?) LIMIT 1",
            (_name_value(name), seen.size, seen.mtime_ns, seen.ctime_ns, seen.inode),
        )
        return bool(rows)

    def begin_reading(self, name: str, size: int, mtime_ns: int) -> int:
        """Mark ``name`` as being read; return how many earlier reads of this same file never finished.

        The mark is committed before the file is touched, so a process that
        dies reading it (an abort inside a parser) leaves it behind.
        """
        with self.transaction() as tx:
            row = tx.execute("SELECT size, mtime_ns, attempts FROM reading WHERE name = ?", (_name_value(name),)).fetchone()
            died = row["attempts"] if row is not None and (row["size"], row["mtime_ns"]) == (size, mtime_ns) else 0
            tx.execute("INSERT OR REPLACE INTO reading (name, size, mtime_ns, attempts, started) VALUES (?, ?, ?, ?, ?)",
                       (_name_value(name), size, mtime_ns, died + 1, time.time()))
        return died

    def end_reading(self, name: str) -> None:
        with self.transaction() as tx:
            tx.execute("DELETE FROM reading WHERE name = ?", (_name_value(name),))

    def same_file(self, name: str, sha256: str) -> FileRecord | None:
        """The newest ledger row of this name with this content: the same file, seen again (touched, copied over)."""
        rows = self._query("SELECT * FROM files WHERE name = ? AND sha256 = ? ORDER BY id DESC LIMIT 1",
                           (_name_value(name), sha256))
        return _file_record(rows[0]) if rows else None

    def refresh_file(self, file_id: int, seen: FileStat) -> None:
        """Record the stat a known file has now, so it is not read again at the next start."""
        with self.transaction() as db:
            db.execute("UPDATE files SET size = ?, mtime_ns = ?, ctime_ns = ?, inode = ? WHERE id = ?",
                       (seen.size, seen.mtime_ns, seen.ctime_ns, seen.inode, file_id))

    def files(self, status: str | None = None, limit: int | None = None) -> list[FileRecord]:
        sql = "SELECT * FROM files"
        params: tuple = ()
        if status is not None:
            sql += " WHERE status = ?"
            params = (status,)
        sql += " ORDER BY id"
        if limit is not None:
            sql = f"SELECT * FROM ({sql.replace(' ORDER BY id', ' ORDER BY id DESC')} LIMIT ?) ORDER BY id"
            params = params + (limit,)
        return [_file_record(row) for row in self._query(sql, params)]

    def file(self, file_id: int) -> FileRecord:
        return _file_record(self._query("SELECT * FROM files WHERE id = ?", (file_id,))[0])

    def counts(self) -> dict[str, int]:
        rows = self._query("SELECT status, COUNT(*) AS n FROM files GROUP BY status")
        return {row["status"]: row["n"] for row in rows}


def _name_value(name: str) -> str | bytes:
    """A file name as the ledger keeps it: text, or its bytes when it is not valid UTF-8 (lossless)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(name)
    return name


def _file_record(row: sqlite3.Row) -> FileRecord:
    name = row["name"]
    return FileRecord(
        row["id"], os.fsdecode(name) if isinstance(name, bytes) else name, row["sha256"], row["status"], row["reason"], row["rows"], bool(row["labeled"]), row["seen_at"]
    )
