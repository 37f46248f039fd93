"""The training stage on its own: window, holdout, gate, and a candidate trained and gated without a Monitor."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.engine.assess import Assessor
from app.engine.records import BatchOutcome, BatchResult
from app.engine.train import CandidateTrainer, gate, split_holdout, training_window
from app.events import Event
from app.training import Trainer
from app.workspace import Workspace
from tests.conftest import STREAM_CONFIG, make_batch, run_once, write_batch, write_config

ONE_STATIC_MODEL = STREAM_CONFIG + """
[[models]]
name = "static-lr"
mode = "static"
estimator = "logistic_regression"
"""


def test_a_candidate_without_skill_is_rejected_even_over_a_serving_model_without_skill():
    # the case that served a 0.30 ROC AUC over 0.285 as "healthy": beating a serving model is not enough
    decision = gate("roc_auc", 0.30, 0.285, 0.5, tolerance=0.01, min_metric=None, skill_error=0.02)
    assert not decision.passed and decision.no_skill and "no skill" in decision.reason
    # within the noise of the baseline is no skill either, serving or not
    assert gate("roc_auc", 0.53, 0.52, 0.5, tolerance=0.01, min_metric=None, skill_error=0.03).no_skill
    assert gate("roc_auc", 0.80, 0.79, 0.5, tolerance=0.01, min_metric=None, skill_error=0.03).passed
    # error metrics: lower is better, against the baseline too
    assert gate("rmse", 19.0, 19.5, 20.0, tolerance=0.01, min_metric=None, skill_error=1.0).no_skill
    assert gate("rmse", 10.0, 10.05, 20.0, tolerance=0.01, min_metric=None, skill_error=1.0).passed


def test_the_window_keeps_labeled_rows_oldest_first_and_the_holdout_is_the_newest(tmp_path: Path):
    folder = tmp_path / "data"
    folder.mkdir()
    write_config(folder)
    with Workspace.open(folder) as workspace:
        config = workspace.config
    old, new = make_batch(0, rows=50), make_batch(1, rows=50)
    new.loc[:9, "label"] = None
    window = training_window([("a.csv", "sha-a", old), ("b.csv", "sha-b", new)], config)
    assert window.files == ["a.csv", "b.csv"] and window.shas == ["sha-a", "sha-b"]
    assert len(window.frame) == 90 and list(window.frame.index) == list(range(90))
    train, holdout = split_holdout(window.frame, config.timestamp)
    assert len(holdout) == 18 and holdout["ts"].min() >= train["ts"].max()


@pytest.fixture
def serving_folder(tmp_path: Path) -> Path:
    """A folder whose static model serves v1, trained on one batch with signal."""
    folder = tmp_path / "data"
    folder.mkdir()
    write_config(folder, ONE_STATIC_MODEL)
    write_batch(folder, "b00.csv", make_batch(0))
    run_once(folder)
    return folder


def test_a_retrain_by_hand_on_noise_is_rejected_for_no_skill_and_serving_stays(serving_folder: Path):
    events: list[Event] = []
    trainer = Trainer()
    with Workspace.open(serving_folder) as workspace:
        serving = workspace.registry.serving("static-lr")
        assert serving is not None and serving.version == 1
        assess = Assessor(workspace.config.model("static-lr"), workspace.config, workspace.registry)
        stage = CandidateTrainer(assess, trainer, load_batches=lambda ids: [], emit=events.append)
        noise = make_batch(5, shuffled=True, seed=3).astype({"label": str})  # labels as validation hands them on
        window = training_window([("noise.csv", "0" * 64, noise)], workspace.config)
        outcome = BatchOutcome(BatchResult())
        try:
            stage.train_and_gate(outcome, window, serving, reason="manual")
        finally:
            trainer.close()
        with workspace.store.transaction() as db:
            for write in outcome.writes:
                write(db)
        assert outcome.result.action == "rejected"
        assert "no skill" in outcome.result.action_detail
        assert outcome.pointer_writes == [] and outcome.promoted_models == {}
        candidate = workspace.store.snapshot("static-lr", 2)
        assert candidate.status == "rejected" and "no skill" in candidate.reason
        assert workspace.store.serving_version("static-lr") == 1
        assert outcome.result.quality_issues is None  # a retrain by hand has no batch of its own to mark
