"""What each batch left for each model: its result, and the state the model's next batch needs."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from app.store.connection import StoreConnection
from app.store.records import FOLDER_KEY, FolderState, ModelState, dumps

COUNTED = "file_id NOT IN (SELECT id FROM files WHERE status = 'excluded')"  # results of batches not excluded


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

    def results(self, model: str | None = None, limit: int | None = None,
                counted: bool = False) -> list[tuple[int, str, dict[str, Any]]]:
        """``(file_id, model, data)`` in ingestion order; ``limit`` keeps the newest; ``counted`` leaves out
        the batches excluded after the fact (what the verdict and the policies weigh)."""
        sql = "SELECT file_id, model, data FROM results"
        params: tuple = ()
        where = [COUNTED] if counted else []
        if model is not None:
            where.append("model = ?")
            params = (model,)
        sql += "".join(f" {'WHERE' if index == 0 else 'AND'} {clause}" for index, clause in enumerate(where))
        sql += " ORDER BY file_id DESC" if model is not None else " ORDER BY file_id DESC, model"
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
        """Batches ``model`` may learn from (their result says ``trainable``, and they are not excluded), oldest first.

        ``newest`` keeps only that many of the latest: an index serves it, so
        the cost does not grow with the history.
        """
        sql = f"SELECT file_id FROM results WHERE model = ? AND trainable = 1 AND {COUNTED} ORDER BY file_id DESC"
        params: tuple = (model,)
        if newest is not None:
            sql += " LIMIT ?"
            params += (newest,)
        return [row["file_id"] for row in reversed(self._query(sql, params))]

    def save_model_state(self, model: str, state: ModelState, db: sqlite3.Connection | None = None) -> None:
        self._save_state_row(model, state.to_dict(), db)

    def model_state(self, model: str) -> ModelState | None:
        """``model``'s state, or None before any batch (or validation) left one."""
        data = self._state_row(model)
        return ModelState.from_dict(data) if data is not None else None

    def save_folder_state(self, folder: FolderState, db: sqlite3.Connection | None = None) -> None:
        self._save_state_row(FOLDER_KEY, folder.to_dict(), db)

    def folder_state(self) -> FolderState:
        """The folder-wide facts; all None before the first batch."""
        return FolderState.from_dict(self._state_row(FOLDER_KEY) or {})

    def _save_state_row(self, key: str, data: dict[str, Any], db: sqlite3.Connection | None) -> None:
        sql = "INSERT OR REPLACE INTO model_state (model, data) VALUES (?, ?)"
        if db is not None:
            db.execute(sql, (key, dumps(data)))
            return
        with self.transaction() as tx:
            tx.execute(sql, (key, dumps(data)))

    def _state_row(self, key: str) -> dict[str, Any] | None:
        rows = self._query("SELECT data FROM model_state WHERE model = ?", (key,))
        return json.loads(rows[0]["data"]) if rows else None
