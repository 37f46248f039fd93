"""Shared fixtures and helpers: real folders with real batch files and a real config, the CLI run for real."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.cli import main
from app.engine.monitor import Monitor

REPO_ROOT = Path(__file__).resolve().parents[1]
STREAM_CONFIG = """
target = "label"
timestamp = "ts"
task = "classification"

[schema]
x1 = "numeric"
x2 = "numeric"
x3 = "numeric"
color = "categorical"
"""  # the stream every test folder holds: its target, time column and schema

TWO_MODELS = """
[[models]]
name = "static-lr"
mode = "static"
estimator = "logistic_regression"

[[models]]
name = "dynamic-lr"
mode = "dynamic"
estimator = "logistic_regression"
window = 2
"""  # one model of each policy, both logistic regressions

BASE_CONFIG = STREAM_CONFIG + TWO_MODELS + """
[drift]
domain_classifier_rows = 500

[watch]
settle_seconds = 0.3
"""
DYNAMIC_MODEL = '[[models]]\nname = "dynamic-lr"\nmode = "dynamic"\nestimator = "logistic_regression"\nwindow = 2\n'
STATIC_ONLY_CONFIG = BASE_CONFIG.replace(DYNAMIC_MODEL, "")  # one model: the same keys, half the training
assert DYNAMIC_MODEL in BASE_CONFIG
# One static model, streamed in small pieces: a partitioned batch of a few thousand rows takes many chunks.
STREAMED_CONFIG = STATIC_ONLY_CONFIG + """
[scale]
chunk_rows = 1000
sample_rows = 1500
"""


def make_batch(index: int, rows: int = 600, flipped: bool = False, shuffled: bool = False,
               shift: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """One batch of a binary stream: label depends on x1 and x2 (sign of x1 flips when ``flipped``).

    ``shift`` moves the mean of x3 (a feature the label ignores); ``shuffled``
    scrambles the labels as a broken labelling job would.
    """
    rng = np.random.default_rng(seed * 1000 + index)
    x1 = rng.normal(0, 1, rows)
    x2 = rng.normal(0, 1, rows)
    x3 = rng.normal(shift, 1, rows)
    color = rng.choice(["red", "green", "blue"], rows)
    direction = -1.0 if flipped else 1.0
    logit = 2.0 * direction * x1 + 1.0 * x2 + 0.3 * (color == "red")
    label = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    if shuffled:
        label = rng.permutation(label)
    start = pd.Timestamp("2025-01-06") + pd.Timedelta(days=7 * index)
    ts = start + pd.to_timedelta(np.sort(rng.integers(0, 7 * 86400, rows)), unit="s")
    return pd.DataFrame({"x1": x1, "x2": x2, "x3": x3, "color": color, "label": label, "ts": ts.astype(str)})


def write_config(folder: Path, text: str = BASE_CONFIG, **replacements: str) -> Path:
    body = textwrap.dedent(text)
    for old, new in replacements.items():
        body = body.replace(old, new)
    path = folder / "driftdeck.toml"
    path.write_text(body)
    return path


def write_batch(folder: Path, name: str, frame: pd.DataFrame) -> Path:
    """Write ``frame`` by the format of ``name``, into a temp name first, then rename into place."""
    path = folder / name
    temporary = folder / f".{name}.tmp"
    if name.endswith(".parquet"):
        frame.to_parquet(temporary)
    elif name.endswith(".jsonl"):
        frame.to_json(temporary, orient="records", lines=True)
    elif name.endswith(".csv.gz"):
        frame.to_csv(temporary, index=False, compression={"method": "gzip", "mtime": 0})
    else:
        frame.to_csv(temporary, index=False)
    temporary.rename(path)
    return path


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """An empty data folder with the base config."""
    folder = tmp_path / "data"
    folder.mkdir()
    write_config(folder)
    return folder


INGEST_ONLY_CONFIG = """
target = "label"
timestamp = "ts"
task = "classification"
models = []

