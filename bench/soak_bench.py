"""Soak: one batch file every ``--interval`` seconds into a live monitor, for ``--minutes``.

Usage (from the repository root):

    .venv/bin/python bench/soak_bench.py --minutes 10
    .venv/bin/python bench/soak_bench.py --minutes 2 --models dynamic-lr
    .venv/bin/python bench/soak_bench.py --minutes 2 --rows 50

The monitor runs in this process (``Monitor.start()``: the real watchdog
watcher, the worker thread, training in child processes), so its queue can be
sampled. The config is the flood bench's (a static and a dynamic logistic
regression, or only those ``--models`` names). A first labeled file is
ingested before the clock starts, so the models serve. Then a producer thread
writes one batch every ``--interval`` seconds, by rename and in place in
turn; every ``--labeled-every``-th one carries labels, so the dynamic model
retrains now and then. Batches under 20 rows skip the domain classifier
(it needs 20 rows a side), which costs about 0.3 s per model and batch on a
busy machine: ``--rows 50`` includes it. A sampler
records, every second: this process's resident set, the monitor's queue length
(``Monitor._queue.qsize()``), the files the watcher holds as not yet complete,
the ledger's row count, and the store's logical size (SQLite ``page_count`` x
``page_size``, so the WAL is counted where it belongs).

What it reports:

* RSS after a warm-up (a tenth of the run, at least 2 s) and at the end, and
  the growth between them (target: under 50 MB);
* the queue: its largest length, and whether it ever held more items than
  there were files written and not yet in the ledger (it must not: every
  queued item is a file waiting, never a duplicate or a leak). Whether it
  stays short is a matter of throughput: the sustained files per second is
  printed beside the rate the producer asked for;
* the store's bytes per ingested batch in the first and the second half of
  the run (roughly constant: the store grows with rows of results only);
* the monitor's CPU time per batch (this process, all threads; training
  runs in child processes and is not counted) in both halves: flat unless
  the work per batch grows with the history, which tells a slowdown of
  driftdeck's own from a busy machine;
* what the monitor keeps in memory at the end: fitted snapshots loaded and
  reference samples, against the number of versions that served (a cache
  that grows with every promotion is a leak on a long run);
* nothing lost: every file written is in the ledger exactly once.

The exit status is 1 if a file was lost or repeated, the queue held more than
the backlog, or RSS grew by 50 MB or more.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from flood_bench import MODELS, batch_bytes, drop, proc_status_mb, write_config

MAX_RSS_GROWTH_MB = 50.0
QUEUE_SLACK = 2  # items that may move from queue to ledger between the two reads of one sample


@dataclass(frozen=True)
class Sample:
    """One look at the running monitor; sizes in MB and bytes, counts in files."""

    seconds: float
    rss_mb: float
    queue: int
    pending: int
    written: int
    in_ledger: int
    store_bytes: int
    cpu_seconds: float  # this process's CPU time so far, all threads (training children not included)

    @property
    def backlog(self) -> int:
        return self.written - self.in_ledger


@dataclass
class SoakReport:
    interval: float
    seconds: float
    rows: int
    labeled_every: int
    warmup_seconds: float
    models: tuple[str, ...]
    samples: list[Sample] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    repeated: list[str] = field(default_factory=list)
    drain_seconds: float = 0.0
    versions_served: int = 0  # distinct snapshot versions that served, all models
    models_in_memory: int = 0  # fitted snapshots the registry holds loaded at the end
    samples_in_memory: int = 0  # reference samples the model runners hold at the end

    @property
    def written(self) -> int:
        return self.samples[-1].written

    @property
    def after_warmup(self) -> Sample:
        return next(s for s in self.samples if s.seconds >= self.warmup_seconds)

    @property
    def rss_growth_mb(self) -> float:
        return self.samples[-1].rss_mb - self.after_warmup.rss_mb

    @property
    def max_queue(self) -> int:
        return max(s.queue for s in self.samples)

    @property
    def queue_beyond_backlog(self) -> list[Sample]:
        """Samples where the queue held more items than files were waiting (must be none)."""
        return [s for s in self.samples if s.queue > s.backlog + QUEUE_SLACK]

    @property
    def files_per_second(self) -> float:
        """Sustained rate: files in the ledger over the seconds the run and the drain took."""
        return self.samples[-1].in_ledger / (self.seconds + self.drain_seconds)

    def per_batch(self, field_name: str) -> tuple[float, float]:
        """Growth of a Sample field per ingested batch, over the first and the second half of the run."""
        start, middle, end = self.after_warmup, self.samples[len(self.samples) // 2], self.samples[-1]

        def rate(a: Sample, b: Sample) -> float:
            return (getattr(b, field_name) - getattr(a, field_name)) / max(b.in_ledger - a.in_ledger, 1)

        return rate(start, middle), rate(middle, end)

    def bytes_per_batch(self) -> tuple[float, float]:
        """Store bytes per ingested batch, first and second half: flat if the store grows with results only."""
        return self.per_batch("store_bytes")

    def cpu_ms_per_batch(self) -> tuple[float, float]:
        """Monitor CPU milliseconds per batch, first and second half: flat unless per-batch work grows with history."""
        first, second = self.per_batch("cpu_seconds")
        return first * 1000, second * 1000

    @property
    def healthy(self) -> bool:
        return (not self.lost and not self.repeated and not self.queue_beyond_backlog
                and self.rss_growth_mb < MAX_RSS_GROWTH_MB)


def store_bytes(database: Path) -> int:
    """The store's logical size: SQLite pages in use (the WAL's pages included) x page size."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30) as db:
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        size = db.execute("PRAGMA page_size").fetchone()[0]
    return pages * size


