"""Fit functions that fail on purpose, for the training fault tests.

They live in a module of their own so the training process (forked from the
forkserver) can import them by name.
"""

from __future__ import annotations

import time

from app.training import TrainJob, fit_to_bytes


def raising_fit(job: TrainJob, progress) -> bytes:
    raise RuntimeError("boom")


def hanging_fit(job: TrainJob, progress) -> bytes:
    time.sleep(3600)
    return b""


def slow_fit(job: TrainJob, progress) -> bytes:
    """A real fit that first takes a few seconds, so a test can act while it runs."""
    for step in range(30):
        progress(step / 30, "waiting on purpose")
        time.sleep(0.1)
    return fit_to_bytes(job, progress)
