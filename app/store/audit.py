"""The audit log: an append-only record of every event except progress ticks."""

from __future__ import annotations

import json
from typing import Any

from app.events import displayable
from app.store.connection import StoreConnection
from app.store.records import StoredEvent, dumps


class AuditLog(StoreConnection):
    """The ``events`` table."""

    def append_event(
        self, kind: str, message: str, *, model: str | None, file: str | None, data: dict[str, Any], when: float
    ) -> int:
        with self.transaction() as db:
            return db.execute(
                "INSERT INTO events (time, kind, model, file, message, data) VALUES (?, ?, ?, ?, ?, ?)",
                (when, kind, model, None if file is None else displayable(file), displayable(message), dumps(data)),
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
