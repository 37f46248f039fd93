"""The store's one SQLite connection: opening it (for writing, or read-only), its lock and its transactions.

Each part of the store (:mod:`.ledger`, :mod:`.results`, :mod:`.history`,
:mod:`.audit`, :mod:`.inbox`) is a :class:`StoreConnection` with the queries
of its tables; :class:`app.store.Store` is all of them on one connection.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from app.store.identity import StateLost, identity, keep_wal_at_close
from app.store.schema import TABLES, StoreIncompatible, open_schema, schema_version


class StoreConnection:
    """Thread-safe access to ``state.db``: one connection guarded by a lock (see :class:`app.store.Store`)."""

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self.lost: str | None = None
        try:
            self._db = _open_read_only(self.path) if read_only else self._open_for_writing()
        except sqlite3.DatabaseError as error:
            raise sqlite3.DatabaseError(f"{self.path}: {error}") from None
        self._db.row_factory = sqlite3.Row
        self._identity = None if read_only else identity(self.path)

    def _open_for_writing(self) -> sqlite3.Connection:
        self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            with self._lock:
                open_schema(self._db, self.path)
        except (sqlite3.DatabaseError, StoreIncompatible):
            self._db.close()
            raise
        return self._db

    def check_identity(self) -> None:
        """Raise StateLost unless the state folder and database are still the ones opened.

        Called before every write (commits, snapshot and serving files): after
        ``rm -rf``, a move or a replacement, a running engine must not write
        into a new state, nor SQLite pages into a file that is not its database.
        """
        if self.lost is None and (now := identity(self.path)) != self._identity:
            if now is None:  # gone from its path, perhaps for a moment (the data folder around it renamed)
                raise StateLost(f"the state folder {self.path.parent} or its database is gone (deleted or moved)")
            self.lost = (f"the state folder {self.path.parent} or its database was replaced while driftdeck ran;"
                         " stopped without writing to it again")
            keep_wal_at_close(self._db, self.path)
        if self.lost is not None:
            raise StateLost(self.lost)

    def close(self) -> None:
        """Close the store (a second call does nothing)."""
        with self._lock:
            self._db.close()

    def transaction(self) -> "_Transaction":
        """``with store.transaction() as db:`` — one atomic write (BEGIN IMMEDIATE ... COMMIT)."""
        return _Transaction(self)

    def _query(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def read(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        """One query that changes nothing, for a module that owns its own tables (:mod:`app.label_ledger`)."""
        return self._query(sql, params)


def _open_read_only(path: Path) -> sqlite3.Connection:
    """A connection that cannot change ``path``, nor create anything beside it.

    SQLite opens a WAL database read-only by creating its ``-wal`` and
    ``-shm`` files when they are missing; they are missing only when no
    writer has the database open and every change is in the main file, which
    is then read as immutable. A store that does not exist yet reads as empty.
    """
    if not path.exists():
        db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        db.executescript(TABLES)
    else:
        in_use = Path(f"{path}-wal").exists()
        uri = f"{path.resolve().as_uri()}?mode=ro{'' if in_use else '&immutable=1'}"
        db = sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False, isolation_level=None)
    try:
        db.execute("PRAGMA query_only=ON")
        db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # not a database: fail here, not mid-report
        schema_version(db, path)
    except (sqlite3.DatabaseError, StoreIncompatible):
        db.close()
        raise
    return db


class _Transaction:
    def __init__(self, store: StoreConnection) -> None:
        self.store = store

    def __enter__(self) -> sqlite3.Connection:
        self.store._lock.acquire()
        try:
            self.store.check_identity()
            self.store._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.store._lock.release()
            raise
        return self.store._db

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.store._db.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self.store._lock.release()
