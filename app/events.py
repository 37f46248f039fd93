"""The monitor's event stream: one typed record per thing that happened."""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class EventKind(StrEnum):
    FILE_SEEN = "file_seen"
    FILE_SKIPPED = "file_skipped"
    FILE_ERROR = "file_error"
    BATCH_INGESTED = "batch_ingested"
    BATCH_QUARANTINED = "batch_quarantined"
    DUPLICATE = "duplicate"
    BATCH_RESULT = "batch_result"
    FLAGGED = "flagged"
    TRAINING_STARTED = "training_started"
    TRAINING_PROGRESS = "training_progress"
    TRAINING_FAILED = "training_failed"
    PROMOTED = "promoted"
    REJECTED = "rejected"
    ROLLED_BACK = "rolled_back"
    SERVING_CHANGED = "serving_changed"
    VALIDATED = "validated"
    NOT_VALIDATED = "not_validated"
    CODE_REGRESSION = "code_regression"
    CONFIG_CHANGED = "config_changed"
    FOLDER_MISSING = "folder_missing"
    FOLDER_BACK = "folder_back"
    PAUSED = "paused"
    RESUMED = "resumed"
    EXCLUDED = "excluded"
    INCLUDED = "included"
    REPLAY_FINISHED = "replay_finished"
    LABELS_INGESTED = "labels_ingested"
    LABEL_CONFLICT = "label_conflict"
    LABELS_UNMATCHED = "labels_unmatched"
    ERROR = "error"


ERROR_KINDS = frozenset(
    {EventKind.BATCH_QUARANTINED, EventKind.FILE_ERROR, EventKind.TRAINING_FAILED, EventKind.ERROR, EventKind.CODE_REGRESSION,
     EventKind.FOLDER_MISSING}
)
WARNING_KINDS = frozenset({EventKind.EXCLUDED, EventKind.CONFIG_CHANGED, EventKind.NOT_VALIDATED, EventKind.FLAGGED,
                           EventKind.REJECTED, EventKind.ROLLED_BACK, EventKind.DUPLICATE, EventKind.LABEL_CONFLICT,
                           EventKind.LABELS_UNMATCHED})


@dataclass(frozen=True)
class Event:
    """Something the monitor did or saw.

    ``message`` is one plain line for people; ``data`` holds the numbers for
    programs (the JSON printer and the TUI panels read it).
    """

    kind: EventKind
    message: str
    model: str | None = None
    file: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "kind": str(self.kind),
            "model": self.model,
            "file": self.file,
            "message": self.message,
            "data": self.data,
        }

    @staticmethod
    def from_dict(record: dict[str, Any]) -> Event:
        """The event :meth:`to_dict` wrote (as an attached dashboard receives it)."""
        return Event(kind=EventKind(record["kind"]), message=record["message"], model=record.get("model"),
                     file=record.get("file"), data=record.get("data") or {}, time=record["time"])


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with control characters (ESC, newline, …) shown as escapes, for terminals.

    Names and values come from files other programs wrote: an escape sequence
    or a newline in them must be shown, never obeyed. JSON output needs no
    such care; its encoder escapes them already.
    """
    return _CONTROL.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), displayable(text))


def displayable(text: str) -> str:
    """``text`` as valid Unicode: the bytes of a file name that are not UTF-8 shown as ``\\xNN``.

    Python keeps such bytes as lone surrogates, which no UTF-8 stream (a
    terminal, SQLite text, a reason file) accepts.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(text).decode("utf-8", "backslashreplace")
    return text
