from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics

from app.metrics import METRICS, get_metric, metrics_for, primary_metric
from app.stats.health import (
    CLASSIFICATION_METRICS,
    classification_baseline,
    classification_metrics,
    REGRESSION_METRICS,
    regression_baseline,
    regression_metrics,
    score_drift,
)


def random_probabilities(rng: np.random.Generator, rows: int, n_classes: int) -> np.ndarray:
    raw = rng.random((rows, n_classes)) + 0.01
    return raw / raw.sum(axis=1, keepdims=True)


def sklearn_classification(y_true, proba, classes) -> dict[str, float]:
    y_true, classes = np.asarray(y_true), np.asarray(classes)
    predicted = classes[proba.argmax(axis=1)]
    binary = len(classes) == 2
    return {
        "accuracy": metrics.accuracy_score(y_true, predicted),
        "balanced_accuracy": metrics.balanced_accuracy_score(y_true, predicted),
        "roc_auc": (
            metrics.roc_auc_score(y_true == classes[1], proba[:, 1]) if binary
            else metrics.roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=classes)
        ),
        "log_loss": metrics.log_loss(y_true, proba, labels=classes),
        "f1": (
            metrics.f1_score(y_true, predicted, pos_label=classes[1], zero_division=0) if binary
            else metrics.f1_score(y_true, predicted, average="macro", zero_division=0)
        ),
        "brier": metrics.brier_score_loss(y_true, proba if not binary else proba[:, 1],
                                          labels=classes, pos_label=classes[1]),
    }


def assert_matches_sklearn(y_true, proba, classes) -> None:
    ours = classification_metrics(y_true, proba, classes)
    expected = sklearn_classification(y_true, proba, classes)
    assert set(ours) == set(CLASSIFICATION_METRICS)
    for name in CLASSIFICATION_METRICS:
        assert ours[name] == pytest.approx(expected[name], rel=1e-9, abs=1e-12), name


def test_binary_metrics_match_sklearn_with_the_second_class_positive():
    rng = np.random.default_rng(0)
    classes = np.array(["no", "yes"])
    y_true = rng.choice(classes, 400, p=[0.7, 0.3])
    signal = (y_true == "yes") * 0.3 + rng.random(400) * 0.7
    proba = np.column_stack((1 - signal, signal))
    assert_matches_sklearn(y_true, proba, classes)
    assert classification_metrics(y_true, proba, classes)["roc_auc"] > 0.7


def test_multiclass_metrics_match_sklearn():
    rng = np.random.default_rng(1)
    classes = np.array([0, 1, 2, 3])
    y_true = rng.integers(0, 4, 500)
    proba = random_probabilities(rng, 500, 4)
    proba[np.arange(500), y_true] += 0.5
    proba /= proba.sum(axis=1, keepdims=True)
    assert_matches_sklearn(y_true, proba, classes)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(2, 200), n_classes=st.integers(2, 5))
def test_metrics_match_sklearn_on_random_batches(seed, rows, n_classes):
    rng = np.random.default_rng(seed)
    classes = np.arange(n_classes) * 10
    y_true = np.r_[classes, rng.choice(classes, rows)]  # every class present, so AUC is defined
    proba = random_probabilities(rng, len(y_true), n_classes)
    assert_matches_sklearn(y_true, proba, classes)


def test_auc_is_none_when_one_class_is_present_and_nothing_raises():
    proba = np.array([[0.2, 0.8], [0.6, 0.4], [0.1, 0.9]])
    result = classification_metrics(np.array([1, 1, 1]), proba, [0, 1])
    assert result["roc_auc"] is None
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert result["log_loss"] == pytest.approx(metrics.log_loss([1, 1, 1], proba, labels=[0, 1]))


def test_multiclass_auc_averages_only_the_classes_the_batch_can_score():
    rng = np.random.default_rng(2)
    y_true = rng.choice([0, 1], 100)  # class 2 never occurs
    proba = random_probabilities(rng, 100, 3)
    expected = np.mean([metrics.roc_auc_score(y_true == label, proba[:, label]) for label in (0, 1)])
    assert classification_metrics(y_true, proba, [0, 1, 2])["roc_auc"] == pytest.approx(expected)


