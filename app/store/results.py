"""What each batch left for each model: its result, and the state the model's next batch needs."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from app.store.connection import StoreConnection
from app.store.records import dumps


class Results(StoreConnection):
    """The ``results`` and ``model_state`` tables."""

    def save_result(self, file_id: int, model: str, data: dict[str, Any], db: sqlite3.Connection | None = None) -> None:
        sql = "INSERT OR REPLACE INTO results (file_id, model, data) VALUES (?, ?, ?)"
        params = (file_id, model, dumps(data))
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

    def save_model_state(self, model: str, data: dict[str, Any], db: sqlite3.Connection | None = None) -> None:
        sql = "INSERT OR REPLACE INTO model_state (model, data) VALUES (?, ?)"
        if db is not None:
            db.execute(sql, (model, dumps(data)))
            return
        with self.transaction() as tx:
            tx.execute(sql, (model, dumps(data)))

    def model_state(self, model: str) -> dict[str, Any]:
        rows = self._query("SELECT data FROM model_state WHERE model = ?", (model,))
        return json.loads(rows[0]["data"]) if rows else {}
