"""The commit stage on its own: a batch's ledger entry, results and state in one transaction, events after it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from app.engine.commit import Committer
from app.engine.context import StageContext
from app.engine.records import BatchOutcome, BatchResult
from app.events import Event, EventKind
from app.ingest import read_batch
from app.store import FolderState, ModelState
from app.workspace import Workspace
from tests.conftest import make_batch, write_batch


@pytest.fixture
def committing(data_dir: Path):
    """(committer, events, workspace, snapshot, batch) for one labeled batch file read for real."""
    events: list[Event] = []
    workspace = Workspace.open(data_dir)
    context = StageContext.open(workspace, events.append, set_training=lambda model: None)
    committer = Committer(context)
    snapshot, batch = read_batch(write_batch(data_dir, "b00.csv", make_batch(0, rows=40)), workspace.config)
    try:
        yield committer, events, workspace, snapshot, batch
    finally:
        context.streams.close()
        workspace.close()


def test_a_batch_is_recorded_with_its_results_and_state_then_told(committing):
    committer, events, workspace, snapshot, batch = committing
    result = BatchResult(labeled=True, feature_drift={}, drifted_features=[], quality_issues=[], trainable=True,
                         flags=[], action_detail="collecting labeled batches to train version 1 (1 of 2)")
    outcome = BatchOutcome(result, state=ModelState(state="healthy"))
    committer.commit(snapshot, batch, {"static-lr": outcome}, serving_before={"static-lr": None},
                     folder=FolderState(reference={"columns": {}, "rows": 0}))
    [record] = workspace.store.files()
    assert (record.name, record.status, record.rows, record.sha256) == ("b00.csv", "ingested", 40, snapshot.sha256)
    assert workspace.store.results("static-lr") == [(record.id, "static-lr", result.to_dict())]
    assert workspace.store.trainable_ids("static-lr") == [record.id]
    assert workspace.store.model_state("static-lr") == ModelState(state="healthy")
    assert workspace.store.folder_state() == FolderState(reference={"columns": {}, "rows": 0})
    assert [event.kind for event in events] == [EventKind.BATCH_INGESTED, EventKind.BATCH_RESULT]


def test_a_write_that_fails_leaves_no_trace_of_the_batch_nor_its_candidate_file(committing):
    committer, events, workspace, snapshot, batch = committing
    candidate_file, _ = workspace.registry.write_snapshot_file("static-lr", 1, b"a fitted candidate")
    result = BatchResult(labeled=True, flags=[], action="promoted", candidate_version=1)
    failing = BatchOutcome(result, writes=[lambda db: db.execute("INSERT INTO no_such_table VALUES (1)")])
    with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
        committer.commit(snapshot, batch, {"static-lr": failing}, serving_before={"static-lr": None})
    assert workspace.store.files() == [] and workspace.store.results("static-lr") == []
    assert not candidate_file.exists()  # no snapshot file without its record
    assert events == []  # nothing is told that did not happen
