"""Every model version (snapshot) and the serving pointer's history: which version served since when, and why."""

from __future__ import annotations

import json
import sqlite3
import time

from app.store.connection import StoreConnection
from app.store.records import ServingChange, SnapshotRecord, dumps


LISTING_DROPS = ("$.profile", "$.score_sketch", "$.calibration", "$.reference_sample")


class History(StoreConnection):
    """The ``snapshots`` and ``serving`` tables."""

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
            record.reason, record.path, record.sha256, dumps(record.data),
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
        return _snapshot_record(rows[0]) if rows else None

    def snapshots(self, model: str | None = None, *, whole: bool = True) -> list[SnapshotRecord]:
        """Every snapshot (of ``model``), by version. ``whole=False`` leaves the bulky parts of each record's
        data out (:data:`LISTING_DROPS`: what drift and scoring need, not a listing), inside SQLite, so a
        listing of many snapshots does not parse them."""
        data = "data" if whole else f"json_remove(data, {', '.join('?' * len(LISTING_DROPS))}) AS data"
        columns = f"model, version, parent, created, status, reason, path, sha256, {data}"
        drops = () if whole else LISTING_DROPS
        if model is None:
            rows = self._query(f"SELECT {columns} FROM snapshots ORDER BY model, version", drops)
        else:
            rows = self._query(f"SELECT {columns} FROM snapshots WHERE model = ? ORDER BY version", (*drops, model))
        return [_snapshot_record(row) for row in rows]

    def snapshot_count(self, model: str) -> int:
        return self._query("SELECT COUNT(*) AS n FROM snapshots WHERE model = ?", (model,))[0]["n"]

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


def _snapshot_record(row: sqlite3.Row) -> SnapshotRecord:
    return SnapshotRecord(
        row["model"], row["version"], row["parent"], row["created"], row["status"], row["reason"],
        row["path"], row["sha256"], json.loads(row["data"]),
    )