class Producer:
    """Writes ``soak-NNNNNN.csv`` every ``interval`` seconds on a thread, by rename or in place, in turn."""

    def __init__(self, folder: Path, interval: float, rows: int, labeled_every: int) -> None:
        self.folder = folder
        self.interval = interval
        self.rows = rows
        self.labeled_every = labeled_every
        self.names: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            index = len(self.names) + 1
            name = f"soak-{index:06d}.csv"
            labeled = self.labeled_every > 0 and index % self.labeled_every == 0
            drop(self.folder, name, batch_bytes(index, self.rows, labeled), mode=index % 2)
            self.names.append(name)
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def sample(monitor, producer: Producer, started: float) -> Sample:
    """Read the queue before the ledger: an item can only move from the one to the other in between."""
    queue = monitor._queue.qsize()
    pending = monitor._watcher.pending_count() if monitor._watcher else 0
    in_ledger = sum(monitor.store.counts().values())
    return Sample(seconds=time.monotonic() - started, rss_mb=proc_status_mb(os.getpid(), "VmRSS"),
                  queue=queue, pending=pending, written=len(producer.names) + 1, in_ledger=in_ledger,
                  store_bytes=store_bytes(monitor.paths.database), cpu_seconds=sum(os.times()[:2]))


def run_soak(folder: Path, seconds: float = 600.0, interval: float = 0.1, rows: int = 10, labeled_every: int = 10,
             warmup_seconds: float | None = None, drain_timeout: float = 600.0,
             models: tuple[str, ...] = MODELS) -> SoakReport:
    """Soak ``folder`` (made here, must not exist) for ``seconds``; return the samples and checks.

    ``models`` names the models in the config (flood_bench.MODEL_BLOCKS). The
    first file carries labels, so every model serves before the clock starts. ``warmup_seconds`` (the RSS baseline is taken after them) defaults
    to a tenth of the run, at least 2 s.
    """
    from app.engine.monitor import Monitor

    folder.mkdir(parents=True)
    write_config(folder, models=models)
    drop(folder, "a-warmup.csv", batch_bytes(0, max(rows, 50), True), mode=0)
    warmup = warmup_seconds if warmup_seconds is not None else max(2.0, seconds / 10)
    report = SoakReport(interval=interval, seconds=seconds, rows=rows, labeled_every=labeled_every,
                        warmup_seconds=warmup, models=models)
    monitor = Monitor(folder)
    producer = Producer(folder, interval, rows, labeled_every)
    try:
        monitor.start()
        monitor.wait_idle(timeout=drain_timeout)  # the warm-up file: both models' first training
        started = time.monotonic()
        producer.start()
        while time.monotonic() - started < seconds:
            time.sleep(1.0)
            report.samples.append(sample(monitor, producer, started))
        producer.stop()
        drain_started = time.monotonic()
        monitor.wait_idle(timeout=drain_timeout)
        report.drain_seconds = time.monotonic() - drain_started
        report.samples.append(sample(monitor, producer, started))
        names = Counter(record.name for record in monitor.store.files())
        report.versions_served = sum(len({change.version for change in monitor.store.serving_history(model)})
                                     for model in models)
        report.models_in_memory = len(monitor.registry._loaded)
        report.samples_in_memory = sum(len(runner.assess._samples) for runner in monitor.runners.values())
    finally:
        producer.stop()
        monitor.close()
    report.lost = [name for name in producer.names if names[name] == 0]
    report.repeated = [name for name in producer.names if names[name] > 1]
    return report


