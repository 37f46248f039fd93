"""Which policy does this data need? The answer from served-vs-shadow metrics.

Every model is scored beside a shadow of the other policy on the same labeled
batches, so for each batch there is a "static" number and a "dynamic" number.
The verdict is the mean gain of dynamic over static across the last N
batches, compared with the noise of that mean (two standard errors of the
per-batch differences).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from app.stats.health import metric_higher_is_better

METRIC_LABELS = {
    "roc_auc": "ROC AUC",
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy",
    "f1": "F1",
    "log_loss": "log loss",
    "brier": "Brier score",
    "rmse": "RMSE",
    "mae": "MAE",
    "r2": "R²",
}
ERROR_METRICS = frozenset({"rmse", "mae", "log_loss"})


@dataclass(frozen=True)
class Verdict:
    """``needs`` is "static", "dynamic" or "unknown"; ``gain`` is dynamic minus static.

    For error metrics (RMSE, MAE, log loss) ``gain`` and ``noise`` are
    fractions of the static error (0.12 = dynamic cuts the error by 12%);
    otherwise they are in metric units (0.05 = five points of ROC AUC).
    """

    needs: str
    text: str
    metric: str
    gain: float | None
    noise: float | None
    batches: int
    retrains: int
    train_seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def decide(
    static_scores: list[float | None],
    dynamic_scores: list[float | None],
    metric: str,
    *,
    standard_errors: list[float | None] | None = None,
    retrains: int = 0,
    train_seconds: float = 0.0,
    min_gain: float = 0.01,
) -> Verdict:
    """Compare the two policies on the same batches (lists in the same order).

    ``standard_errors`` holds, per batch, the sampling standard error of the
    difference between the two scores (see :func:`difference_standard_error`),
    in metric units; the noise of the mean gain is two of its standard errors.
    Without them the spread of the per-batch gains stands in. ``min_gain`` is
    the smallest gain worth the cost of retraining, in the units of ``gain``.
    """
    label = METRIC_LABELS.get(metric, metric)
    cost = f"cost: {retrains} retrain{'s' if retrains != 1 else ''}, {train_seconds:.1f} s of training"
    errors = standard_errors or [None] * len(static_scores)
    rows = [(s, d, e) for s, d, e in zip(static_scores, dynamic_scores, errors) if s is not None and d is not None]
    if len(rows) < 2:
        text = f"not enough labeled batches yet to compare static and dynamic training ({len(rows)} of 2)"
        return Verdict("unknown", text, metric, None, None, len(rows), retrains, train_seconds)
    sign = 1.0 if metric_higher_is_better(metric) else -1.0
    relative = metric in ERROR_METRICS
    diffs = [sign * (d - s) / (s if relative and s else 1.0) for s, d, _ in rows]
    n = len(diffs)
    gain = sum(diffs) / n
    if all(e is not None for _, _, e in rows):
        scaled = [e / (s if relative and s else 1.0) for s, _, e in rows]
        noise = 2 * math.sqrt(sum(e * e for e in scaled)) / n
    else:
        spread = math.sqrt(sum((x - gain) ** 2 for x in diffs) / (n - 1))
        noise = 2 * spread / math.sqrt(n)
    amount = _amount(gain, metric)
    if gain > max(noise, min_gain):
        if relative:
            text = f"dynamic training cuts {label} by {amount} over the last {n} batches ({cost})"
        else:
            text = f"dynamic training gains {amount} of {label} over the last {n} batches ({cost})"
        return Verdict("dynamic", text, metric, gain, noise, n, retrains, train_seconds)
    text = (
        f"static is enough for this data: dynamic training changes {label} by {_amount(gain, metric, signed=True)}"
        f" ± {_amount(noise, metric)} over the last {n} batches, within the noise ({cost})"
    )
    return Verdict("static", text, metric, gain, noise, n, retrains, train_seconds)


def metric_standard_error(metric: str, value: float | None, labels: np.ndarray) -> float | None:
    """Approximate sampling standard error of ``metric`` = ``value`` on a batch with these true ``labels``.

    ROC AUC (binary): Hanley & McNeil (1982). Accuracy, balanced accuracy, F1:
    binomial, sqrt(v (1 - v) / n). RMSE, MAE, log loss, Brier: v / sqrt(2 n),
    as for a standard deviation. R²: 2 (1 - R²) / sqrt(n) (bounded below by
    1/sqrt(n)). Multiclass ROC AUC: binomial on the smallest class.
    """
    n = len(labels)
    if value is None or n < 2 or (isinstance(value, float) and math.isnan(value)):
        return None
    if metric == "roc_auc":
        codes = pd.factorize(np.asarray(labels, dtype=object))[0]
        counts = np.sort(np.bincount(codes[codes >= 0]))
        if len(counts) != 2:
            return math.sqrt(max(value * (1 - value), 1e-6) / max(1, counts.min()))
        n1, n0 = int(counts[1]), int(counts[0])  # Hanley-McNeil is symmetric in the two classes
        q1, q2 = value / (2 - value), 2 * value * value / (1 + value)
        variance = (value * (1 - value) + (n1 - 1) * (q1 - value ** 2) + (n0 - 1) * (q2 - value ** 2)) / (n1 * n0)
        return math.sqrt(max(variance, 1e-12))
    if metric in ("accuracy", "balanced_accuracy", "f1"):
        return math.sqrt(max(value * (1 - value), 1e-6) / n)
    if metric == "r2":
        return max(2 * abs(1 - value), 1.0) / math.sqrt(n)
    return abs(value) / math.sqrt(2 * n)


def _amount(value: float, metric: str, signed: bool = False) -> str:
    number = f"{value * 100:{'+.1f' if signed else '.1f'}}"
    return f"{number}%" if metric in ERROR_METRICS else f"{number} points"