def test_labels_outside_the_classes_count_as_wrong():
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.5, 0.5]])
    result = classification_metrics(["a", "b", "zzz", "zzz"], proba, ["a", "b"])
    assert result["accuracy"] == 0.5
    assert result["balanced_accuracy"] == pytest.approx((1 + 1 + 0) / 3)
    eps = np.finfo(np.float64).eps
    assert result["log_loss"] == pytest.approx((-np.log(0.9) - np.log(0.8) - 2 * np.log(eps)) / 4)
    # unseen rows: the missed label adds 1 to the summed squared error; binary halves the sum
    per_row = [0.1**2 * 2, 0.2**2 * 2, 0.3**2 + 0.7**2 + 1, 0.5**2 + 0.5**2 + 1]
    assert result["brier"] == pytest.approx(np.mean(per_row) / 2)
    is_positive, predicted_positive = [False, True, False, False], [False, True, True, False]
    assert result["f1"] == pytest.approx(metrics.f1_score(is_positive, predicted_positive))


def test_unseen_labels_in_a_multiclass_batch_lower_macro_f1_like_sklearn():
    classes = np.array(["x", "y", "z"])
    y_true = np.array(["x", "y", "new", "z", "other"])
    proba = np.eye(3)[[0, 1, 2, 2, 0]] * 0.8 + 0.2 / 3
    expected = metrics.f1_score(y_true, classes[[0, 1, 2, 2, 0]], average="macro", zero_division=0)
    assert classification_metrics(y_true, proba, classes)["f1"] == pytest.approx(expected)


def test_rows_without_a_label_are_left_out_and_an_empty_batch_gives_none():
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
    with_gap = classification_metrics(np.array([0, 1, None], dtype=object), proba, [0, 1])
    assert with_gap == classification_metrics(np.array([0, 1]), proba[:2], [0, 1])
    assert classification_metrics([], np.empty((0, 2)), [0, 1]) == dict.fromkeys(CLASSIFICATION_METRICS)


def test_regression_metrics_match_sklearn():
    rng = np.random.default_rng(3)
    y_true = rng.normal(size=300)
    y_pred = y_true + rng.normal(0, 0.3, 300)
    result = regression_metrics(y_true, y_pred)
    assert result["mae"] == pytest.approx(metrics.mean_absolute_error(y_true, y_pred))
    assert result["rmse"] == pytest.approx(metrics.root_mean_squared_error(y_true, y_pred))
    assert result["r2"] == pytest.approx(metrics.r2_score(y_true, y_pred))


def test_regression_edge_cases():
    assert regression_metrics([2.0, 2.0], [1.0, 3.0])["r2"] is None
    assert regression_metrics([1.0, np.nan, 3.0], [1.0, 9.0, 2.0]) == regression_metrics([1.0, 3.0], [1.0, 2.0])
    assert regression_metrics([], []) == {"mae": None, "rmse": None, "r2": None}


def test_classification_baseline_predicts_the_priors():
    y_true = np.array(["b"] * 70 + ["a"] * 30)
    result = classification_baseline(y_true, {"b": 0.7, "a": 0.3})
    assert result["accuracy"] == pytest.approx(0.7)
    assert result["roc_auc"] == pytest.approx(0.5)
    assert result["log_loss"] == pytest.approx(-(0.7 * np.log(0.7) + 0.3 * np.log(0.3)))
    assert result["brier"] == pytest.approx(np.mean((np.where(y_true == "b", 1.0, 0.0) - 0.7) ** 2))
    assert result["f1"] == pytest.approx(metrics.f1_score(y_true, ["b"] * 100, pos_label="b"))


def test_regression_baseline_of_the_mean_has_zero_r2():
    y_true = np.array([1.0, 2.0, 4.0, 9.0])
    result = regression_baseline(y_true, y_true.mean())
    assert result["r2"] == pytest.approx(0.0)
    assert result["mae"] == pytest.approx(np.mean(np.abs(y_true - 4.0)))


def holdout_sketch(scores: np.ndarray) -> np.ndarray:
    """What a snapshot keeps of its holdout scores: 201 evenly spaced quantiles."""
    return np.quantile(scores, np.linspace(0, 1, 201))


