"""The state store: one SQLite database in WAL mode under the state folder.

It holds the ingested-file ledger, per-batch results, snapshots, the serving
pointer's history, each model's current state, commands sent by other
processes, and an append-only audit log of events. Every write is one
transaction, so a crash at any point leaves a consistent store. All SQL is
parameterised.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    sha256 TEXT,
    size INTEGER,
    mtime_ns INTEGER,
    status TEXT NOT NULL,           -- ingested | quarantined | duplicate
    reason TEXT NOT NULL DEFAULT '',
    rows INTEGER NOT NULL DEFAULT 0,
    labeled INTEGER NOT NULL DEFAULT 0,
    seen_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS files_sha ON files(sha256);
CREATE INDEX IF NOT EXISTS files_name ON files(name, size, mtime_ns);
CREATE TABLE IF NOT EXISTS results (
    file_id INTEGER NOT NULL REFERENCES files(id),
    model TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (file_id, model)
);
CREATE INDEX IF NOT EXISTS results_model ON results(model, file_id);
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
CREATE INDEX IF NOT EXISTS serving_model ON serving(model, id);
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
    result TEXT NOT NULL DEFAULT '',
    expires REAL                              -- not taken by then: expired, never carried out
);
CREATE INDEX IF NOT EXISTS commands_status ON commands(status);
"""


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


class Store:
    """Thread-safe access to ``state.db``; one connection guarded by a lock.

    Other processes (the CLI while ``watch`` runs) open the same file; SQLite's
    WAL mode and a busy timeout let them take turns. ``read_only`` opens it for
    commands that only read: nothing on disk changes, not even a migration.
    """

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        try:
            self._db = _open_read_only(self.path) if read_only else self._open_for_writing()
        except sqlite3.DatabaseError as error:
            raise sqlite3.DatabaseError(f"{self.path}: {error}") from None
        self._db.row_factory = sqlite3.Row

    def _open_for_writing(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            db.executescript(SCHEMA)
            _migrate(db)
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def transaction(self) -> "_Transaction":
        """``with store.transaction() as db:`` — one atomic write (BEGIN IMMEDIATE ... COMMIT)."""
        return _Transaction(self)

    def _query(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

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
        size: int | None = None,
        mtime_ns: int | None = None,
        db: sqlite3.Connection | None = None,
    ) -> int:
        sql = (
            "INSERT INTO files (name, sha256, size, mtime_ns, status, reason, rows, labeled, seen_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        params = (name, sha256, size, mtime_ns, status, reason, rows, int(labeled), time.time())
        if db is not None:
            return db.execute(sql, params).lastrowid
        with self.transaction() as tx:
            return tx.execute(sql, params).lastrowid

    def file_by_sha(self, sha256: str) -> FileRecord | None:
        rows = self._query(
            "SELECT * FROM files WHERE sha256 = ? AND status = 'ingested' ORDER BY id LIMIT 1", (sha256,)
        )
        return _file(rows[0]) if rows else None

    def knows_file(self, name: str, size: int, mtime_ns: int) -> bool:
        """True if this exact name, size and mtime were already handled (skips hashing on restart)."""
        rows = self._query(
            "SELECT 1 FROM files WHERE name = ? AND size = ? AND mtime_ns = ? LIMIT 1", (name, size, mtime_ns)
        )
        return bool(rows)

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
                (when, kind, model, file, message, _dumps(data)),
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


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a store written by an earlier driftdeck up to this schema (idempotent)."""
    columns = {row[1] for row in db.execute("PRAGMA table_xinfo(results)")}
    if "trainable" not in columns:
        db.execute(
            "ALTER TABLE results ADD COLUMN trainable INTEGER"
            " GENERATED ALWAYS AS (json_extract(data, '$.trainable')) VIRTUAL"
        )
    db.execute("CREATE INDEX IF NOT EXISTS results_trainable ON results(model, trainable, file_id)")
    if "expires" not in {row[1] for row in db.execute("PRAGMA table_xinfo(commands)")}:
        db.execute("ALTER TABLE commands ADD COLUMN expires REAL")  # earlier rows have none: never carried out


def _open_read_only(path: Path) -> sqlite3.Connection:
    """A connection that cannot change ``path``, nor create anything beside it.

    SQLite opens a WAL database read-only by creating its ``-wal`` and
    ``-shm`` files when they are missing; they are missing only when no
    writer has the database open and every change is in the main file, which
    is then read as immutable. A store that does not exist yet reads as empty.
    """
    if not path.exists():
        db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        db.executescript(SCHEMA)
    else:
        in_use = Path(f"{path}-wal").exists()
        uri = f"{path.resolve().as_uri()}?mode=ro{'' if in_use else '&immutable=1'}"
        db = sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False, isolation_level=None)
    try:
        db.execute("PRAGMA query_only=ON")
        db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # not a database: fail here, not mid-report
    except sqlite3.DatabaseError:
        db.close()
        raise
    return db


class _Transaction:
    def __init__(self, store: Store) -> None:
        self.store = store

    def __enter__(self) -> sqlite3.Connection:
        self.store._lock.acquire()
        self.store._db.execute("BEGIN IMMEDIATE")
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


def _file(row: sqlite3.Row) -> FileRecord:
    return FileRecord(
        row["id"], row["name"], row["sha256"], row["status"], row["reason"], row["rows"], bool(row["labeled"]), row["seen_at"]
    )


def _snapshot(row: sqlite3.Row) -> SnapshotRecord:
    return SnapshotRecord(
        row["model"], row["version"], row["parent"], row["created"], row["status"], row["reason"],
        row["path"], row["sha256"], json.loads(row["data"]),
    )

