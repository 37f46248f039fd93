"""One entry of the event log: time, kind and a message that wraps under itself.

Nothing here knows about Textual; errors are red and warnings yellow.
"""

from __future__ import annotations

from rich.text import Text

from app.events import ERROR_KINDS, WARNING_KINDS, printable
from app.store import StoredEvent
from app.tui.formatting import WRAP_CONSOLE, clock_time

EVENT_STYLES = {"promoted": "green", "serving_changed": "green", "training_started": "cyan",
                "paused": "yellow", "resumed": "cyan", "batch_ingested": ""}
KIND_LABELS = {"batch_ingested": "ingested", "batch_quarantined": "quarantined", "batch_result": "result",
               "training_started": "training", "training_failed": "train failed", "rolled_back": "rolled back",
               "file_seen": "file", "file_skipped": "skipped", "file_error": "file error",
               "serving_changed": "serving", "code_regression": "regression"}
KIND_WIDTH = 12


def event_text(event: StoredEvent, width: int) -> Text:
    """One event-log entry for a log ``width`` cells wide: time, kind, then the message, which
    wraps under itself rather than under the time. Errors are red, warnings yellow."""
    if event.kind in ERROR_KINDS:
        style = "bold red"
    elif event.kind in WARNING_KINDS:
        style = "yellow"
    else:
        style = EVENT_STYLES.get(event.kind, "dim")
    text = Text()
    text.append(clock_time(event.time) + " ", style="dim")
    text.append(f"{KIND_LABELS.get(event.kind, event.kind.replace('_', ' ')):<{KIND_WIDTH}} ", style=style)
    indent = text.cell_len
    message = Text(printable(event.message), style="red" if event.kind in ERROR_KINDS else "")
    lines = message.wrap(WRAP_CONSOLE, max(10, width - indent), overflow="fold")
    for number, line in enumerate(lines):
        if number:
            text.append("\n" + " " * indent)
        text.append(line)
    return text