def test_score_drift_psi_is_the_decile_psi_against_the_holdout():
    rng = np.random.default_rng(5)
    reference, current = rng.beta(2, 5, 8000), rng.beta(3, 4, 6000)
    deciles = np.quantile(reference, np.arange(1, 10) / 10)
    actual = np.maximum(np.bincount(np.searchsorted(deciles, current, side="right"), minlength=10) / 6000, 1e-4)
    expected_psi = np.sum((actual - 0.1) * np.log(actual / 0.1))  # the holdout's deciles hold a tenth each
    drift = score_drift(holdout_sketch(reference), current, 8000, 0.2, 0.01)
    assert drift.psi == pytest.approx(expected_psi, rel=1e-3)
    assert drift.groups == 10 and drift.status == "drifted"
    assert score_drift(holdout_sketch(reference), rng.beta(2, 5, 6000), 8000, 0.2, 0.01).status == "stable"
    with pytest.raises(ValueError):
        score_drift(np.ones((3, 2)), np.ones((3, 2)), 10, 0.2, 0.01)


@pytest.mark.parametrize("rows", [20, 50, 200])
def test_prediction_drift_is_rare_on_small_batches_of_unchanged_scores(rows):
    """Monte Carlo: a fixed PSI threshold of 0.2 flags many small batches by sampling alone; the calibrated rule
    keeps within the false-alarm rate, and still finds a real move of the scores."""
    rng = np.random.default_rng(rows)
    sketch = holdout_sketch(rng.beta(2, 5, 2_000))
    runs = 400
    unchanged = [score_drift(sketch, rng.beta(2, 5, rows), 2_000, 0.2, 0.01) for _ in range(runs)]
    drifted = np.mean([drift.status == "drifted" for drift in unchanged])
    assert drifted <= 0.01 + 3 * np.sqrt(0.01 * 0.99 / runs)
    if rows == 50:
        assert np.mean([drift.psi >= 0.2 for drift in unchanged]) > 0.1  # what the fixed threshold flagged
    moved = [score_drift(sketch, rng.beta(4, 3, rows), 2_000, 0.2, 0.01).status for _ in range(50)]
    assert np.mean([status == "drifted" for status in moved]) >= 0.9


def test_prediction_drift_of_a_few_distinct_scores():
    """A model with five possible scores: the sketch's ties become one bin per score."""
    rng = np.random.default_rng(6)
    sketch = holdout_sketch(rng.integers(0, 5, 2_000) / 4)
    unchanged = [score_drift(sketch, rng.integers(0, 5, 300) / 4, 2_000, 0.2, 0.01).status for _ in range(200)]
    assert np.mean([status == "drifted" for status in unchanged]) <= 0.01 + 3 * np.sqrt(0.01 * 0.99 / 200)
    assert score_drift(sketch, np.full(300, 1.0), 2_000, 0.2, 0.01).status == "drifted"


def test_one_metric_table_covers_every_metric_computed_and_allowed():
    assert set(METRICS) == {*CLASSIFICATION_METRICS, *REGRESSION_METRICS}
    assert set(metrics_for("classification")) == set(CLASSIFICATION_METRICS)
    assert set(metrics_for("regression")) == set(REGRESSION_METRICS)
    assert primary_metric("classification").name == "roc_auc"
    assert primary_metric("regression").name == "rmse"
    with pytest.raises(ValueError):
        primary_metric("ranking")
    assert {name for name, m in METRICS.items() if m.higher_is_better} == {"accuracy", "balanced_accuracy", "roc_auc", "f1", "r2"}
    with pytest.raises(ValueError):
        get_metric("speed")


def test_metric_direction_and_tolerance_are_one_rule():
    rmse, auc = get_metric("rmse"), get_metric("roc_auc")
    assert rmse.gain(10.0, 8.0) == pytest.approx(2.0) and auc.gain(0.8, 0.7) == pytest.approx(-0.1)
    assert rmse.allowed(0.01, 10.0) == pytest.approx(0.1) and auc.allowed(0.01, 0.8) == pytest.approx(0.01)
    # a zero reference of an error metric (a perfect model) scales by 1, never by 0
    assert rmse.allowed(0.01, 0.0) == pytest.approx(0.01)
