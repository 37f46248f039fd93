"""A batch's result and a model's state are typed records whose stored JSON keeps the keys readers of state.db know."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from app.engine.monitor import Monitor
from app.engine.records import BatchResult
from app.store import FOLDER_KEY, FolderState, ModelState, Store
from tests.conftest import STREAM_CONFIG, make_batch, write_batch, write_config

ONE_STATIC_MODEL = STREAM_CONFIG + """
[[models]]
name = "static-lr"
mode = "static"
estimator = "logistic_regression"
"""

# As the engine stored it before results were typed: a first labeled batch (nothing serving, the domain
# classifier without a sample) and a scored one without a score sketch.
BEFORE_ANY_MODEL = {
    "labeled": True, "serving_version": None,
    "feature_drift": {"x1": {"psi": 0.01, "status": "stable"}}, "drifted_features": [],
    "multivariate_auc": None, "multivariate_top": {}, "quality_issues": [], "trainable": True, "flags": [],
    "action": "promoted", "action_detail": "candidate roc_auc 0.8000 vs naive baseline 0.5000",
    "train_seconds": 1.5, "candidate_version": 1,
}
SCORED_WITHOUT_SKETCH = {
    "labeled": False, "serving_version": 3, "feature_drift": {}, "drifted_features": [],
    "multivariate_auc": 0.52, "multivariate_top": {"x1": 0.4}, "prediction_psi": None, "metric": "roc_auc",
    "estimate": {"metric": "roc_auc", "value": 0.81, "calibrated": True, "why": ""}, "label_coverage": 0.0,
    "quality_issues": [], "trainable": False, "flags": [], "action": "none",
}


def test_stored_rows_read_back_into_the_same_json():
    for stored in (BEFORE_ANY_MODEL, SCORED_WITHOUT_SKETCH):
        assert BatchResult.from_dict(stored).to_dict() == stored
    result = BatchResult.from_dict(SCORED_WITHOUT_SKETCH)
    assert result.serving_version == 3 and result.prediction_psi is None and result.metrics is None


def test_keys_a_reader_adds_or_a_newer_version_wrote_are_ignored():
    result = BatchResult.from_dict({**SCORED_WITHOUT_SKETCH, "file": "b01.csv", "someday": 1})
    assert result.to_dict() == SCORED_WITHOUT_SKETCH


def test_what_the_engine_stores_round_trips_through_the_record(tmp_path: Path):
    folder = tmp_path / "data"
    folder.mkdir()
    write_config(folder, ONE_STATIC_MODEL)
    write_batch(folder, "b00.csv", make_batch(0, rows=200))
    write_batch(folder, "b01.csv", make_batch(1, rows=200).drop(columns="label"))
    monitor = Monitor(folder)
    try:
        monitor.run_once()
        stored = [data for _, _, data in monitor.store.results("static-lr")]
    finally:
        monitor.close()
    assert len(stored) == 2
    first, second = (BatchResult.from_dict(data) for data in stored)
    assert first.labeled and first.action == "promoted" and first.candidate_version == 1
    assert not second.labeled and second.serving_version == 1 and second.metric and second.metrics is None
    for data in stored:
        assert BatchResult.from_dict(data).to_dict() == data
    with sqlite3.connect(folder / ".driftdeck" / "state.db") as db:  # the generated column still finds them
        assert db.execute("SELECT trainable FROM results ORDER BY file_id").fetchall() == [(1,), (0,)]


# A model's state and the folder's row as the engine stored them before they were typed: a state written after a
# batch and then a validation, a state a validation wrote before any batch, and the folder's facts.
STATE_AFTER_VALIDATION = {
    "state": "stale", "flags": [{"kind": "code_regression", "detail": "v1 scores differently"}],
    "verdict": {"needs": "undecided", "text": "undecided: not enough labeled batches yet"},
    "current_profile": {"columns": {}, "rows": 200}, "validation": {"version": 1, "outcome": "regression"},
}
STATE_OF_A_VALIDATION_ONLY = {"flags": [], "validation": {"version": 2, "outcome": "passed"}}
FOLDER_ROW = {"reference": {"columns": {}, "rows": 200}, "reference_sha": "ab" * 32,
              "previous_labels": {"priors": {"0": 0.5, "1": 0.5}}}


def test_states_stored_as_plain_json_read_back_and_round_trip(tmp_path: Path):
    store = Store(tmp_path / "state.db")
    try:
        with store.transaction() as db:
            for key, data in (("a", STATE_AFTER_VALIDATION), ("b", {**STATE_OF_A_VALIDATION_ONLY, "someday": 1}),
                              (FOLDER_KEY, FOLDER_ROW)):
                db.execute("INSERT INTO model_state (model, data) VALUES (?, ?)", (key, json.dumps(data)))
        state = store.model_state("a")
        assert state.state == "stale" and state.flags[0]["kind"] == "code_regression"
        assert state.current_profile["rows"] == 200 and state.validation["version"] == 1
        assert store.model_state("b") == ModelState(validation={"version": 2, "outcome": "passed"})
        assert store.model_state("never-ran") is None
        folder = store.folder_state()
        assert folder.reference_sha == "ab" * 32 and folder.previous_labels["priors"]["1"] == 0.5
        store.save_model_state("a", store.model_state("a"))
        store.save_model_state("b", store.model_state("b"))
        store.save_folder_state(store.folder_state())
        rows = {row["model"]: row["data"] for row in store.read("SELECT model, data FROM model_state")}
    finally:
        store.close()
    assert json.loads(rows["a"]) == STATE_AFTER_VALIDATION
    assert json.loads(rows["b"]) == STATE_OF_A_VALIDATION_ONLY  # the unknown key is not kept
    assert json.loads(rows[FOLDER_KEY]) == FOLDER_ROW
    assert FolderState.from_dict({}) == FolderState() and FolderState().to_dict() == {}
