"""Prediction health of a model on one batch: metrics with labels, estimates without.

Classification metrics take the true labels and the predicted probabilities,
shape (n, n_classes), columns in ``classes`` order (a model's ``classes_``).
A metric the batch cannot define (ROC AUC when one class is present, R^2 of a
constant target, anything on zero rows) is None, never an exception. Rows whose
label is missing (None/NaN) are left out; a label absent from ``classes`` is
scored as a class the model gave probability 0, so it always counts as wrong.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from app.stats.drift import numeric_psi
from app.stats.profile import profile_numeric, quantile_edges

CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy", "roc_auc", "log_loss", "f1", "brier")
REGRESSION_METRICS = ("mae", "rmse", "r2")
_HIGHER_IS_BETTER = {
    "accuracy": True,
    "balanced_accuracy": True,
    "roc_auc": True,
    "f1": True,
    "r2": True,
    "log_loss": False,
    "brier": False,
    "mae": False,
    "rmse": False,
}
# Probabilities are clipped to [eps, 1 - eps] in the log loss, as scikit-learn does.
_PROBABILITY_EPS = np.finfo(np.float64).eps


def classification_metrics(y_true, proba, classes: Sequence) -> dict[str, float | None]:
    """Accuracy, balanced accuracy, ROC AUC, log loss, F1 and Brier score of ``proba``.

    Binary (two classes): F1 of the positive class ``classes[1]``; ROC AUC of
    ``proba[:, 1]``; Brier = mean((is_positive - proba[:, 1])^2), in [0, 1].
    Multiclass: macro F1 over the labels that occur in the truth or the
    predictions; one-vs-rest ROC AUC averaged over the classes that have both
    positives and negatives in the batch; Brier = mean over rows of the summed
    squared error between the one-hot truth and ``proba``, in [0, 2]. These are
    scikit-learn's conventions (``brier_score_loss`` with ``scale_by_half="auto"``).
    """
    labels, proba = _labelled_rows(y_true, np.asarray(proba, dtype=np.float64))
    if len(labels) == 0:
        return {name: None for name in CLASSIFICATION_METRICS}
    class_index = pd.Index(list(classes))
    true_index = class_index.get_indexer(pd.Index(labels))  # -1 for unseen labels
    predicted_index = proba.argmax(axis=1)
    return {
        "accuracy": float(np.mean(predicted_index == true_index)),
        "balanced_accuracy": _balanced_accuracy(true_index, predicted_index, labels),
        "roc_auc": _roc_auc(true_index, proba),
        "log_loss": _log_loss(true_index, proba),
        "f1": _f1(true_index, predicted_index, labels, n_classes=len(class_index)),
        "brier": _brier(true_index, proba),
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
    classes = _sorted_labels(class_priors)
    priors = np.array([class_priors[label] for label in classes], dtype=np.float64)
    priors = priors / priors.sum()
    rows = len(y_true)
    return classification_metrics(y_true, np.tile(priors, (rows, 1)), classes)


def regression_baseline(y_true, constant: float) -> dict[str, float | None]:
    """Metrics of the naive model that predicts ``constant`` (e.g. the training mean)."""
    return regression_metrics(y_true, np.full(len(y_true), constant, dtype=np.float64))


def estimated_accuracy(proba) -> float | None:
    """Accuracy *estimate* without labels: the mean of each row's highest probability.

    Only as good as the model's calibration, and blind to drift the model is
    confidently wrong about; None for zero rows.
    """
    proba = np.asarray(proba, dtype=np.float64)
    return float(proba.max(axis=1).mean()) if len(proba) else None


def score_psi(reference_scores, current_scores, bins: int = 10) -> float:
    """Prediction drift: PSI of 1-D scores over ``bins`` quantile bins of the reference scores.

    Scores are e.g. the positive-class probability or a regression prediction.
    Uses the same quantile cutting as the numeric feature PSI.
    """
    reference = np.asarray(reference_scores, dtype=np.float64)
    current = np.asarray(current_scores, dtype=np.float64)
    if reference.ndim != 1 or current.ndim != 1:
        raise ValueError("score_psi takes 1-D score arrays")
    edges = quantile_edges(reference, bins=max(100, bins))
    return numeric_psi(profile_numeric(reference, edges), profile_numeric(current, edges), groups=bins)


def primary_metric(task: str, n_classes: int = 0) -> tuple[str, bool]:
    """The metric that gates promotion and whether higher is better.

    ``task`` is "classification" or "regression".
    """
    if task == "regression":
        return "rmse", False
    if task == "classification":
        return ("roc_auc", True) if n_classes == 2 else ("accuracy", True)
    raise ValueError(f"unknown task {task!r}: expected 'classification' or 'regression'")


def metric_higher_is_better(name: str) -> bool:
    try:
        return _HIGHER_IS_BETTER[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}") from None


def _labelled_rows(y_true, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(y_true, dtype=object)
    if proba.ndim != 2 or len(proba) != len(labels):
        raise ValueError("proba must have shape (len(y_true), n_classes)")
    labelled = ~pd.isna(labels)
    return labels[labelled], proba[labelled]


def _label_keys(true_index: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """One key per distinct true label: its class index, or its text when it is unseen.

    (The index alone would lump different unseen labels together as -1.)
    """
    return np.where(true_index >= 0, true_index.astype(object), pd.Index(labels).astype(str))


def _balanced_accuracy(true_index: np.ndarray, predicted_index: np.ndarray, labels: np.ndarray) -> float:
    """Mean recall over the distinct true labels (an unseen label has recall 0)."""
    hits = pd.Series(true_index == predicted_index)
    return float(hits.groupby(_label_keys(true_index, labels), sort=False).mean().mean())


def _roc_auc(true_index: np.ndarray, proba: np.ndarray) -> float | None:
    n_classes = proba.shape[1]
    if n_classes == 2:
        return _binary_auc(true_index == 1, proba[:, 1])
    per_class = [_binary_auc(true_index == label, proba[:, label]) for label in range(n_classes)]
    defined = [auc for auc in per_class if auc is not None]
    return float(np.mean(defined)) if defined else None


def _binary_auc(is_positive: np.ndarray, scores: np.ndarray) -> float | None:
    """Mann-Whitney form of the ROC AUC (ties count one half); None without both classes."""
    positives = int(is_positive.sum())
    negatives = len(is_positive) - positives
    if positives == 0 or negatives == 0:
        return None
    ranks = rankdata(scores)
    rank_sum = ranks[is_positive].sum()
    return float((rank_sum - positives * (positives + 1) / 2) / (positives * negatives))


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


def _f1(true_index: np.ndarray, predicted_index: np.ndarray, labels: np.ndarray, n_classes: int) -> float:
    if n_classes == 2:
        return _f1_of(true_index == 1, predicted_index == 1)
    true_keys = _label_keys(true_index, labels)
    predicted_keys = predicted_index.astype(object)
    scored = set(true_keys) | set(predicted_keys)
    return float(np.mean([_f1_of(true_keys == key, predicted_keys == key) for key in scored]))


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
