"""Multivariate drift: can a classifier tell reference rows from current rows?

If the two samples come from the same joint distribution, no model can separate
them and its cross-validated ROC AUC stays near 0.5; the further the AUC climbs
towards 1, the more the data moved, including changes no single column shows
(a correlation that flipped, say). Which features the classifier leans on says
what moved.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.model_selection import StratifiedKFold

from app.stats.health import binary_roc_auc
from app.stats.profile import NUMERIC, comparable_labels, numeric_values
from app.threads import limit_threads

# HistGradientBoosting takes category codes below its 255 bins: the most frequent
# categories get codes 0..253 and all rarer ones share the last code.
_MAX_CATEGORY_CODES = 254
# Below this AUC the sides look alike and any ranking of features would be noise, so none is made
# (the AUC's standard error under no drift is about 0.01 at the default 5,000 rows per side).
IMPORTANCE_MIN_AUC = 0.55
DOMAIN_TREES = 25  # with a learning rate of 0.2: as sharp as 50 trees at 0.1 for telling two samples apart, at half the cost
DOMAIN_LEAVES = 8  # shallow trees: a moved distribution shows in a few splits, and each tree costs a third as much




@dataclass
class MultivariateDrift:
    """Domain-classifier result.

    ``auc``: mean cross-validated ROC AUC, 0.5 = indistinguishable, 1 = fully
    separable. ``importances``: the features the classifier uses most, as the
    mean drop in AUC when that feature is shuffled, largest first.
    ``rows_reference``/``rows_current``: rows actually used from each side.
    """

    auc: float
    importances: dict[str, float]
    rows_reference: int
    rows_current: int

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def reservoir_sample(df: pd.DataFrame, max_rows: int, seed: int = 0) -> pd.DataFrame:
    """A uniform random sample of at most ``max_rows`` rows, in their original order.

    Returns ``df`` itself when it is small enough. The same seed gives the same rows.
    """
    if len(df) <= max_rows:
        return df
    positions = np.random.default_rng(seed).choice(len(df), size=max_rows, replace=False)
    return df.iloc[np.sort(positions)]


def domain_classifier(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    schema: dict[str, str],
    max_rows: int = 5000,
    seed: int = 0,
    folds: int = 3,
    top_features: int = 10,
    threads: int = 1,
) -> MultivariateDrift:
    """Cross-validated reference-vs-current classifier on at most ``max_rows`` rows per side.

    Encoding: numeric columns as floats with missing values left as NaN
    (HistGradientBoosting routes them natively, so a change in missingness
    counts as drift too); categorical columns as codes declared categorical to
    the model. Columns missing on both sides are skipped (with none left the
    AUC is 0.5). The model is a small HistGradientBoostingClassifier (25 trees of at
    most 8 leaves).

    Importances are permutation importances on the first held-out fold:
    shuffle one column, score again, and record how much the AUC fell. That
    costs one extra prediction per feature, no refitting. They are only
    computed when the AUC reaches ``IMPORTANCE_MIN_AUC``: below it nothing
    moved, and ``importances`` is empty.

    Cost is bounded by ``max_rows`` and ``folds``: ``folds`` fits on under
    2 * ``max_rows`` rows and one prediction per feature, under a second
    at the defaults with 20 features. The model's OpenMP pool is held to
    ``threads`` threads: on a busy machine extra threads mostly spin. Raises
    ValueError when a side has fewer rows than ``folds``.
    """
    with limit_threads(threads, user_api="openmp"):
        return _cross_validated_drift(reference, current, schema, max_rows, seed, folds, top_features)


def _cross_validated_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    schema: dict[str, str],
    max_rows: int,
    seed: int,
    folds: int,
    top_features: int,
) -> MultivariateDrift:
    reference_rows = reservoir_sample(reference, max_rows, seed)
    current_rows = reservoir_sample(current, max_rows, seed + 1)
    if min(len(reference_rows), len(current_rows)) < folds:
        raise ValueError(f"the domain classifier needs at least {folds} rows on each side")
    features, is_categorical = encode_features(pd.concat([reference_rows, current_rows]), schema)
    # A column missing on both sides tells the sides nothing (and the model cannot bin it).
    informative = ~np.isnan(features).all(axis=0)
    names = [name for name, keep in zip(schema, informative) if keep]
    features, is_categorical = features[:, informative], is_categorical[informative]
    is_current = np.r_[np.zeros(len(reference_rows)), np.ones(len(current_rows))]
    if not names:
        return MultivariateDrift(0.5, {}, len(reference_rows), len(current_rows))

    fold_aucs: list[float] = []
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in splitter.split(features, is_current):
        model = HistGradientBoostingClassifier(
            max_iter=DOMAIN_TREES, learning_rate=0.2, max_leaf_nodes=DOMAIN_LEAVES, categorical_features=is_categorical,
            early_stopping=False, random_state=seed,
        ).fit(features[train], is_current[train])
        held_out, truth = features[test], is_current[test] == 1
        fold_aucs.append(binary_roc_auc(truth, model.predict_proba(held_out)[:, 1]))
        if len(fold_aucs) == 1:
            first_fold = (model, held_out, truth)

    auc = float(np.mean(fold_aucs))
    importances = {}
    if auc >= IMPORTANCE_MIN_AUC:
        drops = _permutation_importances(*first_fold, fold_aucs[0], np.random.default_rng(seed))
        ranked = sorted(zip(names, drops), key=lambda item: -item[1])[:top_features]
        importances = {name: float(drop) for name, drop in ranked}
    return MultivariateDrift(auc, importances, rows_reference=len(reference_rows), rows_current=len(current_rows))


def _permutation_importances(model, held_out: np.ndarray, truth: np.ndarray, auc: float,
                             rng: np.random.Generator) -> np.ndarray:
    """Per column of ``held_out``: how far the AUC falls when that column is shuffled."""
    drops = np.zeros(held_out.shape[1])
    for column in range(held_out.shape[1]):
        shuffled = held_out.copy()
        shuffled[:, column] = rng.permutation(shuffled[:, column])
        drops[column] = auc - binary_roc_auc(truth, model.predict_proba(shuffled)[:, 1])
    return drops


def encode_features(df: pd.DataFrame, schema: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """Float matrix (rows x schema columns, NaN = missing) and the categorical-column mask.

    A schema column absent from ``df`` is all missing; +/-inf counts as missing.
    """
    encoded = []
    for name, kind in schema.items():
        if name not in df:
            encoded.append(np.full(len(df), np.nan))
        elif kind == NUMERIC:
            values = numeric_values(df[name])
            encoded.append(np.where(np.isfinite(values), values, np.nan))
        else:
            encoded.append(category_codes(df[name]))
    mask = np.array([kind != NUMERIC for kind in schema.values()])
    return np.column_stack(encoded), mask


def category_codes(series: pd.Series) -> np.ndarray:
    """Codes 0..253 for the most frequent categories (by text), 254 for the rest, NaN if missing."""
    labels = comparable_labels(series)
    text = labels.astype("string")
    frequent = text.value_counts().index[:_MAX_CATEGORY_CODES]
    codes = pd.Index(frequent).get_indexer(text).astype(np.float64)
    codes[codes < 0] = _MAX_CATEGORY_CODES
    codes[text.isna().to_numpy()] = np.nan
    return codes
