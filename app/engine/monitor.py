"""The monitor: one worker thread, one queue, and the life cycle of the engine.

Everything that changes state goes through its thread, whoever asks: the
watcher (files), and the TUI, the CLI and other processes (commands, see
:mod:`app.commands`; another process leaves them in the store's ``commands``
table, checked between files). Commands are carried out between files, before
any file still waiting. The work itself belongs to the stages: a file goes
through :mod:`~app.engine.intake`, each model's :mod:`~app.engine.runner` and
:mod:`~app.engine.commit`; a command through :mod:`~app.engine.dispatch`.
Subscribers receive :class:`~app.events.Event` objects on the monitor's thread
and must only hand them on (the TUI posts a message; the headless printer prints).
"""

from __future__ import annotations

import functools
import itertools
import os
import queue
import threading
import time
from dataclasses import replace
from pathlib import Path
from stat import S_ISDIR
from typing import Any, Callable

from threadpoolctl import threadpool_limits

from app.columns import NUMERIC
from app.commands import GATE_KINDS, Command, CommandFailed, CommandResult, CommandTicket
from app.config import Config
from app.engine.assess import label_stats
from app.engine.commit import Committer
from app.engine.context import StageContext
from app.engine.dispatch import Dispatcher
from app.engine.intake import ENVIRONMENT_FAULTS, Arrival, Intake
from app.engine.labels import LabelStage
from app.engine.lock import FolderLock
from app.engine.records import BatchOutcome, Pending
from app.engine.runner import ModelRunner
from app.errorlog import log_error
from app.events import Event, EventKind
from app.label_files import LabelFile
from app.label_ledger import LabelJoin
from app.lineage import TAINTED
from app.labels import label_signal_issue
from app.snapshots import SnapshotError
from app.stats.profile import NumericProfile, Profile
from app.store import FolderState, StateLost
from app.training import Trainer
from app.validation import Batch
from app.watcher import FolderWatcher
from app.workspace import Workspace

