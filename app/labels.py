"""Do a batch's labels carry any signal? A guard against corrupted labels.

A batch whose labels were shuffled or scrambled by a broken labelling job looks
valid to every schema check. But no model can learn it: fitted on the older
part of the batch alone, a small model does no better than chance on the
newest part. A real change of concept is different: the new relationship is
learnable from the batch itself. This check tells the two apart, so dynamic
training adapts to the one and refuses the other.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

from app.stats.health import binary_roc_auc
from app.stats.multivariate import encode_features
from app.threads import limit_threads

MIN_ROWS = 100
MAX_ROWS = 20_000
TEST_FRACTION = 0.3
SIGNIFICANCE_SIGMAS = 3.0
# 25 trees of at most 15 leaves at a learning rate of 0.2: any real label rule shows within them,
# at under half the cost of scikit-learn's defaults (this runs on every labeled batch).
SIGNAL_MODEL = {"max_iter": 25, "learning_rate": 0.2, "max_leaf_nodes": 15}


def label_signal_issue(frame: pd.DataFrame, schema: dict[str, str], target: str, task: str,
                       timestamp: str | None = None, seed: int = 0) -> str | None:
    """A reason if the labels of ``frame`` look like noise, else None.

    A small gradient-boosting model (``SIGNAL_MODEL``) is fitted on the oldest 70% of the
    labeled rows and scored on the newest 30%. Classification: ROC AUC of the
    most frequent class against the rest must exceed 0.5 by three standard
    errors of the AUC under no signal, sqrt((n1 + n0 + 1) / (12 n1 n0)).
    Regression: the correlation of prediction and truth must exceed 3/sqrt(n).
    Batches with fewer than 100 labeled rows are not judged; larger ones than
    20,000 rows are judged on 20,000 evenly spaced rows.
    """
    labeled = frame[frame[target].notna()]
    if timestamp and timestamp in labeled:
        labeled = labeled.sort_values(timestamp, kind="stable")
    if len(labeled) < MIN_ROWS:
        return None
    if len(labeled) > MAX_ROWS:  # bounded cost: an evenly spaced subsample keeps the time order
        labeled = labeled.iloc[np.linspace(0, len(labeled) - 1, MAX_ROWS).astype(int)]
    features, is_categorical = encode_features(labeled, schema)
    cut = int(len(labeled) * (1 - TEST_FRACTION))
    with limit_threads(1):
        if task == "regression":
            truth = labeled[target].to_numpy(dtype="float64")
            model = HistGradientBoostingRegressor(**SIGNAL_MODEL, categorical_features=is_categorical, random_state=seed)
            predicted = model.fit(features[:cut], truth[:cut]).predict(features[cut:])
            if np.std(predicted) == 0 or np.std(truth[cut:]) == 0:
                return "the labels cannot be predicted at all from the features"
            correlation = float(np.corrcoef(predicted, truth[cut:])[0, 1])
            needed = SIGNIFICANCE_SIGMAS / math.sqrt(len(predicted))
            if correlation > needed:
                return None
            return (f"labels look like noise: a model fitted on this batch alone predicts its newest rows with "
                    f"correlation {correlation:.2f} (needs > {needed:.2f}); a broken labelling job?")
        labels = labeled[target].astype(str).to_numpy()
        positive = pd.Series(labels).value_counts().index[0]
        is_positive = labels == positive
        if is_positive[:cut].all() or not is_positive[:cut].any():
            return None  # one class in the fitting part: left to the one-class check
        model = HistGradientBoostingClassifier(**SIGNAL_MODEL, categorical_features=is_categorical, random_state=seed)
        scores = model.fit(features[:cut], is_positive[:cut]).predict_proba(features[cut:])[:, 1]
    held_out = is_positive[cut:]
    n1, n0 = int(held_out.sum()), int((~held_out).sum())
    if n1 == 0 or n0 == 0:
        return None
    auc = binary_roc_auc(held_out, scores)
    needed = 0.5 + SIGNIFICANCE_SIGMAS * math.sqrt((n1 + n0 + 1) / (12 * n1 * n0))
    if max(auc, 1 - auc) > needed:
        return None
    return (f"labels look like noise: a model fitted on this batch alone reaches ROC AUC {auc:.2f} on its newest rows "
            f"(needs > {needed:.2f}); a broken labelling job?")
