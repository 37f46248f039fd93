"""Which rows have their labels: the ids of batches that came without them, and the labels that came later.

A batch with an id column and unlabelled rows leaves each of those rows in
``label_ids`` (id, batch, row). A label file's rows join them by id, in the
same transaction as the file's ledger entry:

- an id whose row has no label yet: the row is labelled (``matched``);
- an id labelled before with the same value: nothing changes (``same``);
- an id labelled before with another value: a conflict, kept for the person
  to see; the first label stands;
- an id no batch has carried: the label waits in ``labels_waiting`` for a
  batch with that id, and after ``[labels] wait_seconds`` it is reported
  unmatched and leaves the table, never dropped silently.

An id carried by several batches labels each of their rows: ids are meant to
name one row each. A batch that got labels waits in ``labels_unscored`` until
its results are scored again with them, in the transaction that saves them:
a re-score that fails, or a process that dies first, leaves it there to be
tried again. The tables are part of ``state.db`` (see :mod:`app.store`).
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

LABEL_TABLES = """
CREATE TABLE IF NOT EXISTS label_ids (       -- rows of batches that came without their label, by id
    id TEXT NOT NULL,
    file_id INTEGER NOT NULL REFERENCES files(id),
    row INTEGER NOT NULL,
    label,                                    -- text (classes) or a number (regression), NULL until labelled
    label_file INTEGER REFERENCES files(id),  -- the label file that gave it
    PRIMARY KEY (file_id, row)
);
CREATE TABLE IF NOT EXISTS labels_waiting (  -- labels for ids no batch has carried yet
    id TEXT NOT NULL,
    label NOT NULL,
    label_file INTEGER NOT NULL REFERENCES files(id),
    since REAL NOT NULL,
    PRIMARY KEY (id, label_file)
);
CREATE TABLE IF NOT EXISTS labels_unscored ( -- batches that got labels and were not scored again with them yet
    file_id INTEGER PRIMARY KEY REFERENCES files(id)
);
CREATE TABLE IF NOT EXISTS label_conflicts ( -- a row labelled again with another value (the first label stands)
    id TEXT NOT NULL,
    file_id INTEGER NOT NULL,
    kept NOT NULL,
    refused NOT NULL,
    label_file INTEGER NOT NULL REFERENCES files(id),
    time REAL NOT NULL
)"""
LABEL_INDEXES = """
CREATE INDEX IF NOT EXISTS label_ids_id ON label_ids(id);
CREATE INDEX IF NOT EXISTS label_ids_unlabelled ON label_ids(file_id) WHERE label IS NULL;
CREATE INDEX IF NOT EXISTS labels_waiting_since ON labels_waiting(since);
"""
SHOWN_IDS = 5

Read = Callable[[str, tuple], list[sqlite3.Row]]


@dataclass(frozen=True)
class LabelConflict:
    id: str
    batch: str
    kept: Any
    refused: Any


@dataclass
class LabelJoin:
    """What one label file (or one batch meeting waiting labels) did: rows labelled per batch (file id), and the rest."""

    matched: dict[int, int] = field(default_factory=dict)
    same: int = 0
    conflicts: list[LabelConflict] = field(default_factory=list)
    waiting: int = 0

    @property
    def labelled(self) -> int:
        return sum(self.matched.values())


@dataclass(frozen=True)
class Unmatched:
    """Labels of one label file that waited ``wait_seconds`` for their ids and were given up."""

    label_file: str
    rows: pd.DataFrame  # id, label

    @property
    def ids_text(self) -> str:
        ids = list(self.rows["id"])
        return ", ".join(map(repr, ids[:SHOWN_IDS])) + (f" and {len(ids) - SHOWN_IDS} more" if len(ids) > SHOWN_IDS else "")


@dataclass(frozen=True)
class BatchLabels:
    """A batch that came without all its labels: how many rows are labelled by now, and from which label files."""

    file_id: int
    name: str
    rows: int
    awaited: int  # rows that came without a label
    labelled: int  # of those, labelled since
    labels_from: list[str]
    seen_at: float

    @property
    def coverage(self) -> float:
        """Share of the batch's rows with a label: those that came with one and those given since."""
        return (self.rows - self.awaited + self.labelled) / self.rows if self.rows else 0.0


@dataclass(frozen=True)
class LabelLag:
    """The oldest batch still short of ``labeled_share``: its name, when it came, and how many batches came since."""

    name: str
    seen_at: float
    batches_since: int


