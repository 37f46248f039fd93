"""A batch's result is a typed record whose stored JSON keeps the keys readers of state.db know."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from app.engine.monitor import Monitor
from app.engine.records import BatchResult
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
