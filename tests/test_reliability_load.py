"""Load and misbehaving producers: a flood, a soak, history, and files that change under the watcher.

The flood and the soak are the short versions of ``bench/flood_bench.py``
(200 files instead of 1,000) and ``bench/soak_bench.py`` (15 s instead of 10
minutes); they assert what must hold at any speed (nothing lost, nothing read
half-written, the queue holds only files waiting, memory and store growth
bounded) and print the figures, which depend on the machine. Whether the work
per batch grows with the history is counted in SQLite steps, not seconds.
"""

from __future__ import annotations

import builtins
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

import app.ingest
import app.engine.intake
from app.events import EventKind
from app.fsutil import sha256_bytes
from app.engine.monitor import Monitor
from tests.conftest import INGEST_ONLY_CONFIG, make_batch, wait_until, write_batch, write_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import flood_bench  # noqa: E402  (bench/ holds scripts, not a package)
import soak_bench  # noqa: E402

SOAK_SECONDS = 15.0


def test_a_flood_of_200_files_is_ingested_exactly_once(tmp_path: Path) -> None:
    report = flood_bench.run_flood(tmp_path / "data", files=200, timeout=120)
    flood_bench.print_report(report)
    assert report.ledger_status == {"ingested": 200}
    assert not report.lost and not report.repeated
    assert not report.half_read, report.half_read[:5]
    assert not report.audit_not_once, report.audit_not_once[:5]
    assert not report.error_events and "Traceback" not in report.stderr


@pytest.fixture(scope="module")
def soak(tmp_path_factory) -> soak_bench.SoakReport:
    """One batch every 100 ms for 15 s (the bench: 10 minutes, both models), every tenth one labeled.

    One model (the dynamic one: it trains, snapshots, scores and predicts) keeps the drain short. 19 rows a
    batch: enough holdout rows for candidates to show skill beyond the naive baseline (every candidate must),
    still under the 20 the domain classifier needs.
    """
    report = soak_bench.run_soak(tmp_path_factory.mktemp("soak") / "data", seconds=SOAK_SECONDS, interval=0.1,
                                 rows=19, labeled_every=10, drain_timeout=120, models=("dynamic-lr",))
    soak_bench.print_report(report)
    return report


def test_a_soak_keeps_memory_the_queue_and_the_store_bounded(soak: soak_bench.SoakReport) -> None:
    assert not soak.lost and not soak.repeated
    assert soak.samples[-1].queue == 0 and soak.samples[-1].backlog == 0
    assert not soak.queue_beyond_backlog, soak.queue_beyond_backlog[:3]
    assert soak.rss_growth_mb < soak_bench.MAX_RSS_GROWTH_MB
    first, second = soak.bytes_per_batch()
    assert 0.5 < second / first < 2.0, (first, second)


def test_a_soak_keeps_a_bounded_number_of_models_in_memory(soak: soak_bench.SoakReport) -> None:
    assert soak.versions_served >= 6, "too few promotions in the soak for this check to mean anything"
    assert soak.models_in_memory <= 3 and soak.samples_in_memory <= 3, (
        f"{soak.versions_served} versions served; {soak.models_in_memory} models and "
        f"{soak.samples_in_memory} reference samples kept")


def add_history(monitor: Monitor, batches: int) -> None:
    """Give the store ``batches`` more ingested files, each with a copy of every model's latest result."""
    latest = {model: data for _, model, data in monitor.store.results()}
    with monitor.store.transaction() as db:
        for index in range(batches):
            file_id = monitor.store.record_file(f"history-{index:06d}.csv", f"{index:064x}", "ingested", rows=10, db=db)
            for model, data in latest.items():
                monitor.store.save_result(file_id, model, data, db=db)


def sqlite_steps_for_one_batch(monitor: Monitor, folder: Path, index: int) -> int:
    """SQLite virtual-machine steps (in hundreds) the monitor's connection takes to process one unlabeled batch."""
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    flood_bench.drop(folder, f"probe-{index}.csv", flood_bench.batch_bytes(index, 10, labeled=False), mode=0)
    monitor.store._db.set_progress_handler(count, 100)
    try:
        monitor.run_once()
    finally:
        monitor.store._db.set_progress_handler(None, 0)
    return steps[0]


def test_the_store_work_per_batch_does_not_grow_with_the_history(tmp_path: Path) -> None:
    """Counted in SQLite steps, not seconds: the same batch after 100 and after 5,000 earlier batches."""
    folder = tmp_path / "data"
    folder.mkdir()
    flood_bench.write_config(folder)
    flood_bench.drop(folder, "a-warmup.csv", flood_bench.batch_bytes(0, 50, labeled=True), mode=0)
    monitor = Monitor(folder)
    try:
        monitor.run_once()
        add_history(monitor, 100)
        short = sqlite_steps_for_one_batch(monitor, folder, 1)
        add_history(monitor, 4_900)
        long = sqlite_steps_for_one_batch(monitor, folder, 2)
    finally:
        monitor.close()
    assert long < 1.5 * short, f"{short}00 steps after 100 batches, {long}00 after 5,000"


# --- producers that misbehave ------------------------------------------------------------------------------


@pytest.fixture
def live(ingest_dir: Path):
    """Start a watching monitor on ``ingest_dir`` (settle 0.3 s unless the test rewrites the config first)."""
    started: list[Monitor] = []

    def start() -> tuple[Monitor, list]:
        monitor = Monitor(ingest_dir)
        seen: list = []
        monitor.subscribe(seen.append)
        monitor.start()
        started.append(monitor)
        return monitor, seen

    yield start
    for monitor in started:
        monitor.close()


def csv_rows(index: int, rows: int) -> tuple[bytes, list[bytes]]:
    """A batch as its header line and its row lines."""
    header, *lines = make_batch(index, rows=rows).to_csv(index=False).encode().splitlines(keepends=True)
    return header, lines


