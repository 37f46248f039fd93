"""The monitor: one worker thread that turns complete files into batches and results.

Everything that changes state goes through here, whoever asks: the watcher
(files), the TUI and the CLI (commands), and other processes (commands left in
the store's ``commands`` table, picked up while ``watch`` runs). Subscribers
receive :class:`~app.events.Event` objects on the monitor's thread and must
only hand them on (the TUI posts a message; the headless printer prints).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import itertools
import os
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from stat import S_ISDIR
from typing import Any, Callable

import pandas as pd
from threadpoolctl import threadpool_limits

from app.config import Config, load_config
from app.errorlog import log_error
from app.events import Event, EventKind
from app.labels import label_signal_issue
from app.ingest import FileChanged, FileSnapshot, quarantine, read_batch
from app.policy import BatchOutcome, ModelRunner, Pending, label_stats
from app.environment import environment_diff, environment_record
from app.readers import UnreadableFile
from app.reproduce import Reproduction, reproduce
from app.serving import export_files, model_card, parquet_bytes, score
from app.registry import Registry, RollbackImpossible, StatePaths
from app.snapshots import SnapshotError
from app.models import NUMERIC, prepare_features
from app.stats.profile import NumericProfile, Profile
from app.store import FileStat, StateLost, Store
from app.training import Trainer
from app.validation import Batch, InvalidBatch
from app.watcher import FolderWatcher, watched_file

FOLDER_KEY = "__folder__"
COMMAND_POLL_SECONDS = 0.5
STOP_PRIORITY, COMMAND_PRIORITY, FILE_PRIORITY = 0, 1, 2
MONITOR_THREADS = 1  # BLAS/OpenMP threads for in-process scoring: a core stays free for the UI
BATCH_CACHE_SIZE = 16


class MonitorBusy(Exception):
    """Another driftdeck process already watches this data folder."""


class CommandFailed(Exception):
    """A command (rollback, promote, retrain) could not be carried out; the message says why."""


class Monitor:
    """Watches one data folder and applies every model's policy to each new batch.

    ``state_dir`` defaults to ``DATA_DIR/.driftdeck``. Call :meth:`start` to
    watch, :meth:`run_once` to process what is there and return, and
    :meth:`close` when done.
    """

    def __init__(self, data_dir: Path, state_dir: Path | None = None, *, poll: bool = False,
                 trainer: Trainer | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        if not self.data_dir.is_dir():
            raise FileNotFoundError(f"{data_dir}: no such folder")
        self._watched_folder = _identity(self.data_dir)
        self.folder_missing = False
        self.config: Config = load_config(self.data_dir)
        threadpool_limits(limits=MONITOR_THREADS)
        self.paths = StatePaths(Path(state_dir).resolve() if state_dir else self.data_dir / ".driftdeck")
        self.paths.create()
        self.store = Store(self.paths.database)
        self.registry = Registry(self.store, self.paths)
        self.trainer = trainer or Trainer(timeout=self.config.watch.train_timeout)
        self.poll = poll
        self.paused = False
        self.training: dict[str, Any] | None = None
        self._subscribers: list[Callable[[Event], None]] = []
        self._queue: queue.PriorityQueue = queue.PriorityQueue()
        self._sequence = itertools.count()
        self._deferred: dict[Path, None] = {}
        self._pointer_lock = threading.RLock()
        self._batch_cache: OrderedDict[int, pd.DataFrame] = OrderedDict()
        self._thread: threading.Thread | None = None
        self._watcher: FolderWatcher | None = None
        self._lock_handle: int | None = None  # a descriptor of the data folder, flocked
        self._stopping = threading.Event()
        self.fatal: str | None = None  # why the monitor stopped for good (its state is gone), or None
        self.runners = {
            model.name: ModelRunner(model, self.config, self.registry, self.trainer, self._load_batches, self.emit)
            for model in self.config.models
        }
        for name in self.runners:
            self._repair_serving_file(name)

    # --- life cycle --------------------------------------------------------------

    def _start_training_server(self) -> None:
        """Have the training server ready by the first retrain, without holding up the first batch."""
        if self.runners:
            threading.Thread(target=self._warm_trainer, name="driftdeck-training-server", daemon=True).start()

    def _warm_trainer(self) -> None:
        try:
            self.trainer.start()
        except Exception:  # noqa: BLE001 - the first training meets the same failure and reports it as an event
            pass

    def subscribe(self, callback: Callable[[Event], None]) -> None:
        self._subscribers.append(callback)

    def acquire(self) -> None:
        """Take the data folder's lock: one watching process per folder.

        The lock is held on the data folder itself, so it survives the state
        folder being moved aside or deleted; ``monitor.lock`` in the state
        folder only names the process that holds it.
        """
        folder = os.open(self.data_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(folder)
            try:
                owner = self.paths.lock.read_text().strip() or "?"
            except OSError:
                owner = "?"
            raise MonitorBusy(f"another driftdeck (pid {owner}) is already watching {self.data_dir}") from None
        self._lock_handle = folder
        self.paths.lock.write_text(str(os.getpid()))

    def start(self) -> None:
        """Start the worker thread and the folder watcher (files already there are picked up)."""
        if self._lock_handle is None:
            self.acquire()
        self._start_training_server()
        self._thread = threading.Thread(target=self._work, name="driftdeck-monitor", daemon=True)
        self._announce_config_changes()
        for name in self.runners:
            if self.environment_changed(name):
                self._enqueue(COMMAND_PRIORITY, "validate", name)
        self._thread.start()
        self._watcher = FolderWatcher(self.data_dir, self.paths.root, self.submit_file,
                                      settle_seconds=self.config.watch.settle_seconds, poll=self.poll)
        self._watcher.start()

    def run_once(self) -> None:
        """Process every complete file in the folder now, on this thread, then return."""
        if self._lock_handle is None:
            self.acquire()
        self._start_training_server()
        self._announce_config_changes()
        # Never started, only scanned: the polling kind, which takes no inotify instance (a per-user limit).
        watcher = FolderWatcher(self.data_dir, self.paths.root, lambda path: None,
                                settle_seconds=self.config.watch.settle_seconds, poll=True)
        watcher.scan()
        while watcher.pending_count() and self.fatal is None:
            for path in watcher.complete_now():
                self._guarded(self._handle_file, path)
            if watcher.pending_count():
                time.sleep(0.1)
        if self.fatal is None:
            self._guarded(self._run_remote_commands)

    def config_changes(self, model: str) -> list[str]:
        """Why ``model``'s serving snapshot cannot be scored under the current config (empty when it can)."""
        serving = self.registry.serving(model)
        return self.runners[model].config_changes(serving) if serving is not None else []

    def _announce_config_changes(self) -> None:
        """Say at start which serving models were trained for another config: they are not scored until retrained."""
        for name in self.runners:
            if changes := self.config_changes(name):
                version = self.store.serving_version(name)
                self.emit(Event(EventKind.CONFIG_CHANGED,
                                f"{name}: v{version} was trained on another config ({'; '.join(changes)}); it is not"
                                f" scored until retrained: press r, or run driftdeck retrain {self.data_dir} --model {name}",
                                model=name, data={"version": version, "changes": changes}))

    def close(self) -> None:
        self._stopping.set()
        self.trainer.cancel.set()
        if self._watcher is not None:
            self._watcher.stop()
        if self._thread is not None:
            self._enqueue(STOP_PRIORITY, "stop", None)
            self._thread.join(timeout=30)
        self.trainer.close()
        self.store.close()
        if self._lock_handle is not None:
            os.close(self._lock_handle)
            self._lock_handle = None

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until the watcher has nothing pending and the queue is drained (for tests and --once)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pending = self._watcher.pending_count() if self._watcher else 0
            if not pending and self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.05)
        return False

    # --- inputs ------------------------------------------------------------------

    def submit_file(self, path: Path) -> None:
        self._enqueue(FILE_PRIORITY, "file", Path(path))

    def _enqueue(self, priority: int, kind: str, argument: Any) -> None:
        """Commands a person asked for go before files waiting in the queue; each kind stays in order."""
        self._queue.put((priority, next(self._sequence), kind, argument))

    def request_retrain(self, model: str) -> None:
        """Queue a retrain of ``model`` (static models too); the candidate faces the gate."""
        self.config.model(model)
        self._enqueue(COMMAND_PRIORITY, "retrain", model)

    def request_validate(self, model: str | None = None) -> None:
        """Queue the code/dependency regression check (``driftdeck validate``) for one model or all."""
        names = [self.config.model(model).name] if model else list(self.runners)
        for name in names:
            self._enqueue(COMMAND_PRIORITY, "validate", name)

    def validate(self, model: str) -> Reproduction:
        """Re-check ``model``'s serving snapshot now; record a ``validated`` or ``code_regression`` event."""
        self._set_training(model)
        try:
            result = reproduce(self, model)
        finally:
            self._set_training(None)
        if result.version is None:
            return result
        if result.other_config:
            self.emit(Event(EventKind.CONFIG_CHANGED, result.summary, model=model, data=result.to_dict()))
            return result
        kind = EventKind.CODE_REGRESSION if result.regression else EventKind.VALIDATED
        state = self.store.model_state(model)
        flags = [flag for flag in state.get("flags", []) if flag["kind"] != "code_regression"]
        if result.regression:
            flags.insert(0, {"kind": "code_regression", "detail": result.summary})
        if state:
            self.store.save_model_state(model, {**state, "flags": flags, "validation": result.to_dict()})
        self.emit(Event(kind, result.summary, model=model, data=result.to_dict()))
        return result

    def environment_changed(self, model: str) -> list[str]:
        """What differs between the environment that trained ``model``'s serving snapshot and this one."""
        serving = self.registry.serving(model)
        if serving is None or "environment" not in serving.data:
            return []
        return environment_diff(serving.data["environment"], environment_record())

    def pause(self) -> None:
        self.paused = True
        self.emit(Event(EventKind.PAUSED, "watching paused: new files wait until resumed"))

    def resume(self) -> None:
        self.paused = False
        deferred, self._deferred = list(self._deferred), {}
        for path in deferred:
            self.submit_file(path)
        self.emit(Event(EventKind.RESUMED, f"watching resumed ({len(deferred)} file(s) waiting)"))

    def cancel_training(self) -> None:
        self.trainer.cancel.set()

    # --- pointer commands (instant, from any thread) -----------------------------

    def rollback(self, model: str, to_version: int | None = None) -> tuple[int, int]:
        """Serve the previous good snapshot (or ``to_version``); return (from, to)."""
        self.config.model(model)
        with self._pointer_lock:
            current = self.store.serving_version(model)
            if current is None:
                raise CommandFailed(f"{model} has no serving model yet")
            try:
                target = self.registry.rollback_target(model, to_version)
                self.registry.load(model, target.version)
            except (RollbackImpossible, SnapshotError) as error:
                raise CommandFailed(str(error)) from None
            detail = f"rolled back from v{current} to v{target.version}"
            self.registry.switch_serving(model, target.version, "rollback", detail, old_status="rolled_back")
            self.registry.write_serving_files(model)
        self.emit(Event(EventKind.ROLLED_BACK, f"{model}: {detail}", model=model,
                        data={"from": current, "to": target.version, "automatic": False}))
        return current, target.version

    def promote(self, model: str, version: int) -> tuple[int | None, int]:
        """Serve ``version`` of ``model`` (a rejected or retired snapshot too); return (from, to)."""
        self.config.model(model)
        with self._pointer_lock:
            current = self.store.serving_version(model)
            record = self.store.snapshot(model, version)
            if record is None or not record.path:
                raise CommandFailed(f"{model} has no usable version {version}")
            if current == version:
                raise CommandFailed(f"{model} v{version} is already serving")
            try:
                self.registry.load(model, version)
            except SnapshotError as error:
                raise CommandFailed(str(error)) from None
            detail = f"promoted by hand from v{current} to v{version}" if current else f"promoted by hand: v{version}"
            self.registry.switch_serving(model, version, "manual", detail)
            self.registry.write_serving_files(model)
        self.emit(Event(EventKind.PROMOTED, f"{model}: {detail}", model=model,
                        data={"version": version, "from": current, "reason": "manual"}))
        return current, version

    def retrain_now(self, model: str) -> BatchOutcome:
        """Train and gate a candidate for ``model`` on this thread (the CLI's ``retrain``)."""
        runner = self.runners[self.config.model(model).name]
        with self._pointer_lock:
            serving_before = self.store.serving_version(model)
        self._set_training(model)
        try:
            outcome = runner.retrain()
        finally:
            self._set_training(None)
        self._commit(None, None, {model: outcome}, serving_before={model: serving_before})
        return outcome

    # --- serving outside driftdeck ---------------------------------------------------

    def predict_file(self, model: str, path: Path, version: int | None = None) -> pd.DataFrame:
        """Score a batch file with the serving (or given) version, after the watcher's validation."""
        chosen = self._version_or_serving(model, version)
        if changes := self.runners[self.config.model(model).name].config_changes(self.store.snapshot(model, chosen)):
            raise CommandFailed(f"{model} v{chosen} was trained on another config ({'; '.join(changes)}): it cannot score"
                                f" under this one; retrain it: driftdeck retrain {self.data_dir} --model {model}")
        try:
            _, batch = read_batch(Path(path), self.config)
        except (UnreadableFile, FileChanged) as error:
            raise CommandFailed(f"{Path(path).name}: {error}") from None
        if isinstance(batch, InvalidBatch):
            raise CommandFailed(f"{Path(path).name} fails validation: {'; '.join(batch.reasons)}")
        try:
            loaded = self.registry.load(model, chosen)
        except SnapshotError as error:
            raise CommandFailed(str(error)) from None
        return score(loaded, batch.frame, chosen, self.config)

    def export(self, model: str, out: Path, version: int | None = None) -> list[Path]:
        """Write the model file, its model card (JSON and Markdown) and its reference profile to ``out``."""
        chosen = self._version_or_serving(model, version)
        record = self.store.snapshot(model, chosen)
        try:
            self.registry.load(model, chosen)
        except SnapshotError as error:
            raise CommandFailed(str(error)) from None
        recent = [data for _, _, data in self.store.results(model, limit=20)]
        card = model_card(self.config, model, record, self.store.serving_version(model), recent,
                          self.store.model_state(model))
        data = (self.paths.root / record.path).read_bytes()
        return export_files(Path(out), model, data, card, record.data.get("profile", {}))

    def _version_or_serving(self, model: str, version: int | None) -> int:
        self.config.model(model)
        if version is None:
            version = self.store.serving_version(model)
            if version is None:
                raise CommandFailed(f"{model} has no serving model yet")
            return version
        record = self.store.snapshot(model, version)
        if record is None or not record.path:
            raise CommandFailed(f"{model} has no usable version {version}")
        return version

    # --- events ------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        """Record ``event`` in the audit log (except progress ticks) and hand it to subscribers."""
        if event.kind == EventKind.TRAINING_STARTED:
            self.training = {"model": event.model, "progress": 0.0, "text": event.message}
        elif event.kind == EventKind.TRAINING_PROGRESS and self.training is not None:
            self.training = {**self.training, "progress": event.data.get("progress", 0.0), "text": event.message}
        if event.kind != EventKind.TRAINING_PROGRESS:
            try:
                self.store.append_event(str(event.kind), event.message, model=event.model, file=event.file,
                                        data=event.data, when=event.time)
            except Exception:  # a full disk must not stop the stream of events to the screen
                pass
        for callback in list(self._subscribers):
            callback(event)

    # --- the worker ----------------------------------------------------------------

    def _work(self) -> None:
        while not self._stopping.is_set():
            try:
                item = self._queue.get(timeout=COMMAND_POLL_SECONDS)
            except queue.Empty:
                self._guarded(self._check_data_folder)
                self._guarded(self._run_remote_commands)
                continue
            try:
                _, _, kind, argument = item
                if kind == "stop":
                    return
                if kind == "file":
                    self._guarded(self._handle_file, argument)
                elif kind == "retrain":
                    self._guarded(self.retrain_now, argument)
                elif kind == "validate":
                    self._guarded(self.validate, argument)
            finally:
                self._queue.task_done()

    def _guarded(self, action: Callable, *args) -> None:
        """Run one unit of work; any failure becomes an error event naming what it was handling."""
        try:
            action(*args)
        except StateLost as error:
            if self.store.lost is None and _identity(self.data_dir) != self._watched_folder:
                self.emit(Event(EventKind.ERROR, f"{error}, with the data folder around it"))  # it may come back
            else:
                self._stop_for_good(str(error))
        except Exception as error:  # noqa: BLE001 - the monitor must outlive every bad input
            self._set_training(None)
            log_error(self.paths.root, error, f"monitor: {getattr(action, '__name__', '')} {args!r}")
            subject = args[0] if args else None
            file = subject.name if isinstance(subject, Path) else None
            model = subject if isinstance(subject, str) else None
            prefix = f"{file or model}: " if (file or model) else ""
            self.emit(Event(EventKind.ERROR, f"{prefix}{type(error).__name__}: {error}", model=model, file=file,
                            data={"where": getattr(action, "__name__", "")}))

    def _check_data_folder(self) -> None:
        """Notice the data folder renamed or deleted (an event, and the header says so), and watch it again
        once a folder is back at its path."""
        now = _identity(self.data_dir)
        if not self.folder_missing:
            if now != self._watched_folder:
                self.folder_missing = True
                self.emit(Event(EventKind.FOLDER_MISSING, f"the data folder {self.data_dir} was renamed or deleted;"
                                " no file can arrive until a folder is back at that path"))
            return
        if now is not None and self._watcher is not None:  # a new watch: it scans what landed meanwhile
            self._watcher.stop()
            self._watched_folder, self.folder_missing = now, False
            self._watcher = FolderWatcher(self.data_dir, self.paths.root, self.submit_file,
                                          settle_seconds=self.config.watch.settle_seconds, poll=self.poll)
            self._watcher.start()
            self.emit(Event(EventKind.FOLDER_BACK, f"the data folder {self.data_dir} is back; watching it again"))

    def _stop_for_good(self, reason: str) -> None:
        """The state is gone: say so, and stop taking files and commands (nothing more is written)."""
        if self.fatal is None:
            self.fatal = reason
            self.emit(Event(EventKind.ERROR, f"{reason}; restart driftdeck to go on with a new state"))
        self._stopping.set()
        self.trainer.cancel.set()

    def _set_training(self, model: str | None) -> None:
        self.training = {"model": model, "progress": 0.0, "text": f"{model}: training"} if model else None

    def _handle_file(self, path: Path) -> None:
        self.store.check_identity()
        if self.paused:
            self._deferred[path] = None
            return
        name = path.name
        if not watched_file(self.data_dir, path, self.paths.root):
            self.emit(Event(EventKind.FILE_SKIPPED, f"{name}: not read (a link out of the folder, or not a batch file)",
                            file=name))
            return
        try:
            stat = path.stat()
        except FileNotFoundError:
            self.emit(Event(EventKind.FILE_ERROR, f"{name}: deleted before it could be read", file=name))
            return
        if self.store.knows_file(name, FileStat.of(stat)):
            return
        # Parsed before the ledger lookup: the SHA-256 is taken as the bytes stream into the parser
        # (see read_batch), so the rare duplicate costs one parse thrown away.
        try:
            snapshot, batch = read_batch(path, self.config)
        except FileChanged:
            if self._watcher is not None:
                self._watcher.touch(path)
            return
        except UnreadableFile as error:
            self._reject(FileSnapshot(name, stat.st_size, stat.st_mtime_ns, ctime_ns=stat.st_ctime_ns, inode=stat.st_ino),
                         [str(error)])
            return
        except OSError as error:
            reason = error.strerror or str(error)
            self.emit(Event(EventKind.FILE_ERROR, f"{name}: cannot be read: {reason}", file=name, data={"reason": reason}))
            return
        if (same := self.store.same_file(name, snapshot.sha256)) is not None:
            self.store.refresh_file(same.id, snapshot.seen)  # touched, or copied over with the same bytes
            return
        known = self.store.file_by_sha(snapshot.sha256)
        if known is not None:
            self.store.record_file(name, snapshot.sha256, "duplicate", reason=f"same content as {known.name}",
                                   seen=snapshot.seen)
            self.emit(Event(EventKind.DUPLICATE, f"{name}: same content as {known.name}; not processed again",
                            file=name, data={"same_as": known.name}))
        elif isinstance(batch, InvalidBatch):
            self._reject(snapshot, batch.reasons)
        else:
            self._ingest(snapshot, batch)

    def _reject(self, snapshot: FileSnapshot, reasons: list[str]) -> None:
        """Quarantine a rejected file: its bytes when ``snapshot`` holds them, and the reasons."""
        placed = quarantine(snapshot, reasons, self.paths.quarantine)
        copied = snapshot.data is not None
        where = f" (see {placed.name}{'' if copied else '.reason.txt'} in the quarantine folder)"
        sha = snapshot.sha256 if copied else None
        self.store.record_file(snapshot.name, sha, "quarantined", reason="; ".join(reasons), seen=snapshot.seen)
        self.emit(Event(EventKind.BATCH_QUARANTINED, f"{snapshot.name}: quarantined: {'; '.join(reasons)}{where}",
                        file=snapshot.name, data={"reasons": reasons}))

    def _ingest(self, snapshot: FileSnapshot, batch: Batch) -> None:
        for warning in batch.warnings:
            self.emit(Event(EventKind.FILE_SEEN, f"{batch.name}: {warning}", file=batch.name, data={"warning": warning}))
        pending = Pending()
        if batch.labeled:
            pending.add(lambda: self._archive(batch))
        folder = self.store.model_state(FOLDER_KEY)
        if "reference" not in folder or not _profiles_schema(folder["reference"], self.config.schema):
            folder["reference"] = Profile.build(batch.frame, self.config.schema).to_dict()
        serving_before = {name: self.store.serving_version(name) for name in self.runners}
        label_check = None
        if batch.labeled:  # run at most once per batch, and only if a runner asks (see ModelRunner.process)
            label_check = functools.cache(functools.partial(
                label_signal_issue, batch.frame, self.config.schema, self.config.target, self.config.task,
                self.config.timestamp))
        outcomes = {}
        for name, runner in self.runners.items():
            outcomes[name] = runner.process(batch, folder, pending, label_check)
        self._set_training(None)
        self.store.check_identity()  # the batch's files go into the state folder: only the one opened
        pending.run()
        if batch.labeled and self.config.target:
            folder["previous_labels"] = label_stats(batch.frame[self.config.target], self.config.task)
        self._commit(snapshot, batch, outcomes, serving_before=serving_before, folder=folder)

    def _commit(self, snapshot: FileSnapshot | None, batch: Batch | None, outcomes: dict[str, BatchOutcome],
                serving_before: dict[str, int | None], folder: dict | None = None) -> None:
        """Write a batch's ledger entry, results, snapshots and pointer changes in one transaction.

        A batch's files (archive, predictions) are written before this: if the
        process dies before the commit, the batch is processed again and its
        files are simply replaced.
        """
        with self._pointer_lock, self._discarding_uncommitted_snapshots(outcomes):
            stale = {name for name in outcomes if self.store.serving_version(name) != serving_before[name]}
            with self.store.transaction() as db:
                file_id = None
                if batch is not None:
                    file_id = self.store.record_file(batch.name, snapshot.sha256, "ingested", rows=batch.rows,
                                                     labeled=batch.labeled, seen=snapshot.seen, db=db)
                for name, outcome in outcomes.items():
                    for write in outcome.writes:
                        write(db)
                    if name in stale and outcome.pointer_writes:
                        self._keep_manual_choice(name, outcome, db)
                    else:
                        for write in outcome.pointer_writes:
                            write(db)
                    if file_id is not None:
                        self.store.save_result(file_id, name, outcome.result, db=db)
                    if outcome.state:
                        self.store.save_model_state(name, self._with_standing_flags(name, outcome.state), db=db)
                if folder is not None:
                    self.store.save_model_state(FOLDER_KEY, folder, db=db)
            for name, outcome in outcomes.items():
                for version, pipeline in outcome.promoted_models.items():
                    self.registry.remember(name, version, pipeline)  # the next batch scores with it: no reload
                self.registry.write_serving_files(name)
        if batch is not None and batch.labeled:
            self._remember_batch(file_id, batch.frame)  # the next retrain's window starts with it: no archive read
        if batch is not None:
            self.emit(Event(EventKind.BATCH_INGESTED,
                            f"{batch.name}: {batch.rows:,} rows{' (labeled)' if batch.labeled else ''}",
                            file=batch.name, data={"rows": batch.rows, "labeled": batch.labeled, "file_id": file_id}))
        for name, outcome in outcomes.items():
            for event in outcome.events:
                self.emit(replace(event, time=time.time()))  # told now, after the commit made it true
            if batch is not None:
                self.emit(self._result_event(name, batch.name, outcome))

    def _with_standing_flags(self, name: str, state: dict[str, Any]) -> dict[str, Any]:
        """``state`` keeping what ``validate`` found: its ``code_regression`` flag stands until a validation
        passes or the snapshot it concerns stops serving (the serving version read in the caller's transaction)."""
        before = self.store.model_state(name)
        validation = before.get("validation")
        if not validation or validation.get("version") != self.store.serving_version(name):
            return state
        standing = [flag for flag in before.get("flags", []) if flag["kind"] == "code_regression"]
        others = [flag for flag in state.get("flags", []) if flag["kind"] != "code_regression"]
        return {**state, "flags": standing + others, "validation": validation}

    @contextlib.contextmanager
    def _discarding_uncommitted_snapshots(self, outcomes: dict[str, BatchOutcome]):
        """If the commit fails, delete the snapshot files its candidates wrote: no file without a record."""
        try:
            yield
        except BaseException:
            if self.store.lost is not None:
                raise  # those paths may now be another state's files
            for name, outcome in outcomes.items():
                version = outcome.result.get("candidate_version")
                if version is not None and self.store.snapshot(name, version) is None:
                    model_file = self.registry.snapshot_file(name, version)
                    for path in (model_file, model_file.with_suffix(".reference.parquet")):
                        path.unlink(missing_ok=True)
            raise

    def _keep_manual_choice(self, name: str, outcome: BatchOutcome, db) -> None:
        """Someone moved the serving pointer by hand while this batch trained: their choice stands."""
        reason = "serving changed by hand while the candidate trained; not promoted"
        version = outcome.result.get("candidate_version")
        if version is not None and outcome.result.get("action") == "promoted":
            self.store.set_snapshot_status(name, version, "rejected", reason, db=db)
        outcome.result["action"] = "rejected"
        outcome.result["action_detail"] = reason
        outcome.events = [e for e in outcome.events if e.kind not in (EventKind.PROMOTED, EventKind.ROLLED_BACK)]
        outcome.events.append(Event(EventKind.REJECTED, f"{name}: {reason}", model=name))

    def _result_event(self, name: str, file: str, outcome: BatchOutcome) -> Event:
        result = outcome.result
        parts = [f"{name} on {file}:"]
        metric = result.get("metric")
        if result.get("metrics") and metric:
            parts.append(f"{metric} {result['metrics'].get(metric) if result['metrics'].get(metric) is not None else float('nan'):.3f}")
        if result.get("drifted_features"):
            parts.append(f"drifted {', '.join(result['drifted_features'][:3])}")
        parts.append(f"action {result.get('action', 'none')}")
        kind = EventKind.FLAGGED if result.get("flags") and result.get("serving_version") else EventKind.BATCH_RESULT
        return Event(kind, " ".join(parts), model=name, file=file,
                     data={"action": result.get("action"), "flags": result.get("flags", []), "metrics": result.get("metrics")})

    # --- storage helpers -------------------------------------------------------------

    def _archive(self, batch: Batch) -> None:
        """Keep a labeled batch's rows: retrains and validation read them even if the source file goes."""
        path = self.paths.batches / f"{batch.sha256[:16]}.parquet"
        if not path.exists():
            temporary = path.with_suffix(".tmp")
            temporary.write_bytes(parquet_bytes(batch.frame))
            os.replace(temporary, path)

    def _load_batches(self, file_ids: list[int]) -> list[tuple[str, str, pd.DataFrame]]:
        """(name, sha256, rows) of archived labeled batches, through a small cache."""
        loaded = []
        for file_id in file_ids:
            record = self.store.file(file_id)
            if file_id not in self._batch_cache:
                self._remember_batch(file_id, self.read_archived(record.sha256))
            self._batch_cache.move_to_end(file_id)
            loaded.append((record.name, record.sha256, self._batch_cache[file_id]))
        return loaded

    def _remember_batch(self, file_id: int, frame: pd.DataFrame) -> None:
        self._batch_cache[file_id] = frame
        while len(self._batch_cache) > BATCH_CACHE_SIZE:
            self._batch_cache.popitem(last=False)

    def read_archived(self, sha256: str) -> pd.DataFrame:
        """An archived batch's rows under the config as it is now (it may have changed since the batch came):
        each feature column of the kind the config gives it, and a column the batch did not have (a new
        feature, a new target) missing throughout."""
        frame = pd.read_parquet(self.paths.batches / f"{sha256[:16]}.parquet")
        for column in (*self.config.schema, *([self.config.target] if self.config.target else [])):
            if column not in frame:
                frame[column] = None
        for column, kind in self.config.schema.items():
            if (kind == NUMERIC) != pd.api.types.is_numeric_dtype(frame[column]):
                frame[column] = prepare_features(frame[[column]], {column: kind})[column]
        return frame

    def _repair_serving_file(self, name: str) -> None:
        try:
            self.registry.write_serving_files(name)
        except (OSError, SnapshotError) as error:
            self.emit(Event(EventKind.ERROR, f"{name}: cannot write the serving file: {error}", model=name))

    def _run_remote_commands(self) -> None:
        for command_id, kind, model, args in self.store.pending_commands():
            try:
                message = self.execute(kind, model, args)
                self.store.finish_command(command_id, True, message)
            except (CommandFailed, KeyError, ValueError) as error:
                self.store.finish_command(command_id, False, str(error))
            except Exception as error:  # noqa: BLE001 - report, keep watching
                self.store.finish_command(command_id, False, f"{type(error).__name__}: {error}")

    def execute(self, kind: str, model: str | None, args: dict[str, Any]) -> str:
        """Run a named command (``rollback``, ``promote``, ``retrain``); return a line for people."""
        if kind == "rollback":
            before, after = self.rollback(model, args.get("to"))
            return f"{model}: rolled back from v{before} to v{after}"
        if kind == "promote":
            before, after = self.promote(model, int(args["version"]))
            return f"{model}: v{after} now serves (was {f'v{before}' if before else 'nothing'})"
        if kind == "retrain":
            outcome = self.retrain_now(model)
            return f"{model}: retrain {outcome.result.get('action', 'none')}: {outcome.result.get('action_detail', '')}".rstrip(": ")
        raise CommandFailed(f"unknown command {kind!r}")


def _profiles_schema(reference: dict[str, Any], schema: dict[str, str]) -> bool:
    """Whether a stored reference profile has exactly the schema's columns, each of its kind."""
    columns = Profile.from_dict(reference).columns
    return list(columns) == list(schema) and all(
        isinstance(profile, NumericProfile) == (schema[name] == NUMERIC) for name, profile in columns.items())


def _identity(folder: Path) -> tuple[int, int] | None:
    """(device, inode) of the folder at ``folder``, or None when there is none."""
    try:
        found = os.stat(folder)
    except OSError:
        return None
    return (found.st_dev, found.st_ino) if S_ISDIR(found.st_mode) else None
