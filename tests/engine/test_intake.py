"""The intake stage on its own: a path becomes a batch, or one ledger entry that says why not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.engine.context import StageContext
from app.engine.intake import Intake
from app.events import Event, EventKind
from app.workspace import Workspace
from tests.conftest import make_batch, write_batch


@pytest.fixture
def opened(ingest_dir: Path):
    """An intake over ``ingest_dir`` with a real store; yields (intake, events, deferred, workspace)."""
    events: list[Event] = []
    deferred: list[Path] = []  # while it holds anything the intake is paused, and new files join it

    def defer(path: Path) -> bool:
        if deferred:
            deferred.append(path)
        return bool(deferred)

    workspace = Workspace.open(ingest_dir)
    context = StageContext.open(workspace, events.append, set_training=lambda model: None)
    intake = Intake(context, defer=defer, changed=lambda path: None)
    try:
        yield intake, events, deferred, workspace
    finally:
        context.streams.close()
        workspace.close()


def ledger(workspace: Workspace) -> list[tuple[str, str]]:
    return [(record.name, record.status) for record in workspace.store.files()]


def test_a_valid_file_becomes_a_batch_and_is_left_for_the_commit_to_record(opened, ingest_dir: Path):
    intake, events, _, workspace = opened
    path = write_batch(ingest_dir, "b00.csv", make_batch(0, rows=30))
    arrival = intake.take(path)
    assert arrival is not None and arrival.batch.rows == 30 and arrival.batch.labeled
    assert arrival.snapshot.sha256 and arrival.snapshot.name == "b00.csv"
    assert ledger(workspace) == [] and events == []


def test_a_refused_file_is_quarantined_with_its_reason(opened, ingest_dir: Path):
    intake, events, _, workspace = opened
    path = ingest_dir / "bad.csv"
    path.write_text("x1,x2\nnot,numbers\n")
    assert intake.take(path) is None
    assert ledger(workspace) == [("bad.csv", "quarantined")]
    assert [event.kind for event in events] == [EventKind.BATCH_QUARANTINED]
    copies = [p.name for p in workspace.paths.quarantine.iterdir()]
    assert any(name.endswith("bad.csv") for name in copies) and any(name.endswith(".reason.txt") for name in copies)


def test_the_same_content_under_another_name_is_a_duplicate(opened, ingest_dir: Path):
    intake, events, _, workspace = opened
    first = intake.take(write_batch(ingest_dir, "b00.csv", make_batch(0, rows=30)))
    workspace.store.record_file("b00.csv", first.snapshot.sha256, "ingested", rows=30, labeled=True,
                                seen=first.snapshot.seen)
    (ingest_dir / "copy.csv").write_bytes((ingest_dir / "b00.csv").read_bytes())
    assert intake.take(ingest_dir / "copy.csv") is None
    assert ledger(workspace) == [("b00.csv", "ingested"), ("copy.csv", "duplicate")]
    assert [event.kind for event in events] == [EventKind.DUPLICATE]
    assert intake.take(ingest_dir / "b00.csv") is None and len(events) == 1  # a known file: nothing new


def test_a_paused_intake_holds_a_new_file_back_without_recording_it(opened, ingest_dir: Path):
    intake, events, deferred, workspace = opened
    deferred.append(Path("paused"))
    path = write_batch(ingest_dir, "b00.csv", make_batch(0, rows=30))
    assert intake.take(path) is None
    assert deferred == [Path("paused"), path] and ledger(workspace) == [] and events == []


def test_a_fifo_is_skipped_once_with_a_reason(opened, ingest_dir: Path):
    intake, events, _, workspace = opened
    fifo = ingest_dir / "pipe.csv"
    os.mkfifo(fifo)
    assert intake.take(fifo) is None and intake.take(fifo) is None
    assert ledger(workspace) == [("pipe.csv", "skipped")]
    assert [event.kind for event in events] == [EventKind.FILE_SKIPPED]
