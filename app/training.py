"""Fit a candidate model in a separate process, with progress, a timeout and cancel.

Training is the one CPU-heavy step, so it runs in a child process: the
monitor's thread and the UI stay responsive, a hung fit can be killed, and a
fit that crashes the interpreter cannot take the monitor with it. The child
is forked from a forkserver that has already imported scikit-learn, so a job
starts in milliseconds, and it caps BLAS/OpenMP threads at one so a core is
always left for the UI.

The child returns the fitted pipeline as skops bytes; the parent loads them
through the same trusted-types check as any snapshot.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import pandas as pd

PROGRESS_POLL_SECONDS = 0.05
FIT_THREADS = 1
PR_SET_PDEATHSIG = 1
# Every child re-runs the main script (the ``driftdeck`` console script imports app.cli) before it
# starts; with app.cli already imported in the forkserver that takes a millisecond, not ~200 ms.
# (multiprocessing's own "__main__" preload does nothing here: in Python 3.11 the forkserver looks for
# the script under a key it is never given.)
FORKSERVER_PRELOAD = ["app.cli", "app.training", "app.models", "app.snapshots"]


class TrainingFailed(Exception):
    """The fit raised, crashed, timed out or was cancelled; the message says which."""


@dataclass
class TrainJob:
    """What to fit: ``frame`` holds the feature columns and ``target``, rows in time order.

    ``incremental_from`` is the serving model's skops bytes when the model
    continues with ``partial_fit`` instead of fitting from scratch.
    """

    task: str
    estimator: str
    params: dict[str, Any]
    schema: dict[str, str]
    target: str
    frame: pd.DataFrame
    seed: int = 0
    incremental_from: bytes | None = None
    classes: list[str] | None = None


@dataclass(frozen=True)
class FittedModel:
    """What a training child hands back: the fitted pipeline as skops bytes, and
    ``fit_seconds``, the wall-clock seconds of the pipeline's own fit (preprocessing
    and estimator), without the process start, data transfer or serialisation."""

    data: bytes
    fit_seconds: float


def fit_job(job: TrainJob, progress: Callable[[float, str], None]) -> FittedModel:
    """Fit the job's pipeline; return it as skops bytes with the fit's own duration (runs in the child)."""
    import skops.io

    from app.models import build_pipeline, fit_pipeline
    from app.snapshots import load_trusted

    pipeline = build_pipeline(job.task, job.estimator, job.params, job.schema, seed=job.seed)
    base = load_trusted(job.incremental_from) if job.incremental_from is not None else None
    progress(0.3, f"fitting {job.estimator} on {len(job.frame):,} rows")
    started = time.perf_counter()
    fitted = fit_pipeline(pipeline, job.frame[list(job.schema)], job.frame[job.target], incremental_from=base,
                          classes=job.classes)
    seconds = time.perf_counter() - started
    progress(0.9, "saving the model")
    return FittedModel(skops.io.dumps(fitted), seconds)


FitFunction = Callable[[TrainJob, Callable[[float, str], None]], FittedModel]


def _die_with_parent() -> None:
    """Ask Linux to kill this process when its parent (the forkserver) goes.

    The forkserver ends when the monitor's process does, even on SIGKILL, as
    soon as no process holds its "alive" pipe; a child inherits that pipe, so
    it lets go of it first. A training child would otherwise be handed to init
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


def _ready() -> None:
    """A child that does nothing: forking it proves the training server is up."""


def _child_main(fit: FitFunction, job: TrainJob, connection) -> None:
    from threadpoolctl import threadpool_limits

    _die_with_parent()

    def progress(fraction: float, text: str) -> None:
        connection.send(("progress", fraction, text))

    try:
        with threadpool_limits(limits=FIT_THREADS):
            data = fit(job, progress)
        connection.send(("done", data))
    except BaseException as error:  # the parent needs every failure as a message
        connection.send(("error", f"{type(error).__name__}: {error}"))
    finally:
        connection.close()


_context_lock = threading.Lock()
_context = None


def _process_context():
    global _context
    with _context_lock:
        if _context is None:
            _context = multiprocessing.get_context("forkserver")
            _context.set_forkserver_preload(FORKSERVER_PRELOAD)
        return _context


@dataclass
class Trainer:
    """Runs :func:`fit_job` (or ``fit``) in a child process.

    ``timeout`` is in seconds. ``cancel`` may be set from any thread to stop a
    job; the child is then killed and :class:`TrainingFailed` raised.
    """

    fit: FitFunction = fit_job
    timeout: float = 600.0
    cancel: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        """Start the server that training processes fork from, and wait until it forks one.

        It imports scikit-learn and driftdeck once (about two seconds), so call
        this early, off the thread that waits on it: jobs then start in milliseconds.
        When the server is already running this takes milliseconds.
        """
        process = _process_context().Process(target=_ready, daemon=True)
        process.start()
        process.join()

    def run(self, job: TrainJob, on_progress: Callable[[float, str], None] | None = None) -> FittedModel:
        context = _process_context()
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(target=_child_main, args=(self.fit, job, sender), daemon=True)
        self.cancel.clear()
        process.start()
        sender.close()
        started = time.monotonic()
        try:
            while True:
                if self.cancel.is_set():
                    raise TrainingFailed("cancelled")
                if time.monotonic() - started > self.timeout:
                    raise TrainingFailed(f"timed out after {self.timeout:.0f} s (watch.train_timeout)")
                if receiver.poll(PROGRESS_POLL_SECONDS):
                    try:
                        message = receiver.recv()
                    except EOFError:
                        process.join(timeout=1)
                        raise TrainingFailed(f"training process died (exit code {process.exitcode})") from None
                    if message[0] == "progress" and on_progress is not None:
                        on_progress(message[1], message[2])
                    elif message[0] == "done":
                        return message[1]
                    elif message[0] == "error":
                        raise TrainingFailed(message[1])
                elif not process.is_alive():
                    raise TrainingFailed(f"training process died (exit code {process.exitcode})")
        finally:
            receiver.close()
            if process.is_alive():
                process.kill()
            process.join(timeout=5)
