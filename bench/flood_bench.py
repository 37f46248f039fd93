"""Flood: many small batch files dropped into a watched folder at once.

Usage (from the repository root):

    .venv/bin/python bench/flood_bench.py --files 1000
    .venv/bin/python bench/flood_bench.py --files 1000 --labeled

What runs: ``python -m app watch DIR --headless --json`` in a subprocess, on a
fresh folder whose config has two models (one static, one dynamic). One
warm-up file goes in first and the flood starts once it is ingested, so the
watcher is running when the files land (it carries labels only with
``--labeled``, so without it no model ever serves). Then ``--files`` files of ``--rows``
rows are written as fast as this process can: a third moved into place by
rename, a third written in one call, a third written in two chunks with a
flush between them (a producer that is still writing when the watcher looks).
Without ``--labeled`` the batches have no target column, so no model trains
or serves and the figures are those of the watcher, the reader, the
validator, the drift statistics and the ledger; with ``--labeled`` both models
serve, every batch is scored and checked by the domain classifier, and every
batch retrains the dynamic model.

What is measured:

* files per second: flood files over the seconds from the first write to the
  last ``batch_ingested`` event;
* peak memory: the watch process's peak resident set (``VmHWM``), and the
  highest sampled resident set of the process and its children (the
  forkserver and training processes) together;
* nothing lost: per file, the ledger rows (``files`` table) and the audit
  log's ``batch_ingested`` events; every file must be ingested exactly once,
  with the SHA-256 and the row count that were written (a half-read file
  would have fewer rows or another hash).

The exit status is 1 if any file was lost, repeated or read half-written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the process and memory helpers are the tests' (tests/faults.py)
from tests.faults import descendants, proc_status_mb  # noqa: E402

SAMPLE_SECONDS = 0.1
WARMUP_NAME = "a-warmup.csv"

CONFIG = """
target = "label"
timestamp = "ts"
task = "classification"

[schema]
x1 = "numeric"
x2 = "numeric"
x3 = "numeric"
color = "categorical"
{models}
[drift]
domain_classifier_rows = 500

[watch]
settle_seconds = {settle}
"""
MODEL_BLOCKS = {
    "static-lr": '\n[[models]]\nname = "static-lr"\nmode = "static"\nestimator = "logistic_regression"\n',
    "dynamic-lr": '\n[[models]]\nname = "dynamic-lr"\nmode = "dynamic"\nestimator = "logistic_regression"\nwindow = 2\n',
}
MODELS = tuple(MODEL_BLOCKS)


# --- data ------------------------------------------------------------------------------


def batch_frame(index: int, rows: int, labeled: bool) -> pd.DataFrame:
    """One batch of a stable binary stream (label from x1 and x2); no ``label`` column unless ``labeled``."""
    rng = np.random.default_rng(index)
    x1, x2, x3 = rng.normal(0, 1, (3, rows))
    color = rng.choice(["red", "green", "blue"], rows)
    frame = pd.DataFrame({"x1": x1, "x2": x2, "x3": x3, "color": color})
    if labeled:
        frame["label"] = (rng.random(rows) < 1 / (1 + np.exp(-(2 * x1 + x2)))).astype(int)
    start = pd.Timestamp("2025-01-06") + pd.Timedelta(hours=index)
    frame["ts"] = (start + pd.to_timedelta(np.sort(rng.integers(0, 3600, rows)), unit="s")).astype(str)
    return frame


def batch_bytes(index: int, rows: int, labeled: bool) -> bytes:
    return batch_frame(index, rows, labeled).to_csv(index=False).encode()


def write_config(folder: Path, settle_seconds: float = 0.3, models: tuple[str, ...] = MODELS) -> None:
    """``driftdeck.toml`` with the x1/x2/x3/color schema and the named models (see MODEL_BLOCKS)."""
    blocks = "".join(MODEL_BLOCKS[name] for name in models)
    (folder / "driftdeck.toml").write_text(CONFIG.format(models=blocks, settle=settle_seconds))


def drop(folder: Path, name: str, data: bytes, mode: int) -> None:
    """Write one file: 0 = temp name then rename, 1 = one write, 2 = two chunks with a flush between.

    After the flush the first chunk is in the file for any reader, as when a
    producer is still writing.
    """
    path = folder / name
    if mode == 0:
        temporary = folder / f".{name}.tmp"
        temporary.write_bytes(data)
        os.replace(temporary, path)
        return
    with open(path, "wb") as handle:
        if mode == 2:
            middle = len(data) // 2
            handle.write(data[:middle])
            handle.flush()
            handle.write(data[middle:])
        else:
            handle.write(data)


# --- the watch process -------------------------------------------------------------------


def start_watch(folder: Path) -> subprocess.Popen:
    """``python -m app watch FOLDER --headless --json`` with its events on a pipe."""
    return subprocess.Popen([sys.executable, "-m", "app", "watch", str(folder), "--headless", "--json"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)


class EventReader:
    """Reads JSON event lines from a process's stdout on a thread; counts them by kind."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.events: list[dict] = []
        self.kinds: Counter = Counter()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            event = json.loads(line)
            with self._lock:
                self.events.append(event)
                self.kinds[event["kind"]] += 1

    def count(self, kind: str) -> int:
        with self._lock:
            return self.kinds[kind]

    def last_time(self, kind: str) -> float | None:
        with self._lock:
            times = [event["time"] for event in self.events if event["kind"] == kind]
        return max(times) if times else None

    def join(self, timeout: float = 10.0) -> None:
        self._thread.join(timeout)


