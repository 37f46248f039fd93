"""The scikit-learn pipelines driftdeck builds from a model's config.

A *schema* maps each feature column to ``"numeric"`` or ``"categorical"``; a
*task* is ``"classification"`` or ``"regression"``. Every pipeline has the same
shape::

    ColumnTransformer(numeric: median imputer [+ scaler for linear models],
                      categorical: "__missing__" imputer + one-hot encoder)
    -> "model" (the estimator named in the config)

Callers hand raw frames to :func:`fit_pipeline` and :func:`predict`; both run
:func:`prepare_features` first so numeric columns are float64 and categorical
columns are strings whatever dtype the batch file produced. A program that
uses a saved pipeline outside driftdeck must do the same (call
``prepare_features`` or cast categorical columns to ``str``).

Class labels keep the type the batch files gave them: validation hands them
over as text (see :func:`app.columns.category_text`), and :func:`fit_pipeline` turns them
back into whole numbers or booleans when every label reads as one (see
:func:`typed_labels`), so a fitted classifier, and every prediction made with
it, says ``1`` or ``True`` where the data said so, never ``"1"``. Regression
targets are floats throughout.

Fitting is deterministic for a given seed: every estimator that takes a
``random_state`` gets it, and every estimator that takes ``n_jobs`` runs on one
thread (the caller limits BLAS/OpenMP threads with ``threadpoolctl``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, is_classifier
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge, SGDClassifier, SGDRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils._param_validation import InvalidParameterError

from app.columns import CATEGORICAL, NUMERIC, category_texts, columns_of_kind

CLASSIFICATION = "classification"
REGRESSION = "regression"
MISSING_CATEGORY = "__missing__"
MAX_ONE_HOT_CATEGORIES = 50
MODEL_STEP = "model"


@dataclass(frozen=True)
class EstimatorSpec:
    """How to build one registry estimator.

    ``scale_numeric`` adds a StandardScaler after the numeric imputer (linear
    and SGD models need it; trees do not). ``incremental`` says the estimator
    can continue training with ``partial_fit``.
    """

    factory: type[BaseEstimator]
    defaults: dict[str, Any] = field(default_factory=dict)
    scale_numeric: bool = False
    incremental: bool = False

    def make(self, params: dict[str, Any] | None = None, seed: int | None = None) -> BaseEstimator:
        """An unfitted estimator: defaults, then the seed, then the config's params."""
        settings = dict(self.defaults)
        if seed is not None and "random_state" in self.factory().get_params():
            settings["random_state"] = seed
        settings.update(params or {})
        return self.factory(**settings)


ESTIMATORS: dict[str, dict[str, EstimatorSpec]] = {
    CLASSIFICATION: {
        "logistic_regression": EstimatorSpec(
            LogisticRegression, {"max_iter": 1000}, scale_numeric=True
        ),
        "hist_gradient_boosting": EstimatorSpec(HistGradientBoostingClassifier),
        "random_forest": EstimatorSpec(
            RandomForestClassifier, {"n_estimators": 100, "n_jobs": 1}
        ),
        "sgd": EstimatorSpec(
            SGDClassifier,
            {"loss": "log_loss", "n_jobs": 1},
            scale_numeric=True,
            incremental=True,
        ),
    },
    REGRESSION: {
        "ridge": EstimatorSpec(Ridge, scale_numeric=True),
        "hist_gradient_boosting": EstimatorSpec(HistGradientBoostingRegressor),
        "random_forest": EstimatorSpec(
            RandomForestRegressor, {"n_estimators": 100, "n_jobs": 1}
        ),
        "sgd": EstimatorSpec(SGDRegressor, scale_numeric=True, incremental=True),
    },
}


class EstimatorConfigError(ValueError):
    """A model's estimator or params cannot be used.

    ``key`` is where the problem sits inside the model's config entry
    (``"task"``, ``"estimator"`` or ``"params.<name>"``) so the config loader
    can prefix the full path, e.g. ``models[1].params.max_depth``.
    """

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class Prediction:
    """What a pipeline says about ``n`` rows.

    ``labels``: shape (n,), the predicted class or value. ``proba``: shape
    (n, n_classes), columns in the order of ``classes``; None for regression.
    """

    labels: np.ndarray
    proba: np.ndarray | None = None
    classes: list | None = None


