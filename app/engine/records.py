"""The records the engine's stages hand each other for one batch.

The runner (:mod:`app.engine.runner`) fills a :class:`BatchOutcome` per model;
the committer (:mod:`app.engine.commit`) applies it; :class:`Pending` carries
the work that can wait for a training job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from app.events import Event

FOLDER_KEY = "__folder__"  # the model_state row of folder-wide facts (the reference profile, the previous labels)

Write = Callable[[Any], None]


@dataclass
class BatchOutcome:
    """What one batch did to one model: its result row, store writes, and events."""

    result: dict[str, Any]
    writes: list[Write] = field(default_factory=list)
    pointer_writes: list[Write] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)
    promoted_models: dict[int, Any] = field(default_factory=dict)  # version -> the fitted pipeline, already verified


class Pending:
    """A batch's work that no decision waits on: drift shown on screen, files written before the commit.

    It is done while a training job fits (the worker holds one core, the
    monitor's thread the other), or else just before the batch commits.
    """

    def __init__(self) -> None:
        self._work: list[Callable[[], None]] = []

    def add(self, work: Callable[[], None]) -> None:
        self._work.append(work)

    def run(self) -> None:
        """Do all the work added so far, oldest first."""
        while self._work:
            self._work.pop(0)()
