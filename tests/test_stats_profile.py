from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

from app.stats.binning import count_in_bins
from app.stats.profile import (
    CategoricalProfile,
    NumericProfile,
    Profile,
    profile_categorical,
    profile_numeric,
    quantile_edges,
    reference_numeric,
)

SCHEMA = {"x": "numeric", "n": "numeric", "color": "categorical"}


def reference_slots(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Independent slot counts: below / numpy.histogram bins / above."""
    inside = (values >= edges[0]) & (values <= edges[-1])
    return np.concatenate((
        [np.count_nonzero(values < edges[0])],
        np.histogram(values[inside], bins=edges)[0],
        [np.count_nonzero(values > edges[-1])],
    ))


def sample_frame(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(10.0, 2.0, rows)
    x[rng.random(rows) < 0.05] = np.nan
    color = rng.choice(np.array(["red", "green", "blue", None], dtype=object), rows, p=[0.5, 0.3, 0.15, 0.05])
    return pd.DataFrame({"x": x, "n": rng.integers(0, 5, rows), "color": color})


def test_reference_edges_are_the_quantiles_of_continuous_data():
    values = np.random.default_rng(1).normal(size=5000)
    edges = quantile_edges(values, bins=100)
    np.testing.assert_array_equal(edges, np.quantile(values, np.arange(101) / 100))
    assert edges[0] == values.min() and edges[-1] == values.max()

    profile = Profile.build(pd.DataFrame({"x": values}), {"x": "numeric"}).columns["x"]
    assert profile.counts.shape == (102,)
    assert profile.counts[0] == profile.counts[-1] == 0
    assert profile.counts.sum() == 5000
    assert profile.counts[1:-1].min() >= 49 and profile.counts[1:-1].max() <= 51


def test_bins_are_left_closed_and_the_last_bin_holds_the_last_edge():
    edges = np.array([0.0, 1.0, 2.0])
    counts = count_in_bins(np.array([-0.5, 0.0, 0.5, 1.0, 2.0, 2.5]), edges)
    np.testing.assert_array_equal(counts, [1, 2, 2, 1])


@settings(max_examples=60, deadline=None)
@given(
    reference=st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=300),
    current=st.lists(st.floats(-2e6, 2e6), min_size=0, max_size=300),
    bins=st.integers(1, 120),
)
def test_grid_binning_equals_a_plain_histogram(reference, current, bins):
    edges = quantile_edges(np.array(reference), bins=bins)
    values = np.array(current + reference)
    np.testing.assert_array_equal(count_in_bins(values, edges), reference_slots(values, edges))


@pytest.mark.parametrize(
    "draw",
    [
        lambda rng, n: rng.standard_cauchy(n),
        lambda rng, n: np.where(rng.random(n) < 0.4, 0.0, rng.lognormal(size=n)),
        lambda rng, n: np.round(rng.normal(1e9, 3.0, n), 2),
    ],
    ids=["heavy-tails", "point-mass", "large-offset"],
)
def test_grid_binning_on_awkward_distributions(draw):
    rng = np.random.default_rng(2)
    edges = quantile_edges(draw(rng, 20_000))
    values = draw(rng, 150_000) * 1.1  # more than one chunk of 65,536
    np.testing.assert_array_equal(count_in_bins(values, edges), reference_slots(values, edges))
    values[70_000:140_000] = np.nan  # one chunk entirely missing
    column = profile_numeric(values, edges)
    present = values[~np.isnan(values)]
    np.testing.assert_array_equal(column.counts, reference_slots(present, edges))
    assert (column.count, column.missing) == (present.size, 70_000)
    assert (column.minimum, column.maximum) == (present.min(), present.max())
    assert column.total == pytest.approx(present.sum(), rel=1e-12)



@pytest.mark.parametrize("seed", [4, 6, 7])  # data on which one dot of a whole chunk on two threads rounds otherwise
def test_sum_of_squares_is_the_same_bits_whatever_the_blas_thread_limit(seed):
    values = np.random.default_rng(seed).normal(5.0, 2.0, 300_000)
    edges = quantile_edges(values[:5000])
    with threadpool_limits(limits=1):
        alone = profile_numeric(values, edges)
    with threadpool_limits(limits=2):
        threaded = profile_numeric(values, edges)
    assert alone == threaded
    assert alone.total_sq == pytest.approx(np.sum((values - alone.center) ** 2), rel=1e-12)

def plain_quantile_edges(values: np.ndarray, bins: int) -> np.ndarray:
    """The definition of quantile_edges written the plain way: numpy's quantiles, else the distinct values."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.empty(0)
    edges = np.unique(np.quantile(finite, np.arange(bins + 1) / bins))
    distinct = np.unique(finite)
    if len(edges) < bins + 1 and len(distinct) <= bins:
        return np.append(distinct, np.nextafter(distinct[-1], np.inf))
    return edges


@settings(max_examples=80, deadline=None)
@given(
    values=st.lists(
        st.one_of(st.floats(-1e9, 1e9), st.sampled_from([0.0, 1.0, 2.5, np.nan, np.inf, -np.inf])),
        min_size=0, max_size=400,
    ),
    bins=st.integers(1, 120),
)
def test_quantile_edges_equal_numpys_quantiles_bit_for_bit(values, bins):
    values = np.array(values, dtype=np.float64)
    np.testing.assert_array_equal(quantile_edges(values, bins), plain_quantile_edges(values, bins))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    rows=st.integers(0, 3000),
    missing=st.floats(0, 1),
    distinct=st.sampled_from([2, 30, 1000, None]),
    bins=st.integers(1, 120),
)
def test_reference_profile_equals_projecting_the_values_on_their_own_edges(seed, rows, missing, distinct, bins):
    rng = np.random.default_rng(seed)
    values = rng.lognormal(3.0, 1.0, rows)
    if distinct is not None:
        values = np.floor(values) % distinct
    values[rng.random(rows) < missing] = np.nan
    reference = reference_numeric(values, bins)
    assert reference == profile_numeric(values, quantile_edges(values, bins))
    if reference.count:
        present = values[np.isfinite(values)]
        np.testing.assert_array_equal(reference.counts, reference_slots(present, reference.edges))


