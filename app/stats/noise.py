"""How much of a metric is sampling noise: standard errors by influence values.

Every metric driftdeck reports on a batch is, to first order, a sum of one
term per row. :func:`influence` returns those terms (centred and scaled), so
that the metric's sampling variance is their sum of squares. Two models
scored on the same rows then need no independence assumption: the variance of
the difference of their scores is the sum of squares of the difference of
their influence values, which is how correlated scores (the same hard rows
hurt both models) are accounted for.

For ROC AUC these are DeLong's structural components (DeLong, DeLong and
Clarke-Pearson, 1988): each positive's share of negatives ranked below it and
each negative's share of positives ranked above it. Their variance is right
for imbalanced classes and their difference gives DeLong's paired test. For
means (accuracy, log loss, Brier, MAE) they are the centred values; for
ratios (F1, balanced accuracy, RMSE, R²) the delta method's linearisation.
"""

from __future__ import annotations

import math

import numpy as np

from app.stats.health import _PROBABILITY_EPS, _encode_truth, _probability_of_truth, _Truth, unseen_keys


def influence(metric: str, y_true, output, classes=None) -> np.ndarray | None:
    """Per labelled row, its influence on ``metric``; None when the metric is undefined here.

    ``output`` is the predicted probabilities, shape (n, n_classes) in
    ``classes`` order (classification), or the predicted values (regression).
    Rows whose label is missing are left out, in the same way for every model,
    so two models' influences on one batch line up row for row.
    """
    if metric in _REGRESSION:
        truth = np.asarray(y_true, dtype=np.float64)
        labelled = ~np.isnan(truth)
        if labelled.sum() < 2:
            return None
        return _REGRESSION[metric](truth[labelled], np.asarray(output, dtype=np.float64)[labelled])
    truth = _encode_truth(y_true, np.asarray(output, dtype=np.float64), classes)
    if truth is None or len(truth.index) < 2:
        return None
    return _CLASSIFICATION[metric](truth)


def standard_error(values: np.ndarray | None) -> float | None:
    """The standard error of a metric from its influence values."""
    return None if values is None else math.sqrt(float(np.sum(values * values)))


def paired_standard_error(first: np.ndarray | None, second: np.ndarray | None) -> float | None:
    """The standard error of the difference of two metrics measured on the same rows."""
    if first is None or second is None or first.shape != second.shape:
        return None
    return standard_error(first - second)


