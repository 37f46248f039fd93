"""CBPE against a Monte Carlo reference: labels drawn from calibrated probabilities, many times over."""

from __future__ import annotations

import numpy as np
import pytest

from app.stats.cbpe import Calibration, estimate_metrics, expected_roc_auc, fit_calibration
from app.stats.health import classification_metrics

DRAWS = 200


def realised_mean(true_proba: np.ndarray, model_proba: np.ndarray, rng: np.random.Generator) -> dict[str, float]:
    """The mean of each metric over ``DRAWS`` label draws from ``true_proba``, scored on ``model_proba``."""
    classes = [str(k) for k in range(true_proba.shape[1])]
    totals: dict[str, list[float]] = {}
    cumulative = true_proba.cumsum(axis=1)
    for _ in range(DRAWS):
        labels = (rng.random((len(true_proba), 1)) > cumulative).sum(axis=1)
        realised = classification_metrics(np.array(classes, dtype=object)[labels], model_proba, classes)
        for name in ("accuracy", "roc_auc", "f1", "balanced_accuracy"):
            totals.setdefault(name, []).append(realised[name])
    return {name: float(np.mean(values)) for name, values in totals.items()}


def binary_proba(rng: np.random.Generator, rows: int) -> np.ndarray:
    positive = 1 / (1 + np.exp(-rng.normal(0.3, 1.6, rows)))
    return np.column_stack([1 - positive, positive])


def test_calibrated_binary_probabilities_estimate_the_realised_metrics_without_bias() -> None:
    rng = np.random.default_rng(1)
    proba = binary_proba(rng, 2000)
    estimate = estimate_metrics(proba)  # calibrated by construction: no map needed
    reference = realised_mean(proba, proba, rng)
    for name in ("accuracy", "roc_auc", "f1", "balanced_accuracy"):
        assert estimate[name] == pytest.approx(reference[name], abs=0.005), name


def test_calibrated_multiclass_probabilities_estimate_the_realised_metrics_without_bias() -> None:
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 1.5, (1500, 3)) + np.array([0.4, 0.0, -0.3])
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    estimate = estimate_metrics(proba)
    reference = realised_mean(proba, proba, rng)
    for name in ("accuracy", "roc_auc", "f1", "balanced_accuracy"):
        assert estimate[name] == pytest.approx(reference[name], abs=0.01), name


def test_an_overconfident_model_is_corrected_by_the_isotonic_map_fitted_on_a_holdout() -> None:
    rng = np.random.default_rng(3)
    true_proba = binary_proba(rng, 6000)
    logit = np.log(true_proba[:, 1] / true_proba[:, 0])
    model_positive = 1 / (1 + np.exp(-2.5 * logit))  # the same ranking, far too sure of itself
    model_proba = np.column_stack([1 - model_positive, model_positive])
    holdout, batch = slice(0, 3000), slice(3000, 6000)
    holdout_labels = (rng.random(3000) < true_proba[holdout, 1]).astype(int).astype(str)
    calibration = fit_calibration(holdout_labels, model_proba[holdout], ["0", "1"])
    reference = realised_mean(true_proba[batch], model_proba[batch], rng)
    raw = estimate_metrics(model_proba[batch])
    calibrated = estimate_metrics(model_proba[batch], calibration)
    assert abs(raw["accuracy"] - reference["accuracy"]) > 0.04  # uncalibrated, the estimate is far off
    assert calibrated["accuracy"] == pytest.approx(reference["accuracy"], abs=0.015)
    assert calibrated["roc_auc"] == pytest.approx(reference["roc_auc"], abs=0.015)


def test_the_estimates_error_averages_near_zero_over_many_batches() -> None:
    rng = np.random.default_rng(4)
    errors = []
    for _ in range(40):
        proba = binary_proba(rng, 500)
        labels = (rng.random(500) < proba[:, 1]).astype(int).astype(str)
        realised = classification_metrics(labels.astype(object), proba, ["0", "1"])["roc_auc"]
        errors.append(estimate_metrics(proba)["roc_auc"] - realised)
    assert abs(np.mean(errors)) < 0.01
    assert np.mean(np.abs(errors)) < 0.05  # and each batch's error is small: the track record shown


def test_a_calibration_survives_its_json_form_and_maps_the_same() -> None:
    rng = np.random.default_rng(5)
    proba = binary_proba(rng, 400)
    labels = (rng.random(400) < proba[:, 1]).astype(int)
    calibration = fit_calibration(labels, proba, [0, 1])
    again = Calibration.from_dict(calibration.to_dict())
    assert np.allclose(again.apply(proba), calibration.apply(proba))
    assert np.allclose(calibration.apply(proba).sum(axis=1), 1.0)


def test_too_few_rows_or_one_class_leave_nothing_to_estimate() -> None:
    assert fit_calibration(["1"] * 10, np.full((10, 2), 0.5), ["0", "1"]) is None
    assert estimate_metrics(np.zeros((0, 2)))["accuracy"] is None
    surely_positive = np.column_stack([np.zeros(20), np.ones(20)])
    assert estimate_metrics(surely_positive)["roc_auc"] is None
    assert expected_roc_auc(np.linspace(0, 1, 5), np.zeros(5)) is None
