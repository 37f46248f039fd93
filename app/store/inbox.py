"""Commands another process leaves for the one that watches the folder, and their outcome.

A command not taken by its deadline expires and never runs, so an asker that
stopped waiting never has it carried out later.
"""

from __future__ import annotations

import json
import time
from typing import Any

from app.store.connection import StoreConnection
from app.store.records import dumps


class Inbox(StoreConnection):
    """The ``commands`` table."""

    def add_command(self, kind: str, model: str | None, args: dict[str, Any], expires: float) -> int:
        """Leave a command for the process that watches the folder; not taken by ``expires``, it never runs."""
        with self.transaction() as db:
            return db.execute(
                "INSERT INTO commands (time, kind, model, args, expires) VALUES (?, ?, ?, ?, ?)",
                (time.time(), kind, model, dumps(args), expires),
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
