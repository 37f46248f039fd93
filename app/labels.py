"""Do a batch's labels carry any signal? A guard against corrupted labels.

A batch whose labels were shuffled or scrambled by a broken labelling job looks
valid to every schema check. But no model can learn it: fitted on the older
part of the batch alone, a flexible model does no better than chance on the
newest part. A real change of concept is different: the new relationship is
learnable from the batch itself. This check tells the two apart, so dynamic
training adapts to the one and refuses the other.

It judges only when it has the power to: a batch too small for the check to
see a modest signal (``MEANINGFUL_AUC``, ``MEANINGFUL_CORRELATION``) reliably
is "undetermined", never refused, so real labels are not turned away for
being few.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

from app.stats.health import binary_roc_auc
from app.stats.multivariate import encode_features
from app.threads import limit_threads

MIN_ROWS = 100
MAX_ROWS = 20_000
TEST_FRACTION = 0.3
SIGNIFICANCE_SIGMAS = 2.0  # a score beyond chance by this many standard errors is signal
POWER_SIGMAS = 0.84  # plus this many: the check sees a meaningful signal 80% of the time
MEANINGFUL_AUC = 0.65
MEANINGFUL_CORRELATION = 0.3
# 25 trees of at most 15 leaves at a learning rate of 0.2: any real label rule shows within them,
# at under half the cost of scikit-learn's defaults (this runs on every labeled batch).
SIGNAL_MODEL = {"max_iter": 25, "learning_rate": 0.2, "max_leaf_nodes": 15}


@dataclass(frozen=True)
class LabelSignal:
    """What the check found: ``status`` is "signal", "noise" or "undetermined".

    ``score`` is the flexible model's ROC AUC (classification) or rank
    correlation (regression) on the newest rows, ``needed`` what counts as
    beyond chance.
    """

    status: str
    score: float | None = None
    needed: float | None = None
    task: str = "classification"

    @property
    def score_text(self) -> str:
        return f"{'ROC AUC' if self.task == 'classification' else 'rank correlation'} {self.score:.2f}"

    @property
    def message(self) -> str:
        if self.status == "noise":
            return (f"labels look like noise: a model fitted on this batch alone reaches {self.score_text} on its newest "
                    f"rows (needs > {self.needed:.2f}); a broken labelling job?")
        if self.status == "undetermined":
            return "too few labeled rows to tell signal from noise"
        return f"labels carry signal ({self.score_text})"


def label_signal_issue(frame: pd.DataFrame, schema: dict[str, str], target: str, task: str,
                       timestamp: str | None = None, seed: int = 0) -> str | None:
    """A reason if the labels of ``frame`` look like noise, else None (signal, or undetermined)."""
    signal = label_signal(frame, schema, target, task, timestamp, seed)
    return signal.message if signal.status == "noise" else None


def label_signal(frame: pd.DataFrame, schema: dict[str, str], target: str, task: str,
                 timestamp: str | None = None, seed: int = 0) -> LabelSignal:
    """Whether the labels of ``frame`` carry signal, look like noise, or cannot be told apart.

    A small gradient-boosting model (``SIGNAL_MODEL``) is fitted on the oldest
    70% of the labeled rows and scored on the newest 30%. Classification: ROC
    AUC of the most frequent class against the rest; its standard error under
    no signal is sqrt((n1 + n0 + 1) / (12 n1 n0)). Regression: the model
    learns the target's ranks, and is scored by the rank (Spearman)
    correlation of prediction and truth, standard error 1/sqrt(n): whether
    the target can be predicted does not depend on its scale, and on a
    heavy-tailed target (amounts, durations) a few extreme rows would
    otherwise decide both the fit and the correlation. Beyond chance by
    ``SIGNIFICANCE_SIGMAS`` standard errors: signal. Otherwise noise, but only
    if the check had the power to see a meaningful signal: chance plus
    ``SIGNIFICANCE_SIGMAS + POWER_SIGMAS`` standard errors must be within
    ``MEANINGFUL_AUC`` (or ``MEANINGFUL_CORRELATION``); else undetermined.
    Batches with fewer than 100 labeled rows are undetermined; larger ones
    than 20,000 rows are judged on 20,000 evenly spaced rows.
    """
    labeled = frame[frame[target].notna()]
    if timestamp and timestamp in labeled:
        labeled = labeled.sort_values(timestamp, kind="stable")
    if len(labeled) < MIN_ROWS:
        return LabelSignal("undetermined", task=task)
    if len(labeled) > MAX_ROWS:  # bounded cost: an evenly spaced subsample keeps the time order
        labeled = labeled.iloc[np.linspace(0, len(labeled) - 1, MAX_ROWS).astype(int)]
    features, is_categorical = encode_features(labeled, schema)
    cut = int(len(labeled) * (1 - TEST_FRACTION))
    with limit_threads(1):
        if task == "regression":
            return _regression_signal(labeled[target].to_numpy(dtype="float64"), features, is_categorical, cut, seed)
        return _classification_signal(labeled[target].astype(str).to_numpy(), features, is_categorical, cut, seed)


def _classification_signal(labels: np.ndarray, features, is_categorical, cut: int, seed: int) -> LabelSignal:
    positive = pd.Series(labels).value_counts().index[0]
    is_positive = labels == positive
    if is_positive[:cut].all() or not is_positive[:cut].any():
        return LabelSignal("undetermined")  # one class in the fitting part: left to the one-class check
    model = HistGradientBoostingClassifier(**SIGNAL_MODEL, categorical_features=is_categorical, random_state=seed)
    scores = model.fit(features[:cut], is_positive[:cut]).predict_proba(features[cut:])[:, 1]
    held_out = is_positive[cut:]
    n1, n0 = int(held_out.sum()), int((~held_out).sum())
    if n1 == 0 or n0 == 0:
        return LabelSignal("undetermined")
    auc = binary_roc_auc(held_out, scores)
    null_error = math.sqrt((n1 + n0 + 1) / (12 * n1 * n0))
    return _judge(max(auc, 1 - auc), 0.5, null_error, MEANINGFUL_AUC, "classification")


def _regression_signal(truth: np.ndarray, features, is_categorical, cut: int, seed: int) -> LabelSignal:
    ranks = pd.Series(truth).rank().to_numpy()
    model = HistGradientBoostingRegressor(**SIGNAL_MODEL, categorical_features=is_categorical, random_state=seed)
    predicted = pd.Series(model.fit(features[:cut], ranks[:cut]).predict(features[cut:])).rank().to_numpy()
    held_out = pd.Series(truth[cut:]).rank().to_numpy()
    correlation = 0.0 if np.std(predicted) == 0 or np.std(held_out) == 0 else float(np.corrcoef(predicted, held_out)[0, 1])
    return _judge(correlation, 0.0, 1 / math.sqrt(len(held_out)), MEANINGFUL_CORRELATION, "regression")


def _judge(score: float, chance: float, null_error: float, meaningful: float, task: str) -> LabelSignal:
    needed = chance + SIGNIFICANCE_SIGMAS * null_error
    if score > needed:
        return LabelSignal("signal", score, needed, task)
    if chance + (SIGNIFICANCE_SIGMAS + POWER_SIGMAS) * null_error > meaningful:
        return LabelSignal("undetermined", score, needed, task)
    return LabelSignal("noise", score, needed, task)
