"""The assessment stage on its own: drift, data quality, flags and state for one model and one batch."""

from __future__ import annotations

from pathlib import Path

from app.engine.assess import Assessor
from app.engine.records import BatchResult
from app.stats.profile import Profile
from app.store import SnapshotRecord
from app.workspace import Workspace
from tests.conftest import make_batch


def test_a_shifted_feature_and_a_unit_change_become_flags_and_a_watch_state(data_dir: Path):
    with Workspace.open(data_dir) as workspace:
        config = workspace.config
        assess = Assessor(config.model("static-lr"), config, workspace.registry)
        reference = Profile.build(make_batch(0, rows=400), config.schema)
        batch = make_batch(1, rows=400, shift=3.0)
        batch["x1"] = batch["x1"] * 1000
        result = BatchResult(labeled=True)
        current = assess.measure_drift(result, reference, batch)
        assert "x3" in result.drifted_features and "x2" not in result.drifted_features
        assert result.feature_drift["x3"]["status"] == "drifted"
        result.quality_issues = assess.quality_issues(reference, batch, labeled=True, serving=None)
        assert len(result.quality_issues) == 1 and "'x1'" in result.quality_issues[0]
        assert "change of unit" in result.quality_issues[0]
        result.flags = assess.flags(result, serving=None, labeled=True)
        assert [flag["kind"] for flag in result.flags] == ["data_quality", "feature_drift"]
        state = assess.state(result, current)
        assert state.state == "watch" and state.flags == result.flags
        assert state.current_profile["rows"] == 400


def test_a_batch_like_its_reference_is_healthy(data_dir: Path):
    with Workspace.open(data_dir) as workspace:
        config = workspace.config
        assess = Assessor(config.model("static-lr"), config, workspace.registry)
        reference = Profile.build(make_batch(0, rows=400), config.schema)
        batch = make_batch(1, rows=400)
        result = BatchResult(labeled=True)
        current = assess.measure_drift(result, reference, batch)
        result.quality_issues = assess.quality_issues(reference, batch, labeled=True, serving=None)
        result.flags = assess.flags(result, serving=None, labeled=True)
        assert result.drifted_features == [] and result.quality_issues == [] and result.flags == []
        assert assess.state(result, current).state == "healthy"


def judged_flags(data_dir: Path, metric: str, holdout: float, **measured) -> list[str]:
    """The flags ``static-lr``'s assessor raises on a labeled batch ``measured`` so, its serving version having
    scored ``holdout`` on ``metric`` at training."""
    with Workspace.open(data_dir) as workspace:
        config = workspace.config
        assess = Assessor(config.model("static-lr"), config, workspace.registry)
        serving = SnapshotRecord("static-lr", 1, None, 0.0, "serving", "bootstrap", None, None,
                                 {"metric": metric, "holdout_metrics": {metric: holdout}, "holdout_metric_se": 0.01})
        result = BatchResult(labeled=True, metric=metric, quality_issues=[], **measured)
        return [flag["kind"] for flag in assess.flags(result, serving=serving, labeled=True)]


def test_a_batch_with_a_handful_of_rows_of_a_class_judges_nothing(data_dir: Path):
    """One positive in 50 rows decides the batch's ROC AUC alone: a drop or a lack of skill seen there is chance."""
    def flags(fewest_class_rows: int) -> list[str]:
        return judged_flags(data_dir, "roc_auc", 0.9, metrics={"roc_auc": 0.5}, metric_se=0.01,
                            baseline_metrics={"roc_auc": 0.5}, skill_se=0.01, fewest_class_rows=fewest_class_rows)

    assert flags(fewest_class_rows=1) == []
    assert flags(fewest_class_rows=20) == ["performance_drop", "no_skill"]


def test_a_regression_batch_of_a_few_rows_judges_nothing(data_dir: Path):
    """One row's error has a standard error of zero: a drop seen on it would pass any noise allowance."""
    def flags(labeled_rows: int) -> list[str]:
        return judged_flags(data_dir, "rmse", 0.1, metrics={"rmse": 0.5}, metric_se=0.0, labeled_rows=labeled_rows)

    assert flags(labeled_rows=1) == flags(labeled_rows=9) == []
    assert flags(labeled_rows=10) == ["performance_drop"]
