"""Watching the data folder with a real watchdog observer and a real SQLite ledger.

Assertions wait on the ledger with a deadline (``wait_until``) or on
``Monitor.wait_idle``; sleeps only pace a slow writer, they never decide.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Iterator

import pytest

from app.engine.monitor import Monitor
from app.replay import replay
from app.store import FileRecord
from tests.conftest import INGEST_ONLY_CONFIG, backdate, make_batch, wait_until, write_batch, write_config


@pytest.fixture
def start_monitor(ingest_dir: Path) -> Iterator[Callable[..., Monitor]]:
    """Start monitors on ``ingest_dir``; whatever a test leaves running is closed afterwards."""
    running: list[Monitor] = []

    def start(poll: bool = False) -> Monitor:
        monitor = Monitor(ingest_dir, poll=poll)
        monitor.start()
        running.append(monitor)
        return monitor

    yield start
    for monitor in running:
        monitor.close()  # closing twice is harmless


def ledger(monitor: Monitor) -> list[FileRecord]:
    return monitor.store.files()


def names(monitor: Monitor, status: str | None = None) -> list[str]:
    return [record.name for record in monitor.store.files(status)]


def batch_bytes(index: int, rows: int = 30) -> bytes:
    return make_batch(index, rows=rows).to_csv(index=False).encode()


def test_slow_writer_is_ingested_once_and_only_when_complete(ingest_dir: Path, start_monitor) -> None:
    """Chunks cut mid-line, 0.05 s apart, for 1.25 s in all: longer than settle_seconds (1.0 s here).

    The long settle interval leaves room for a busy machine to stall the writer between chunks.
    """
    write_config(ingest_dir, INGEST_ONLY_CONFIG.replace("settle_seconds = 0.3", "settle_seconds = 1.0"))
    content = batch_bytes(0, rows=400)
    chunks = 25
    size = len(content) // chunks + 1
    monitor = start_monitor()
    with open(ingest_dir / "slow.csv", "wb") as handle:
        for start in range(0, len(content), size):
            handle.write(content[start:start + size])
            handle.flush()
            time.sleep(0.05)

    assert wait_until(lambda: len(ledger(monitor)) >= 1)
    assert monitor.wait_idle()
    (record,) = ledger(monitor)
    assert (record.name, record.status, record.rows) == ("slow.csv", "ingested", 400)


def test_atomic_rename_is_ingested_once(start_monitor, ingest_dir: Path) -> None:
    monitor = start_monitor()
    write_batch(ingest_dir, "renamed.parquet", make_batch(0, rows=30))  # written as .renamed.parquet.tmp, then renamed
    assert wait_until(lambda: len(ledger(monitor)) >= 1)
    assert monitor.wait_idle()
    assert [(r.name, r.status, r.rows) for r in ledger(monitor)] == [("renamed.parquet", "ingested", 30)]


def test_two_hundred_files_at_once_are_each_ingested_exactly_once(tmp_path: Path, ingest_dir: Path,
                                                                   start_monitor) -> None:
    staging = tmp_path / "staging"
    staging.mkdir()
    expected = [f"batch-{index:03d}.csv" for index in range(200)]
    for index, name in enumerate(expected):
        (staging / name).write_bytes(batch_bytes(index, rows=10))
    monitor = start_monitor()
    for name in expected:
        os.rename(staging / name, ingest_dir / name)

    assert wait_until(lambda: len(ledger(monitor)) >= 200, timeout=60)
    assert monitor.wait_idle()
    counts = Counter(names(monitor))
    assert sorted(counts) == expected
    assert set(counts.values()) == {1}
    assert monitor.store.counts() == {"ingested": 200}


def test_ignored_names_and_sub_folders_are_never_read(ingest_dir: Path, start_monitor) -> None:
    monitor = start_monitor()
    (ingest_dir / "sub").mkdir()
    ignored = [".hidden.csv", "_draft.csv", "batch.csv.tmp", "batch.csv.part", "notes.txt", "sub/inner.csv"]
    for index, name in enumerate(ignored):
        (ingest_dir / name).write_bytes(batch_bytes(index))
    write_batch(ingest_dir, "visible.csv", make_batch(99, rows=30))

    assert wait_until(lambda: len(ledger(monitor)) >= 1)
    assert monitor.wait_idle()
    assert names(monitor) == ["visible.csv"]


def test_a_link_pointing_outside_the_folder_is_not_followed(tmp_path: Path, ingest_dir: Path, start_monitor) -> None:
    outside = tmp_path / "secret.csv"
    outside.write_bytes(batch_bytes(1))
    inside = ingest_dir / "real.csv"
    inside.write_bytes(batch_bytes(2))
    backdate(inside)
    (ingest_dir / "outside-link.csv").symlink_to(outside)
    (ingest_dir / "inside-link.csv").symlink_to(inside)
    monitor = start_monitor()

    assert wait_until(lambda: len(ledger(monitor)) >= 2)
    assert monitor.wait_idle()
    statuses = {record.name: record.status for record in ledger(monitor)}
    assert "outside-link.csv" not in statuses
    # a link within the folder is read; its bytes are real.csv's, so one of the two is the duplicate
    assert sorted(statuses) == ["inside-link.csv", "real.csv"]
    assert sorted(statuses.values()) == ["duplicate", "ingested"]


def test_files_present_at_start_are_picked_up_in_name_order(ingest_dir: Path, start_monitor) -> None:
    for index, name in enumerate(["c.csv", "a.parquet", "d.jsonl", "b.csv.gz"]):
        backdate(write_batch(ingest_dir, name, make_batch(index, rows=20)))
    monitor = start_monitor()

    assert wait_until(lambda: len(ledger(monitor)) >= 4)
    assert names(monitor) == ["a.parquet", "b.csv.gz", "c.csv", "d.jsonl"]  # ledger rows are in ingestion order


def test_restart_skips_what_was_ingested_and_takes_what_landed_while_stopped(ingest_dir: Path,
                                                                            start_monitor) -> None:
    first = start_monitor()
    write_batch(ingest_dir, "a.csv", make_batch(0, rows=20))
    write_batch(ingest_dir, "b.csv", make_batch(1, rows=20))
    assert wait_until(lambda: len(ledger(first)) >= 2)
    assert first.wait_idle()
    first.close()

    write_batch(ingest_dir, "c.csv", make_batch(2, rows=20))  # lands while nothing watches
    second = start_monitor()
    # c.csv settles after a.csv and b.csv were seen again, so once it is in, they were handled
    assert wait_until(lambda: "c.csv" in names(second))
    assert second.wait_idle()
    assert [(r.name, r.status) for r in ledger(second)] == [("a.csv", "ingested"), ("b.csv", "ingested"),
                                                             ("c.csv", "ingested")]
    ingested_events = [event.file for event in second.store.events() if event.kind == "batch_ingested"]
    assert ingested_events == ["a.csv", "b.csv", "c.csv"]


def test_same_content_under_a_new_name_is_a_duplicate(ingest_dir: Path, start_monitor) -> None:
    monitor = start_monitor()
    original = write_batch(ingest_dir, "week-1.csv", make_batch(0, rows=20))
    assert wait_until(lambda: len(ledger(monitor)) >= 1)
    (ingest_dir / "week-1-copy.csv").write_bytes(original.read_bytes())

    assert wait_until(lambda: len(ledger(monitor)) >= 2)
    assert monitor.wait_idle()
    first, copy = ledger(monitor)
    assert (first.name, first.status) == ("week-1.csv", "ingested")
    assert (copy.name, copy.status, copy.reason) == ("week-1-copy.csv", "duplicate", "same content as week-1.csv")
    assert copy.sha256 == first.sha256
    assert monitor.store.counts() == {"ingested": 1, "duplicate": 1}


def test_polling_observer_ingests_new_files(ingest_dir: Path, start_monitor) -> None:
    monitor = start_monitor(poll=True)
    write_batch(ingest_dir, "polled.csv", make_batch(0, rows=20))
    (ingest_dir / "slow-polled.csv").write_bytes(batch_bytes(1))
    assert wait_until(lambda: len(ledger(monitor)) >= 2)
    assert monitor.wait_idle()
    assert sorted((r.name, r.status) for r in ledger(monitor)) == [("polled.csv", "ingested"),
                                                                   ("slow-polled.csv", "ingested")]


def test_replay_delivers_into_a_watched_folder_each_file_once(tmp_path: Path, ingest_dir: Path,
                                                               start_monitor) -> None:
    source = tmp_path / "producer"
    source.mkdir()
    for index in range(5):
        write_batch(source, f"day-{index}.csv", make_batch(index, rows=20))
    (source / "_skip-me.csv").write_bytes(batch_bytes(9))
    monitor = start_monitor()

    delivered = replay(source, ingest_dir, interval=0, start=1)

    assert delivered == 4
    assert wait_until(lambda: len(ledger(monitor)) >= 4)
    assert monitor.wait_idle()
    assert [(r.name, r.status) for r in ledger(monitor)] == [(f"day-{i}.csv", "ingested") for i in range(1, 5)]
    assert sorted(p.name for p in ingest_dir.iterdir() if p.suffix == ".csv") == [f"day-{i}.csv" for i in range(1, 5)]


def test_a_file_deleted_before_it_settles_is_forgotten(ingest_dir: Path, start_monitor) -> None:
    monitor = start_monitor()
    doomed = ingest_dir / "doomed.csv"
    doomed.write_bytes(batch_bytes(0))
    doomed.unlink()
    write_batch(ingest_dir, "kept.csv", make_batch(1, rows=20))
    assert wait_until(lambda: len(ledger(monitor)) >= 1)
    assert monitor.wait_idle()
    assert names(monitor) == ["kept.csv"]
