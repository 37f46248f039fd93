from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from app.stats.multivariate import category_codes, domain_classifier, encode_features, reservoir_sample

SCHEMA = {"a": "numeric", "b": "numeric", "c": "numeric", "kind": "categorical"}


def frame(rows: int, seed: int, b_shift: float = 0.0, kind_shares=(0.5, 0.3, 0.2)) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "a": rng.normal(0, 1, rows),
        "b": rng.normal(b_shift, 1, rows),
        "c": rng.exponential(1, rows),
        "kind": rng.choice(["x", "y", "z"], rows, p=kind_shares),
    })


def test_identical_distributions_give_an_auc_near_one_half():
    result = domain_classifier(frame(1500, seed=1), frame(1500, seed=2), SCHEMA, max_rows=1000)
    assert abs(result.auc - 0.5) < 0.05
    assert (result.rows_reference, result.rows_current) == (1000, 1000)


def test_a_strong_shift_is_detected_and_ranked_first():
    result = domain_classifier(frame(1000, seed=3), frame(1000, seed=4, b_shift=2.0), SCHEMA, max_rows=1000)
    assert result.auc > 0.7
    assert next(iter(result.importances)) == "b"
    values = list(result.importances.values())
    assert values == sorted(values, reverse=True)


def test_a_categorical_shift_is_ranked_first():
    shifted = frame(1000, seed=6, kind_shares=(0.1, 0.2, 0.7))
    result = domain_classifier(frame(1000, seed=5), shifted, SCHEMA, max_rows=1000)
    assert result.auc > 0.7
    assert next(iter(result.importances)) == "kind"


def test_result_is_reproducible_and_serialisable():
    first = domain_classifier(frame(300, seed=7), frame(300, seed=8, b_shift=1.0), SCHEMA, max_rows=200, seed=3)
    second = domain_classifier(frame(300, seed=7), frame(300, seed=8, b_shift=1.0), SCHEMA, max_rows=200, seed=3)
    assert first == second
    assert json.loads(json.dumps(first.to_dict()))["auc"] == first.auc
    shifted = frame(300, 8, b_shift=2.0)
    assert len(domain_classifier(frame(300, 7), shifted, SCHEMA, max_rows=200, top_features=2).importances) == 2


def test_no_feature_is_named_when_nothing_moved():
    result = domain_classifier(frame(3000, seed=21), frame(3000, seed=22), SCHEMA, max_rows=3000, folds=2)
    assert result.auc < 0.55
    assert result.importances == {}


def test_columns_missing_on_both_sides_are_ignored():
    schema = {"b": "numeric", "empty": "numeric"}
    reference = frame(300, seed=11).assign(empty=np.nan)
    current = frame(300, seed=12, b_shift=2.0).assign(empty=np.nan)
    result = domain_classifier(reference, current, schema)
    assert result.auc > 0.7 and list(result.importances) == ["b"]
    only_empty = domain_classifier(reference, current, {"empty": "numeric"})
    assert only_empty.auc == 0.5 and only_empty.importances == {}


def test_too_few_rows_are_refused():
    with pytest.raises(ValueError):
        domain_classifier(frame(2, seed=9), frame(100, seed=10), SCHEMA, folds=3)


def test_reservoir_sample_is_uniform_without_replacement_and_keeps_order():
    df = pd.DataFrame({"i": np.arange(1000)})
    sample = reservoir_sample(df, 100, seed=1)
    assert len(sample) == 100 and sample["i"].is_unique and sample["i"].is_monotonic_increasing
    assert sample.equals(reservoir_sample(df, 100, seed=1))
    assert not sample.equals(reservoir_sample(df, 100, seed=2))
    assert reservoir_sample(df, 5000, seed=1) is df
    hits = np.zeros(1000)
    for seed in range(200):
        hits[reservoir_sample(df, 100, seed=seed)["i"].to_numpy()] += 1
    assert hits[:500].sum() == pytest.approx(hits[500:].sum(), rel=0.1)  # both halves ~10,000 draws


def test_encoding_keeps_missing_values_and_codes_categories():
    df = pd.DataFrame({"n": [1.0, np.nan, np.inf], "k": ["p", None, "q"]})
    features, is_categorical = encode_features(df, {"n": "numeric", "k": "categorical", "gone": "numeric"})
    assert features.shape == (3, 3)
    np.testing.assert_array_equal(is_categorical, [False, True, False])
    assert features[0, 0] == 1.0 and np.isnan(features[1:, 0]).all()
    assert np.isnan(features[1, 1]) and {features[0, 1], features[2, 1]} == {0.0, 1.0}
    assert np.isnan(features[:, 2]).all()


def test_rare_categories_share_one_code_below_the_model_limit():
    names = [f"c{i}" for i in range(300)]
    series = pd.Series(names + ["c0"] * 5)
    codes = category_codes(series)
    assert codes.max() == 254
    assert codes[0] == 0  # the most frequent category
    assert np.sum(codes == 254) == 300 - 254
