"""The monitor: one worker thread that turns complete files into batches and results.

Everything that changes state goes through here, whoever asks: the watcher
(files), and the TUI, the CLI and other processes (commands, see
:mod:`app.commands`; another process leaves them in the store's ``commands``
table, checked between files). Commands are carried out between files, before
any file still waiting. Subscribers receive :class:`~app.events.Event`
objects on the monitor's thread and must only hand them on (the TUI posts a
message; the headless printer prints).
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
from stat import S_ISDIR, S_ISREG
from typing import Any, Callable

import pandas as pd
from threadpoolctl import threadpool_limits

from app.commands import GATE_KINDS, Command, CommandFailed, CommandResult, CommandTicket
from app.config import Config, ConfigError
from app.errorlog import log_error
from app.events import Event, EventKind
from app.fsutil import NotRegularFile, file_kind
from app.labels import label_signal_issue
from app.ingest import FileChanged, FileSnapshot, quarantine, read_batch
from app.policy import BatchOutcome, ModelRunner, Pending, label_stats
from app.environment import environment_diff, environment_record
from app.readers import UnreadableFile
from app.reproduce import NOT_VALIDATED, Reproduction, reproduce
from app.serving import parquet_bytes
from app.registry import RollbackImpossible
from app.snapshots import SnapshotError
from app.models import NUMERIC, prepare_features
from app.stats.profile import NumericProfile, Profile
from app.store import FileStat, StateLost
from app.training import Trainer
from app.validation import Batch, InvalidBatch
from app.watcher import FolderWatcher, watched_file
from app.workspace import Workspace

FOLDER_KEY = "__folder__"
COMMAND_POLL_SECONDS = 0.5
STOP_PRIORITY, COMMAND_PRIORITY, FILE_PRIORITY = 0, 1, 2
MONITOR_THREADS = 1  # BLAS/OpenMP threads for in-process scoring: a core stays free for the UI
BATCH_CACHE_SIZE = 16
READ_ATTEMPTS = 2  # reads of a file during which the process died before it is quarantined unread
PROCESS_DIED = "the process died while reading it"
ONCE_SETTLE_INTERVALS = 10  # --once waits this many settle intervals at most for a file still being written


class MonitorBusy(Exception):
    """Another driftdeck process holds this data folder: ``role`` is "watch" or the command it carries out."""

    def __init__(self, message: str, pid: int | None, role: str | None) -> None:
        super().__init__(message)
        self.pid = pid
        self.role = role


class Monitor:
    """Watches one data folder and applies every model's policy to each new batch.

    ``state_dir`` defaults to ``DATA_DIR/.driftdeck``. Call :meth:`start` to
    watch, :meth:`run_once` to process what is there and return, and
    :meth:`close` when done.
    """

    def __init__(self, data_dir: Path, state_dir: Path | None = None, *, poll: bool = False,
                 trainer: Trainer | None = None) -> None:
        self.workspace = Workspace.open(data_dir, state_dir)
        self.data_dir = self.workspace.data_dir
        self._watched_folder = _identity(self.data_dir)
        self.folder_missing = False
        self.config: Config = self.workspace.config
        self.paths = self.workspace.paths
        self.store = self.workspace.store
        self.registry = self.workspace.registry
        threadpool_limits(limits=MONITOR_THREADS)
        self.trainer = trainer or Trainer(timeout=self.config.watch.train_timeout, log=self.paths.training_log)
        self.poll = poll
        self.paused = False
        self.training: dict[str, Any] | None = None
        self._subscribers: list[Callable[[Event], None]] = []
        self._queue: queue.PriorityQueue = queue.PriorityQueue()
        self._sequence = itertools.count()
        self._intake_lock = threading.Lock()  # pause/resume (any thread) against the worker's deferring
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

    @property
    def alive(self) -> bool:
        """In this process the monitor runs as long as its caller does."""
        return True

    def restart(self) -> None:
        """Nothing to restart in this process: only an engine in another process can stop on its own."""

    def subscribe(self, callback: Callable[[Event], None]) -> None:
        self._subscribers.append(callback)

    def acquire(self, role: str = "watch") -> None:
        """Take the data folder's lock: one process per folder, watching (``role`` "watch") or one command.

        The lock is held on the data folder itself, so it survives the state
        folder being moved aside or deleted; ``monitor.lock`` in the state
        folder names the process that holds it and what for ("PID ROLE").
        """
        folder = os.open(self.data_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(folder)
            try:
                holder = self.paths.lock.read_text().split()
            except OSError:
                holder = []
            raise self._busy(holder) from None
        self._lock_handle = folder
        self.paths.lock.write_text(f"{os.getpid()} {role}")

    def _busy(self, holder: list[str]) -> MonitorBusy:
        """Who holds the lock, from what it wrote there ("PID ROLE"; a lock just taken may be empty)."""
        pid = int(holder[0]) if holder and holder[0].isdigit() else None
        role = holder[1] if len(holder) > 1 else None
        if role == "watch":
            return MonitorBusy(f"another driftdeck (pid {pid}) is already watching {self.data_dir}", pid, role)
        if role is None:  # the state folder (and the note in it) moved aside, or a lock taken this instant
            return MonitorBusy(f"another driftdeck (pid {pid or '?'}) is already watching {self.data_dir} or carrying"
                               " out a command in it", pid, role)
        return MonitorBusy(f"another driftdeck (pid {pid or '?'}) is carrying out a {role} in {self.data_dir}",
                           pid, role)

    def start(self) -> None:
        """Start the worker thread and the folder watcher (files already there are picked up)."""
        if self._lock_handle is None:
            self.acquire()
        self._start_training_server()
        self._thread = threading.Thread(target=self._work, name="driftdeck-monitor", daemon=True)
        self._announce_config_changes()
        for name in self.runners:
            if self.environment_changed(name):
                self.submit(Command("validate", name))
        self._thread.start()
        self._watcher = FolderWatcher(self.data_dir, self.paths.root, self.submit_file,
                                      settle_seconds=self.config.watch.settle_seconds, poll=self.poll)
        self._watcher.start()

    def run_once(self) -> None:
        """Process every complete file in the folder now, on this thread, then return.

        A file still changing is waited for, but never longer than
        ``ONCE_SETTLE_INTERVALS`` settle intervals with nothing else to do: it
        is then left for the next run, with a ``file_skipped`` event.
        """
        if self._lock_handle is None:
            self.acquire()
        self._start_training_server()
        self._announce_config_changes()
        settle = self.config.watch.settle_seconds
        # Never started, only scanned: the polling kind, which takes no inotify instance (a per-user limit).
        watcher = FolderWatcher(self.data_dir, self.paths.root, lambda path: None, settle_seconds=settle, poll=True)
        watcher.scan()
        patience = ONCE_SETTLE_INTERVALS * settle
        idle_since = time.monotonic()
        self._serve_commands()
        while watcher.pending_count() and time.monotonic() - idle_since < patience and self.fatal is None:
            for path in watcher.complete_now():
                self._guarded(self._handle_file, path)
                idle_since = time.monotonic()
                self._serve_commands()
            if watcher.pending_count():
                time.sleep(0.1)
        for name in sorted(path.name for path in watcher.pending_paths()):
            self.emit(Event(EventKind.FILE_SKIPPED, f"{name}: still changing after {patience:.3g} s; left for the next run",
                            file=name, data={"left": True}))
        if self.fatal is None:
            self._serve_commands()

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
        self._withdraw_queued()
        self.trainer.close()
        self.store.close()
        if self._lock_handle is not None:
            os.close(self._lock_handle)
            self._lock_handle = None

    def _withdraw_queued(self) -> None:
        """Answer every command still waiting: nobody is left to carry it out."""
        while True:
            try:
                _, _, kind, argument = self._queue.get_nowait()
            except queue.Empty:
                return
            self._queue.task_done()
            if kind == "command" and argument.start():
                stopped = f"the monitor stopped before the {argument.command.title}; nothing was done"
                self._guarded(argument.finish, CommandResult(False, stopped))

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

    def submit(self, command: Command, on_finish: Callable[[CommandResult], None] | None = None) -> CommandTicket:
        """Hand ``command`` to the monitor (from any thread); wait on the ticket for its result.

        Pause and resume only open or close the intake and are answered at
        once; the others are carried out on the monitor's thread after the file
        in progress, before any file still waiting.
        """
        ticket = CommandTicket(command, on_finish)
        if command.kind in GATE_KINDS:
            ticket.start()
            ticket.finish(self._set_intake(open_=command.kind == "resume"))
        else:
            self._enqueue(COMMAND_PRIORITY, "command", ticket)
        return ticket

    def serve_queued(self) -> None:
        """Carry out, on this thread, the commands waiting (``--once`` and the CLI run no worker thread)."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            try:
                self._serve(item)
            finally:
                self._queue.task_done()

    def validate(self, model: str) -> Reproduction:
        """Re-check ``model``'s serving snapshot now; record a ``validated``, ``code_regression`` or ``not_validated`` event.

        Only a completed check changes the model's ``code_regression`` flag.
        """
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
        if result.outcome == NOT_VALIDATED:  # the check could not be completed: neither passed nor failed
            self.emit(Event(EventKind.NOT_VALIDATED, result.summary, model=model, data=result.to_dict()))
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

    @property
    def waiting_files(self) -> int:
        """How many files arrived while paused and wait for ``resume``."""
        with self._intake_lock:
            return len(self._deferred)

    def _set_intake(self, open_: bool) -> CommandResult:
        """Pause (files wait in ``_deferred``) or resume (they are queued again, in order)."""
        with self._intake_lock:
            self.paused = not open_
            deferred, self._deferred = (list(self._deferred), {}) if open_ else ([], self._deferred)
            for path in deferred:
                self.submit_file(path)
        if open_:
            event = Event(EventKind.RESUMED, f"watching resumed ({len(deferred)} file(s) waiting)")
        else:
            event = Event(EventKind.PAUSED, "watching paused: new files wait until resumed")
        self.emit(event)
        return CommandResult(True, event.message, {"waiting": len(deferred)})

    def _defer_if_paused(self, path: Path) -> bool:
        with self._intake_lock:
            if self.paused:
                self._deferred[path] = None
            return self.paused

    def cancel_training(self) -> None:
        self.trainer.cancel.set()

    # --- pointer commands (the route carries them out on the monitor's thread) ----------

    def rollback(self, model: str, to_version: int | None = None, asked_serving: int | None = None) -> tuple[int, int]:
        """Serve the previous good snapshot (or ``to_version``); return (from, to).

        ``asked_serving``: the version that served when the rollback was asked.
        The rollback goes back from it, whatever serves by now: to the good
        snapshot that served before it, or refuses if that one serves already.
        """
        self.config.model(model)
        with self._pointer_lock:
            current = self.store.serving_version(model)
            if current is None:
                raise CommandFailed(f"{model} has no serving model yet")
            try:
                target = self.registry.rollback_target(model, to_version, back_from=asked_serving)
                self.registry.load(model, target.version)
            except (RollbackImpossible, SnapshotError) as error:
                raise CommandFailed(str(error)) from None
            detail = f"rolled back from v{current} to v{target.version}"
            if asked_serving not in (None, current):
                detail += f" (asked while v{asked_serving} served)"
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
            self._guarded(self._take_remote_commands)  # between files: they go before the files waiting
            try:
                item = self._queue.get(timeout=COMMAND_POLL_SECONDS)
            except queue.Empty:
                self._guarded(self._check_data_folder)
                continue
            try:
                if not self._serve(item):
                    return
            finally:
                self._queue.task_done()

    def _serve(self, item: tuple) -> bool:
        """Handle one queued file or command; False once told to stop."""
        _, _, kind, argument = item
        if kind == "file":
            self._guarded(self._handle_file, argument)
        elif kind == "command":
            self._guarded(self._run_command, argument)
        return kind != "stop"

    def _serve_commands(self) -> None:
        self._guarded(self._take_remote_commands)
        self.serve_queued()

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
        if self._defer_if_paused(path):  # a file already in the ledger never waits: nothing is left to do for it
            return
        if not S_ISREG(stat.st_mode):
            self._skip(name, stat, f"not a regular file ({file_kind(stat.st_mode)}); only regular files are read")
            return
        read = self._read_marked(path, stat)
        if read is None:
            return
        snapshot, batch = read
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

    def _read_marked(self, path: Path, stat: os.stat_result) -> tuple[FileSnapshot, Batch | InvalidBatch] | None:
        """:meth:`_read`, with the file marked in the store as being read meanwhile.

        A mark left by a process that died reading the file (an abort inside a
        parser cannot be caught) gets it read once more; a second death
        quarantines it unread instead of stopping the monitor at every start.
        """
        name = path.name
        died = self.store.begin_reading(name, stat.st_size, stat.st_mtime_ns)
        try:
            if died >= READ_ATTEMPTS:
                self._reject(FileSnapshot.unread(name, stat),
                             [f"{PROCESS_DIED} ({died} times); not read again"])
                return None
            if died:
                self.emit(Event(EventKind.FILE_SEEN, f"{name}: {PROCESS_DIED} last time; reading it once more",
                                file=name, data={"retry": died}))
            return self._read(path, stat)
        finally:
            self.store.end_reading(name)

    def _read(self, path: Path, stat: os.stat_result) -> tuple[FileSnapshot, Batch | InvalidBatch] | None:
        """Read and validate the file; None when that ended in an event instead (skipped, refused, unreadable)."""
        name = path.name
        # Parsed before the ledger lookup: the SHA-256 is taken as the bytes stream into the parser
        # (see read_batch), so the rare duplicate costs one parse thrown away.
        try:
            return read_batch(path, self.config)
        except NotRegularFile as error:
            self._skip(name, stat, str(error))
        except FileChanged:
            if self._watcher is not None:
                self._watcher.touch(path)
        except UnreadableFile as error:
            self._reject(FileSnapshot.unread(name, stat), [str(error)])
        except OSError as error:
            reason = error.strerror or str(error)
            self.emit(Event(EventKind.FILE_ERROR, f"{name}: cannot be read: {reason}", file=name, data={"reason": reason}))
        return None

    def _skip(self, name: str, stat: os.stat_result, reason: str) -> None:
        """Record once that ``name`` is not a batch to read (a FIFO, a folder, a device), with why."""
        self.store.record_file(name, None, "skipped", reason=reason, seen=FileStat.of(stat))
        self.emit(Event(EventKind.FILE_SKIPPED, f"{name}: skipped: {reason}", file=name, data={"reason": reason}))

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

    # --- commands -----------------------------------------------------------------------

    def _take_remote_commands(self) -> None:
        """Queue the commands other processes left in the store and still wait for."""
        for command_id, kind, model, args in self.store.take_commands(time.time()):
            answer = functools.partial(self._answer_remote, command_id)
            try:
                command = Command.from_row(kind, model, args)
            except CommandFailed as error:
                answer(CommandResult(False, str(error)))
                continue
            self.submit(command, on_finish=answer)

    def _answer_remote(self, command_id: int, result: CommandResult) -> None:
        self.store.finish_command(command_id, result.ok, result.to_json())

    def _run_command(self, ticket: CommandTicket) -> None:
        if ticket.start():  # else its asker stopped waiting: it must not run unasked
            ticket.finish(self._carry_out(ticket.command))

    def _carry_out(self, command: Command) -> CommandResult:
        """Run ``command`` on this thread; a refusal or a failure is a result, never an exception."""
        try:
            return self._dispatch(command)
        except (CommandFailed, ConfigError, KeyError, ValueError) as error:
            return CommandResult(False, str(error))
        except Exception as error:  # noqa: BLE001 - the monitor must outlive every command
            self._set_training(None)
            message = f"{command.model + ': ' if command.model else ''}{type(error).__name__}: {error}"
            self.emit(Event(EventKind.ERROR, message, model=command.model, data={"where": command.kind}))
            return CommandResult(False, message)

    def _dispatch(self, command: Command) -> CommandResult:
        model = command.model
        if command.kind == "rollback":
            before, after = self.rollback(model, command.version, asked_serving=command.serving)
            asked = f" (asked while v{command.serving} served)" if command.serving not in (None, before) else ""
            return CommandResult(True, f"{model}: rolled back from v{before} to v{after}{asked}",
                                 {"from": before, "to": after})
        if command.kind == "promote":
            before, after = self.promote(model, command.version)
            return CommandResult(True, f"{model}: v{after} now serves (was {f'v{before}' if before else 'nothing'})",
                                 {"from": before, "to": after})
        if command.kind == "retrain":
            result = self.retrain_now(model).result
            message = f"{model}: retrain {result.get('action', 'none')}: {result.get('action_detail', '')}"
            failed = result.get("action") == "failed"  # failed, cancelled or timed out: no candidate to gate
            return CommandResult(not failed, message.rstrip(": "), {"action": result.get("action")})
        reproduction = self.validate(self.config.model(model).name)  # validate: pause and resume never queue
        return CommandResult(True, reproduction.summary, reproduction.to_dict())


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