class MemorySampler:
    """Samples the resident set of a process tree every ``SAMPLE_SECONDS`` on a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_tree_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            total = sum(proc_status_mb(pid, "VmRSS") for pid in [self.pid, *descendants(self.pid)])
            self.peak_tree_mb = max(self.peak_tree_mb, total)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def wait_for(condition, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())


def stop_process(process: subprocess.Popen) -> str:
    """SIGTERM (driftdeck closes cleanly), then SIGKILL after 30 s; return its stderr."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        _, errors = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        _, errors = process.communicate()
    return errors


# --- the flood -----------------------------------------------------------------------------


@dataclass
class FloodReport:
    """What one flood did; ``lost``, ``repeated`` and ``half_read`` name files, and must be empty."""

    files: int
    rows: int
    labeled: bool
    drop_seconds: float
    process_seconds: float
    peak_rss_mb: float
    peak_tree_rss_mb: float
    ledger_status: Counter = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)
    repeated: list[str] = field(default_factory=list)
    half_read: list[str] = field(default_factory=list)
    audit_not_once: list[str] = field(default_factory=list)
    error_events: list[str] = field(default_factory=list)
    stderr: str = ""

    @property
    def files_per_second(self) -> float:
        return self.files / self.process_seconds if self.process_seconds else 0.0

    @property
    def nothing_lost(self) -> bool:
        return not (self.lost or self.repeated or self.half_read or self.audit_not_once)


def ledger_check(folder: Path, expected: dict[str, tuple[str, int]], report: FloodReport) -> None:
    """Compare the store's ledger and audit log with ``expected`` (name -> (sha256, rows))."""
    from app.store import Store

    store = Store(folder / ".driftdeck" / "state.db")
    try:
        records = store.files()
        ingested_events = Counter(event.file for event in store.events(limit=10 * len(expected) + 1000)
                                  if event.kind == "batch_ingested")
    finally:
        store.close()
    report.ledger_status = Counter(record.status for record in records if record.name in expected)
    by_name: dict[str, list] = {}
    for record in records:
        by_name.setdefault(record.name, []).append(record)
    for name, (sha256, rows) in expected.items():
        found = by_name.get(name, [])
        if not found:
            report.lost.append(name)
            continue
        if len(found) > 1:
            report.repeated.append(name)
        if any(r.status != "ingested" or r.sha256 != sha256 or r.rows != rows for r in found):
            report.half_read.append(name)
        if ingested_events[name] != 1:
            report.audit_not_once.append(name)


def run_flood(folder: Path, files: int = 1000, rows: int = 20, labeled: bool = False,
              timeout: float = 600.0) -> FloodReport:
    """Flood ``folder`` (made here, must not exist) while ``watch --headless --json`` runs; return the figures."""
    folder.mkdir(parents=True)
    write_config(folder)
    payloads = {f"flood-{index:05d}.csv": batch_bytes(index + 1, rows, labeled) for index in range(files)}
    expected = {name: (hashlib.sha256(data).hexdigest(), rows) for name, data in payloads.items()}
    drop(folder, WARMUP_NAME, batch_bytes(0, max(rows, 50), labeled), mode=0)

    process = start_watch(folder)
    reader = EventReader(process)
    sampler = MemorySampler(process.pid)
    try:
        if not wait_for(lambda: reader.count("batch_ingested") >= 1 or process.poll() is not None, timeout):
            raise RuntimeError("the warm-up file was never ingested")
        started = time.time()
        for index, (name, data) in enumerate(payloads.items()):
            drop(folder, name, data, mode=index % 3)
        drop_seconds = time.time() - started
        wait_for(lambda: reader.count("batch_ingested") >= files + 1 or process.poll() is not None, timeout, 0.2)
        last = reader.last_time("batch_ingested") or time.time()
        peak_rss = proc_status_mb(process.pid, "VmHWM")
    finally:
        sampler.stop()
        errors = stop_process(process)
        reader.join()
    report = FloodReport(files=files, rows=rows, labeled=labeled, drop_seconds=drop_seconds,
                         process_seconds=max(last - started, 1e-9), peak_rss_mb=peak_rss,
                         peak_tree_rss_mb=sampler.peak_tree_mb, stderr=errors)
    report.error_events = [e["message"] for e in reader.events if e["kind"] in ("error", "file_error")]
    ledger_check(folder, expected, report)
    return report


def print_report(report: FloodReport) -> None:
    kind = "labeled (the dynamic model retrains per batch)" if report.labeled else "unlabeled (no training)"
    print(f"flood: {report.files:,} files x {report.rows} rows, {kind}")
    print(f"  dropped in                {report.drop_seconds:8.2f} s")
    print(f"  all ingested after        {report.process_seconds:8.2f} s  ({report.files_per_second:,.1f} files/s)")
    print(f"  peak RSS, watch process   {report.peak_rss_mb:8.1f} MB  (VmHWM)")
    print(f"  peak RSS, with children   {report.peak_tree_rss_mb:8.1f} MB  (sampled every {SAMPLE_SECONDS} s)")
    print(f"  ledger                    {dict(report.ledger_status)}")
    print(f"  lost {len(report.lost)}, repeated {len(report.repeated)}, half-read {len(report.half_read)}, "
          f"audit log not exactly once {len(report.audit_not_once)}, error events {len(report.error_events)}")
    print(f"  nothing lost: {'yes' if report.nothing_lost else 'NO'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=20, help="rows per file")
    parser.add_argument("--labeled", action="store_true", help="batches carry labels: the dynamic model retrains")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the last file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="driftdeck_flood_") as scratch:
        report = run_flood(Path(scratch) / "data", args.files, args.rows, args.labeled, args.timeout)
    print_report(report)
    return 0 if report.nothing_lost else 1


if __name__ == "__main__":
    sys.exit(main())