def test_reference_profile_over_several_chunks_with_missing_stretches():
    values = np.random.default_rng(5).gamma(2.0, 3.0, 200_000)
    values[10_000:140_000] = np.nan  # two whole chunks of 65,536 and parts of two more
    values[150_000] = np.inf
    frame = pd.DataFrame({"x": values})
    built = Profile.build(frame, {"x": "numeric"}).columns["x"]
    assert built == profile_numeric(values, quantile_edges(values))
    assert built == Profile.build(frame, {"x": "numeric"}).project(frame).columns["x"]
    assert (built.count, built.missing) == (69_999, 130_001)


@pytest.mark.parametrize(
    "values",
    [
        np.array([-1e308, 1e308, -np.finfo(float).max, 5.0, 3.0]),
        np.array([3.0, np.nextafter(3.0, 4.0), 1e300, -1e300]),
    ],
    ids=["extremes", "near-constant"],
)
def test_binning_far_outside_the_edges(values):
    rng = np.random.default_rng(6)
    for edges in (quantile_edges(rng.normal(3.0, 1.0, 500)), quantile_edges(np.full(20, 3.0))):
        np.testing.assert_array_equal(count_in_bins(values, edges), reference_slots(values, edges))



@pytest.mark.parametrize("middle", [0.0, 0.9], ids=["centred", "off-centre"])
def test_binning_on_edges_across_the_whole_float_range(middle):
    top = np.finfo(float).max
    edges = np.array([-top, middle * top, top])
    values = np.array([-top, top, 0.0, 5.0, -1e300, 0.95 * top])
    np.testing.assert_array_equal(count_in_bins(values, edges), reference_slots(values, edges))
    assert profile_numeric(values, edges).count == len(values)

def test_a_few_distinct_values_get_one_bin_each():
    edges = quantile_edges(np.array([0.0, 1.0, 1.0, 0.0, 1.0]))
    assert len(edges) == 3
    counts = count_in_bins(np.array([0.0, 0.0, 1.0, 1.0, 1.0, 5.0, -1.0]), edges)
    np.testing.assert_array_equal(counts, [1, 2, 3, 1])


