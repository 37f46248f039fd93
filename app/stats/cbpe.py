"""How well is a classifier doing on rows whose labels have not come yet? An estimate from its own probabilities.

Confidence-based performance estimation (CBPE): if a model's probabilities
are calibrated, a row scored 0.8 for a class belongs to it 8 times in 10, so
the confusion matrix a batch *will* show once labelled can be expected from
the probabilities alone. Raw probabilities are rarely calibrated, so each
snapshot keeps a :class:`Calibration`: per class, an isotonic map from the
model's probability to the frequency observed on its training holdout.

- Expected confusion counts: a row predicted as class k adds its calibrated
  probability of k to the hits and the rest to the misses; accuracy, balanced
  accuracy and F1 follow (multiclass: one class against the rest, macro mean).
- Expected ROC AUC: the rows sorted by the model's score; each adds its
  calibrated probability to the expected positives and its complement to the
  expected negatives; the area under the expected curve (multiclass: the mean
  over classes, one against the rest).

The estimate is blind to a change in the relation between features and label
(concept drift): it assumes the calibration still holds. It is reported as an
estimate, and its error is recorded once the labels come. For regression there
is no such estimate: a prediction carries no distribution of its error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.isotonic import IsotonicRegression

ESTIMATED_METRICS = ("accuracy", "balanced_accuracy", "roc_auc", "f1")
MIN_CALIBRATION_ROWS = 50  # fewer holdout rows leave the probabilities as they are


@dataclass(frozen=True)
class Calibration:
    """Per class, the isotonic map's knots: probability ``x`` becomes frequency ``y`` (linear in between).

    Binary models keep one map, for the positive class ``classes[1]``.
    Multiclass probabilities are calibrated class by class, then each row is
    scaled to sum to one.
    """

    classes: list[str]
    x: list[list[float]]
    y: list[list[float]]

    def apply(self, proba: np.ndarray) -> np.ndarray:
        proba = np.asarray(proba, dtype=np.float64)
        if len(self.classes) == 2:
            positive = np.interp(proba[:, 1], self.x[0], self.y[0])
            return np.column_stack([1 - positive, positive])
        calibrated = np.column_stack([np.interp(proba[:, k], self.x[k], self.y[k]) for k in range(proba.shape[1])])
        totals = calibrated.sum(axis=1, keepdims=True)
        return np.divide(calibrated, totals, out=np.full_like(calibrated, 1 / proba.shape[1]), where=totals > 0)

    def to_dict(self) -> dict[str, Any]:
        return {"classes": self.classes, "x": self.x, "y": self.y}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Calibration | None:
        return cls(list(data["classes"]), data["x"], data["y"]) if data else None


def fit_calibration(y_true, proba, classes: Sequence) -> Calibration | None:
    """Isotonic maps fitted on labelled rows (a training holdout); None when there are too few rows."""
    proba = np.asarray(proba, dtype=np.float64)
    truth = np.asarray(y_true, dtype=object).astype(str)
    classes = [str(label) for label in classes]
    if len(truth) < MIN_CALIBRATION_ROWS or len(classes) < 2:
        return None
    columns = [1] if len(classes) == 2 else range(len(classes))
    xs, ys = [], []
    for k in columns:
        isotonic = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        isotonic.fit(proba[:, k], (truth == classes[k]).astype(np.float64))
        xs.append(isotonic.X_thresholds_.tolist())
        ys.append(isotonic.y_thresholds_.tolist())
    return Calibration(classes, xs, ys)


def estimate_metrics(proba, calibration: Calibration | None = None) -> dict[str, float | None]:
    """The metrics a classifier's ``proba`` (columns in its classes' order) can be expected to reach.

    With ``calibration`` None the probabilities are taken as calibrated already.
    A metric the batch cannot define (ROC AUC when every row is surely one
    class) is None, as :func:`app.stats.health.classification_metrics` has it.
    """
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or len(proba) == 0 or proba.shape[1] < 2:
        return {name: None for name in ESTIMATED_METRICS}
    calibrated = calibration.apply(proba) if calibration is not None else proba
    predicted = proba.argmax(axis=1)  # what the model predicts: its own probabilities, not the calibrated ones
    n_classes = proba.shape[1]
    hit = calibrated[np.arange(len(proba)), predicted]
    if n_classes == 2:
        auc = expected_roc_auc(proba[:, 1], calibrated[:, 1])
        f1 = _expected_f1(calibrated[:, 1], predicted == 1)
    else:
        per_class = [expected_roc_auc(proba[:, k], calibrated[:, k]) for k in range(n_classes)]
        defined = [value for value in per_class if value is not None]
        auc = float(np.mean(defined)) if defined else None
        f1 = float(np.mean([_expected_f1(calibrated[:, k], predicted == k) for k in range(n_classes)]))
    positives = calibrated.sum(axis=0)
    hits = np.bincount(predicted, weights=hit, minlength=n_classes)
    present = positives > 1e-9
    return {
        "accuracy": float(hit.mean()),
        "balanced_accuracy": float(np.mean(hits[present] / positives[present])),
        "roc_auc": auc,
        "f1": f1,
    }


def expected_roc_auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """The ROC AUC expected when row i is positive with probability ``positive[i]``, ranked by ``scores``.

    Rows of tied scores form one step of the curve (trapezoid), as the realised
    ROC AUC counts ties one half.
    """
    order = np.argsort(-scores, kind="stable")
    ordered, weights = scores[order], positive[order]
    ends = np.r_[np.flatnonzero(ordered[1:] != ordered[:-1]), len(ordered) - 1]
    true_positives = np.cumsum(weights)[ends]
    false_positives = np.cumsum(1 - weights)[ends]
    if true_positives[-1] <= 1e-9 or false_positives[-1] <= 1e-9:
        return None
    tpr = np.r_[0.0, true_positives / true_positives[-1]]
    fpr = np.r_[0.0, false_positives / false_positives[-1]]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def _expected_f1(positive: np.ndarray, is_predicted: np.ndarray) -> float:
    hits = float(positive[is_predicted].sum())
    false_alarms = float((1 - positive[is_predicted]).sum())
    misses = float(positive[~is_predicted].sum())
    denominator = 2 * hits + false_alarms + misses
    return 2 * hits / denominator if denominator > 0 else 0.0