def record_batch_ids(db: sqlite3.Connection, file_id: int, ids: pd.Series, labelled: np.ndarray) -> LabelJoin:
    """Keep the ids of a new batch's unlabelled rows (``labelled`` False), then give them the labels waiting for them."""
    rows = np.flatnonzero(~labelled & ids.notna().to_numpy())
    db.executemany("INSERT INTO label_ids (id, file_id, row) VALUES (?, ?, ?)",
                   ((str(ids.iat[row]), file_id, int(row)) for row in rows))
    waiting = db.execute(
        "SELECT w.id, w.label, w.label_file FROM labels_waiting w JOIN label_ids i ON i.id = w.id AND i.file_id = ?"
        " ORDER BY w.label_file", (file_id,)).fetchall()
    join = LabelJoin()
    for row in waiting:  # oldest label file first: a later one that disagrees is the conflict
        _join_one(db, row["id"], row["label"], row["label_file"], join, now=0.0, wait=False)
        db.execute("DELETE FROM labels_waiting WHERE id = ? AND label_file = ?", (row["id"], row["label_file"]))
    _await_scoring(db, join)
    return join


def apply_label_file(db: sqlite3.Connection, label_file_id: int, frame: pd.DataFrame, now: float) -> LabelJoin:
    """Join a label file's (id, label) rows to the batches' rows; unknown ids wait from ``now``."""
    join = LabelJoin()
    for identifier, label in zip(frame["id"].tolist(), frame["label"].tolist()):
        _join_one(db, str(identifier), _plain(label), label_file_id, join, now, wait=True)
    _await_scoring(db, join)
    return join


def _await_scoring(db: sqlite3.Connection, join: LabelJoin) -> None:
    """The batches ``join`` labelled wait to be scored again with their labels."""
    db.executemany("INSERT OR IGNORE INTO labels_unscored (file_id) VALUES (?)", ((file_id,) for file_id in join.matched))


def scored(db: sqlite3.Connection, file_id: int) -> None:
    """The batch ``file_id`` was scored again with the labels it has (in the transaction saving its results)."""
    db.execute("DELETE FROM labels_unscored WHERE file_id = ?", (file_id,))


def expire_waiting(db: sqlite3.Connection, now: float, wait_seconds: float) -> list[Unmatched]:
    """Take out the labels that waited longer than ``wait_seconds``: one :class:`Unmatched` per label file."""
    rows = db.execute(
        "SELECT w.id, w.label, f.name FROM labels_waiting w JOIN files f ON f.id = w.label_file"
        " WHERE w.since <= ? ORDER BY w.label_file, w.rowid", (now - wait_seconds,)).fetchall()
    if not rows:
        return []
    db.execute("DELETE FROM labels_waiting WHERE since <= ?", (now - wait_seconds,))
    by_file: dict[str, list[tuple[str, Any]]] = defaultdict(list)
    for row in rows:
        by_file[row["name"]].append((row["id"], row["label"]))
    return [Unmatched(name, pd.DataFrame(pairs, columns=["id", "label"])) for name, pairs in by_file.items()]


def _join_one(db: sqlite3.Connection, identifier: str, label: Any, label_file: int, join: LabelJoin,
              now: float, wait: bool) -> None:
    rows = db.execute("SELECT i.file_id, i.row, i.label, f.name FROM label_ids i JOIN files f ON f.id = i.file_id"
                      " WHERE i.id = ?", (identifier,)).fetchall()
    if not rows and wait:
        db.execute("INSERT OR REPLACE INTO labels_waiting (id, label, label_file, since) VALUES (?, ?, ?, ?)",
                   (identifier, label, label_file, now))
        join.waiting += 1
    for row in rows:
        if row["label"] is None:
            db.execute("UPDATE label_ids SET label = ?, label_file = ? WHERE file_id = ? AND row = ?",
                       (label, label_file, row["file_id"], row["row"]))
            join.matched[row["file_id"]] = join.matched.get(row["file_id"], 0) + 1
        elif row["label"] == label:
            join.same += 1
        else:
            db.execute("INSERT INTO label_conflicts (id, file_id, kept, refused, label_file, time) VALUES (?, ?, ?, ?, ?, ?)",
                       (identifier, row["file_id"], row["label"], label, label_file, now))
            join.conflicts.append(LabelConflict(identifier, row["name"], row["label"], label))


def _plain(value: Any) -> Any:
    """A label as SQLite keeps it: text stays text, a number a Python float."""
    return float(value) if isinstance(value, (int, float, np.number)) and not isinstance(value, bool) else value


