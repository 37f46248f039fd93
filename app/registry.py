"""Snapshots and the serving pointer of every model.

A snapshot is a skops file under ``snapshots/<model>/`` plus a row in the
store (SHA-256, parent, training files, holdout metrics, reference profile,
environment). Promotion and rollback are pointer changes recorded in the
store's serving history; after each one, ``serving/<model>.skops`` and
``serving/<model>.json`` are replaced atomically so programs outside
driftdeck load what driftdeck chose.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.fsutil import atomic_write_bytes, atomic_write_text, sha256_bytes, sha256_file
from app.lineage import excluded_batches, taint_of
from app.snapshots import SnapshotError, read_model
from app.store import SnapshotRecord, Store

# What the engine and its dashboards keep beside the state: its address, its log, screenshots, error logs.
ENGINE_FILE, ENGINE_SOCKET, ENGINE_LOG = "engine.json", "engine.sock", "engine.log"
ENGINE_NAMES = frozenset({ENGINE_FILE, ENGINE_SOCKET, ENGINE_LOG, "screenshots", "logs"})
GOOD_STATUSES = ("serving", "retired")
LOADED_MODELS = 3  # per model: the serving model, its predecessor and the frozen shadow are what a batch needs


@dataclass(frozen=True)
class StatePaths:
    """Where a data folder's state lives (``DATA_DIR/.driftdeck`` unless ``--state``)."""

    root: Path

    @property
    def database(self) -> Path:
        return self.root / "state.db"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def snapshots(self) -> Path:
        return self.root / "snapshots"

    @property
    def serving(self) -> Path:
        return self.root / "serving"

    @property
    def batches(self) -> Path:
        return self.root / "batches"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions"

    @property
    def lock(self) -> Path:
        return self.root / "monitor.lock"

    @property
    def engine_file(self) -> Path:
        return self.root / ENGINE_FILE

    @property
    def engine_socket(self) -> Path:
        return self.root / ENGINE_SOCKET

    @property
    def engine_log(self) -> Path:
        return self.root / ENGINE_LOG

    @property
    def training_log(self) -> Path:
        return self.root / "training.log"

    @property
    def folders(self) -> tuple[Path, ...]:
        """The sub-folders driftdeck keeps in the state folder."""
        return (self.quarantine, self.snapshots, self.serving, self.batches, self.predictions)

    def check(self, data_dir: Path) -> None:
        """For a reader: refuse what :meth:`create` would refuse, and make nothing."""
        self._check_place(Path(data_dir))

    def create(self, data_dir: Path) -> None:
        """Make the state folder (owner-only, 0700: the state may hold private data) and its sub-folders.

        A state folder that already exists keeps its mode: driftdeck never
        changes a folder it did not make (``--state /tmp`` must not lock
        others out of /tmp). It refuses a state folder that is the data
        folder or holds it, and a non-empty folder that is not a driftdeck
        state. ``state.db`` is made owner-only before SQLite opens it (its
        journal files take its mode).
        """
        self._check_place(Path(data_dir))
        if not self.root.exists():
            self.root.mkdir(parents=True)
            self.root.chmod(0o700)
        for folder in self.folders:
            folder.mkdir(exist_ok=True)
            folder.chmod(0o700)
        try:  # never open an existing store here: closing it would drop this process's SQLite locks on it
            os.close(os.open(self.database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass

    def _check_place(self, data_dir: Path) -> None:
        root, data = self.root.resolve(), data_dir.resolve()
        if root == data or root in data.parents:
            raise StateFolderRefused(f"{self.root}: the state folder cannot be the data folder or a folder that holds it;"
                                     " choose another (the default is DATA_DIR/.driftdeck)")
        if not root.exists():
            return
        if not root.is_dir():
            raise StateFolderRefused(f"{self.root}: the state folder is a file")
        if not (self.database.is_file() or all(entry.name in self._own_names() for entry in root.iterdir())):
            raise StateFolderRefused(f"{self.root}: not empty and not a driftdeck state folder;"
                                     " give --state an empty or new folder")

    def _own_names(self) -> set[str]:
        db, log = self.database.name, self.training_log.name
        return ({path.name for path in self.folders} | {db, f"{db}-wal", f"{db}-shm", self.lock.name, log, f"{log}.1"}
                | ENGINE_NAMES)


class StateFolderRefused(NotADirectoryError):
    """The state folder given cannot hold driftdeck's state: the message says why."""


class RollbackImpossible(Exception):
    """There is no earlier good snapshot to serve, or the named one cannot serve."""


class Registry:
    """Snapshot files and the serving pointer, over one :class:`Store`."""

    def __init__(self, store: Store, paths: StatePaths) -> None:
        self.store = store
        self.paths = paths
        self._loaded: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self._loaded_lock = threading.Lock()  # the monitor's thread scores while commands load snapshots

    def snapshot_file(self, model: str, version: int) -> Path:
        return self.paths.snapshots / model / f"v{version}.skops"

    def write_snapshot_file(self, model: str, version: int, data: bytes) -> tuple[Path, str]:
        path = self.snapshot_file(model, version)
        self.store.check_identity()  # never into a state folder that replaced the one opened
        atomic_write_bytes(path, data)
        return path, sha256_file(path)

    def load(self, model: str, version: int) -> Any:
        """The fitted pipeline of a snapshot, its file's hash verified; cached.

        Raises SnapshotError if the record or the file is missing, tampered
        with, or holds types driftdeck does not trust. The file is read outside
        the cache's lock: a slow read never holds up another thread's scoring.
        """
        key = (model, version)
        with self._loaded_lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
        record = self.store.snapshot(model, version)
        if record is None or not record.path or not record.sha256:
            raise SnapshotError(f"{model} has no stored model for version {version}")
        pipeline = read_model(self.paths.root / record.path, record.sha256)
        self.remember(model, version, pipeline)
        return pipeline

    def remember(self, model: str, version: int, pipeline: Any) -> None:
        """Keep a fitted pipeline that was verified on its way in (loaded, or just trained and committed)."""
        with self._loaded_lock:
            self._loaded[(model, version)] = pipeline
            self._loaded.move_to_end((model, version))
            kept = [cached for cached in self._loaded if cached[0] == model]
            for oldest in kept[:-LOADED_MODELS]:
                del self._loaded[oldest]

    def forget(self, model: str, version: int) -> None:
        with self._loaded_lock:
            self._loaded.pop((model, version), None)

    def serving(self, model: str) -> SnapshotRecord | None:
        version = self.store.serving_version(model)
        return self.store.snapshot(model, version) if version is not None else None

    def previous_good(self, model: str, before: int | None = None) -> SnapshotRecord | None:
        """The snapshot that served before ``before`` last began to (default: the current one): the rollback target.

        A snapshot that learned from an excluded batch is never one (see :mod:`app.lineage`).
        """
        current = self.store.serving_version(model) if before is None else before
        history = self.store.serving_history(model)
        last = max((index for index, change in enumerate(history) if change.version == current), default=0)
        return self._newest_good(model, [change.version for change in history[:last] if change.version != current])

    def last_untainted(self, model: str) -> SnapshotRecord | None:
        """The good snapshot that served most recently and learned from no excluded batch (the serving one too)."""
        return self._newest_good(model, [change.version for change in self.store.serving_history(model)])

    def _newest_good(self, model: str, versions: list[int]) -> SnapshotRecord | None:
        """The last of ``versions`` whose snapshot is good, has its model file and is not tainted."""
        excluded = excluded_batches(self.store)
        for version in reversed(versions):
            record = self.store.snapshot(model, version)
            if (record is not None and record.status in GOOD_STATUSES and record.path
                    and taint_of(self.store, record, excluded) is None):
                return record
        return None

    def switch_serving(self, model: str, version: int, reason: str, detail: str, *,
                       old_status: str = "retired", db=None) -> None:
        """Point ``model`` at ``version`` (in the caller's transaction if ``db`` is given)."""
        def apply(tx) -> None:
            current = self.store.serving_version(model)
            if current is not None and current != version:
                self.store.set_snapshot_status(model, current, old_status, None if old_status == "retired" else detail, db=tx)
            self.store.set_snapshot_status(model, version, "serving", db=tx)
            self.store.set_serving(model, version, reason, detail, db=tx)

        if db is not None:
            apply(db)
        else:
            with self.store.transaction() as tx:
                apply(tx)

    def rollback_target(self, model: str, to_version: int | None, back_from: int | None = None) -> SnapshotRecord:
        """``to_version``, or the good snapshot that served before ``back_from`` (default: the current one)."""
        current = self.store.serving_version(model)
        if to_version is None:
            target = self.previous_good(model, back_from)
            if target is None:
                raise RollbackImpossible(f"{model} has no earlier good snapshot to roll back to")
            if target.version == current:
                change = self.store.serving_history(model)[-1]
                raise RollbackImpossible(f"{model}: not rolled back: v{current} already serves "
                                         f"({change.reason}{': ' + change.detail if change.detail else ''})")
            return target
        target = self.store.snapshot(model, to_version)
        if target is None:
            raise RollbackImpossible(f"{model} has no version {to_version}")
        if to_version == current:
            raise RollbackImpossible(f"{model} v{to_version} is already serving")
        if target.status in ("failed",) or not target.path:
            raise RollbackImpossible(f"{model} v{to_version} has no usable model ({target.status})")
        return target

    def write_serving_files(self, model: str) -> None:
        """Make ``serving/<model>.skops`` and ``.json`` hold exactly the serving snapshot.

        Called after every pointer change, and at start-up to repair a crash
        that fell between the store's commit and these writes.
        """
        record = self.serving(model)
        if record is None or not record.path:
            return
        model_path = self.paths.serving / f"{model}.skops"
        info_path = self.paths.serving / f"{model}.json"
        if model_path.exists() and info_path.exists():
            try:
                if json.loads(info_path.read_text()).get("sha256") == record.sha256 == sha256_file(model_path):
                    return
            except (OSError, ValueError):
                pass
        data = (self.paths.root / record.path).read_bytes()
        if sha256_bytes(data) != record.sha256:
            raise SnapshotError(f"{model} v{record.version}: the snapshot file was modified after it was written;"
                                " it is not published to serving/")
        history = self.store.serving_history(model)
        latest = history[-1]
        self.store.check_identity()
        atomic_write_bytes(model_path, data)
        atomic_write_text(
            info_path,
            json.dumps(
                {
                    "model": model,
                    "version": record.version,
                    "sha256": record.sha256,
                    "trained_on": record.data.get("files", []),
                    "rows": record.data.get("rows"),
                    "holdout_metrics": record.data.get("holdout_metrics", {}),
                    "serving_since": latest.time,
                    "serving_since_iso": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(latest.time)),
                    "why": latest.reason,
                    "detail": latest.detail,
                },
                indent=2,
            ),
        )