def estimator_spec(task: str, estimator: str) -> EstimatorSpec:
    """The registry entry, or EstimatorConfigError naming the valid choices."""
    if task not in ESTIMATORS:
        raise EstimatorConfigError(
            f"unknown task {task!r} (valid: {', '.join(ESTIMATORS)})", key="task"
        )
    choices = ESTIMATORS[task]
    if estimator not in choices:
        raise EstimatorConfigError(
            f"unknown estimator {estimator!r} for {task} (valid: {', '.join(choices)})",
            key="estimator",
        )
    return choices[estimator]


def check_estimator(task: str, estimator: str, params: dict[str, Any]) -> None:
    """Raise EstimatorConfigError if the config's estimator or any param is unusable.

    Each parameter is checked on its own so the error names it: unknown names
    list the valid ones, and values go through scikit-learn's own parameter
    validation. A classifier must also still offer ``predict_proba`` (an SGD
    classifier with ``loss="hinge"`` would not).
    """
    spec = estimator_spec(task, estimator)
    valid_names = sorted(spec.factory().get_params(deep=False))
    for name, value in params.items():
        if name not in valid_names:
            raise EstimatorConfigError(
                f"unknown parameter {name!r} for {estimator} (valid: {', '.join(valid_names)})",
                key=f"params.{name}",
            )
        try:
            spec.make({name: value})._validate_params()
        except InvalidParameterError as error:
            raise EstimatorConfigError(
                f"invalid value {value!r} for parameter {name!r}: {error}",
                key=f"params.{name}",
            ) from error
    if task == CLASSIFICATION and not hasattr(spec.make(params), "predict_proba"):
        raise EstimatorConfigError(
            f"{estimator} with these params gives no class probabilities (predict_proba); "
            "driftdeck needs them for log loss, ROC AUC and confidence",
            key="params",
        )


def supports_partial_fit(task: str, estimator: str) -> bool:
    return estimator_spec(task, estimator).incremental


def build_pipeline(
    task: str,
    estimator: str,
    params: dict[str, Any],
    schema: dict[str, str],
    seed: int = 0,
) -> Pipeline:
    """An unfitted preprocessing + estimator pipeline; the last step is named "model"."""
    spec = estimator_spec(task, estimator)
    if not schema:
        raise ValueError("a pipeline needs at least one feature column")
    unknown_kinds = set(schema.values()) - {NUMERIC, CATEGORICAL}
    if unknown_kinds:
        raise ValueError(
            f"schema kinds must be numeric or categorical, got {sorted(unknown_kinds)}"
        )

    numeric_steps: list[tuple[str, BaseEstimator]] = [("impute", SimpleImputer(strategy="median"))]
    if spec.scale_numeric:
        numeric_steps.append(("scale", StandardScaler()))
    categorical_steps = [
        ("impute", SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY)),
        (
            "encode",
            OneHotEncoder(
                handle_unknown="ignore",
                sparse_output=False,
                max_categories=MAX_ONE_HOT_CATEGORIES,
            ),
        ),
    ]
    branches = [
        (NUMERIC, Pipeline(numeric_steps), columns_of_kind(schema, NUMERIC)),
        (CATEGORICAL, Pipeline(categorical_steps), columns_of_kind(schema, CATEGORICAL)),
    ]
    preprocess = ColumnTransformer([branch for branch in branches if branch[2]])
    return Pipeline([("preprocess", preprocess), (MODEL_STEP, spec.make(params, seed=seed))])


def pipeline_schema(pipeline: Pipeline) -> dict[str, str]:
    """The schema a pipeline from :func:`build_pipeline` was built for, in column order."""
    preprocess = pipeline.named_steps["preprocess"]
    return {
        column: kind
        for kind, _transformer, columns in preprocess.transformers
        for column in columns
    }


