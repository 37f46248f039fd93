"""A batch that raises while it is handled is quarantined with the reason; a fault of the machine is not.

The fault is raised for real inside a stage (drift measurement, the reader), for one file only,
and each test checks it was raised for that file before looking at what the monitor made of it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pyarrow as pa
import pytest

import app.engine.assess
import app.engine.intake
from app.engine.intake import UNHANDLED
from app.engine.monitor import Monitor
from app.events import Event, EventKind
from tests.conftest import INGEST_ONLY_CONFIG, STREAM_CONFIG, make_batch, write_batch, write_config

ONE_STATIC_MODEL = STREAM_CONFIG + """
[[models]]
name = "static-lr"
mode = "static"
estimator = "logistic_regression"
"""


def ledger(folder: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(folder / ".driftdeck" / "state.db") as db:
        return db.execute("SELECT name, status, reason FROM files ORDER BY id").fetchall()


def run_once(folder: Path) -> list[Event]:
    events: list[Event] = []
    monitor = Monitor(folder)
    monitor.subscribe(events.append)
    try:
        monitor.run_once()
    finally:
        monitor.close()
    return events


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    write_config(folder, ONE_STATIC_MODEL)
    for index in range(3):  # b01 is the one the config "no longer matches": told apart by its 150 rows
        write_batch(folder, f"b{index:02d}.csv", make_batch(index, rows=150 if index == 1 else 200))
    return folder


def raising_for(file_rows: int, error: Exception, real, raised: list):
    """``real`` (a drift function), raising ``error`` instead for the batch of ``file_rows`` rows."""
    def drift(reference, current, *args, **kwargs):
        if current.rows == file_rows:
            raised.append(error)
            raise error
        return real(reference, current, *args, **kwargs)
    return drift


def test_a_batch_that_raises_in_assessment_is_quarantined_once_and_the_monitor_goes_on(model_dir: Path, monkeypatch):
    raised: list[Exception] = []
    monkeypatch.setattr(app.engine.assess, "feature_drift",
                        raising_for(150, KeyError("x9"), app.engine.assess.feature_drift, raised))
    events = run_once(model_dir)
    assert len(raised) == 1  # the fault happened, once, for b01
    reason = f"{UNHANDLED}: KeyError: 'x9'"
    assert ledger(model_dir) == [("b00.csv", "ingested", ""), ("b01.csv", "quarantined", reason),
                                 ("b02.csv", "ingested", "")]
    quarantine = model_dir / ".driftdeck" / "quarantine"
    kept = [path for path in quarantine.iterdir() if "b01.csv" in path.name and not path.name.endswith(".txt")]
    assert [path.read_bytes() for path in kept] == [(model_dir / "b01.csv").read_bytes()]  # no data lost
    quarantined = [e for e in events if e.kind == EventKind.BATCH_QUARANTINED]
    assert [e.file for e in quarantined] == ["b01.csv"] and reason in quarantined[0].message
    assert "\n" not in quarantined[0].message and not any(e.kind == EventKind.ERROR for e in events)
    log = (model_dir / ".driftdeck" / "logs" / "errors.log").read_text()
    assert "handling b01.csv" in log and "Traceback" in log and "KeyError: 'x9'" in log
    # the next start does not try it again
    run_once(model_dir)
    assert len(raised) == 1 and [row[1] for row in ledger(model_dir)] == ["ingested", "quarantined", "ingested"]


def test_a_fault_of_the_disk_while_assessing_is_not_blamed_on_the_batch(model_dir: Path, monkeypatch):
    raised: list[Exception] = []
    monkeypatch.setattr(app.engine.assess, "feature_drift",
                        raising_for(150, OSError(28, "No space left on device"), app.engine.assess.feature_drift, raised))
    events = run_once(model_dir)
    assert len(raised) == 1
    assert [row[:2] for row in ledger(model_dir)] == [("b00.csv", "ingested"), ("b02.csv", "ingested")]  # tried later
    errors = [e for e in events if e.kind == EventKind.ERROR]
    assert [e.file for e in errors] == ["b01.csv"] and "No space left on device" in errors[0].message


def test_a_reader_that_raises_something_unexpected_quarantines_the_file_unread(tmp_path: Path, monkeypatch):
    folder = tmp_path / "data"
    folder.mkdir()
    write_config(folder, INGEST_ONLY_CONFIG)
    for index in range(2):
        write_batch(folder, f"b{index:02d}.csv", make_batch(index, rows=20))
    real, raised = app.engine.intake.read_batch, []

    def read_batch(path: Path, config):
        if path.name == "b00.csv":
            raised.append(path.name)
            raise pa.lib.ArrowInvalid("CSV parse error: Expected 6 columns, got 2\nmore detail")
        return real(path, config)

    monkeypatch.setattr(app.engine.intake, "read_batch", read_batch)
    run_once(folder)
    assert raised == ["b00.csv"]
    assert ledger(folder) == [
        ("b00.csv", "quarantined", f"{UNHANDLED}: ArrowInvalid: CSV parse error: Expected 6 columns, got 2"),
        ("b01.csv", "ingested", ""),
    ]
    assert (folder / ".driftdeck" / "quarantine" / "unread-b00.csv.reason.txt").exists()