[schema]
x1 = "numeric"
x2 = "numeric"
x3 = "numeric"
color = "categorical"

[watch]
settle_seconds = 0.3
"""


@pytest.fixture
def ingest_dir(tmp_path: Path) -> Path:
    """An empty data folder whose config has the base schema and no models.

    For tests of watching, ingestion and the ledger: no training runs, so
    hundreds of batches take seconds.
    """
    folder = tmp_path / "data"
    folder.mkdir()
    write_config(folder, INGEST_ONLY_CONFIG)
    return folder


def inotify_instances() -> int:
    """How many inotify instances this process holds (a watching monitor takes one; closing it gives it back)."""
    try:
        entries = list(os.scandir("/proc/self/fd"))
    except OSError:
        return 0
    held = 0
    for entry in entries:
        try:
            held += os.readlink(entry.path) == "anon_inode:inotify"
        except OSError:
            continue
    return held


@pytest.fixture(autouse=True)
def no_inotify_left_open():
    """Every test gives back the inotify instances it took: a user may hold only 128 (the usual limit)."""
    before = inotify_instances()
    yield
    assert wait_until(lambda: inotify_instances() <= before, timeout=5), (
        f"{inotify_instances() - before} inotify instance(s) left open: a monitor or watcher not closed")


def wait_until(condition, timeout: float = 30.0, interval: float = 0.05) -> bool:
    """Poll ``condition()`` until it is true or ``timeout`` seconds pass; return its last truth.

    Tests assert on the result: a deadline, never a fixed sleep, decides.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())


def backdate(path: Path, seconds: float = 60.0) -> Path:
    """Set ``path``'s mtime ``seconds`` in the past, as if it had landed then (so it is already settled)."""
    past = time.time() - seconds
    os.utime(path, (past, past))
    return path


def run_once(folder: Path, events: list | None = None) -> None:
    """Process every file in ``folder`` as ``watch --once`` does (collecting the events in ``events``)."""
    monitor = Monitor(folder)
    if events is not None:
        monitor.subscribe(events.append)
    try:
        monitor.run_once()
    finally:
        monitor.close()


def processed_folder(root: Path, config: str, batches: dict[str, pd.DataFrame], **replacements: str) -> Path:
    """``root/data`` with ``config`` (after ``replacements``) and ``batches`` (already settled), processed once."""
    folder = root / "data"
    folder.mkdir()
    write_config(folder, config, **replacements)
    for name, frame in batches.items():
        backdate(write_batch(folder, name, frame))
    run_once(folder)
    return folder


def copy_of(folder: Path, tmp_path: Path) -> Path:
    """A copy of ``folder`` (built once for a module) that one test may change; links stay links."""
    return Path(shutil.copytree(folder, tmp_path / "data", symlinks=True))


def tree(root: Path) -> dict[str, tuple[str | None, int, int, int]]:
    """Every file and folder under ``root`` (itself as "."), by path relative to it: the SHA-256 of a file's
    bytes (None for a folder), its mode, size and mtime. Equal only if nothing under ``root`` changed."""
    found = {}
    for path in sorted([root, *root.rglob("*")]):
        info = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        found[str(path.relative_to(root))] = (digest, info.st_mode, info.st_size, info.st_mtime_ns)
    return found


def start_driftdeck(*args: str | Path, **popen) -> subprocess.Popen:
    """Start ``python -m app ARGS`` from the repository, with text pipes; ``popen`` as for ``subprocess.Popen``."""
    return subprocess.Popen([sys.executable, "-m", "app", *map(str, args)], cwd=REPO_ROOT, text=True, **popen)


@dataclass
class CliRun:
    returncode: int
    stdout: str
    stderr: str


def run_cli(*args: str | Path | bytes) -> CliRun:
    """``driftdeck ARGS`` in this process, as ``python -m app`` runs it; an exception that escapes fails the test."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([os.fsdecode(arg) if isinstance(arg, bytes) else str(arg) for arg in args])
    return CliRun(code, out.getvalue(), err.getvalue())
