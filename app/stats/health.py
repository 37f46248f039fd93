"""Prediction health of a model on one batch: metrics, and the naive baseline they are compared with.

Classification metrics take the true labels and the predicted probabilities,
shape (n, n_classes), columns in ``classes`` order (a model's ``classes_``).
A metric the batch cannot define (ROC AUC when one class is present, R^2 of a
constant target, anything on zero rows) is None, never an exception. Rows whose
label is missing (None/NaN) are left out; a label absent from ``classes`` is
scored as a class the model gave probability 0, so it always counts as wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from app.stats.drift import FeatureDrift, feature_drift
from app.stats.profile import NumericProfile, Profile, profile_numeric, quantile_edges

CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy", "roc_auc", "log_loss", "f1", "brier")
REGRESSION_METRICS = ("mae", "rmse", "r2")
SCORE_COLUMN = "prediction score"
# Probabilities are clipped to [eps, 1 - eps] in the log loss, as scikit-learn does.
_PROBABILITY_EPS = np.finfo(np.float64).eps


def classification_metrics(y_true, proba, classes: Sequence) -> dict[str, float | None]:
    """Accuracy, balanced accuracy, ROC AUC, log loss, F1 and Brier score of ``proba``.

    Binary (two classes): F1 of the positive class ``classes[1]``; ROC AUC of
    ``proba[:, 1]``; Brier = mean((is_positive - proba[:, 1])^2), in [0, 1].
    Multiclass: macro F1 over the labels that occur in the truth or the
    predictions; one-vs-rest ROC AUC averaged over the classes that have both
    positives and negatives in the batch, a label outside ``classes`` among
    them at 0.5 (the model scores every row 0 for it: no ranking at all, so a
    new class lowers the average as it lowers accuracy); Brier = mean over rows of the summed
    squared error between the one-hot truth and ``proba``, in [0, 2]. These are
    scikit-learn's conventions (``brier_score_loss`` with ``scale_by_half="auto"``).
    """
    truth = _encode_truth(y_true, np.asarray(proba, dtype=np.float64), classes)
    if truth is None:
        return {name: None for name in CLASSIFICATION_METRICS}
    predicted_index = truth.proba.argmax(axis=1)
    return {
        "accuracy": float(np.mean(predicted_index == truth.index)),
        "balanced_accuracy": _balanced_accuracy(truth, predicted_index),
        "roc_auc": _roc_auc(truth),
        "log_loss": _log_loss(truth.index, truth.proba),
        "f1": _f1(truth, predicted_index),
        "brier": _brier(truth.index, truth.proba),
    }


def regression_metrics(y_true, y_pred) -> dict[str, float | None]:
    """Mean absolute error, root mean squared error and R^2 (None on a constant target)."""
    truth = np.asarray(y_true, dtype=np.float64)
    prediction = np.asarray(y_pred, dtype=np.float64)
    labelled = ~np.isnan(truth)
    truth, prediction = truth[labelled], prediction[labelled]
    if truth.size == 0:
        return {name: None for name in REGRESSION_METRICS}
    errors = truth - prediction
    spread = np.sum((truth - truth.mean()) ** 2)
    return {
        "mae": float(np.mean(np.abs(errors))),
        "rmse": float(np.sqrt(np.mean(errors**2))),
        "r2": float(1 - np.sum(errors**2) / spread) if spread > 0 else None,
    }


def classification_baseline(y_true, class_priors: dict) -> dict[str, float | None]:
    """Metrics of the naive model that predicts ``class_priors`` for every row.

    Classes are taken in sorted order (as a scikit-learn model's ``classes_``),
    so for two classes the positive one is the larger label.
    """
    proba, classes = baseline_output(len(y_true), class_priors)
    return classification_metrics(y_true, proba, classes)


def baseline_output(rows: int, class_priors: dict) -> tuple[np.ndarray, list]:
    """The naive model's probabilities for ``rows`` rows (``class_priors`` on each) and its sorted classes."""
    classes = _sorted_labels(class_priors)
    priors = np.array([class_priors[label] for label in classes], dtype=np.float64)
    return np.tile(priors / priors.sum(), (rows, 1)), classes


def regression_baseline(y_true, constant: float) -> dict[str, float | None]:
    """Metrics of the naive model that predicts ``constant`` (e.g. the training mean)."""
    return regression_metrics(y_true, np.full(len(y_true), constant, dtype=np.float64))


def score_drift(
    sketch, scores, reference_rows: int | None, psi_threshold: float, false_alarm_rate: float
) -> FeatureDrift:
    """Prediction drift: a batch's scores against the serving model's holdout scores, by the feature rule.

    ``sketch``: evenly spaced quantiles of the holdout scores (the first and
    last are its extremes), standing for ``reference_rows`` scores (the
    sketch's own length when unknown). Scores are e.g. the positive-class
    probability or a regression prediction. The score is judged as one more
    numeric column (:func:`app.stats.drift.feature_drift`): drifted when its
    test of change is significant at ``false_alarm_rate`` and its PSI reaches
    the floor of ``psi_threshold`` at these sample sizes, so small batches
    do not raise it by sampling alone. No watch state: the status is drifted or stable.
    """
    sketch = np.asarray(sketch, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if sketch.ndim != 1 or scores.ndim != 1 or len(sketch) < 2:
        raise ValueError("score_drift takes a 1-D sketch of two quantiles or more and 1-D scores")
    reference = _sketch_profile(sketch, reference_rows or len(sketch))
    current = profile_numeric(scores, reference.edges)
    drift = feature_drift(Profile({SCORE_COLUMN: reference}, reference.rows), Profile({SCORE_COLUMN: current}, len(scores)),
                          psi_threshold, psi_threshold, false_alarm_rate)
    return drift[SCORE_COLUMN]


def _sketch_profile(sketch: np.ndarray, rows: int) -> NumericProfile:
    """Profile of ``rows`` scores whose quantiles at 0, 1/s, ..., 1 are the ``s + 1`` points of ``sketch``.

    The fine edges are the sketch's own quantile edges, so each edge is a
    sketch point and the share of scores below it is that point's level
    (the first of equal points' for tied scores); counts are the differences
    of those shares times ``rows``, rounded, so they add up to ``rows``
    (rounding each bin's own share would leave a 40-row holdout's hundred
    bins empty). Sum and squares are the sketch's, scaled.
    """
    ordered = np.sort(sketch[np.isfinite(sketch)])
    edges = quantile_edges(ordered)
    below = np.searchsorted(ordered, edges, side="left") / (len(ordered) - 1)
    below[-1] = 1.0  # the last bin holds its edge: every score is at or below it
    counts = np.diff(np.round(np.r_[0.0, below, 1.0] * rows)).astype(np.int64)
    points = profile_numeric(ordered, edges)
    scale = counts.sum() / points.count
    return replace(points, counts=counts, count=int(counts.sum()), total=points.total * scale, total_sq=points.total_sq * scale)


@dataclass(frozen=True)
class _Truth:
    """The labelled rows of a batch, as integer codes.

    ``index``: position of each row's label in ``classes``, -1 for a label
    outside them. ``key``: one code per distinct true label, its class
    position or ``n_classes + k`` for the k-th unseen label (the index alone
    would lump different unseen labels together). ``proba``: those rows'
    probabilities, shape (rows, n_classes).
    """

    index: np.ndarray
    key: np.ndarray
    proba: np.ndarray

    @property
    def n_classes(self) -> int:
        return self.proba.shape[1]


def _encode_truth(y_true, proba: np.ndarray, classes: Sequence) -> _Truth | None:
    """Codes for the labelled rows of ``y_true``; None when no row has a label.

    Labels are hashed once (``pd.factorize``) and only the distinct ones are
    looked up in ``classes``, so the cost stays low on large batches.
    """
    codes, uniques = pd.factorize(np.asarray(y_true, dtype=object), use_na_sentinel=True)
    if proba.ndim != 2 or len(proba) != len(codes):
        raise ValueError("proba must have shape (len(y_true), n_classes)")
    labelled = codes >= 0
    if not labelled.any():
        return None
    codes = codes[labelled]
    class_of_unique = pd.Index(list(classes)).get_indexer(uniques)
    key_of_unique = np.where(class_of_unique >= 0, class_of_unique, proba.shape[1] + np.arange(len(uniques)))
    return _Truth(index=class_of_unique[codes], key=key_of_unique[codes], proba=proba[labelled])


def _balanced_accuracy(truth: _Truth, predicted_index: np.ndarray) -> float:
    """Mean recall over the distinct true labels (an unseen label has recall 0)."""
    hits = np.bincount(truth.key, weights=truth.index == predicted_index)
    rows = np.bincount(truth.key)
    present = rows > 0
    return float(np.mean(hits[present] / rows[present]))


def _roc_auc(truth: _Truth) -> float | None:
    if truth.n_classes == 2:
        return binary_roc_auc(truth.index == 1, truth.proba[:, 1])
    per_class = [binary_roc_auc(truth.index == label, truth.proba[:, label]) for label in range(truth.n_classes)]
    per_class += [binary_roc_auc(truth.key == key, np.zeros(len(truth.key))) for key in unseen_keys(truth)]
    defined = [auc for auc in per_class if auc is not None]
    return float(np.mean(defined)) if defined else None


def unseen_keys(truth: _Truth) -> np.ndarray:
    """The codes of the true labels outside the model's classes."""
    return np.unique(truth.key[truth.index < 0])


def binary_roc_auc(is_positive: np.ndarray, scores: np.ndarray) -> float | None:
    """Mann-Whitney form of the ROC AUC (ties count one half); None without both classes.

    One sort of the scores; then each run of tied scores contributes its
    positives times the negatives ranked below it, plus half its own pairs.
    """
    positives = int(is_positive.sum())
    negatives = len(is_positive) - positives
    if positives == 0 or negatives == 0:
        return None
    order = np.argsort(scores)
    ordered = scores[order]
    starts = np.r_[0, np.flatnonzero(ordered[1:] != ordered[:-1]) + 1]
    positives_per_run = np.add.reduceat(is_positive[order].astype(np.int64), starts)
    negatives_per_run = np.diff(np.r_[starts, len(ordered)]) - positives_per_run
    negatives_below = np.cumsum(negatives_per_run) - negatives_per_run
    pairs = np.sum(positives_per_run * (negatives_below + 0.5 * negatives_per_run))
    return float(pairs / (positives * negatives))


def _probability_of_truth(true_index: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Probability each row gave its true class; 0 for labels outside ``classes``."""
    known = true_index >= 0
    probability = np.zeros(len(true_index))
    probability[known] = proba[np.flatnonzero(known), true_index[known]]
    return probability


def _log_loss(true_index: np.ndarray, proba: np.ndarray) -> float:
    clipped = np.clip(proba, _PROBABILITY_EPS, 1 - _PROBABILITY_EPS)
    truth = np.clip(_probability_of_truth(true_index, clipped), _PROBABILITY_EPS, None)
    return float(-np.mean(np.log(truth)))


def _brier(true_index: np.ndarray, proba: np.ndarray) -> float:
    """Summed squared error against the one-hot truth; an unseen label adds a missed 1."""
    squared = np.sum(proba**2, axis=1)
    truth = _probability_of_truth(true_index, proba)
    per_row = squared - 2 * truth + 1
    scale = 0.5 if proba.shape[1] == 2 else 1.0
    return float(scale * np.mean(per_row))


def _f1(truth: _Truth, predicted_index: np.ndarray) -> float:
    """Binary: F1 of the positive class. Multiclass: macro F1 over the labels that are true or predicted."""
    if truth.n_classes == 2:
        return _f1_of(truth.index == 1, predicted_index == 1)
    size = max(truth.key.max(), truth.n_classes - 1) + 1
    hits = np.bincount(truth.key[truth.index == predicted_index], minlength=size)
    denominators = np.bincount(truth.key, minlength=size) + np.bincount(predicted_index, minlength=size)
    scored = denominators > 0
    return float(np.mean(2 * hits[scored] / denominators[scored]))


def _f1_of(is_true: np.ndarray, is_predicted: np.ndarray) -> float:
    """F1 of one label; 0 when the label is neither true nor predicted anywhere."""
    hits = np.count_nonzero(is_true & is_predicted)
    denominator = np.count_nonzero(is_true) + np.count_nonzero(is_predicted)
    return 2 * hits / denominator if denominator else 0.0


def _sorted_labels(class_priors: dict) -> list:
    try:
        return sorted(class_priors)
    except TypeError:
        return sorted(class_priors, key=str)
