"""The estimate recorded per batch, its error once labels come, the track record, and the lag flag."""

from __future__ import annotations

import numpy as np
import pytest

from app.label_health import NO_REGRESSION_ESTIMATE, estimate, estimate_error, lag_flag, track_record
from app.label_ledger import LabelLag
from app.stats.cbpe import fit_calibration


def test_a_classifier_gets_a_calibrated_estimate_and_a_regressor_is_told_there_is_none() -> None:
    rng = np.random.default_rng(0)
    positive = rng.random(300)
    proba = np.column_stack([1 - positive, positive])
    calibration = fit_calibration((rng.random(300) < positive).astype(int), proba, [0, 1]).to_dict()
    guess = estimate(proba, calibration, "roc_auc", "classification")
    assert guess.calibrated and 0.6 < guess.value < 0.95
    assert estimate(proba, None, "roc_auc", "classification").calibrated is False
    assert estimate(None, None, "rmse", "regression").to_dict() == {"metric": "rmse", "value": None, "calibrated": False,
                                                                     "why": NO_REGRESSION_ESTIMATE}
    assert estimate(proba, calibration, "log_loss", "classification").value is None


def test_the_error_is_recorded_once_the_realised_value_exists_and_the_track_record_averages_the_newest() -> None:
    waiting = {"metric": "roc_auc", "value": 0.8}
    assert estimate_error(waiting, None) is None and estimate_error(None, {"roc_auc": 0.7}) is None
    assert estimate_error(waiting, {"roc_auc": 0.75}) == pytest.approx(0.05)
    results = [{"estimate_error": e} for e in (0.5, -0.1, 0.2)] + [{}]
    assert track_record(results, batches=2) == {"mae": pytest.approx(0.15), "batches": 2}
    assert track_record([{}], batches=5) == {"mae": None, "batches": 0}


def test_the_lag_flag_is_raised_only_beyond_the_limit() -> None:
    assert lag_flag(None, 2) is None
    assert lag_flag(LabelLag("w1.csv", 0.0, 2), 2) is None
    flag = lag_flag(LabelLag("w1.csv", 0.0, 3), 2)
    assert flag["kind"] == "label_lag" and "w1.csv still waits for its labels, 3 batches later" in flag["detail"]
