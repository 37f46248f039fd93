"""The state store: one SQLite database in WAL mode under the state folder.

It holds the ingested-file ledger, per-batch results, snapshots, the serving
pointer's history, each model's current state, commands sent by other
processes, and an append-only audit log of events. Every write is one
transaction, so a crash at any point leaves a consistent store. All SQL is
parameterised.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.events import displayable
from app.label_ledger import LABEL_INDEXES, LABEL_TABLES

SCHEMA_VERSION = 5  # PRAGMA user_version; 2: results.trainable; 3: files.ctime_ns and files.inode; 4: commands.expires, reading; 5: the label tables
TABLES = """
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,             -- a name that is not UTF-8 is kept as its bytes (a BLOB)
    sha256 TEXT,
    size INTEGER,
    mtime_ns INTEGER,
    status TEXT NOT NULL,           -- ingested | labels (a label file) | quarantined | duplicate | skipped
    reason TEXT NOT NULL DEFAULT '',
    rows INTEGER NOT NULL DEFAULT 0,
    labeled INTEGER NOT NULL DEFAULT 0,
    seen_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    file_id INTEGER NOT NULL REFERENCES files(id),
    model TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (file_id, model)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    kind TEXT NOT NULL,
    model TEXT,
    file TEXT,
    message TEXT NOT NULL,
    data TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS snapshots (
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    parent INTEGER,
    created REAL NOT NULL,
    status TEXT NOT NULL,           -- serving | retired | rejected | failed | rolled_back | candidate
    reason TEXT NOT NULL DEFAULT '',
    path TEXT,
    sha256 TEXT,
    data TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (model, version)
);
CREATE TABLE IF NOT EXISTS serving (
    id INTEGER PRIMARY KEY,
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    time REAL NOT NULL,
    reason TEXT NOT NULL,           -- promoted | rollback | manual | auto_rollback | bootstrap
    detail TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS model_state (
    model TEXT PRIMARY KEY,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS commands (
    id INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    kind TEXT NOT NULL,
    model TEXT,
    args TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL DEFAULT 'pending',   -- pending | taken | done | failed | expired
    result TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS reading (          -- files being read: a row left behind means the process died reading it
    name TEXT PRIMARY KEY,
    size INTEGER,
    mtime_ns INTEGER,
    attempts INTEGER NOT NULL,
    started REAL NOT NULL
);
""" + LABEL_TABLES
# Columns added since the first release, oldest first: (table, column, definition). A store of an
# earlier version gains the ones it lacks; the tables above never change again.
ADDED_COLUMNS = (
    ("results", "trainable", "INTEGER GENERATED ALWAYS AS (json_extract(data, '$.trainable')) VIRTUAL"),
    ("files", "ctime_ns", "INTEGER"),
    ("files", "inode", "INTEGER"),
    ("commands", "expires", "REAL"),  # not taken by then: expired, never carried out (earlier rows: never)
)
INDEXES = """
CREATE INDEX IF NOT EXISTS files_sha ON files(sha256);
CREATE INDEX IF NOT EXISTS files_name ON files(name, size, mtime_ns);
CREATE INDEX IF NOT EXISTS results_model ON results(model, file_id);
CREATE INDEX IF NOT EXISTS serving_model ON serving(model, id);
CREATE INDEX IF NOT EXISTS results_trainable ON results(model, trainable, file_id);
CREATE INDEX IF NOT EXISTS commands_status ON commands(status);
""" + LABEL_INDEXES


@dataclass(frozen=True)
class FileStat:
    """What identifies a file's version on disk, short of reading it."""

    size: int | None
    mtime_ns: int | None
    ctime_ns: int | None
    inode: int | None

    @classmethod
    def of(cls, stat: os.stat_result) -> "FileStat":
        return cls(stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)


@dataclass(frozen=True)
class FileRecord:
    id: int
    name: str
    sha256: str | None
    status: str
    reason: str
    rows: int
    labeled: bool
    seen_at: float


@dataclass(frozen=True)
class SnapshotRecord:
    model: str
    version: int
    parent: int | None
    created: float
    status: str
    reason: str
    path: str | None
    sha256: str | None
    data: dict[str, Any]


@dataclass(frozen=True)
class ServingChange:
    model: str
    version: int
    time: float
    reason: str
    detail: str


@dataclass(frozen=True)
class StoredEvent:
    id: int
    time: float
    kind: str
    model: str | None
    file: str | None
    message: str
    data: dict[str, Any]


class StoreIncompatible(Exception):
    """``state.db`` was written by a newer driftdeck, or is not a driftdeck store; the message says which."""


class StateLost(Exception):
    """The state folder or its database is no longer the one this process opened (deleted, moved or replaced)."""


class Store:
    """Thread-safe access to ``state.db``; one connection guarded by a lock.

    Other processes (the CLI while ``watch`` runs) open the same file; SQLite's
    WAL mode and a busy timeout let them take turns. Before every write the
    store checks that its folder and database are still the ones it opened
    (device and inode, and a SQLite header): once they are not, it writes
    nothing more, not even at close (see :class:`StateLost`). ``read_only``
    opens it for commands that only read: nothing on disk changes, not even a
    migration.
    """

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self.lost: str | None = None
        try:
            self._db = _open_read_only(self.path) if read_only else self._open_for_writing()
        except sqlite3.DatabaseError as error:
            raise sqlite3.DatabaseError(f"{self.path}: {error}") from None
        self._db.row_factory = sqlite3.Row
        self._identity = None if read_only else _identity(self.path)

    def _open_for_writing(self) -> sqlite3.Connection:
        self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            with self._lock:
                self._open_schema()
        except (sqlite3.DatabaseError, StoreIncompatible):
            self._db.close()
            raise
        return self._db

    def _open_schema(self) -> None:
        """Create a new store, or check and migrate an existing one, then stamp its schema version."""
        version = _schema_version(self._db, self.path)
        if version == SCHEMA_VERSION:
            self._check_columns()
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for statement in TABLES.split(";"):
                self._db.execute(statement)
            self._migrate()
            self._check_columns()
            for statement in INDEXES.split(";"):
                self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _migrate(self) -> None:
        """Bring a store written by an earlier driftdeck up to this schema: add the columns it lacks."""
        for table, column, definition in ADDED_COLUMNS:
            if column not in _columns(self._db, table):
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")

    def _check_columns(self) -> None:
        """Refuse a store whose tables lack a column driftdeck uses, or demand a value driftdeck never gives."""
        for table, expected in _expected_columns().items():
            present = {row["name"]: row for row in self._db.execute(f"PRAGMA table_xinfo({table})")}
            missing = [column for column in expected if column not in present]
            demanding = [name for name, row in present.items()
                         if name not in expected and row["notnull"] and row["dflt_value"] is None]
            if missing or demanding:
                what = (f"lacks column(s) {', '.join(missing)}" if missing else
                        f"has column(s) {', '.join(demanding)} that driftdeck cannot fill")
                raise StoreIncompatible(
                    f"{self.path} is not a driftdeck store this version can use: table {table} {what};"
                    " stop any running watcher and move the state folder aside to start afresh")

    def check_identity(self) -> None:
        """Raise StateLost unless the state folder and database are still the ones opened.

        Called before every write (commits, snapshot and serving files): after
        ``rm -rf``, a move or a replacement, a running engine must not write
        into a new state, nor SQLite pages into a file that is not its database.
        """
        if self.lost is None and (now := _identity(self.path)) != self._identity:
            if now is None:  # gone from its path, perhaps for a moment (the data folder around it renamed)
                raise StateLost(f"the state folder {self.path.parent} or its database is gone (deleted or moved)")
            self.lost = (f"the state folder {self.path.parent} or its database was replaced while driftdeck ran;"
                         " stopped without writing to it again")
            _keep_wal_at_close(self._db, self.path)
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

    # --- the ledger -------------------------------------------------------

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
        return _file(rows[0]) if rows else None

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
        return _file(rows[0]) if rows else None

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
        return [_file(row) for row in self._query(sql, params)]

    def file(self, file_id: int) -> FileRecord:
        return _file(self._query("SELECT * FROM files WHERE id = ?", (file_id,))[0])

    def counts(self) -> dict[str, int]:
        rows = self._query("SELECT status, COUNT(*) AS n FROM files GROUP BY status")
        return {row["status"]: row["n"] for row in rows}

    # --- per-batch results ------------------------------------------------

    def save_result(self, file_id: int, model: str, data: dict[str, Any], db: sqlite3.Connection | None = None) -> None:
        sql = "INSERT OR REPLACE INTO results (file_id, model, data) VALUES (?, ?, ?)"
        params = (file_id, model, _dumps(data))
        if db is not None:
            db.execute(sql, params)
            return
        with self.transaction() as tx:
            tx.execute(sql, params)

    def results(self, model: str | None = None, limit: int | None = None) -> list[tuple[int, str, dict[str, Any]]]:
        """``(file_id, model, data)`` in ingestion order; ``limit`` keeps the newest."""
        sql = "SELECT file_id, model, data FROM results"
        params: tuple = ()
        if model is not None:
            sql += " WHERE model = ? ORDER BY file_id DESC"
            params = (model,)
        else:
            sql += " ORDER BY file_id DESC, model"
        if limit is not None:
            sql += " LIMIT ?"
            params += (limit,)
        rows = self._query(sql, params)
        return [(row["file_id"], row["model"], json.loads(row["data"])) for row in reversed(rows)]

    def results_of(self, file_id: int) -> list[tuple[int, str, dict[str, Any]]]:
        """``(file_id, model, data)`` of one batch, one per model."""
        rows = self._query("SELECT file_id, model, data FROM results WHERE file_id = ? ORDER BY model", (file_id,))
        return [(row["file_id"], row["model"], json.loads(row["data"])) for row in rows]

    def trainable_ids(self, model: str, newest: int | None = None) -> list[int]:
        """Batches ``model`` may learn from (their result says ``trainable``), oldest first.

        ``newest`` keeps only that many of the latest: an index serves it, so
        the cost does not grow with the history.
        """
        sql = "SELECT file_id FROM results WHERE model = ? AND trainable = 1 ORDER BY file_id DESC"
        params: tuple = (model,)
        if newest is not None:
            sql += " LIMIT ?"
            params += (newest,)
        return [row["file_id"] for row in reversed(self._query(sql, params))]

    # --- events -------------------------------------------------------------

    def append_event(
        self, kind: str, message: str, *, model: str | None, file: str | None, data: dict[str, Any], when: float
    ) -> int:
        with self.transaction() as db:
            return db.execute(
                "INSERT INTO events (time, kind, model, file, message, data) VALUES (?, ?, ?, ?, ?, ?)",
                (when, kind, model, None if file is None else displayable(file), displayable(message), _dumps(data)),
            ).lastrowid

    def events(self, limit: int = 500, after_id: int = 0) -> list[StoredEvent]:
        rows = self._query(
            "SELECT * FROM (SELECT * FROM events WHERE id > ? ORDER BY id DESC LIMIT ?) ORDER BY id",
            (after_id, limit),
        )
        return [
            StoredEvent(row["id"], row["time"], row["kind"], row["model"], row["file"], row["message"], json.loads(row["data"]))
            for row in rows
        ]

    # --- snapshots and the serving pointer -----------------------------------

    def next_version(self, model: str) -> int:
        rows = self._query("SELECT COALESCE(MAX(version), 0) + 1 AS v FROM snapshots WHERE model = ?", (model,))
        return rows[0]["v"]

    def add_snapshot(self, record: SnapshotRecord, db: sqlite3.Connection | None = None) -> None:
        sql = (
            "INSERT INTO snapshots (model, version, parent, created, status, reason, path, sha256, data)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        params = (
            record.model, record.version, record.parent, record.created, record.status,
            record.reason, record.path, record.sha256, _dumps(record.data),
        )
        if db is not None:
            db.execute(sql, params)
            return
        with self.transaction() as tx:
            tx.execute(sql, params)

    def set_snapshot_status(self, model: str, version: int, status: str, reason: str | None = None,
                            db: sqlite3.Connection | None = None) -> None:
        target = db or self._db
        with self._lock:
            if reason is None:
                target.execute("UPDATE snapshots SET status = ? WHERE model = ? AND version = ?", (status, model, version))
            else:
                target.execute(
                    "UPDATE snapshots SET status = ?, reason = ? WHERE model = ? AND version = ?",
                    (status, reason, model, version),
                )

    def snapshot(self, model: str, version: int) -> SnapshotRecord | None:
        rows = self._query("SELECT * FROM snapshots WHERE model = ? AND version = ?", (model, version))
        return _snapshot(rows[0]) if rows else None

    def snapshots(self, model: str | None = None) -> list[SnapshotRecord]:
        if model is None:
            rows = self._query("SELECT * FROM snapshots ORDER BY model, version")
        else:
            rows = self._query("SELECT * FROM snapshots WHERE model = ? ORDER BY version", (model,))
        return [_snapshot(row) for row in rows]

    def set_serving(self, model: str, version: int, reason: str, detail: str = "",
                    db: sqlite3.Connection | None = None) -> None:
        sql = "INSERT INTO serving (model, version, time, reason, detail) VALUES (?, ?, ?, ?, ?)"
        params = (model, version, time.time(), reason, detail)
        if db is not None:
            db.execute(sql, params)
            return
        with self.transaction() as tx:
            tx.execute(sql, params)

    def serving_version(self, model: str) -> int | None:
        rows = self._query("SELECT version FROM serving WHERE model = ? ORDER BY id DESC LIMIT 1", (model,))
        return rows[0]["version"] if rows else None

    def serving_history(self, model: str) -> list[ServingChange]:
        rows = self._query("SELECT * FROM serving WHERE model = ? ORDER BY id", (model,))
        return [ServingChange(r["model"], r["version"], r["time"], r["reason"], r["detail"]) for r in rows]

    def serving_at(self, model: str, when: float) -> int | None:
        """The version that served ``model`` at time ``when`` (seconds since the epoch)."""
        rows = self._query(
            "SELECT version FROM serving WHERE model = ? AND time <= ? ORDER BY id DESC LIMIT 1", (model, when)
        )
        return rows[0]["version"] if rows else None

    # --- model state ---------------------------------------------------------

    def save_model_state(self, model: str, data: dict[str, Any], db: sqlite3.Connection | None = None) -> None:
        sql = "INSERT OR REPLACE INTO model_state (model, data) VALUES (?, ?)"
        if db is not None:
            db.execute(sql, (model, _dumps(data)))
            return
        with self.transaction() as tx:
            tx.execute(sql, (model, _dumps(data)))

    def model_state(self, model: str) -> dict[str, Any]:
        rows = self._query("SELECT data FROM model_state WHERE model = ?", (model,))
        return json.loads(rows[0]["data"]) if rows else {}

    # --- commands from other processes ---------------------------------------

    def add_command(self, kind: str, model: str | None, args: dict[str, Any], expires: float) -> int:
        """Leave a command for the process that watches the folder; not taken by ``expires``, it never runs."""
        with self.transaction() as db:
            return db.execute(
                "INSERT INTO commands (time, kind, model, args, expires) VALUES (?, ?, ?, ?, ?)",
                (time.time(), kind, model, _dumps(args), expires),
            ).lastrowid

    def take_commands(self, now: float) -> list[tuple[int, str, str | None, dict[str, Any]]]:
        """Claim the commands still awaited (oldest first); expire those whose asker stopped waiting."""
        if not self._query("SELECT 1 FROM commands WHERE status = 'pending' LIMIT 1"):
            return []  # the usual case, checked between files: no write transaction
        with self.transaction() as db:
            db.execute(
                "UPDATE commands SET status = 'expired', result = 'not taken in time; never carried out'"
                " WHERE status = 'pending' AND (expires IS NULL OR expires <= ?)", (now,))
            rows = db.execute("SELECT * FROM commands WHERE status = 'pending' ORDER BY id").fetchall()
            db.execute("UPDATE commands SET status = 'taken' WHERE status = 'pending'")
        return [(r["id"], r["kind"], r["model"], json.loads(r["args"])) for r in rows]

    def expire_command(self, command_id: int) -> bool:
        """Withdraw a command nobody has taken yet; False if the watching process took it first."""
        with self.transaction() as db:
            return db.execute(
                "UPDATE commands SET status = 'expired', result = 'withdrawn by its asker; never carried out'"
                " WHERE id = ? AND status = 'pending'", (command_id,)).rowcount == 1

    def finish_command(self, command_id: int, ok: bool, result: str) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE commands SET status = ?, result = ? WHERE id = ?",
                ("done" if ok else "failed", result, command_id),
            )

    def command_outcome(self, command_id: int) -> tuple[str, str]:
        row = self._query("SELECT status, result FROM commands WHERE id = ?", (command_id,))[0]
        return row["status"], row["result"]


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
        _schema_version(db, path)
    except (sqlite3.DatabaseError, StoreIncompatible):
        db.close()
        raise
    return db


class _Transaction:
    def __init__(self, store: Store) -> None:
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


def _dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, default=_json_default, allow_nan=True)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _name_value(name: str) -> str | bytes:
    """A file name as the ledger keeps it: text, or its bytes when it is not valid UTF-8 (lossless)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(name)
    return name


def _file(row: sqlite3.Row) -> FileRecord:
    name = row["name"]
    return FileRecord(
        row["id"], os.fsdecode(name) if isinstance(name, bytes) else name, row["sha256"], row["status"], row["reason"], row["rows"], bool(row["labeled"]), row["seen_at"]
    )


def _snapshot(row: sqlite3.Row) -> SnapshotRecord:
    return SnapshotRecord(
        row["model"], row["version"], row["parent"], row["created"], row["status"], row["reason"],
        row["path"], row["sha256"], json.loads(row["data"]),
    )



def _schema_version(db: sqlite3.Connection, path: Path) -> int:
    """The store's schema version; StoreIncompatible when a newer driftdeck wrote it."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreIncompatible(
            f"{path} was written by a newer driftdeck (store schema version {version}; this driftdeck reads"
            f" up to {SCHEMA_VERSION}): upgrade driftdeck, or stop any running watcher and move the state folder aside")
    return version


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA table_xinfo({table})")}


@functools.cache
def _expected_columns() -> dict[str, tuple[str, ...]]:
    """Every table's columns at this schema version, read from a store built in memory."""
    db = sqlite3.connect(":memory:")
    try:
        db.executescript(TABLES)
        for table, column, definition in ADDED_COLUMNS:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {table: tuple(row[1] for row in db.execute(f"PRAGMA table_xinfo({table})")) for table in tables}
    finally:
        db.close()


SQLITE_HEADER = b"SQLite format 3\0"


def _identity(database: Path) -> tuple[int, int, int, int, bool] | None:
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


def _keep_wal_at_close(db: sqlite3.Connection, path: Path) -> None:
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