def test_constant_column_has_one_bin_that_holds_the_constant():
    frame = pd.DataFrame({"x": [3.0] * 50})
    reference = Profile.build(frame, {"x": "numeric"})
    column = reference.columns["x"]
    np.testing.assert_array_equal(column.counts, [0, 50, 0])
    assert column.std == 0.0 and column.mean == 3.0
    projected = reference.project(pd.DataFrame({"x": [2.0, 3.0, 3.0, 4.0]})).columns["x"]
    np.testing.assert_array_equal(projected.counts, [1, 2, 1])


def test_all_missing_column_has_no_edges_and_counts_everything_in_one_slot():
    reference = Profile.build(pd.DataFrame({"x": [np.nan] * 4}), {"x": "numeric"})
    column = reference.columns["x"]
    assert column.edges.shape == (0,) and column.missing == 4 and column.count == 0
    assert column.minimum is None and column.mean is None and column.std is None
    projected = reference.project(pd.DataFrame({"x": [1.0, np.nan, 7.0]})).columns["x"]
    np.testing.assert_array_equal(projected.counts, [2])
    assert projected.missing == 1
    assert Profile.from_json(reference.to_json()) == reference


def test_missing_values_in_every_dtype():
    frame = pd.DataFrame({
        "x": [1.0, np.nan, np.inf, -np.inf, 2.0],
        "n": pd.array([1, None, 3, 4, None], dtype="Int64"),
        "color": ["a", None, np.nan, "b", "a"],
    })
    profile = Profile.build(frame, SCHEMA)
    assert (profile.columns["x"].missing, profile.columns["x"].count) == (3, 2)
    assert (profile.columns["n"].missing, profile.columns["n"].count) == (2, 3)
    assert profile.columns["color"] == CategoricalProfile(counts={"a": 2, "b": 1}, missing=2)
    as_strings = frame.assign(color=frame["color"].astype("string"))
    assert Profile.build(as_strings, SCHEMA).columns["color"] == profile.columns["color"]


@pytest.mark.parametrize(
    "dtype",
    ["str", pd.StringDtype("pyarrow"), pd.ArrowDtype(pa.string()), pd.ArrowDtype(pa.large_string()), "category"],
    ids=["str", "string[pyarrow]", "arrow-string", "arrow-large-string", "category"],
)
def test_categories_count_the_same_in_every_text_dtype(dtype):
    texts = np.random.default_rng(7).choice(np.array(["a", "b", "rød ✓", None], dtype=object), 5000)
    as_objects = profile_categorical(pd.Series(texts, dtype=object), 5000)
    expected = {name: int(np.sum(texts == name)) for name in ("a", "b", "rød ✓")}
    assert as_objects == CategoricalProfile(counts=expected, missing=int(np.sum(pd.isna(texts))))
    assert profile_categorical(pd.Series(texts).astype(dtype), 5000) == as_objects


def test_categories_of_non_text_arrow_columns_are_named_like_numpy_ones():
    codes = pd.Series([3, 4, None, 4], dtype=pd.ArrowDtype(pa.int64()))
    assert profile_categorical(codes, 4) == CategoricalProfile(counts={"3": 1, "4": 2}, missing=1)
    sliced = pd.Series(["x", None, "y", "x", "y"], dtype=pd.ArrowDtype(pa.string())).iloc[1:4]
    assert profile_categorical(sliced, 3) == CategoricalProfile(counts={"x": 1, "y": 1}, missing=1)


def test_integer_category_codes_match_whether_or_not_a_value_is_missing():
    schema = {"code": "categorical"}
    whole = Profile.build(pd.DataFrame({"code": [3, 4, 4]}), schema)
    with_gap = whole.project(pd.DataFrame({"code": [3.0, np.nan, 4.0]}))
    assert with_gap.columns["code"] == CategoricalProfile(counts={"3": 1, "4": 1}, missing=1)
    assert set(whole.columns["code"].counts) == {"3", "4"}


def test_mean_and_std_match_numpy_even_far_from_zero():
    values = np.random.default_rng(3).normal(1e9, 0.5, 10_000)
    column = Profile.build(pd.DataFrame({"x": values}), {"x": "numeric"}).columns["x"]
    assert column.mean == pytest.approx(values.mean(), rel=1e-15)
    assert column.std == pytest.approx(values.std(), rel=1e-6)
    assert (column.minimum, column.maximum) == (values.min(), values.max())


