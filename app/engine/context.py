"""What the engine's stages share, in one record the monitor builds once, and the one way a stage is wired.

Every stage (the intake, each model's runner, the committer, the label stage,
the dispatcher and the exclusions) is a :class:`Stage` built from a
:class:`StageContext`: its constructor takes the context and only what is its
own, and it reads the shared parts (``self.store``, ``self.emit``, ...) from
the context. A new shared part is one field here, not a new argument to
every constructor.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from app.cluster import StreamEngine, stream_engine
from app.config import Config
from app.engine.archive import BatchArchive
from app.events import Event
from app.registry import Registry, StatePaths
from app.store import Store
from app.workspace import Workspace


@dataclass(frozen=True)
class StageContext:
    """The data folder's parts every stage works with, and the monitor's two sinks."""

    config: Config
    paths: StatePaths
    store: Store
    registry: Registry
    archive: BatchArchive  # the batches' rows kept for retraining
    streams: StreamEngine  # reads batches too large to hold (app.bigbatch)
    pointer_lock: threading.RLock  # held while a serving pointer moves: a commit, a rollback, a promote, a repair
    emit: Callable[[Event], None]  # every event, to the audit log and the subscribers
    set_training: Callable[[str | None], None]  # which model trains on the monitor's thread now (None: none)

    @classmethod
    def open(cls, workspace: Workspace, emit: Callable[[Event], None],
             set_training: Callable[[str | None], None]) -> StageContext:
        """The context of an opened workspace; its ``streams`` must be closed with it."""
        config, store = workspace.config, workspace.store
        return cls(config, workspace.paths, store, workspace.registry, BatchArchive(workspace.paths.batches, store, config),
                   stream_engine(config.scale), threading.RLock(), emit, set_training)


class Stage:
    """A part of the engine built from the shared :class:`StageContext`, whose parts it reads as attributes."""

    def __init__(self, context: StageContext) -> None:
        self.context = context
        self.config, self.paths, self.store, self.registry = context.config, context.paths, context.store, context.registry
        self.archive, self.streams, self.pointer_lock = context.archive, context.streams, context.pointer_lock
        self.emit, self.set_training = context.emit, context.set_training

    @property
    def data_dir(self) -> Path:
        return self.config.data_dir