def print_report(report: SoakReport) -> None:
    first, second = report.bytes_per_batch()
    start = report.after_warmup
    print(f"soak: one {report.rows}-row batch every {report.interval * 1000:.0f} ms for {report.seconds:.0f} s, "
          f"every {report.labeled_every}th labeled, models {', '.join(report.models)}: {report.written:,} files")
    print(f"  RSS after {report.warmup_seconds:.0f} s warm-up  {start.rss_mb:8.1f} MB")
    print(f"  RSS at the end            {report.samples[-1].rss_mb:8.1f} MB  (growth {report.rss_growth_mb:+.1f} MB, "
          f"limit {MAX_RSS_GROWTH_MB:.0f})")
    print(f"  queue: largest {report.max_queue}, at the end of the run {report.samples[-2].queue}, "
          f"samples above the backlog {len(report.queue_beyond_backlog)}")
    print(f"  sustained                 {report.files_per_second:8.1f} files/s  (asked {1 / report.interval:.1f}; "
          f"drain after the run {report.drain_seconds:.1f} s)")
    print(f"  store bytes per batch     {first:8.0f} B first half, {second:.0f} B second half")
    cpu_first, cpu_second = report.cpu_ms_per_batch()
    print(f"  CPU per batch (monitor)   {cpu_first:8.1f} ms first half, {cpu_second:.1f} ms second half")
    print(f"  store size at the end     {report.samples[-1].store_bytes / 1e6:8.2f} MB")
    print(f"  kept in memory at the end {report.models_in_memory:8d} fitted models and {report.samples_in_memory} "
          f"reference samples, of {report.versions_served} versions that served")
    print(f"  lost {len(report.lost)}, repeated {len(report.repeated)}")
    print(f"  healthy: {'yes' if report.healthy else 'NO'}")
    print("  t(s)   RSS(MB)  queue  pending  backlog  ledger  store(MB)  CPU(s)")
    step = max(1, len(report.samples) // 20)
    shown = report.samples[::step]
    for s in shown + ([report.samples[-1]] if shown[-1] is not report.samples[-1] else []):
        print(f"  {s.seconds:5.0f}  {s.rss_mb:7.1f}  {s.queue:5d}  {s.pending:7d}  {s.backlog:7d}  {s.in_ledger:6d}"
              f"  {s.store_bytes / 1e6:9.2f}  {s.cpu_seconds:6.0f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between batches")
    parser.add_argument("--rows", type=int, default=10, help="rows per batch")
    parser.add_argument("--labeled-every", type=int, default=10, help="every Nth batch carries labels (0: none)")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from: {', '.join(MODELS)}")
    args = parser.parse_args(argv)
    models = tuple(name.strip() for name in args.models.split(",") if name.strip())
    with tempfile.TemporaryDirectory(prefix="driftdeck_soak_") as scratch:
        report = run_soak(Path(scratch) / "data", args.minutes * 60, args.interval, args.rows, args.labeled_every,
                          models=models)
    print_report(report)
    return 0 if report.healthy else 1


if __name__ == "__main__":
    sys.exit(main())
