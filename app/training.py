"""Fit candidate models in a separate, long-lived process, with progress, a timeout and cancel.

Training is the one CPU-heavy step, so it runs in a worker process: the
monitor's thread and the UI stay responsive, a hung fit can be killed, and a
fit that crashes the interpreter cannot take the monitor with it. The worker
is forked from a forkserver that has already imported scikit-learn, caps
BLAS/OpenMP threads at one so a core is always left for the UI, and serves one
job after another. It keeps the batches of its last two jobs, so a batch that
several windows share crosses the pipe once, not once per job. A worker that
is cancelled, times out or dies is killed, and the next job starts a new one.

The worker returns the fitted pipeline and its skops bytes (what a snapshot
file holds), having checked that those bytes hold trusted types only. It
never writes to the terminal: its output (warnings, tracebacks) goes to the
training log, and its failures come back as messages the monitor turns into
events. The helper interpreters multiprocessing starts (the forkserver, its
resource tracker) import driftdeck's own code only, whatever the current
folder holds.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import threading
import time
import traceback
import weakref
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd

PROGRESS_POLL_SECONDS = 0.05
FIT_THREADS = 1
PR_SET_PDEATHSIG = 1
# Every child re-runs the main script (the ``driftdeck`` console script imports app.cli) before it
# starts; with app.cli already imported in the forkserver that takes a millisecond, not ~200 ms.
# (multiprocessing's own "__main__" preload does nothing here: in Python 3.11 the forkserver looks for
# the script under a key it is never given.)
FORKSERVER_PRELOAD = ["app.cli", "app.training", "app.models", "app.snapshots"]
# The folder this driftdeck's ``app`` package was imported from: the helper interpreters import from it.
CODE_ROOT = Path(__file__).resolve().parent.parent
# The resource tracker warns of semaphores a killed worker (timeout, cancel) left behind; it cleans them up.
QUIET_TRACKER = "ignore::UserWarning:multiprocessing.resource_tracker"
LOG_MAX_BYTES = 1 << 20


class TrainingFailed(Exception):
    """The fit raised, crashed, timed out or was cancelled; the message says which."""


@dataclass
class TrainJob:
    """What to fit: rows of labeled batches, with the feature columns and ``target``.

    ``parts`` are (key, rows) pairs, oldest batch first: the key names a
    batch's rows (its SHA-256), so a worker that already holds them is sent
    ``None`` instead. ``positions`` picks the rows to fit on, in fit order,
    from the parts stacked into one frame (0 .. total rows - 1); None takes
    them all as they come. ``incremental_from`` is the serving model's skops
    bytes when the model continues with ``partial_fit`` instead of fitting
    from scratch.
    """

    task: str
    estimator: str
    params: dict[str, Any]
    schema: dict[str, str]
    target: str
    parts: list[tuple[str, pd.DataFrame | None]]
    positions: np.ndarray | None = None
    seed: int = 0
    incremental_from: bytes | None = None
    classes: list[str] | None = None

    def training_frame(self) -> pd.DataFrame:
        """The rows to fit on, in fit order, with every part's columns (needs every part's rows)."""
        stacked = pd.concat([rows for _, rows in self.parts], ignore_index=True)
        return stacked if self.positions is None else stacked.take(self.positions)


@dataclass(frozen=True)
class FittedModel:
    """What a training worker hands back.

    ``model`` is the fitted pipeline, ``data`` the same pipeline as skops bytes
    (holding trusted types only) and ``fit_seconds`` the wall-clock seconds of
    the pipeline's own fit (preprocessing and estimator), without the data
    transfer or serialisation.
    """

    model: Any
    data: bytes
    fit_seconds: float


def fit_job(job: TrainJob, progress: Callable[[float, str], None]) -> FittedModel:
    """Fit the job's pipeline; return it with its skops bytes and the fit's own duration (runs in the worker)."""
    import skops.io

    from app.models import build_pipeline, fit_pipeline
    from app.snapshots import check_trusted, load_trusted

    pipeline = build_pipeline(job.task, job.estimator, job.params, job.schema, seed=job.seed)
    base = load_trusted(job.incremental_from) if job.incremental_from is not None else None
    frame = job.training_frame()
    progress(0.3, f"fitting {job.estimator} on {len(frame):,} rows")
    started = time.perf_counter()
    fitted = fit_pipeline(pipeline, frame[list(job.schema)], frame[job.target], incremental_from=base,
                          classes=job.classes)
    seconds = time.perf_counter() - started
    progress(0.9, "saving the model")
    data = skops.io.dumps(fitted)
    check_trusted(data, source=f"the fitted {job.estimator} pipeline")
    return FittedModel(fitted, data, seconds)


FitFunction = Callable[[TrainJob, Callable[[float, str], None]], FittedModel]


def _die_with_parent() -> None:
    """Ask Linux to kill this process when its parent (the forkserver) goes.

    The forkserver ends when the monitor's process does, even on SIGKILL, as
    soon as no process holds its "alive" pipe; a child inherits that pipe, so
    it lets go of it first. A training worker would otherwise be handed to init
    and fit on, unseen, and keep the forkserver alive too.
    """
    from multiprocessing import forkserver

    alive = getattr(forkserver._forkserver, "_forkserver_alive_fd", None)
    if alive is not None:
        os.close(alive)
        forkserver._forkserver._forkserver_alive_fd = None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the timeout still bounds a training
        pass


def _write_output_to(log: str) -> None:
    """Send this process's stdout and stderr (Python's and C's) to ``log`` (kept under 1 MB), never to the terminal.

    A log that cannot be written is no reason not to train: the output is then dropped.
    """
    with contextlib.suppress(OSError):
        if log != os.devnull and os.path.getsize(log) > LOG_MAX_BYTES:
            os.replace(log, log + ".1")
    try:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError:
        fd = os.open(os.devnull, os.O_WRONLY)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _worker_main(fit: FitFunction, connection, log: str = os.devnull) -> None:
    """Serve jobs until the parent hangs up: each message is (job, keys to keep), each answer ends in done or error.

    A parent that hangs up mid-job (cancel, timeout, exit) ends the worker quietly.
    """
    from threadpoolctl import threadpool_limits

    _write_output_to(log)
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the worker
    with threadpool_limits(limits=FIT_THREADS), contextlib.suppress(EOFError, OSError):
        connection.send(("ready",))
        _serve(fit, connection)


def _serve(fit: FitFunction, connection) -> None:
    held: dict[str, pd.DataFrame] = {}

    def progress(fraction: float, text: str) -> None:
        connection.send(("progress", fraction, text))

    while True:
        job, keep = connection.recv()
        held.update((key, rows) for key, rows in job.parts if rows is not None)
        job = replace(job, parts=[(key, held[key]) for key, _ in job.parts])
        held = {key: held[key] for key in keep}
        try:
            answer = ("done", fit(job, progress))
        except BaseException as error:  # the parent needs every failure as a message; the log gets the traceback
            traceback.print_exc()
            answer = ("error", f"{type(error).__name__}: {error}")
        connection.send(answer)


@dataclass
class _Worker:
    """The parent's side of a worker: its process, its end of the pipe, and the keys of the rows it holds."""

    process: Any
    connection: Any
    held: set[str] = field(default_factory=set)
    last_keys: list[str] = field(default_factory=list)

    def send(self, job: TrainJob) -> None:
        """Send ``job`` without the rows the worker holds; it then keeps this job's rows and the last one's."""
        keys = [key for key, _ in job.parts]
        parts = [(key, None if key in self.held else rows) for key, rows in job.parts]
        keep = list(dict.fromkeys(self.last_keys + keys))
        self.connection.send((replace(job, parts=parts), keep))
        self.held, self.last_keys = set(keep), keys

    def stop(self) -> None:
        self.connection.close()
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)