def delong_components(is_positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """DeLong's V10 (one per positive) and V01 (one per negative); ties count one half."""
    positives, negatives = scores[is_positive], scores[~is_positive]
    if len(positives) == 0 or len(negatives) == 0:
        return None
    negatives_sorted, positives_sorted = np.sort(negatives), np.sort(positives)
    below = np.searchsorted(negatives_sorted, positives, "left") + np.searchsorted(negatives_sorted, positives, "right")
    v10 = below / (2.0 * len(negatives))
    not_above = np.searchsorted(positives_sorted, negatives, "left") + np.searchsorted(positives_sorted, negatives, "right")
    v01 = 1.0 - not_above / (2.0 * len(positives))
    return v10, v01


def _centred(values: np.ndarray) -> np.ndarray:
    """Influence of a mean: the sum of squares is the unbiased variance over n."""
    n = len(values)
    return (values - values.mean()) / math.sqrt(n * (n - 1))


def _binary_auc_influence(is_positive: np.ndarray, scores: np.ndarray) -> np.ndarray | None:
    components = delong_components(is_positive, scores)
    if components is None:
        return None
    v10, v01 = components
    auc = v10.mean()
    values = np.zeros(len(scores))
    m, k = len(v10), len(v01)
    values[is_positive] = (v10 - auc) / math.sqrt(m * max(m - 1, 1))
    values[~is_positive] = (v01 - auc) / math.sqrt(k * max(k - 1, 1))
    return values


def _roc_auc(truth: _Truth) -> np.ndarray | None:
    if truth.n_classes == 2:
        return _binary_auc_influence(truth.index == 1, truth.proba[:, 1])
    per_class = [_binary_auc_influence(truth.index == label, truth.proba[:, label]) for label in range(truth.n_classes)]
    per_class += [_binary_auc_influence(truth.key == key, np.zeros(len(truth.key))) for key in unseen_keys(truth)]
    defined = [values for values in per_class if values is not None]
    return np.mean(defined, axis=0) if defined else None


def _accuracy(truth: _Truth) -> np.ndarray:
    return _centred((truth.proba.argmax(axis=1) == truth.index).astype(np.float64))


def _balanced_accuracy(truth: _Truth) -> np.ndarray:
    """Mean of per-class recalls: each row moves its own class's recall."""
    correct = (truth.proba.argmax(axis=1) == truth.index).astype(np.float64)
    values = np.zeros(len(correct))
    keys = np.unique(truth.key)
    for key in keys:
        rows = truth.key == key
        values[rows] = _centred(correct[rows]) if rows.sum() > 1 else 0.0
    return values / len(keys)


def _f1(truth: _Truth) -> np.ndarray:
    """Binary: F1 of the positive class, a ratio 2TP / (2TP + FP + FN). Multiclass: the macro mean."""
    predicted = truth.proba.argmax(axis=1)
    if truth.n_classes == 2:
        return _f1_of(truth.index == 1, predicted == 1)
    labels = np.union1d(np.unique(truth.key[truth.index >= 0]), np.unique(predicted))
    return np.mean([_f1_of(truth.index == label, predicted == label) for label in labels], axis=0)


def _f1_of(is_true: np.ndarray, is_predicted: np.ndarray) -> np.ndarray:
    numerator = 2.0 * (is_true & is_predicted)
    denominator = is_true.astype(np.float64) + is_predicted
    total = denominator.sum()
    if total == 0:
        return np.zeros(len(is_true))
    ratio = numerator.sum() / total
    return _ratio_influence(numerator, denominator, ratio)


def _ratio_influence(numerator: np.ndarray, denominator: np.ndarray, ratio: float) -> np.ndarray:
    """Delta method for sum(a) / sum(b): the centred residuals a - ratio * b over sum(b)."""
    n = len(numerator)
    residual = numerator - ratio * denominator
    return (residual - residual.mean()) * math.sqrt(n / (n - 1)) / denominator.sum()


def _log_loss(truth: _Truth) -> np.ndarray:
    clipped = np.clip(truth.proba, _PROBABILITY_EPS, 1 - _PROBABILITY_EPS)
    return _centred(-np.log(np.clip(_probability_of_truth(truth.index, clipped), _PROBABILITY_EPS, None)))


def _brier(truth: _Truth) -> np.ndarray:
    per_row = np.sum(truth.proba ** 2, axis=1) - 2 * _probability_of_truth(truth.index, truth.proba) + 1
    return _centred(per_row * (0.5 if truth.n_classes == 2 else 1.0))


def _mae(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    return _centred(np.abs(truth - predicted))


def _rmse(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    squared = (truth - predicted) ** 2
    rmse = math.sqrt(squared.mean())
    return _centred(squared) / (2 * rmse) if rmse > 0 else np.zeros(len(squared))


def _r2(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray | None:
    """R² = 1 - SSE / SST, linearised in both sums."""
    squared, spread = (truth - predicted) ** 2, (truth - truth.mean()) ** 2
    if spread.sum() == 0:
        return None
    return -_ratio_influence(squared, spread, squared.sum() / spread.sum())


_CLASSIFICATION = {"roc_auc": _roc_auc, "accuracy": _accuracy, "balanced_accuracy": _balanced_accuracy,
                   "f1": _f1, "log_loss": _log_loss, "brier": _brier}
_REGRESSION = {"mae": _mae, "rmse": _rmse, "r2": _r2}
