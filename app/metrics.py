"""The metrics driftdeck judges models by: one table, one place for each metric's direction.

Every comparison of two values of a metric (the gate, the performance-drop
flag, the automatic rollback, ``validate``, the verdict, the no-skill check)
goes through a :class:`Metric` from :data:`METRICS`, so "worse by more than
the tolerance" means the same everywhere:

- ``gain(reference, value)`` is how much better ``value`` is, in metric units
  (positive: better, whichever way the metric points);
- ``scale(reference)`` is what tolerances and relative gains are fractions of:
  1 for bounded metrics (a tolerance of 0.01 is one point of ROC AUC), the
  reference value for error metrics (0.01 is 1% of the RMSE). A zero
  reference of an error metric (a perfect model) scales by 1, as a bounded
  metric would: a fraction of zero would allow nothing and divide by nothing.
- ``influence(...)`` gives per-row values whose sum of squares is the
  metric's sampling variance (see :mod:`app.stats.noise`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.stats.noise import influence


@dataclass(frozen=True)
class Metric:
    """One metric: ``relative`` metrics are errors whose tolerances are fractions of a reference value."""

    name: str
    label: str
    higher_is_better: bool
    relative: bool
    task: str

    def gain(self, reference: float, value: float) -> float:
        """How much better ``value`` is than ``reference`` (negative: worse), in metric units."""
        return value - reference if self.higher_is_better else reference - value

    def scale(self, reference: float | None) -> float:
        return abs(reference) if self.relative and reference else 1.0

    def allowed(self, tolerance: float, reference: float | None) -> float:
        """A tolerance in metric units, against ``reference``."""
        return tolerance * self.scale(reference)

    def beats(self, value: float, reference: float) -> bool:
        return self.gain(reference, value) > 0

    def influence(self, y_true, output, classes=None) -> np.ndarray | None:
        return influence(self.name, y_true, output, classes)

    def amount(self, value: float, signed: bool = False, digits: int = 1) -> str:
        """``value`` (in units of :meth:`scale`) in words: "12.4 points" or "12.4%"."""
        number = f"{value * 100:{'+' if signed else ''}.{digits}f}"
        return f"{number}%" if self.relative else f"{number} points"


METRICS: dict[str, Metric] = {metric.name: metric for metric in (
    Metric("roc_auc", "ROC AUC", True, False, "classification"),
    Metric("accuracy", "accuracy", True, False, "classification"),
    Metric("balanced_accuracy", "balanced accuracy", True, False, "classification"),
    Metric("f1", "F1", True, False, "classification"),
    Metric("log_loss", "log loss", False, True, "classification"),
    Metric("brier", "Brier score", False, False, "classification"),
    Metric("rmse", "RMSE", False, True, "regression"),
    Metric("mae", "MAE", False, True, "regression"),
    Metric("r2", "R²", True, False, "regression"),
)}


def get_metric(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}") from None


def metrics_for(task: str) -> tuple[str, ...]:
    """The metric names a model of ``task`` may choose, the default first."""
    if task not in ("classification", "regression"):
        raise ValueError(f"unknown task {task!r}: expected 'classification' or 'regression'")
    return tuple(name for name, entry in METRICS.items() if entry.task == task)


def primary_metric(task: str) -> Metric:
    """The metric that gates promotion: ROC AUC (classification: one class against the rest, averaged), RMSE.

    Not accuracy for multiclass: on imbalanced classes (85/12/3%) a model that
    ranks the rare classes well still predicts the majority almost everywhere,
    so its accuracy equals the naive baseline's and every candidate was
    refused for no skill.
    """
    if task == "regression":
        return METRICS["rmse"]
    metrics_for(task)
    return METRICS["roc_auc"]
