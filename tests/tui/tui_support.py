"""Shared pieces of the TUI tests: a seeded store built once, a slow trainer, waiting helpers.

The base folder is written with the root conftest's ``make_batch`` and
``write_batch`` and processed with one ``Monitor.run_once`` (files that are
complete together are taken in name order, so the order is fixed). Its volatile fields (times, training seconds) are then
set to fixed values, so screenshots of it are the same on every run.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Callable

from tests.conftest import make_batch, write_batch, write_config

from app.engine.monitor import Monitor
from app.training import FittedModel, TrainJob, fit_job
from app.environment import environment_record

FIXED_EPOCH = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC
FIXED_NOW = FIXED_EPOCH + 86_400.0  # the injected clock: a day after the first file
READY_MARK = ".tui-base-ready"

# (file name, how to make its frame); labeled unless the label column is dropped.
BASE_BATCHES: tuple[tuple[str, Callable], ...] = (
    ("2025-01-06.csv", lambda: make_batch(0, rows=400)),
    ("2025-01-13.parquet", lambda: make_batch(1, rows=400)),
    ("2025-01-20.csv", lambda: make_batch(2, rows=400, shift=1.5)),
    ("2025-01-27.jsonl", lambda: make_batch(3, rows=1200, flipped=True, shift=1.5)),  # enough rows to learn the flip
    ("2025-02-03.csv", lambda: make_batch(4, rows=400).drop(columns=["label"])),
)
BROKEN_FILE = "2025-02-10.csv.gz"  # not gzip at all: quarantined


def slow_fit(release: Path, job: TrainJob, progress: Callable[[float, str], None]) -> FittedModel:
    """A fit that waits until the test creates ``release`` (at most a minute), then fits for real.

    Runs in the training child process; bind ``release`` with ``functools.partial``."""
    progress(0.05, "pretending to be a big model")
    deadline = time.monotonic() + 60
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return fit_job(job, progress)


def build_base_folder(folder: Path) -> Path:
    """Write the seeded batches into ``folder``, process them, and fix the volatile fields."""
    folder.mkdir(parents=True)
    write_config(folder)
    for name, frame in BASE_BATCHES:
        write_batch(folder, name, frame())
    (folder / BROKEN_FILE).write_bytes(b"this is not a gzip file\n")
    monitor = Monitor(folder)
    try:
        monitor.run_once()
    finally:
        monitor.close()
    normalise_state(folder / ".driftdeck" / "state.db")
    (folder / READY_MARK).touch()
    return folder


def base_folder(root: Path) -> Path:
    """The base folder under ``root``, built on first use (shared by every TUI test module)."""
    folder = root / "tui-base"
    if not (folder / READY_MARK).exists():
        build_base_folder(folder)
    return folder


def copy_folder(base: Path, destination: Path) -> Path:
    """A private copy of the base folder (file times kept, so nothing is processed again)."""
    shutil.copytree(base, destination, copy_function=shutil.copy2, ignore=shutil.ignore_patterns("monitor.lock"))
    return destination


def normalise_state(database: Path) -> None:
    """Give every time in the store a fixed value, every training a fixed duration and one environment."""
    db = sqlite3.connect(database)
    with db:
        db.execute("UPDATE files SET seen_at = ? + id * 3600", (FIXED_EPOCH,))
        db.execute("UPDATE events SET time = ? + id * 60", (FIXED_EPOCH,))
        db.execute("UPDATE snapshots SET created = ? + version * 3600", (FIXED_EPOCH,))
        db.execute("UPDATE serving SET time = ? + id * 3600 + 1", (FIXED_EPOCH,))
        for table, key, column in (("results", "rowid", "data"), ("model_state", "model", "data"),
                                   ("snapshots", "rowid", "data")):
            for row_key, data in db.execute(f"SELECT {key}, {column} FROM {table}").fetchall():
                db.execute(f"UPDATE {table} SET {column} = ? WHERE {key} = ?", (_fixed_durations(data), row_key))
    db.close()


def _fixed_durations(text: str) -> str:
    data = json.loads(text)
    if "environment" in data:  # as if trained here: no start-up check, whatever versions are installed
        data["environment"] = environment_record()
    for key in ("train_seconds", "shadow_train_seconds"):
        if key in data:
            data[key] = 1.0
    verdict = data.get("verdict")
    if isinstance(verdict, dict):
        verdict["train_seconds"] = 1.0
        verdict["text"] = re.sub(r"[\d.]+ s of training", "1.0 s of training", verdict.get("text", ""))
    return json.dumps(data)


async def wait_until(pilot, condition: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    """Let the app run until ``condition()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        await pilot.pause(0.05)


def panels_show(app, model: str) -> bool:
    """The dashboard shows ``model``: selected, and each of its panels drawn (they are drawn one a frame)."""
    return app.dashboard is not None and app.dashboard.model == model and not app.redraws.pending
