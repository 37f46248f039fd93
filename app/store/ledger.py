"""The file ledger: every file seen and what became of it (a batch excluded after the fact too), and the
files being read right now.

A name that is not valid UTF-8 is kept as its bytes, so no name is lost.
"""

from __future__ import annotations

import os
import sqlite3
import time
from typing import Any

from app.events import displayable
from app.store.connection import StoreConnection
from app.store.records import FileRecord, FileStat


class Ledger(StoreConnection):
    """The ``files``, ``exclusions`` and ``reading`` tables."""

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
        """The first file with this content that was taken in (a batch, an excluded batch, a label file): never twice."""
        rows = self._query(
            "SELECT * FROM files WHERE sha256 = ? AND status IN ('ingested', 'excluded', 'labels') ORDER BY id LIMIT 1",
            (sha256,)
        )
        return _file_record(rows[0]) if rows else None

    def exclude_file(self, file_id: int, reason: str, asker: str) -> None:
        """Mark an ingested batch excluded, with why and who asked, its repair still to do; ValueError if it is
        not ingested (any more)."""
        with self.transaction() as db:
            if db.execute("UPDATE files SET status = 'excluded' WHERE id = ? AND status = 'ingested'",
                          (file_id,)).rowcount != 1:
                raise ValueError(f"ledger entry {file_id} is not an ingested batch")
            db.execute("INSERT OR REPLACE INTO exclusions (file_id, reason, asker, time, repair_pending)"
                       " VALUES (?, ?, ?, ?, 1)", (file_id, displayable(reason), displayable(asker), time.time()))

    def exclusion_repaired(self, file_id: int) -> None:
        """The models' repair after excluding ``file_id`` is done: a restart has nothing left to finish."""
        with self.transaction() as db:
            db.execute("UPDATE exclusions SET repair_pending = 0 WHERE file_id = ?", (file_id,))

    def unrepaired_exclusions(self) -> list[int]:
        """The excluded batches (ledger ids, oldest first) whose repair of the models was interrupted."""
        return [row["file_id"] for row in
                self._query("SELECT file_id FROM exclusions WHERE repair_pending = 1 ORDER BY file_id")]

    def include_file(self, file_id: int) -> None:
        """Take an excluded batch back; ValueError if it is not excluded."""
        with self.transaction() as db:
            if db.execute("UPDATE files SET status = 'ingested' WHERE id = ? AND status = 'excluded'",
                          (file_id,)).rowcount != 1:
                raise ValueError(f"ledger entry {file_id} is not an excluded batch")
            db.execute("DELETE FROM exclusions WHERE file_id = ?", (file_id,))

    def exclusions(self) -> dict[int, dict[str, Any]]:
        """Every exclusion by ledger id: ``reason``, ``by`` and ``time`` (none in a store older than them)."""
        if not self._query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'exclusions'"):
            return {}  # a store of an earlier schema, opened read-only
        return {row["file_id"]: {"reason": row["reason"], "by": row["asker"], "time": row["time"]}
                for row in self._query("SELECT * FROM exclusions ORDER BY file_id")}

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