COMMAND_POLL_SECONDS = 0.5
STOP_PRIORITY, COMMAND_PRIORITY, FILE_PRIORITY = 0, 1, 2
MONITOR_THREADS = 1  # BLAS/OpenMP threads for in-process scoring: a core stays free for the UI
ONCE_SETTLE_INTERVALS = 10  # --once waits this many settle intervals at most for a file still being written


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
        self._thread: threading.Thread | None = None
        self._watcher: FolderWatcher | None = None
        self.lock = FolderLock(self.data_dir, self.paths.lock)
        self._stopping = threading.Event()
        self._training_server_started = False
        self.fatal: str | None = None  # why the monitor stopped for good (its state is gone), or None
        self.context = StageContext.open(self.workspace, self.emit, self._set_training)  # every stage's parts
        self.runners = {model.name: ModelRunner(self.context, model, self.trainer) for model in self.config.models}
        self.intake = Intake(self.context, defer=self._defer_if_paused, changed=self._read_again)
        self.committer = Committer(self.context)
        self.labels = LabelStage(self.context, self.runners, self.committer)
        self.dispatcher = Dispatcher(self.context, self.runners, self.committer)
        for name in self.runners:
            self._repair_serving_file(name)

    # --- life cycle --------------------------------------------------------------

    def _start_training_server(self) -> None:
        """Have the training server ready by the first retrain, without holding up the first batch.

        Started once: by ``start``, or by the first new batch of ``run_once`` (a run with nothing new
        would otherwise wait for a server it never uses before it could close it)."""
        if self.runners and not self._training_server_started:
            self._training_server_started = True
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
        """Take the data folder's lock for ``role`` ("watch", or the command this process carries out).

        An exclusion whose repair a dead process left unfinished is finished first, before any file or command,
        and the ``tainted`` flags are settled wherever an exclusion or a flag could have been left half done.
        """
        self.lock.acquire(role)
        states = [self.store.model_state(name) for name in self.runners]
        flagged = any(flag["kind"] == TAINTED for state in states if state is not None for flag in state.flags)
        if self.store.unrepaired_exclusions() or self.store.exclusions() or flagged:
            self._enqueue(COMMAND_PRIORITY, "exclusions", None)

    def start(self) -> None:
        """Start the worker thread and the folder watcher (files already there are picked up)."""
        if not self.lock.held:
            self.acquire()
        self._start_training_server()
        self._thread = threading.Thread(target=self._work, name="driftdeck-monitor", daemon=True)
        self._announce_config_changes()
        for name in self.runners:
            if self.dispatcher.environment_changed(name):
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
        if not self.lock.held:
            self.acquire()
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
            self._guarded(self.labels.expire)
            self._guarded(self.labels.retry_unscored)
            self._serve_commands()

    def config_changes(self, model: str) -> list[str]:
        """Why ``model``'s serving snapshot cannot be scored under the current config (empty when it can)."""
        serving = self.registry.serving(model)
        return self.runners[model].assess.config_changes(serving) if serving is not None else []

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
        if self._watcher is not None:  # again: the worker may have started a new one for a folder that came back
            self._watcher.stop()
        self._withdraw_queued()
        self.trainer.close()
        self.context.streams.close()
        self.store.close()
        self.lock.release()

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
                self._guarded(self.labels.expire)  # between files: labels that waited too long for their ids
                self._guarded(self.labels.retry_unscored)
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
        elif kind == "exclusions":
            self._guarded(self.dispatcher.exclusions.finish_interrupted)
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
        if self._stopping.is_set():
            return
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
        arrival = self.intake.take(path)
        if arrival is None:
            return
        if isinstance(arrival.batch, LabelFile):
            self.labels.take(arrival.snapshot, arrival.batch)
        else:
            self._ingest(arrival)

    def _read_again(self, path: Path) -> None:
        """A file that changed while it was read: the watcher waits for it to settle again."""
        if self._watcher is not None:
            self._watcher.touch(path)

    def _ingest(self, arrival: Arrival) -> None:
        """Every model's outcome for a new batch, committed together.

        A batch that raises before its commit for a reason of its own (not a fault of the disk, the
        database or the state folder) is quarantined with the reason, not tried again at every start.
        """
        self._start_training_server()
        batch = arrival.batch
        for warning in batch.warnings:
            self.emit(Event(EventKind.FILE_SEEN, f"{batch.name}: {warning}", file=batch.name, data={"warning": warning}))
        serving_before = {name: self.store.serving_version(name) for name in self.runners}
        outcomes: dict[str, BatchOutcome] = {}
        try:
            with self.committer.discarding_uncommitted_snapshots(outcomes):
                folder = self._assess_and_train(batch, outcomes)
        except ENVIRONMENT_FAULTS:
            raise
        except Exception as error:  # noqa: BLE001 - one batch that cannot be handled must not stop the monitor
            self._set_training(None)
            self.intake.quarantine_unhandled(arrival.snapshot, error)
            return
        joined: list[LabelJoin] = []
        self.committer.commit(arrival.snapshot, batch, outcomes, serving_before=serving_before, folder=folder,
                              with_entry=self.labels.record(batch, joined) if self.labels.awaits(batch) else None)
        self.labels.after_batch(joined)

    def _assess_and_train(self, batch: Batch, outcomes: dict[str, BatchOutcome]) -> FolderState:
        """Fill ``outcomes`` with each model's outcome for ``batch``; return the folder-wide facts to store."""
        pending = Pending()
        if batch.labeled or self.labels.awaits(batch):
            pending.add(lambda: self.context.archive.archive(batch))
        folder = self.store.folder_state()
        if folder.reference is None or not _profiles_schema(folder.reference, self.config.schema):
            folder = replace(folder, reference=Profile.build(batch.frame, self.config.schema).to_dict(),
                             reference_sha=batch.sha256)  # an exclusion of this batch builds it again (app.engine.exclusion)
        label_check = None
        if batch.labeled:  # run at most once per batch, and only if a runner asks (see ModelRunner.process)
            label_check = functools.cache(functools.partial(
                label_signal_issue, batch.frame, self.config.schema, self.config.target, self.config.task,
                self.config.timestamp))
        for name, runner in self.runners.items():
            outcomes[name] = runner.process(batch, folder, pending, label_check)
        self._set_training(None)
        self.store.check_identity()  # the batch's files go into the state folder: only the one opened
        pending.run()
        if batch.labeled and self.config.target:
            folder = replace(folder, previous_labels=label_stats(batch.frame[self.config.target], self.config.task))
        return folder

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
            ticket.finish(self.dispatcher.carry_out(ticket.command))


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