_context_lock = threading.Lock()
_context = None


def _process_context():
    global _context
    with _context_lock:
        if _context is None:
            _context = multiprocessing.get_context("forkserver")
            _context.set_forkserver_preload(FORKSERVER_PRELOAD)
        return _context


@contextlib.contextmanager
def _own_code_only() -> Iterator[None]:
    """While held, the interpreters multiprocessing starts import driftdeck's own code only.

    They run ``python -c``, whose import path begins with the current folder:
    an ``app.py``, ``app/`` or ``multiprocessing/`` there would be imported
    instead of driftdeck's (and run). PYTHONSAFEPATH drops that entry and
    PYTHONPATH names the folder this process imported ``app`` from. Held
    around every process start: a forkserver that died is started again then.
    """
    settings = {
        "PYTHONSAFEPATH": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(CODE_ROOT), os.environ.get("PYTHONPATH")])),
        "PYTHONWARNINGS": ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), QUIET_TRACKER])),
    }
    with _context_lock:
        saved = {key: os.environ.get(key) for key in settings}
        os.environ.update(settings)
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@dataclass
class Trainer:
    """Runs :func:`fit_job` (or ``fit``) in a worker process, one job at a time.

    ``timeout`` is in seconds. ``log`` receives what the worker writes
    (warnings, the traceback of a failed fit); without it that is discarded.
    ``cancel`` may be set from any thread to stop a job; the worker is then
    killed and :class:`TrainingFailed` raised.
    """

    fit: FitFunction = fit_job
    timeout: float = 600.0
    log: Path | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    _worker: _Worker | None = field(default=None, init=False, repr=False)
    _stop_on_collect: weakref.finalize | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def start(self) -> None:
        """Start the worker and wait until it is ready.

        The first start also starts the forkserver, which imports scikit-learn
        and driftdeck once (about two seconds), so call this early, off the
        thread that waits on it: jobs then start at once. When the worker is
        already running this returns at once.
        """
        with self._lock:
            self._running_worker()

    def close(self) -> None:
        """Stop the worker (a job in progress is killed); the next job starts a new one."""
        with self._lock:
            self._stop_worker()

    def run(self, job: TrainJob, on_progress: Callable[[float, str], None] | None = None,
            meanwhile: Callable[[], None] | None = None) -> FittedModel:
        """Fit ``job`` in the worker and return what it fitted.

        ``meanwhile`` runs on this thread once the worker has the job, before
        waiting for it: the caller's own work overlaps the fit (the worker
        holds one core, this thread the other) instead of following it.
        """
        with self._lock:
            self.cancel.clear()
            worker = self._send(job)
            try:
                if meanwhile is not None:
                    meanwhile()
                return self._wait(worker, on_progress)
            except BaseException:
                self._stop_worker()
                raise

    def _send(self, job: TrainJob) -> _Worker:
        """Hand ``job`` to the worker; one that died while idle is replaced, once."""
        try:
            worker = self._running_worker()
            worker.send(job)
        except (OSError, EOFError):
            self._stop_worker()
            worker = self._running_worker()
            worker.send(job)
        return worker

    def _wait(self, worker: _Worker, on_progress: Callable[[float, str], None] | None) -> FittedModel:
        started = time.monotonic()
        while True:
            if self.cancel.is_set():
                raise TrainingFailed("cancelled")
            if time.monotonic() - started > self.timeout:
                raise TrainingFailed(f"timed out after {self.timeout:.0f} s (watch.train_timeout)")
            if worker.connection.poll(PROGRESS_POLL_SECONDS):
                try:
                    message = worker.connection.recv()
                except EOFError:
                    worker.process.join(timeout=1)
                    raise TrainingFailed(f"training process died (exit code {worker.process.exitcode})") from None
                if message[0] == "progress" and on_progress is not None:
                    on_progress(message[1], message[2])
                elif message[0] == "done":
                    return message[1]
                elif message[0] == "error":
                    raise TrainingFailed(message[1])
            elif not worker.process.is_alive():
                raise TrainingFailed(f"training process died (exit code {worker.process.exitcode})")

    def _running_worker(self) -> _Worker:
        if self._worker is not None and self._worker.process.is_alive():
            return self._worker
        self._stop_worker()
        context = _process_context()
        ours, theirs = context.Pipe()
        log = str(self.log) if self.log is not None else os.devnull
        process = context.Process(target=_worker_main, args=(self.fit, theirs, log), daemon=True,
                                  name="driftdeck-training")
        with _own_code_only():
            process.start()
        theirs.close()
        worker = _Worker(process, ours)
        try:
            ready = ours.poll(self.timeout) and ours.recv() == ("ready",)
        except EOFError:
            ready = False
        if not ready:
            worker.stop()
            raise TrainingFailed(f"training process did not start (exit code {process.exitcode})")
        self._worker = worker
        self._stop_on_collect = weakref.finalize(self, worker.stop)  # a Trainer dropped without close()
        return worker

    def _stop_worker(self) -> None:
        if self._stop_on_collect is not None:
            self._stop_on_collect()  # stops the worker, once
        self._worker = self._stop_on_collect = None