def test_projection_uses_the_reference_edges():
    reference = Profile.build(sample_frame(2000, seed=4), SCHEMA)
    current_frame = sample_frame(700, seed=5)
    current = reference.project(current_frame)
    x = current.columns["x"]
    np.testing.assert_array_equal(x.edges, reference.columns["x"].edges)
    present = current_frame["x"].dropna().to_numpy()
    np.testing.assert_array_equal(x.counts, reference_slots(present, x.edges))
    assert current.rows == 700


def test_a_column_missing_from_the_batch_projects_as_all_missing():
    reference = Profile.build(sample_frame(100), SCHEMA)
    current = reference.project(sample_frame(30).drop(columns=["x", "color"]))
    assert current.columns["x"].missing == 30 and current.columns["x"].count == 0
    assert current.columns["color"] == CategoricalProfile(counts={}, missing=30)


def test_unknown_column_kind_is_rejected():
    with pytest.raises(ValueError):
        Profile.build(sample_frame(10), {"x": "ordinal"})


def assert_merged_equals_whole(merged: Profile, whole: Profile) -> None:
    """Counts add exactly; float sums may differ in the last bits (addition order)."""
    assert merged.rows == whole.rows
    for name, column in whole.columns.items():
        other = merged.columns[name]
        if isinstance(column, CategoricalProfile):
            assert other == column
            continue
        np.testing.assert_array_equal(other.counts, column.counts)
        assert (other.missing, other.count, other.minimum, other.maximum) == (
            column.missing, column.count, column.minimum, column.maximum)
        assert other.total == pytest.approx(column.total, rel=1e-12, abs=1e-9)
        assert other.total_sq == pytest.approx(column.total_sq, rel=1e-12, abs=1e-9)


def test_profiles_of_two_halves_merge_to_the_profile_of_the_whole():
    reference = Profile.build(sample_frame(3000, seed=6), SCHEMA)
    batch = sample_frame(1001, seed=7)
    merged = reference.project(batch.iloc[:400]).merge(reference.project(batch.iloc[400:]))
    assert_merged_equals_whole(merged, reference.project(batch))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    rows=st.integers(0, 200),
    split=st.floats(0, 1),
    missing=st.floats(0, 1),
)
def test_merge_and_json_round_trip_on_random_frames(seed, rows, split, missing):
    rng = np.random.default_rng(seed)
    frame = sample_frame(rows, seed=seed)
    frame.loc[rng.random(rows) < missing, "x"] = np.nan
    reference = Profile.build(sample_frame(50, seed=seed + 1), SCHEMA, bins=int(rng.integers(1, 40)))
    cut = int(split * rows)
    merged = reference.project(frame.iloc[:cut]).merge(reference.project(frame.iloc[cut:]))
    assert_merged_equals_whole(merged, reference.project(frame))
    assert Profile.from_json(merged.to_json()) == merged


def test_merge_refuses_different_edges_or_columns():
    first = Profile.build(sample_frame(100, seed=1), SCHEMA)
    second = Profile.build(sample_frame(100, seed=2), SCHEMA)
    with pytest.raises(ValueError):
        first.merge(second)
    with pytest.raises(ValueError):
        first.merge(Profile.build(sample_frame(100, seed=1), {"x": "numeric"}))


def test_json_round_trip_is_exact_and_strict():
    frame = sample_frame(500, seed=8)
    frame["color"] = frame["color"].replace({"red": "rød ✓"})
    reference = Profile.build(frame, SCHEMA)
    text = reference.to_json()
    json.loads(text, parse_constant=lambda name: pytest.fail(f"non-standard JSON constant {name}"))
    restored = Profile.from_json(text)
    assert restored == reference
    assert restored.columns["x"].edges.dtype == np.float64
    assert restored.columns["x"].counts.dtype == np.int64
    assert restored.schema == SCHEMA
    assert restored != reference.project(sample_frame(10, seed=9))


def test_numeric_profile_fields_are_plain_python_numbers():
    column = Profile.build(sample_frame(50), SCHEMA).columns["x"]
    assert isinstance(column, NumericProfile)
    for value in (column.missing, column.count):
        assert type(value) is int
    for value in (column.minimum, column.maximum, column.total, column.total_sq):
        assert type(value) is float