def prepare_features(frame: pd.DataFrame, schema: dict[str, str]) -> pd.DataFrame:
    """The schema's columns, in schema order, with the dtypes the pipelines expect.

    Numeric columns become float64 (values that are not numbers become NaN;
    validation rejects such batches before they get here). Categorical columns
    become object columns of ``str`` (see :func:`app.columns.category_text`) with missing
    values as NaN, so None, NaN and pd.NA all count as missing.
    """
    prepared = {}
    for column, kind in schema.items():
        values = frame[column]
        if kind == NUMERIC:
            prepared[column] = pd.to_numeric(values, errors="coerce").astype("float64")
        else:
            prepared[column] = category_texts(values)
    return pd.DataFrame(prepared, index=frame.index)


BOOLEAN_TEXTS = {"True": True, "False": False}


def typed_labels(texts: np.ndarray | list) -> np.ndarray:
    """Class labels given as text (no missing ones) back in their own type.

    Whole numbers when every label is one written the way :func:`app.columns.category_text`
    writes it ("1", "-3"; not "007", which stays text), booleans when every
    label is "True" or "False", else the text itself (an object array).
    """
    values = np.asarray(texts, dtype=object)
    distinct = {str(value) for value in values}
    if distinct and distinct <= BOOLEAN_TEXTS.keys():
        return np.array([BOOLEAN_TEXTS[str(value)] for value in values], dtype=bool)
    if distinct and all(_is_whole_number_text(text) for text in distinct):
        return values.astype(np.int64)
    return values


def _is_whole_number_text(text: str) -> bool:
    try:
        return str(int(text)) == text
    except ValueError:
        return False


def fit_pipeline(
    pipeline: Pipeline,
    X: pd.DataFrame,
    y: pd.Series | np.ndarray,
    incremental_from: Pipeline | None = None,
    classes: list | np.ndarray | None = None,
) -> Pipeline:
    """Fit ``pipeline`` on the rows of ``X`` (raw frame) and ``y``; return the fitted pipeline.

    With ``incremental_from`` (a fitted pipeline whose model has the same
    estimator class and supports ``partial_fit``), a copy of it continues
    training instead: its fitted preprocessing is kept as is and only the model
    step sees the new rows through ``partial_fit``. Classification then needs
    ``classes`` (every label the model may ever see). Estimators without
    ``partial_fit`` ignore ``incremental_from`` and are fitted from scratch.
    """
    features = prepare_features(X, pipeline_schema(pipeline))
    target = np.asarray(y)
    new_model = pipeline.named_steps[MODEL_STEP]
    if incremental_from is None or not hasattr(new_model, "partial_fit"):
        return pipeline.fit(features, typed_labels(target) if is_classifier(new_model) else target)

    previous_model = incremental_from.named_steps[MODEL_STEP]
    if type(previous_model) is not type(new_model):
        raise ValueError(
            f"cannot continue a {type(previous_model).__name__} as a {type(new_model).__name__}"
        )
    continued = copy.deepcopy(incremental_from)
    transformed = continued[:-1].transform(features)
    model = continued.named_steps[MODEL_STEP]
    if is_classifier(model):
        if classes is None:
            raise ValueError("incremental classification training needs the full list of classes")
        if model.classes_.dtype != object:  # typed like the labels the model first learned (text before typing)
            typed = typed_labels(np.concatenate([np.asarray(classes, dtype=object), target.astype(object)]))
            classes, target = typed[:len(classes)], typed[len(classes):]
        model.partial_fit(transformed, target, classes=np.asarray(classes))
    else:
        model.partial_fit(transformed, target)
    return continued


def predict(pipeline: Pipeline, X: pd.DataFrame, task: str) -> Prediction:
    """Labels (and class probabilities for classification) for the rows of raw frame ``X``."""
    features = prepare_features(X, pipeline_schema(pipeline))
    if task == REGRESSION:
        return Prediction(labels=np.asarray(pipeline.predict(features), dtype="float64"))
    proba = pipeline.predict_proba(features)
    classes = pipeline.classes_
    return Prediction(labels=classes[proba.argmax(axis=1)], proba=proba, classes=classes.tolist())