# --- reading ------------------------------------------------------------------------------


def batch_labels(read: Read, file_ids: list[int] | None = None) -> dict[int, BatchLabels]:
    """Each batch that came without all its labels (or those of ``file_ids``), by file id."""
    where, params = "", ()
    if file_ids is not None:
        where = f" WHERE i.file_id IN ({','.join('?' * len(file_ids))})"
        params = tuple(file_ids)
    rows = _read(read,
        "SELECT i.file_id, f.name, f.rows, f.seen_at, COUNT(*) AS awaited, COUNT(i.label) AS labelled,"
        " (SELECT group_concat(name, char(10)) FROM (SELECT DISTINCT l.name FROM label_ids j JOIN files l"
        "   ON l.id = j.label_file WHERE j.file_id = i.file_id ORDER BY l.id)) AS labels_from"
        f" FROM label_ids i JOIN files f ON f.id = i.file_id{where} GROUP BY i.file_id ORDER BY i.file_id", params)
    return {row["file_id"]: BatchLabels(row["file_id"], row["name"], row["rows"], row["awaited"], row["labelled"],
                                        row["labels_from"].split("\n") if row["labels_from"] else [], row["seen_at"])
            for row in rows}


def unscored(read: Read) -> list[int]:
    """The batches (file ids, oldest first) that got labels and still wait to be scored again with them."""
    return [row["file_id"] for row in _read(read, "SELECT file_id FROM labels_unscored ORDER BY file_id", ())]


def labels_of(read: Read, file_id: int) -> pd.DataFrame:
    """The labels given later to one batch's rows: ``row`` (position in the batch) and ``label``."""
    rows = _read(read, "SELECT row, label FROM label_ids WHERE file_id = ? AND label IS NOT NULL ORDER BY row", (file_id,))
    return pd.DataFrame([(row["row"], row["label"]) for row in rows], columns=["row", "label"])


def with_labels(frame: pd.DataFrame, labels: pd.DataFrame, target: str, task: str) -> pd.DataFrame:
    """``frame`` (a batch's rows in file order) with ``labels`` (see :func:`labels_of`) in its target column."""
    if labels.empty:
        return frame
    filled = frame.copy()
    column = filled[target].astype("float64" if task == "regression" else object) if target in filled else \
        pd.Series(np.nan if task == "regression" else None, index=filled.index, dtype="float64" if task == "regression" else object)
    values = labels["label"].astype("float64") if task == "regression" else labels["label"].astype(str)
    column.iloc[labels["row"].to_numpy()] = values.to_numpy()
    filled[target] = column
    return filled


def label_lag(read: Read, labeled_share: float) -> LabelLag | None:
    """The oldest batch whose coverage is still below ``labeled_share``; None when none waits.

    A batch's coverage is one less its share of rows still without a label, so
    only those rows are read (through the partial index ``label_ids_unlabelled``),
    in batch order, up to the first batch short of the share: never the rows
    already labelled, which only grow.
    """
    rows = _read(read,
        "SELECT i.file_id, f.name, f.seen_at FROM label_ids i JOIN files f ON f.id = i.file_id WHERE i.label IS NULL"
        " GROUP BY i.file_id HAVING (f.rows - COUNT(*)) * 1.0 / f.rows < ? ORDER BY i.file_id LIMIT 1",
        (labeled_share,))
    if not rows:
        return None
    since = read("SELECT COUNT(*) AS n FROM files WHERE status = 'ingested' AND id > ?", (rows[0]["file_id"],))
    return LabelLag(rows[0]["name"], rows[0]["seen_at"], since[0]["n"])


def conflicts(read: Read, limit: int = 50) -> list[LabelConflict]:
    """The newest conflicting labels, newest first."""
    rows = _read(read, "SELECT c.id, f.name, c.kept, c.refused FROM label_conflicts c JOIN files f ON f.id = c.file_id"
                " ORDER BY c.rowid DESC LIMIT ?", (limit,))
    return [LabelConflict(row["id"], row["name"], row["kept"], row["refused"]) for row in rows]


def waiting_count(read: Read) -> int:
    rows = _read(read, "SELECT COUNT(*) AS n FROM labels_waiting", ())
    return rows[0]["n"] if rows else 0


def _read(read: Read, sql: str, params: tuple) -> list[sqlite3.Row]:
    """``read(sql, params)``; no rows from a store written before the label tables, opened read-only (not migrated)."""
    try:
        return read(sql, params)
    except sqlite3.OperationalError as error:
        if "no such table" in str(error):
            return []
        raise