def test_a_file_appended_to_for_3_seconds_is_ingested_once_complete(ingest_dir: Path, live) -> None:
    write_config(ingest_dir, INGEST_ONLY_CONFIG.replace("settle_seconds = 0.3", "settle_seconds = 1.0"))
    monitor, seen = live()
    header, lines = csv_rows(0, rows=60)
    path = ingest_dir / "growing.csv"
    started = time.monotonic()
    with open(path, "wb") as handle:
        handle.write(header)
        for line in lines:  # 60 rows, one every 50 ms: 3 s, each pause far below the 1 s settle
            handle.write(line)
            handle.flush()
            time.sleep(0.05)
    assert time.monotonic() - started >= 3.0
    assert wait_until(lambda: monitor.store.counts().get("ingested") == 1, timeout=30)
    assert monitor.wait_idle()
    (record,) = monitor.store.files()
    assert (record.name, record.status, record.rows) == ("growing.csv", "ingested", 60)
    assert record.sha256 == sha256_bytes(header + b"".join(lines))
    assert [e.kind for e in seen if e.file == "growing.csv"].count(EventKind.BATCH_INGESTED) == 1


def test_a_file_truncated_and_rewritten_is_ingested_again_as_its_new_content(ingest_dir: Path, live) -> None:
    monitor, seen = live()
    path = write_batch(ingest_dir, "week.csv", make_batch(0, rows=30))
    first = path.read_bytes()
    assert wait_until(lambda: monitor.store.counts().get("ingested") == 1)
    header, lines = csv_rows(1, rows=40)
    with open(path, "r+b") as handle:
        handle.truncate(0)
        handle.write(header + b"".join(lines))
    assert wait_until(lambda: monitor.store.counts().get("ingested") == 2)
    assert monitor.wait_idle()
    records = monitor.store.files()
    assert [(r.name, r.status, r.rows, r.sha256) for r in records] == [
        ("week.csv", "ingested", 30, sha256_bytes(first)),
        ("week.csv", "ingested", 40, sha256_bytes(header + b"".join(lines))),
    ]
    assert not [e for e in seen if e.kind in (EventKind.BATCH_QUARANTINED, EventKind.ERROR)]


def test_a_file_replaced_under_the_same_name_keeps_the_old_batch(ingest_dir: Path, live) -> None:
    monitor, _ = live()
    old = write_batch(ingest_dir, "latest.csv", make_batch(0, rows=30)).read_bytes()
    assert wait_until(lambda: monitor.store.counts().get("ingested") == 1)
    new = write_batch(ingest_dir, "latest.csv", make_batch(1, rows=30)).read_bytes()  # renamed over the old one
    assert wait_until(lambda: monitor.store.counts().get("ingested") == 2)
    assert monitor.wait_idle()
    hashes = [record.sha256 for record in monitor.store.files()]
    assert hashes == [sha256_bytes(old), sha256_bytes(new)]
    for sha in hashes:  # both batches' rows stay archived for retraining
        assert len(monitor.context.archive.read(sha)) == 30


def test_a_file_deleted_between_the_event_and_the_read_is_an_event(ingest_dir: Path, monkeypatch) -> None:
    doomed = write_batch(ingest_dir, "doomed.csv", make_batch(0, rows=20))
    write_batch(ingest_dir, "kept.csv", make_batch(1, rows=20))
    read_batch = app.engine.intake.read_batch

    def delete_then_read(path: Path, config):
        if path.name == "doomed.csv":
            path.unlink()  # gone after the watcher reported it and the monitor stat()ed it
        return read_batch(path, config)

    monkeypatch.setattr(app.engine.intake, "read_batch", delete_then_read)
    monitor = Monitor(ingest_dir)
    seen = []
    monitor.subscribe(seen.append)
    try:
        monitor.run_once()
        statuses = {record.name: record.status for record in monitor.store.files()}
    finally:
        monitor.close()
    assert not doomed.exists()
    assert statuses == {"kept.csv": "ingested"}
    (error,) = [event for event in seen if event.file == "doomed.csv"]
    assert error.kind == EventKind.FILE_ERROR and error.message == "doomed.csv: cannot be read: No such file or directory"


def deny_reading(monkeypatch, path: Path) -> None:
    """Make ``path`` unreadable: chmod 000 where that denies reads, else (as root) refuse it in app.ingest's open."""
    path.chmod(0o000)
    try:
        path.open("rb").close()
    except PermissionError:
        return
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):
        if Path(file) == path:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(app.ingest, "open", guarded_open, raising=False)


def test_a_file_that_cannot_be_read_is_an_event_and_is_taken_once_readable(ingest_dir: Path, monkeypatch) -> None:
    locked = write_batch(ingest_dir, "locked.csv", make_batch(0, rows=20))
    write_batch(ingest_dir, "open.csv", make_batch(1, rows=20))
    deny_reading(monkeypatch, locked)
    monitor = Monitor(ingest_dir)
    seen = []
    monitor.subscribe(seen.append)
    try:
        monitor.run_once()
        assert {r.name: r.status for r in monitor.store.files()} == {"open.csv": "ingested"}
        (error,) = [event for event in seen if event.file == "locked.csv"]
        assert error.kind == EventKind.FILE_ERROR and error.message == "locked.csv: cannot be read: Permission denied"

        monkeypatch.undo()
        locked.chmod(0o644)
        monitor.run_once()  # the next scan (a restart, or `watch --once`) takes it
        statuses = Counter((r.name, r.status) for r in monitor.store.files())
    finally:
        monitor.close()
    assert statuses == {("open.csv", "ingested"): 1, ("locked.csv", "ingested"): 1}
