"""The header line: folder, watching or paused, counts, the last file, training; narrower screens drop words.

Plain functions from :class:`HeaderState` to ``rich.text.Text``; nothing here
knows about Textual.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from rich.text import Text

from app.tui.formatting import bar, time_ago


@dataclass(frozen=True)
class HeaderState:
    """What the header line says; ``now`` and ``last_seen_at`` are seconds since the epoch.

    ``waiting`` is how many files wait while paused.
    """

    folder: str
    paused: bool
    ingested: int = 0
    quarantined: int = 0
    last_seen_at: float | None = None
    now: float = 0.0
    training: dict[str, Any] | None = None
    retrain_queued: str | None = None
    folder_missing: bool = False
    waiting: int = 0
    engine_stopped: bool = False
    label_lag: dict[str, Any] | None = None  # the oldest batch still waiting for labels (report.dashboard_counts)


HEADER_SEPARATOR = " │ "


@dataclass(frozen=True)
class HeaderStyle:
    """How much the header says: each narrower style drops words, never a count."""

    brand: bool = True
    folder: bool = True
    wordy: bool = True  # "batches ingested", "training <model> <bar> <detail>"
    training_model: bool = True


HEADER_STYLES = (  # widest first; the first that fits is shown
    HeaderStyle(),
    HeaderStyle(wordy=False),
    HeaderStyle(wordy=False, folder=False),
    HeaderStyle(wordy=False, folder=False, brand=False),
    HeaderStyle(wordy=False, folder=False, brand=False, training_model=False),
)


def header_text(state: HeaderState, width: int = 0) -> Text:
    """One line of parts set apart by a bar: folder, watching/paused, counts, last file, training.

    Given a ``width`` (cells), words give way in turn ("ingested", the
    folder's path, shortened from its start, then left out, the name, the
    training's details), so the counts, the time since the last file and the
    training progress stay on screen.
    """
    for style in HEADER_STYLES:
        line = _joined(header_parts(state, style))
        if not width or line.cell_len <= width:
            return line
        if style.folder and not style.wordy:
            room = width - (line.cell_len - len(state.folder))
            if room >= min(len(state.folder), 8):
                return _joined(header_parts(state, style, _tail(state.folder, room)))
    return line


def header_parts(state: HeaderState, style: HeaderStyle = HeaderStyle(), folder: str | None = None) -> list[Text]:
    """The header's parts in order, as much as ``style`` says; a new part is one more entry here."""
    parts = [Text("driftdeck", style="bold")] if style.brand else []
    if style.folder:
        parts.append(Text(state.folder if folder is None else folder))
    if state.engine_stopped:
        parts.append(Text("✖ engine stopped: R restarts it", style="bold red"))
    elif state.folder_missing:
        parts.append(Text("⚠ folder missing (renamed or deleted)", style="bold red"))
    elif state.paused:
        waiting = f" · {state.waiting:,} file{'s' if state.waiting != 1 else ''} waiting" if state.waiting else ""
        parts.append(Text(f"⏸ paused{waiting}", style="bold yellow"))
    else:
        parts.append(Text("● watching", style="bold green"))
    parts.append(Text(f"{state.ingested:,} batches" + (" ingested" if style.wordy else "")))
    parts.append(Text(f"{state.quarantined:,} quarantined", style="bold red" if state.quarantined else ""))
    since = state.now - state.last_seen_at if state.last_seen_at is not None else None
    parts.append(Text(f"last file {time_ago(since)}" if since is not None else "no files yet"))
    if state.label_lag:
        parts.append(_lag_text(state.label_lag, state.now, style))
    if state.retrain_queued:
        parts.append(Text(f"retrain of {state.retrain_queued} queued" if style.training_model else "retrain queued",
                          style="cyan"))
    if state.training:
        parts.append(_training_text(state.training, style))
    return parts


def _lag_text(lag: dict[str, Any], now: float, style: HeaderStyle) -> Text:
    """How far labels lag: batches (and time) since the oldest batch still waiting; red beyond the limit."""
    batches = lag["batches_since"]
    words = f"labels lag {batches} batch{'es' if batches != 1 else ''}"
    if style.wordy:
        words += f" ({lag['file']}, {time_ago(now - lag['seen_at'])})"
    return Text(words, style="bold red" if lag["over"] else "yellow")


def _training_text(training: dict[str, Any], style: HeaderStyle) -> Text:
    progress = float(training.get("progress") or 0.0)
    text = Text("⚙ training " + (f"{training.get('model')} " if style.training_model else ""), style="bold cyan")
    if style.training_model:
        text.append(bar(progress, 1.0, 10 if style.wordy else 5, "cyan"))
        text.append(" ")
    text.append(f"{progress:.0%}", style="cyan")
    if style.wordy:
        text.append(" ")
        text.append(_without_model(training.get("text", ""), training.get("model")), style="dim")
    return text


def _joined(parts: Sequence[Text]) -> Text:
    return Text(HEADER_SEPARATOR, style="dim").join(parts)


def _tail(path: str, width: int) -> str:
    """``path`` whole if it fits in ``width`` cells, else "…" and its last characters."""
    return path if len(path) <= width else "…" + path[-(width - 1):]


def _without_model(text: str, model: str | None) -> str:
    prefix = f"{model}: "
    return text[len(prefix):] if model and text.startswith(prefix) else text
