"""The store's tables and their versions: creating a new store, migrating an older one, refusing a foreign one.

The tables of the first release never change; later columns are added by
:data:`ADDED_COLUMNS`, and ``PRAGMA user_version`` records how far a store has come.
"""

from __future__ import annotations

import functools
import sqlite3
from pathlib import Path

from app.label_ledger import LABEL_INDEXES, LABEL_TABLES

SCHEMA_VERSION = 9  # PRAGMA user_version; 2: results.trainable; 3: files.ctime_ns and files.inode; 4: commands.expires, reading; 5: the label tables; 6: exclusions; 7: exclusions.repair_pending; 8: labels_unscored; 9: the index of unlabelled rows
TABLES = """
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,             -- a name that is not UTF-8 is kept as its bytes (a BLOB)
    sha256 TEXT,
    size INTEGER,
    mtime_ns INTEGER,
    status TEXT NOT NULL,           -- ingested | excluded | labels (a label file) | quarantined | duplicate | skipped
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
CREATE TABLE IF NOT EXISTS exclusions (       -- batches excluded after the fact (files.status 'excluded'), until included again
    file_id INTEGER PRIMARY KEY REFERENCES files(id),
    reason TEXT NOT NULL DEFAULT '',
    asker TEXT NOT NULL DEFAULT '',
    time REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS reading (          -- files being read: a row left behind means the process died reading it
    name TEXT PRIMARY KEY,
    size INTEGER,
    mtime_ns INTEGER,
    attempts INTEGER NOT NULL,
    started REAL NOT NULL
);
""" + LABEL_TABLES  # the labels that come later, in label files (app.label_ledger)
# Columns added since the first release, oldest first: (table, column, definition). A store of an
# earlier version gains the ones it lacks; the tables above never change again.
ADDED_COLUMNS = (
    ("results", "trainable", "INTEGER GENERATED ALWAYS AS (json_extract(data, '$.trainable')) VIRTUAL"),
    ("files", "ctime_ns", "INTEGER"),
    ("files", "inode", "INTEGER"),
    ("commands", "expires", "REAL"),  # not taken by then: expired, never carried out (earlier rows: never)
    ("exclusions", "repair_pending", "INTEGER NOT NULL DEFAULT 0"),  # 1 until the models' repair is done (app.engine.exclusion)
)
INDEXES = """
CREATE INDEX IF NOT EXISTS files_sha ON files(sha256);
CREATE INDEX IF NOT EXISTS files_name ON files(name, size, mtime_ns);
CREATE INDEX IF NOT EXISTS results_model ON results(model, file_id);
CREATE INDEX IF NOT EXISTS serving_model ON serving(model, id);
CREATE INDEX IF NOT EXISTS results_trainable ON results(model, trainable, file_id);
CREATE INDEX IF NOT EXISTS commands_status ON commands(status);
CREATE INDEX IF NOT EXISTS files_status ON files(status);
""" + LABEL_INDEXES


class StoreIncompatible(Exception):
    """``state.db`` was written by a newer driftdeck, or is not a driftdeck store; the message says which."""


def open_schema(db: sqlite3.Connection, path: Path) -> None:
    """Create a new store, or check and migrate an existing one, then stamp its schema version."""
    version = schema_version(db, path)
    if version == SCHEMA_VERSION:
        _check_columns(db, path)
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        for statement in TABLES.split(";"):
            db.execute(statement)
        _migrate(db)
        _check_columns(db, path)
        for statement in INDEXES.split(";"):
            db.execute(statement)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a store written by an earlier driftdeck up to this schema: add the columns it lacks."""
    for table, column, definition in ADDED_COLUMNS:
        if column not in _columns(db, table):
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")


def _check_columns(db: sqlite3.Connection, path: Path) -> None:
    """Refuse a store whose tables lack a column driftdeck uses, or demand a value driftdeck never gives."""
    for table, expected in _expected_columns().items():
        present = {row["name"]: row for row in db.execute(f"PRAGMA table_xinfo({table})")}
        missing = [column for column in expected if column not in present]
        demanding = [name for name, row in present.items()
                     if name not in expected and row["notnull"] and row["dflt_value"] is None]
        if missing or demanding:
            what = (f"lacks column(s) {', '.join(missing)}" if missing else
                    f"has column(s) {', '.join(demanding)} that driftdeck cannot fill")
            raise StoreIncompatible(
                f"{path} is not a driftdeck store this version can use: table {table} {what};"
                " stop any running watcher and move the state folder aside to start afresh")


def schema_version(db: sqlite3.Connection, path: Path) -> int:
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
