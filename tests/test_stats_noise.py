"""Standard errors of metrics, and of the difference of two models' metrics on the same rows, against Monte Carlo."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from app.metrics import get_metric
from app.stats.health import binary_roc_auc
from app.stats.noise import delong_components, paired_standard_error, standard_error

DRAWS = 1000
POSITIVES, NEGATIVES = 100, 1900


def imbalanced_draw(rng: np.random.Generator, shared: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """100 positives and 1,900 negatives; two scorers that share ``shared`` of their noise."""
    labels = np.r_[np.ones(POSITIVES, bool), np.zeros(NEGATIVES, bool)]
    common = rng.normal(0, 1, len(labels))
    first = 1.2 * labels + math.sqrt(shared) * common + math.sqrt(1 - shared) * rng.normal(0, 1, len(labels))
    second = 1.0 * labels + math.sqrt(shared) * common + math.sqrt(1 - shared) * rng.normal(0, 1, len(labels))
    return labels, first, second


def proba(scores: np.ndarray) -> np.ndarray:
    positive = 1 / (1 + np.exp(-scores))
    return np.column_stack([1 - positive, positive])


def auc_se(labels: np.ndarray, scores: np.ndarray) -> float:
    return standard_error(get_metric("roc_auc").influence(labels.astype(int).astype(str), proba(scores), ["0", "1"]))


def test_delong_components_average_to_the_auc():
    rng = np.random.default_rng(0)
    labels, scores, _ = imbalanced_draw(rng)
    scores = np.round(scores, 1)  # ties count one half
    v10, v01 = delong_components(labels, scores)
    assert v10.mean() == pytest.approx(roc_auc_score(labels, scores))
    assert v01.mean() == pytest.approx(roc_auc_score(labels, scores))


def test_auc_standard_error_matches_monte_carlo_on_imbalanced_classes():
    rng = np.random.default_rng(1)
    aucs, errors = [], []
    for _ in range(DRAWS):
        labels, scores, _ = imbalanced_draw(rng)
        aucs.append(binary_roc_auc(labels, scores))
        errors.append(auc_se(labels, scores))
    # Hanley-McNeil with the classes paired the wrong way round is about 22% too small here
    assert np.mean(errors) == pytest.approx(np.std(aucs), rel=0.08)


def test_paired_difference_of_two_aucs_matches_monte_carlo():
    rng = np.random.default_rng(2)
    differences, paired, independent = [], [], []
    auc = get_metric("roc_auc")
    for _ in range(DRAWS):
        labels, first, second = imbalanced_draw(rng, shared=0.8)
        truth = labels.astype(int).astype(str)
        differences.append(binary_roc_auc(labels, first) - binary_roc_auc(labels, second))
        a, b = auc.influence(truth, proba(first), ["0", "1"]), auc.influence(truth, proba(second), ["0", "1"])
        paired.append(paired_standard_error(a, b))
        independent.append(math.hypot(standard_error(a), standard_error(b)))
    assert np.mean(paired) == pytest.approx(np.std(differences), rel=0.1)
    assert np.mean(independent) > 1.8 * np.std(differences)  # treating the two as independent overstates the noise


@pytest.mark.parametrize("name", ["rmse", "mae", "r2"])
def test_regression_standard_errors_match_monte_carlo(name: str):
    rng = np.random.default_rng(3)
    scoring = get_metric(name)
    values, errors = [], []
    for _ in range(DRAWS):
        truth = rng.normal(0, 2, 500)
        predicted = truth + rng.standard_t(5, 500)
        residual = truth - predicted
        value = {"rmse": math.sqrt(np.mean(residual ** 2)), "mae": np.mean(np.abs(residual)),
                 "r2": 1 - np.sum(residual ** 2) / np.sum((truth - truth.mean()) ** 2)}[name]
        values.append(value)
        errors.append(standard_error(scoring.influence(truth, predicted)))
    assert np.mean(errors) == pytest.approx(np.std(values), rel=0.12)


@pytest.mark.parametrize("name", ["accuracy", "balanced_accuracy", "f1", "log_loss", "brier"])
def test_classification_standard_errors_match_monte_carlo(name: str):
    from app.stats.health import classification_metrics

    rng = np.random.default_rng(4)
    scoring = get_metric(name)
    values, errors = [], []
    for _ in range(400):
        labels, scores, _ = imbalanced_draw(rng)
        labels = np.where(rng.random(len(labels)) < 0.3, ~labels, labels)  # enough positives for F1 to vary
        truth = labels.astype(int).astype(str)
        values.append(classification_metrics(truth, proba(scores - 1), ["0", "1"])[name])
        errors.append(standard_error(scoring.influence(truth, proba(scores - 1), ["0", "1"])))
    assert np.mean(errors) == pytest.approx(np.std(values), rel=0.12)
