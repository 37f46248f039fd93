"""Messages that carry news to the app's UI thread.

The monitor's callback runs on the monitor's thread; it only posts
:class:`MonitorChanged` or :class:`TrainingChanged`, small messages that
coalesce: a burst of one kind collapses into the newest, so a folder full of
files cannot flood the UI. Workers end by posting :class:`DashboardLoaded`,
:class:`BatchesLoaded` or :class:`CommandDone`.
"""

from __future__ import annotations

from typing import Any

from textual.message import Message

from app.tui.dashboard import Dashboard


class MonitorChanged(Message):
    """The monitor recorded an event of ``kind``: the panels are out of date."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, MonitorChanged) and message.kind == self.kind


class TrainingChanged(Message):
    """A training job started or moved on; ``training`` is the monitor's training dict."""

    def __init__(self, training: dict[str, Any] | None) -> None:
        super().__init__()
        self.training = training

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, TrainingChanged)


class DashboardLoaded(Message):
    """A worker finished reading the store; ``load`` counts the loads started, so an older one can be told apart."""

    def __init__(self, dashboard: Dashboard, load: int) -> None:
        super().__init__()
        self.dashboard = dashboard
        self.load = load


class CommandDone(Message):
    """A command went through; ``text`` says what it did, e.g. "model: v3 → v2" under the ``title`` "serving"."""

    def __init__(self, text: str, title: str = "serving") -> None:
        super().__init__()
        self.text = text
        self.title = title


class BatchesLoaded(Message):
    """A worker read the batches for the batches screen (see :mod:`app.tui.batches`)."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        super().__init__()
        self.rows = rows
