"""A batch's health while its labels are missing, and once they come: the estimate, its error, coverage, lag.

Every batch a classifier scores gets an :class:`Estimate` of its primary
metric from the model's own probabilities (CBPE, see :mod:`app.stats.cbpe`),
calibrated with the map stored in the serving snapshot. When the batch's
labels are in, the realised value is computed for the version that served it
and the estimate's error is recorded beside it, so the health panel can show
the estimate, the realised value, and how good the estimates have been (the
mean absolute error over the last ``[labels] track_batches`` batches).
Regression gets no estimate: a predicted value carries no distribution of its
error, and an estimate that is not principled is not shown.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from app.label_ledger import LabelLag
from app.stats.cbpe import Calibration, estimate_metrics

NO_REGRESSION_ESTIMATE = "not available for regression: a predicted value carries no distribution of its error"
NO_METRIC_ESTIMATE = "not available for {metric}: only accuracy, balanced accuracy, ROC AUC and F1 can be estimated"


@dataclass(frozen=True)
class Estimate:
    """The primary metric expected from the probabilities: ``value`` None with ``why`` when there is none."""

    metric: str
    value: float | None
    calibrated: bool = False
    why: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def estimate(proba: np.ndarray | None, calibration: dict | None, metric: str, task: str) -> Estimate:
    """The estimate of ``metric`` for rows scored ``proba`` (None for a regression model)."""
    if task == "regression" or proba is None:
        return Estimate(metric, None, why=NO_REGRESSION_ESTIMATE)
    expected = estimate_metrics(proba, Calibration.from_dict(calibration))
    if metric not in expected:
        return Estimate(metric, None, why=NO_METRIC_ESTIMATE.format(metric=metric))
    return Estimate(metric, expected[metric], calibrated=calibration is not None)


def estimate_error(estimated: dict[str, Any] | None, metrics: dict[str, Any] | None) -> float | None:
    """Estimate (an :meth:`Estimate.to_dict`) minus the realised value of its metric; None until both exist."""
    guess = (estimated or {}).get("value")
    realised = (metrics or {}).get((estimated or {}).get("metric"))
    return None if guess is None or realised is None else float(guess - realised)


def track_record(results: list[dict[str, Any]], batches: int) -> dict[str, Any]:
    """The mean absolute error of the newest ``batches`` estimates that have a realised value (``results`` oldest first)."""
    errors = [error for result in results if (error := result.get("estimate_error")) is not None][-batches:]
    return {"mae": float(np.mean(np.abs(errors))) if errors else None, "batches": len(errors)}


def lag_flag(lag: LabelLag | None, max_lag_batches: int) -> dict[str, str] | None:
    """The ``label_lag`` flag when more than ``max_lag_batches`` batches came after the oldest one still waiting."""
    if lag is None or lag.batches_since <= max_lag_batches:
        return None
    return {"kind": "label_lag", "detail": f"{lag.name} still waits for its labels, {lag.batches_since} batches later"
                                           f" ([labels] max_lag_batches {max_lag_batches})"}
