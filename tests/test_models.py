from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
from sklearn.preprocessing import StandardScaler

from app.models import (
    CLASSIFICATION,
    ESTIMATORS,
    REGRESSION,
    EstimatorConfigError,
    build_pipeline,
    check_estimator,
    fit_pipeline,
    pipeline_schema,
    predict,
    prepare_features,
    supports_partial_fit,
    typed_labels,
)

SCHEMA = {"size": "numeric", "weight": "numeric", "color": "categorical", "code": "categorical"}
REGISTRY = [(task, name) for task, choices in ESTIMATORS.items() for name in choices]


def make_frame(rows: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    """Features with NaN/None holes; ``shift`` moves the numeric columns."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "size": rng.normal(shift, 1.0, rows),
            "weight": rng.normal(10 + shift, 2.0, rows),
            "color": rng.choice(["red", "green", "blue"], rows).astype(object),
            "code": rng.integers(1, 4, rows).astype(float),
        }
    )
    frame.loc[frame.index[::7], "size"] = np.nan
    frame.loc[frame.index[::9], "color"] = None
    frame.loc[frame.index[::11], "code"] = np.nan
    return frame


def make_target(frame: pd.DataFrame, task: str) -> np.ndarray:
    """A target the features explain: a linear score in size and color."""
    score = frame["size"].fillna(0).to_numpy() + 2.0 * (frame["color"] == "red").to_numpy()
    if task == REGRESSION:
        return 3.0 * score + 1.0
    return np.where(score > 0.5, "yes", "no")


def train(task, name, frame, y, params=None, seed=0, **incremental):
    """Build a registry pipeline on SCHEMA and fit it; ``incremental`` goes to fit_pipeline."""
    pipeline = build_pipeline(task, name, params or {}, SCHEMA, seed=seed)
    return fit_pipeline(pipeline, frame, y, **incremental)


@pytest.fixture(scope="module")
def train_frame() -> pd.DataFrame:
    return make_frame(120, seed=1)


@pytest.fixture(scope="module")
def unseen_frame() -> pd.DataFrame:
    frame = make_frame(20, seed=2)
    frame.loc[frame.index[:5], "color"] = "purple"
    frame.loc[frame.index[5:8], "code"] = 99
    return frame


@pytest.mark.parametrize(("task", "name"), REGISTRY)
def test_every_registry_pipeline_fits_and_predicts_deterministically(
    task, name, train_frame, unseen_frame
):
    y = make_target(train_frame, task)
    first = fit_pipeline(build_pipeline(task, name, {}, SCHEMA, seed=7), train_frame, y)
    second = fit_pipeline(build_pipeline(task, name, {}, SCHEMA, seed=7), train_frame, y)

    prediction = predict(first, unseen_frame, task)
    again = predict(second, unseen_frame, task)

    assert prediction.labels.shape == (len(unseen_frame),)
    np.testing.assert_array_equal(prediction.labels, again.labels)
    if task == CLASSIFICATION:
        assert prediction.classes == ["no", "yes"]
        assert prediction.proba.shape == (len(unseen_frame), 2)
        np.testing.assert_allclose(prediction.proba.sum(axis=1), 1.0)
        np.testing.assert_array_equal(prediction.proba, again.proba)
        expected = np.array(prediction.classes)[prediction.proba.argmax(axis=1)]
        np.testing.assert_array_equal(prediction.labels, expected)
        train_accuracy = np.mean(predict(first, train_frame, task).labels == y)
        assert train_accuracy > 0.8
    else:
        assert prediction.proba is None and prediction.classes is None
        assert np.isfinite(prediction.labels).all()
        fitted = predict(first, train_frame, task).labels
        r_squared = 1 - np.sum((y - fitted) ** 2) / np.sum((y - y.mean()) ** 2)
        assert r_squared > 0.6


def test_unseen_category_encodes_as_all_zeros(train_frame, unseen_frame):
    pipeline = fit_pipeline(
        build_pipeline(CLASSIFICATION, "logistic_regression", {}, SCHEMA),
        train_frame,
        make_target(train_frame, CLASSIFICATION),
    )
    encoder = pipeline.named_steps["preprocess"].named_transformers_["categorical"]["encode"]
    color_categories = list(encoder.categories_[0])
    assert color_categories == ["__missing__", "blue", "green", "red"]

    features = pipeline[:-1].transform(prepare_features(unseen_frame, SCHEMA))
    color_block = features[:, 2 : 2 + len(color_categories)]
    np.testing.assert_array_equal(color_block[:5].sum(axis=1), 0.0)
    np.testing.assert_array_equal(color_block[5:].sum(axis=1), 1.0)


def test_prepare_features_casts_types_and_unifies_missing_values():
    frame = pd.DataFrame(
        {
            "extra": [1, 2, 3, 4],
            "code": [1.0, np.nan, 2.0, 2.5],
            "size": ["1.5", None, "x", "4"],
            "color": pd.Series(["red", None, pd.NA, "blue"], dtype="string"),
        }
    )
    schema = {"size": "numeric", "color": "categorical", "code": "categorical"}

    prepared = prepare_features(frame, schema)

    assert list(prepared.columns) == ["size", "color", "code"]
    assert prepared["size"].dtype == np.float64
    np.testing.assert_array_equal(prepared["size"], [1.5, np.nan, np.nan, 4.0])
    assert prepared["color"].dtype == object and prepared["code"].dtype == object
    assert prepared["color"].tolist()[::3] == ["red", "blue"]
    assert prepared["color"].isna().tolist() == [False, True, True, False]
    assert prepared["code"].tolist()[::2] == ["1", "2"]
    assert prepared["code"][3] == "2.5" and pd.isna(prepared["code"][1])


def test_integer_codes_match_whether_or_not_a_batch_has_missing_values():
    with_gap = pd.DataFrame({"code": [1, None, 3]})
    without_gap = pd.DataFrame({"code": [1, 2, 3]})
    schema = {"code": "categorical"}
    assert prepare_features(with_gap, schema)["code"][0] == "1"
    assert prepare_features(without_gap, schema)["code"][0] == "1"


def test_build_pipeline_structure_follows_estimator_kind():
    linear = build_pipeline(CLASSIFICATION, "logistic_regression", {}, SCHEMA, seed=3)
    forest = build_pipeline(REGRESSION, "random_forest", {"max_depth": 4}, SCHEMA, seed=3)

    assert linear.steps[-1][0] == "model" and forest.steps[-1][0] == "model"
    numeric_linear = linear.named_steps["preprocess"].transformers[0][1]
    numeric_forest = forest.named_steps["preprocess"].transformers[0][1]
    assert isinstance(numeric_linear.steps[-1][1], StandardScaler)
    assert not any(isinstance(step, StandardScaler) for _, step in numeric_forest.steps)
    model = forest.named_steps["model"]
    assert (model.random_state, model.n_jobs, model.max_depth) == (3, 1, 4)
    assert linear.named_steps["model"].random_state == 3
    assert pipeline_schema(forest) == {
        "size": "numeric",
        "weight": "numeric",
        "color": "categorical",
        "code": "categorical",
    }


def test_numeric_only_schema_builds_without_categorical_branch(train_frame):
    schema = {"size": "numeric", "weight": "numeric"}
    pipeline = fit_pipeline(
        build_pipeline(REGRESSION, "ridge", {}, schema),
        train_frame,
        make_target(train_frame, REGRESSION),
    )
    assert [name for name, *_ in pipeline.named_steps["preprocess"].transformers] == ["numeric"]
    assert predict(pipeline, train_frame, REGRESSION).labels.shape == (len(train_frame),)


def test_seed_changes_a_random_model(train_frame):
    y = make_target(train_frame, CLASSIFICATION)
    probas = [
        predict(
            train(CLASSIFICATION, "random_forest", train_frame, y, {"n_estimators": 10}, seed=seed),
            train_frame,
            CLASSIFICATION,
        ).proba
        for seed in (0, 1)
    ]
    assert not np.array_equal(probas[0], probas[1])


def test_unknown_estimator_lists_valid_names():
    with pytest.raises(EstimatorConfigError, match="unknown estimator 'xgboost'") as caught:
        check_estimator(CLASSIFICATION, "xgboost", {})
    for name in ESTIMATORS[CLASSIFICATION]:
        assert name in str(caught.value)
    assert caught.value.key == "estimator"
    assert "ridge" not in str(caught.value)


def test_unknown_task_is_a_config_error():
    with pytest.raises(EstimatorConfigError, match="unknown task 'ranking'"):
        check_estimator("ranking", "ridge", {})


def test_unknown_param_lists_valid_ones():
    with pytest.raises(EstimatorConfigError, match="unknown parameter 'depth'") as caught:
        check_estimator(REGRESSION, "random_forest", {"n_estimators": 10, "depth": 3})
    assert "max_depth" in str(caught.value) and "n_estimators" in str(caught.value)
    assert caught.value.key == "params.depth"


@pytest.mark.parametrize(
    ("task", "name", "params", "bad"),
    [
        (REGRESSION, "random_forest", {"max_depth": -1}, "max_depth"),
        (CLASSIFICATION, "hist_gradient_boosting", {"learning_rate": "fast"}, "learning_rate"),
        (REGRESSION, "ridge", {"alpha": 1.0, "solver": "magic"}, "solver"),
        (CLASSIFICATION, "logistic_regression", {"max_iter": -5}, "max_iter"),
    ],
)
def test_bad_param_value_names_the_param(task, name, params, bad):
    with pytest.raises(EstimatorConfigError, match=f"parameter '{bad}'") as caught:
        check_estimator(task, name, params)
    assert caught.value.key == f"params.{bad}"
    assert isinstance(caught.value, ValueError)


def test_classifier_without_probabilities_is_refused():
    with pytest.raises(EstimatorConfigError, match="predict_proba"):
        check_estimator(CLASSIFICATION, "sgd", {"loss": "hinge"})


def test_valid_params_pass():
    check_estimator(CLASSIFICATION, "sgd", {"loss": "modified_huber", "alpha": 0.001})
    check_estimator(REGRESSION, "hist_gradient_boosting", {"max_iter": 50, "max_depth": 3})


def test_only_sgd_supports_partial_fit():
    supported = {(task, name) for task, name in REGISTRY if supports_partial_fit(task, name)}
    assert supported == {(CLASSIFICATION, "sgd"), (REGRESSION, "sgd")}


def fitted_statistics(pipeline) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    numeric = pipeline.named_steps["preprocess"].named_transformers_["numeric"]
    return (
        numeric.named_steps["impute"].statistics_.copy(),
        numeric.named_steps["scale"].mean_.copy(),
        numeric.named_steps["scale"].scale_.copy(),
    )


def test_sgd_classifier_continues_with_kept_preprocessing():
    first_batch, second_batch = make_frame(80, seed=3), make_frame(80, seed=4, shift=3.0)
    y_first = make_target(first_batch, CLASSIFICATION)
    y_second = make_target(second_batch, CLASSIFICATION)
    original = train(CLASSIFICATION, "sgd", first_batch, y_first)
    original_coef = original.named_steps["model"].coef_.copy()
    original_stats = fitted_statistics(original)

    continued = train(
        CLASSIFICATION, "sgd", second_batch, y_second,
        incremental_from=original, classes=["no", "yes"],
    )

    # The original pipeline is untouched; the copy kept its fitted preprocessing,
    # which differs from what the shifted second batch alone would give.
    np.testing.assert_array_equal(original.named_steps["model"].coef_, original_coef)
    for kept, before in zip(fitted_statistics(continued), original_stats):
        np.testing.assert_array_equal(kept, before)
    refit_stats = fitted_statistics(train(CLASSIFICATION, "sgd", second_batch, y_second))
    assert not np.allclose(refit_stats[1], original_stats[1])

    # Reference: sklearn's own partial_fit on the old preprocessing's features.
    reference = copy.deepcopy(original.named_steps["model"])
    reference.partial_fit(
        original[:-1].transform(prepare_features(second_batch, SCHEMA)),
        y_second,
        classes=np.array(["no", "yes"]),
    )
    continued_coef = continued.named_steps["model"].coef_
    np.testing.assert_allclose(continued_coef, reference.coef_)
    assert not np.allclose(continued_coef, original_coef)


def test_sgd_regressor_continues_and_needs_no_classes():
    first_batch, second_batch = make_frame(80, seed=5), make_frame(80, seed=6)
    original = train(REGRESSION, "sgd", first_batch, make_target(first_batch, REGRESSION))
    continued = train(
        REGRESSION, "sgd", second_batch, make_target(second_batch, REGRESSION),
        incremental_from=original,
    )
    old_model, new_model = original.named_steps["model"], continued.named_steps["model"]
    assert not np.allclose(new_model.coef_, old_model.coef_)
    assert new_model.t_ > old_model.t_


def test_incremental_classification_without_classes_is_refused():
    batch = make_frame(40, seed=7)
    y = make_target(batch, CLASSIFICATION)
    original = train(CLASSIFICATION, "sgd", batch, y)
    with pytest.raises(ValueError, match="classes"):
        train(CLASSIFICATION, "sgd", batch, y, incremental_from=original)


def test_incremental_from_a_different_estimator_is_refused():
    batch = make_frame(40, seed=8)
    y = make_target(batch, REGRESSION)
    ridge = train(REGRESSION, "ridge", batch, y)
    with pytest.raises(ValueError, match="Ridge"):
        train(REGRESSION, "sgd", batch, y, incremental_from=ridge)


def test_estimator_without_partial_fit_is_trained_from_scratch():
    first_batch, second_batch = make_frame(60, seed=9), make_frame(60, seed=10, shift=2.0)
    old = train(REGRESSION, "ridge", first_batch, make_target(first_batch, REGRESSION))
    y_second = make_target(second_batch, REGRESSION)
    from_old = train(REGRESSION, "ridge", second_batch, y_second, incremental_from=old)
    scratch = train(REGRESSION, "ridge", second_batch, y_second)
    np.testing.assert_allclose(
        from_old.named_steps["model"].coef_, scratch.named_steps["model"].coef_
    )


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        (["1", "0", "1"], np.array([1, 0, 1], dtype=np.int64)),
        (["-3", "12"], np.array([-3, 12], dtype=np.int64)),
        (["True", "False"], np.array([True, False])),
        (["yes", "no"], np.array(["yes", "no"], dtype=object)),
        (["007", "1"], np.array(["007", "1"], dtype=object)),  # "007" is not how a whole number is written
        (["1", "True"], np.array(["1", "True"], dtype=object)),
    ],
)
def test_typed_labels_gives_text_labels_back_their_type(texts, expected):
    typed = typed_labels(np.array(texts, dtype=object))
    assert typed.dtype == expected.dtype
    np.testing.assert_array_equal(typed, expected)


def test_a_classifier_fitted_on_whole_number_text_predicts_whole_numbers(train_frame, unseen_frame):
    """Validation hands labels over as text; the fitted model answers in the labels' own type."""
    labels = np.where(make_target(train_frame, CLASSIFICATION) == "yes", "1", "0").astype(object)
    model = train(CLASSIFICATION, "logistic_regression", train_frame, labels)
    assert model.classes_.tolist() == [0, 1]
    prediction = predict(model, unseen_frame, CLASSIFICATION)
    assert prediction.labels.dtype == np.int64 and prediction.classes == [0, 1]


def test_sgd_continues_a_whole_number_classifier_with_text_classes():
    first_batch, second_batch = make_frame(80, seed=3), make_frame(80, seed=4)
    as_digits = {"no": "0", "yes": "1"}
    y_first = np.array([as_digits[y] for y in make_target(first_batch, CLASSIFICATION)], dtype=object)
    y_second = np.array([as_digits[y] for y in make_target(second_batch, CLASSIFICATION)], dtype=object)
    original = train(CLASSIFICATION, "sgd", first_batch, y_first)
    continued = train(CLASSIFICATION, "sgd", second_batch, y_second, incremental_from=original, classes=["0", "1"])
    assert continued.named_steps["model"].classes_.tolist() == [0, 1]
    assert predict(continued, second_batch, CLASSIFICATION).labels.dtype == np.int64
