"""Fit functions that fail on purpose, for the training fault tests.

They live in a module of their own so the training process (forked from the
forkserver) can import them by name.
"""

from __future__ import annotations

import errno
import os
import pickle
import time
from pathlib import Path
from typing import Callable, TypeVar

from app.training import FittedModel, TrainJob, fit_job

T = TypeVar("T")


def raising_fit(job: TrainJob, progress) -> FittedModel:
    raise RuntimeError("boom")


def hanging_fit(job: TrainJob, progress) -> FittedModel:
    time.sleep(3600)
    raise AssertionError("unreachable: the trainer's timeout kills this process")


def slow_fit(job: TrainJob, progress) -> FittedModel:
    """A real fit that first takes a few seconds, so a test can act while it runs."""
    for step in range(30):
        progress(step / 30, "waiting on purpose")
        time.sleep(0.1)
    return fit_job(job, progress)


def frame_fit(job: TrainJob, progress) -> FittedModel:
    """No model: hands back the rows the worker put together for the job, to compare with the parent's."""
    return FittedModel(job.training_frame(), b"", 0.0)


def marker_fit(job: TrainJob, progress) -> FittedModel:
    """No model: waits up to 30 s for the file named by ``job.params["marker"]``; hands back whether it came."""
    marker = Path(job.params["marker"])
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return FittedModel(marker.exists(), b"", 0.0)


# --- reliability helpers: memory, processes, disk faults, hostile payloads ------------------


def proc_status_mb(pid: int, key: str) -> float:
    """A memory line of ``/proc/PID/status`` (``VmRSS``, ``VmHWM``) in MB; 0 if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def peak_rss_growth_mb(action: Callable[[], T]) -> tuple[T, float]:
    """Run ``action``; return its result and how far this process's peak RSS rose above the RSS before it (MB).

    The peak (``VmHWM``) is reset first through ``/proc/self/clear_refs``; the
    exception ``action`` raises, if any, propagates.
    """
    Path("/proc/self/clear_refs").write_text("5")
    before = proc_status_mb(os.getpid(), "VmRSS")
    result = action()
    return result, proc_status_mb(os.getpid(), "VmHWM") - before


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, grandchildren, ...), from ``/proc/PID/task/*/children``."""
    found, stack = [], [pid]
    while stack:
        for task in Path(f"/proc/{stack.pop()}/task").glob("*"):
            try:
                children = [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                continue
            found.extend(children)
            stack.extend(children)
    return found


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def disk_error(code: int = errno.ENOSPC) -> OSError:
    """The OSError a full (ENOSPC) or read-only (EROFS) file system raises on write."""
    return OSError(code, os.strerror(code))


def failing_write(original: Callable[..., None], code: int, failing: Callable[[Path], bool]) -> Callable[..., None]:
    """A stand-in for ``atomic_write_bytes(path, data)`` that raises ``disk_error(code)`` for paths ``failing`` picks."""

    def write(path, data, *args, **kwargs):
        if failing(Path(path)):
            raise disk_error(code)
        return original(path, data, *args, **kwargs)

    return write


class MarkerPickle:
    """Pickles to a payload that, when unpickled, creates the file ``marker``: proof that a pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def marker_pickle_bytes(marker: Path) -> bytes:
    return pickle.dumps(MarkerPickle(marker))
