"""The batches screen (``x``): pick an ingested batch to exclude after the fact, or an excluded one to include.

The screen lists every batch that reached the models, newest first, with
the snapshots that learned from it. Enter on a batch asks first
(:class:`ExcludeScreen`, naming what learned from it, with room for the
reason); only an explicit yes sends the command. The rows are read by the
app in a worker thread and handed over: this screen never reads the store.
"""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Input, Static

from app.lineage import exclusion_text
from app.cli_tables import literal
from app.tui.panels import row_table, selected_key

BATCH_COLUMNS = ("batch", "rows", "labels", "status", "learned by")


def learned_by_text(learned_by: dict[str, list[int]]) -> str:
    """"dynamic-lr v3 v4; static-lr v1", or "no snapshot"."""
    parts = [f"{model} " + " ".join(f"v{version}" for version in versions) for model, versions in learned_by.items()]
    return "; ".join(parts) or "no snapshot"


def batch_cells(row: dict[str, Any]) -> tuple[Text, ...]:
    excluded = row["status"] == "excluded"
    return (literal(row["file"], style="strike" if excluded else ""), Text(f"{row['rows']:,}"),
            Text("yes" if row["labeled"] else "no"), literal(row["status"], style="magenta" if excluded else ""),
            literal(learned_by_text(row["learned_by"])))


def exclude_question(row: dict[str, Any]) -> Text:
    """What excluding (or including) ``row``'s batch will do, in words."""
    text = Text()
    if row["status"] == "excluded":
        text.append(f"Include {row['file']} again?", style="bold")
        text.append(f"\n{exclusion_text(row['exclusion'])}" if row.get("exclusion") else "")
        text.append("\nIt counts for training, the reference and the verdict again; snapshots that learned from it"
                    " are no longer tainted. A repair made when it was excluded stays (roll back or promote to undo it).")
        return text
    text.append(f"Exclude {row['file']}?", style="bold")
    text.append(f" ({row['rows']:,} rows, seen {time.strftime('%Y-%m-%d %H:%M', time.localtime(row['seen_at']))})")
    if row["learned_by"]:
        text.append(f"\nLearned from it: {learned_by_text(row['learned_by'])}.")
        text.append("\nA serving dynamic model that learned from it is retrained without it (the candidate faces the"
                    " gate against the last snapshot without it, which serves if it fails); a static one is"
                    " flagged tainted.")
    else:
        text.append("\nNo snapshot learned from it; it leaves future training windows, the reference and the verdict.")
    return text


class BatchesScreen(ModalScreen[dict[str, Any] | None]):
    """The batches that reached the models; enter picks one (dismissed with its row), escape closes."""

    BINDINGS = [
        Binding("escape,x,q", "dismiss(None)", "Close", id="close-batches"),
    ]

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        super().__init__()
        self.rows = {str(index): row for index, row in enumerate(rows)}

    def compose(self) -> ComposeResult:
        with Vertical(id="batches-body"):
            yield Static(Text("Batches — ⏎ excludes the highlighted one (or includes it again); escape closes",
                              style="bold"))
            yield row_table("batches-table", BATCH_COLUMNS)

    def on_mount(self) -> None:
        table = self.query_one("#batches-table", DataTable)
        for key, row in self.rows.items():
            table.add_row(*batch_cells(row), key=key)
        table.focus()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        key = selected_key(event.data_table)
        if key is not None:
            self.dismiss(self.rows[key])


class ExcludeScreen(ModalScreen[str | None]):
    """Asks before excluding (or including) a batch: dismissed with the reason typed (maybe empty) on yes,
    None on no. Enter in the reason field is a yes."""

    BINDINGS = [
        Binding("escape", "dismiss(None)", "Cancel", id="exclude-no"),
    ]

    def __init__(self, row: dict[str, Any]) -> None:
        super().__init__()
        self.row = row
        self.including = row["status"] == "excluded"

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-body"):
            yield Static(exclude_question(self.row))
            if not self.including:
                yield Input(placeholder="why (kept with the exclusion; optional)", id="exclude-reason")
            with Horizontal(id="confirm-buttons"):
                yield Button("Include it" if self.including else "Exclude it", variant="warning", id="yes")
                yield Button("Cancel (escape)", id="no")

    def on_mount(self) -> None:
        if not self.including:
            self.query_one("#exclude-reason", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip())

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id != "yes":
            self.dismiss(None)
        else:
            self.dismiss("" if self.including else self.query_one("#exclude-reason", Input).value.strip())
