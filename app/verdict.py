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
    static_scores: list[float],
    dynamic_scores: list[float],
    metric: str,
    *,
    retrains: int = 0,
    train_seconds: float = 0.0,
    min_gain: float = 0.01,
) -> Verdict:
    """Compare the two policies on the same batches (lists in the same order).

    ``min_gain`` is the smallest gain worth the cost of retraining, in the same
    units as ``gain``.
    """
    label = METRIC_LABELS.get(metric, metric)
    cost = f"cost: {retrains} retrain{'s' if retrains != 1 else ''}, {train_seconds:.1f} s of training"
    pairs = [(s, d) for s, d in zip(static_scores, dynamic_scores) if s is not None and d is not None]
    if len(pairs) < 2:
        text = f"not enough labeled batches yet to compare static and dynamic training ({len(pairs)} of 2)"
        return Verdict("unknown", text, metric, None, None, len(pairs), retrains, train_seconds)
    sign = 1.0 if metric_higher_is_better(metric) else -1.0
    if metric in ERROR_METRICS:
        diffs = [sign * (d - s) / s if s else 0.0 for s, d in pairs]
    else:
        diffs = [sign * (d - s) for s, d in pairs]
    n = len(diffs)
    gain = sum(diffs) / n
    spread = math.sqrt(sum((x - gain) ** 2 for x in diffs) / (n - 1))
    noise = 2 * spread / math.sqrt(n)
    amount = _amount(gain, metric)
    if gain > max(noise, min_gain):
        if metric in ERROR_METRICS:
            text = f"dynamic training cuts {label} by {amount} over the last {n} batches ({cost})"
        else:
            text = f"dynamic training gains {amount} of {label} over the last {n} batches ({cost})"
        return Verdict("dynamic", text, metric, gain, noise, n, retrains, train_seconds)
    text = (
        f"static is enough for this data: dynamic training changes {label} by {_amount(gain, metric, signed=True)}"
        f" ± {_amount(noise, metric)} over the last {n} batches, within the noise ({cost})"
    )
    return Verdict("static", text, metric, gain, noise, n, retrains, train_seconds)


def _amount(value: float, metric: str, signed: bool = False) -> str:
    number = f"{value * 100:{'+.1f' if signed else '.1f'}}"
    return f"{number}%" if metric in ERROR_METRICS else f"{number} points"
