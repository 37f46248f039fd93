from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.spatial.distance import jensenshannon

from app.stats.calibration import chi2_pvalue, sparse_group_pvalue
from app.stats.drift import DRIFTED, STABLE, WATCH, drifted_columns, feature_drift, psi
from app.stats.profile import Profile


def direct_psi(expected_counts, actual_counts, epsilon=1e-4) -> float:
    expected = np.maximum(np.asarray(expected_counts) / np.sum(expected_counts), epsilon)
    actual = np.maximum(np.asarray(actual_counts) / np.sum(actual_counts), epsilon)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def decile_counts(reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Counts in the 10 bins cut at the reference deciles, outer bins open-ended."""
    deciles = np.quantile(reference, np.arange(1, 10) / 10)
    return np.bincount(np.searchsorted(deciles, values, side="right"), minlength=10)


def fine_counts(reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Counts below / in each of 100 reference-quantile bins / above, from raw data."""
    edges = np.quantile(reference, np.arange(101) / 100)
    inside = (values >= edges[0]) & (values <= edges[-1])
    return np.concatenate((
        [np.count_nonzero(values < edges[0])],
        np.histogram(values[inside], bins=edges)[0],
        [np.count_nonzero(values > edges[-1])],
    ))


def numeric_drift_of(reference: np.ndarray, current: np.ndarray):
    profile = Profile.build(pd.DataFrame({"x": reference}), {"x": "numeric"})
    return feature_drift(profile, profile.project(pd.DataFrame({"x": current})))["x"]


def categorical_drift_of(reference, current):
    profile = Profile.build(pd.DataFrame({"c": reference}), {"c": "categorical"})
    return feature_drift(profile, profile.project(pd.DataFrame({"c": current})))["c"]


# --- psi ------------------------------------------------------------------------------


def test_psi_of_known_vectors():
    assert psi([10, 20, 30], [1, 2, 3]) == 0.0
    expected = (0.75 - 0.5) * np.log(0.75 / 0.5) + (0.25 - 0.5) * np.log(0.25 / 0.5)
    assert psi([50, 50], [75, 25]) == pytest.approx(expected, rel=1e-15)


def test_psi_smooths_empty_bins_with_epsilon():
    value = psi([100, 0], [90, 10], epsilon=1e-4)
    expected = (0.9 - 1.0) * np.log(0.9) + (0.1 - 1e-4) * np.log(0.1 / 1e-4)
    assert value == pytest.approx(expected, rel=1e-12)
    assert psi([100, 0], [90, 10], epsilon=1e-2) < value


def test_psi_with_an_empty_side_is_large_and_both_empty_is_zero():
    assert psi([0, 0], [0, 0]) == 0.0
    assert psi([0, 0], [5, 5]) > 5
    with pytest.raises(ValueError):
        psi([1, 2], [1, 2, 3])


# --- numeric statistics against scipy/numpy on the raw data ---------------------------


@pytest.fixture(scope="module")
def shifted_pair():
    rng = np.random.default_rng(10)
    reference = rng.normal(0.0, 1.0, 20_000)
    current = rng.normal(0.4, 1.3, 15_000)
    return reference, current, numeric_drift_of(reference, current)


def test_numeric_psi_equals_a_direct_decile_computation(shifted_pair):
    reference, current, result = shifted_pair
    expected = direct_psi(decile_counts(reference, reference), decile_counts(reference, current))
    assert result.psi == pytest.approx(expected, rel=1e-12)


def test_js_equals_scipy_on_the_groups_psi_uses(shifted_pair):
    reference, current, result = shifted_pair
    expected = jensenshannon(decile_counts(reference, reference), decile_counts(reference, current), base=2)
    assert result.js == pytest.approx(expected, rel=1e-9)
    assert result.groups == 10


def test_binned_ks_is_within_one_bin_share_below_scipy(shifted_pair):
    reference, current, result = shifted_pair
    exact = stats.ks_2samp(reference, current)
    largest_slot_share = max(
        fine_counts(reference, reference).max() / len(reference),
        fine_counts(reference, current).max() / len(current),
    )
    assert 0 <= exact.statistic - result.ks <= largest_slot_share
    assert exact.statistic - result.ks <= 0.01  # the stated tolerance for 100 quantile bins
    assert result.ks_pvalue < 1e-12 and exact.pvalue < 1e-12


def test_ks_pvalue_uses_the_effective_sample_size():
    rng = np.random.default_rng(11)
    reference, current = rng.normal(size=3000), rng.normal(0.05, 1, 2000)
    result = numeric_drift_of(reference, current)
    effective_n = round(3000 * 2000 / 5000)
    assert result.ks_pvalue == pytest.approx(stats.kstwo.sf(result.ks, effective_n), rel=1e-12)
    exact = stats.ks_2samp(reference, current, method="asymp")
    assert abs(result.ks - exact.statistic) <= 0.01
    assert result.ks_pvalue >= exact.pvalue  # a lower statistic is conservative

    large = numeric_drift_of(rng.normal(size=30_000), rng.normal(0.02, 1, 30_000))
    asymptotic = stats.kstwobign.sf(large.ks * np.sqrt(15_000))  # effective n above 10,000
    assert large.ks_pvalue == pytest.approx(asymptotic, rel=1e-12)


def wasserstein_error_bound(reference: np.ndarray, current: np.ndarray) -> float:
    """Largest error of spreading each slot's mass evenly: sum of width x both shares."""
    edges = np.quantile(reference, np.arange(101) / 100)
    positions = np.concatenate(([min(reference.min(), current.min())], edges,
                                [max(reference.max(), current.max())]))
    shares = fine_counts(reference, reference) / len(reference) + fine_counts(reference, current) / len(current)
    return float(np.sum(np.diff(positions) * shares))


def test_wasserstein_matches_scipy_within_the_binning_bound(shifted_pair):
    reference, current, result = shifted_pair
    exact = stats.wasserstein_distance(reference, current) / reference.std()
    assert abs(result.wasserstein - exact) <= wasserstein_error_bound(reference, current) / reference.std()
    assert result.wasserstein == pytest.approx(exact, abs=0.03)  # stated tolerance, normal data


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    shift=st.floats(-3, 3),
    scale=st.floats(0.2, 5),
    reference_rows=st.integers(300, 3000),
    current_rows=st.integers(1, 3000),
)
def test_numeric_statistics_on_random_data(seed, shift, scale, reference_rows, current_rows):
    rng = np.random.default_rng(seed)
    reference = rng.gamma(2.0, 1.0, reference_rows)
    current = rng.gamma(2.0, scale, current_rows) + shift
    result = numeric_drift_of(reference, current)

    ref_fine, cur_fine = fine_counts(reference, reference), fine_counts(reference, current)
    if current_rows >= 50:  # 5 expected rows in each of the 10 decile groups
        ref_groups, cur_groups = decile_counts(reference, reference), decile_counts(reference, current)
        assert result.psi == pytest.approx(direct_psi(ref_groups, cur_groups), rel=1e-9)
        assert result.js == pytest.approx(jensenshannon(ref_groups, cur_groups, base=2), rel=1e-9, abs=1e-12)
    else:
        assert result.groups == max(1, current_rows // 5)
    exact_ks = stats.ks_2samp(reference, current).statistic
    slot_share = max(ref_fine.max() / reference_rows, cur_fine.max() / current_rows)
    assert -1e-12 <= exact_ks - result.ks <= slot_share + 1e-12
    exact_w = stats.wasserstein_distance(reference, current)
    bound = wasserstein_error_bound(reference, current)
    assert abs(result.wasserstein * reference.std() - exact_w) <= bound + 1e-9
    outside = np.mean((current < reference.min()) | (current > reference.max()))
    assert result.out_of_range_share == pytest.approx(outside)


def test_tied_reference_groups_keep_out_of_range_values_in_the_outer_groups():
    rng = np.random.default_rng(14)
    reference = (rng.random(2000) < 0.05).astype(float)  # 0/1 with 95% zeros
    current = np.r_[np.zeros(900), np.ones(60), np.full(40, -1.0), np.full(30, 2.0)]
    result = numeric_drift_of(reference, current)

    def two_groups(values):  # (-inf, 1) and [1, inf): the only inner cut of a 0/1 column
        return [np.sum(values < 1), np.sum(values >= 1)]

    assert result.psi == pytest.approx(direct_psi(two_groups(reference), two_groups(current)), rel=1e-12)
    assert result.out_of_range_share == pytest.approx(70 / 1030)


def test_wasserstein_area_of_a_crossing_segment_is_two_triangles():
    from app.stats.drift import _area_of_absolute_linear

    widths, start, end = np.array([2.0, 1.0, 3.0]), np.array([1.0, 0.5, 0.0]), np.array([-1.0, 0.5, -2.0])
    assert _area_of_absolute_linear(widths, start, end) == pytest.approx(1.0 + 0.5 + 3.0)


# --- categorical statistics -----------------------------------------------------------


@pytest.fixture(scope="module")
def categorical_pair():
    rng = np.random.default_rng(12)
    reference = rng.choice(["a", "b", "c", "d"], 5000, p=[0.4, 0.3, 0.2, 0.1])
    current = rng.choice(
        np.array(["a", "b", "c", "new", "other", None], dtype=object), 4000, p=[0.3, 0.3, 0.2, 0.1, 0.05, 0.05]
    )
    return reference, current, categorical_drift_of(reference, current)


def category_table(reference, current):
    """Rows: reference, current; columns: every category either side has, by name."""
    current = current[pd.notna(current)]
    names = sorted(set(reference) | set(current))
    ref = [np.sum(reference == name) for name in names]
    cur = [np.sum(current == name) for name in names]
    return np.array(ref), np.array(cur)


def test_categorical_psi_and_js_count_new_categories_each_on_its_own(categorical_pair):
    reference, current, result = categorical_pair
    ref, cur = category_table(reference, current)
    assert result.psi == pytest.approx(direct_psi(ref, cur), rel=1e-12)
    assert result.js == pytest.approx(jensenshannon(ref, cur, base=2), rel=1e-9)
    present = current[pd.notna(current)]
    assert result.unseen_share == pytest.approx(np.mean(~np.isin(present, ["a", "b", "c", "d"])))
    assert result.missing_change == pytest.approx(np.mean(pd.isna(current)))
    assert result.ks is None and result.wasserstein is None and result.out_of_range_share is None


def test_change_pvalue_combines_scipy_chi2_and_fisher_for_the_unseen_group():
    rng = np.random.default_rng(12)
    reference = rng.choice(["a", "b", "c", "d"], 5000, p=[0.4, 0.3, 0.2, 0.1])
    current = rng.choice(["a", "b", "c", "d", "new"], 1000, p=[0.38, 0.3, 0.2, 0.119, 0.001])
    result = categorical_drift_of(reference, current)
    ref, cur = category_table(reference, current)
    assert result.groups == 5 and cur[-1] > 0
    seen = stats.chi2_contingency(np.vstack((ref[:-1], cur[:-1])), correction=False).pvalue  # "new" sorts last
    unseen = stats.fisher_exact([[cur[-1], cur[:-1].sum()], [0, ref.sum()]], alternative="greater").pvalue
    assert result.chi2_pvalue == pytest.approx(min(1.0, 2 * min(seen, unseen)), rel=1e-9)

    rng = np.random.default_rng(13)
    mild_ref, mild_cur = rng.choice(["x", "y"], 300), rng.choice(["x", "y"], 200, p=[0.6, 0.4])
    mild = categorical_drift_of(mild_ref, mild_cur)
    table = [[np.sum(mild_ref == "x"), np.sum(mild_ref == "y")],
             [np.sum(mild_cur == "x"), np.sum(mild_cur == "y")]]
    assert mild.chi2_pvalue == pytest.approx(stats.chi2_contingency(table, correction=False).pvalue, rel=1e-9)


@settings(max_examples=60, deadline=None)
@given(
    reference=st.lists(st.integers(0, 10**6), min_size=1, max_size=30),
    current=st.lists(st.integers(0, 10**6), min_size=30, max_size=30),
)
def test_chi2_pvalue_equals_scipy_on_any_table(reference, current):
    reference, current = np.array(reference), np.array(current[: len(reference)])
    table = np.vstack((reference, current))
    table = table[:, table.sum(axis=0) > 0]
    result = chi2_pvalue(reference, current)
    if table.size == 0 or table.sum(axis=1).min() == 0:
        assert result is None
    elif table.shape[1] == 1:
        assert result == 1.0
    else:
        assert result == pytest.approx(stats.chi2_contingency(table, correction=False).pvalue, rel=1e-12, abs=1e-300)


def test_missing_change_is_current_share_minus_reference_share():
    reference = np.array(["a", None, "b", "a"], dtype=object)
    current = np.array(["a", None, None, None, "b"], dtype=object)
    assert categorical_drift_of(reference, current).missing_change == pytest.approx(0.6 - 0.25)
    numeric = numeric_drift_of(np.array([1.0, 2.0, np.nan, 4.0]), np.array([1.0, 2.0]))
    assert numeric.missing_change == pytest.approx(-0.25)


# --- known shift ----------------------------------------------------------------------

KNOWN_SCHEMA = {
    "income": "numeric", "latency": "numeric", "channel": "categorical", "country": "categorical",
    "age": "numeric", "segment": "categorical", "clicks": "numeric",
}


def known_frame(rows: int, seed: int, shifted: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    channel_shares = [0.1, 0.2, 0.3, 0.4] if shifted else [0.4, 0.3, 0.2, 0.1]
    countries = ["de", "fr", "it", "es", "pt"] if shifted else ["de", "fr", "it"]
    return pd.DataFrame({
        "income": rng.normal(51.0 if shifted else 50.0, 1.0, rows),        # mean shift
        "latency": rng.normal(100.0, 20.0 if shifted else 10.0, rows),     # variance change
        "channel": rng.choice(["web", "app", "shop", "phone"], rows, p=channel_shares),
        "country": rng.choice(countries, rows),                            # new categories
        "age": rng.integers(18, 90, rows),
        "segment": rng.choice(["a", "b"], rows, p=[0.7, 0.3]),
        "clicks": rng.poisson(3.0, rows),
    })


def test_known_shift_flags_exactly_the_shifted_columns():
    reference = Profile.build(known_frame(100_000, seed=20), KNOWN_SCHEMA)
    results = feature_drift(reference, reference.project(known_frame(50_000, seed=21, shifted=True)))
    assert set(drifted_columns(results)) == {"income", "latency", "channel", "country"}
    for name in ("age", "segment", "clicks"):
        assert results[name].status == STABLE
    assert results["country"].unseen_share == pytest.approx(0.4, abs=0.01)
    assert results["latency"].out_of_range_share > 0.01


def test_two_samples_of_the_same_distribution_flag_nothing():
    reference = Profile.build(known_frame(100_000, seed=22), KNOWN_SCHEMA)
    results = feature_drift(reference, reference.project(known_frame(100_000, seed=23)))
    assert drifted_columns(results) == []
    assert all(result.status == STABLE for result in results.values())
    assert max(result.psi for result in results.values()) < 0.01


def test_drifted_columns_are_sorted_by_excess_psi_and_thresholds_set_status():
    reference = Profile.build(known_frame(20_000, seed=24), KNOWN_SCHEMA)
    results = feature_drift(reference, reference.project(known_frame(20_000, seed=25, shifted=True)))
    names = drifted_columns(results)
    excess = [results[name].excess_psi for name in names]
    assert excess == sorted(excess, reverse=True)

    income_excess = results["income"].excess_psi
    relaxed = feature_drift(reference, reference.project(known_frame(20_000, seed=25, shifted=True)),
                            psi_threshold=income_excess + 1, psi_watch=income_excess)
    assert relaxed["income"].status == WATCH
    assert "income" not in drifted_columns(relaxed)


def test_results_serialise_to_json():
    reference = Profile.build(known_frame(1000, seed=26), KNOWN_SCHEMA)
    results = feature_drift(reference, reference.project(known_frame(500, seed=27, shifted=True)))
    decoded = json.loads(json.dumps({name: result.to_dict() for name, result in results.items()}))
    assert decoded["income"]["status"] == results["income"].status
    assert decoded["channel"]["ks"] is None


# --- edge cases -----------------------------------------------------------------------


def test_a_constant_column_that_starts_varying_is_drifted():
    steady = numeric_drift_of(np.full(1000, 5.0), np.full(300, 5.0))
    assert steady.status == STABLE and steady.psi == 0.0 and steady.wasserstein is None
    moved = numeric_drift_of(np.full(1000, 5.0), np.r_[np.full(200, 5.0), np.full(100, 6.0)])
    assert moved.status == DRIFTED
    assert moved.out_of_range_share == pytest.approx(1 / 3)
    assert moved.ks == pytest.approx(1 / 3)


def test_a_column_that_empties_or_fills_is_drifted():
    emptied = numeric_drift_of(np.arange(100.0), np.full(50, np.nan))
    assert emptied.status == DRIFTED and emptied.missing_change == 1.0 and emptied.ks is None
    filled = numeric_drift_of(np.full(100, np.nan), np.arange(50.0))
    assert filled.status == DRIFTED and filled.out_of_range_share == 1.0 and filled.js == 1.0
    assert categorical_drift_of(np.array([None] * 5, dtype=object), np.array(["a", "b"])).status == DRIFTED


def test_an_empty_batch_does_not_crash():
    reference = Profile.build(known_frame(500, seed=28), KNOWN_SCHEMA)
    results = feature_drift(reference, reference.project(known_frame(0, seed=29)))
    assert results["income"].ks is None and results["channel"].chi2_pvalue is None


def test_profiles_that_do_not_match_are_refused():
    reference = Profile.build(known_frame(500, seed=30), KNOWN_SCHEMA)
    other = Profile.build(known_frame(500, seed=31), KNOWN_SCHEMA)
    with pytest.raises(ValueError):
        feature_drift(reference, other)
    with pytest.raises(ValueError):
        feature_drift(reference, Profile.build(known_frame(10, seed=32), {"income": "numeric"}))


@settings(max_examples=200, deadline=None)
@given(total=st.integers(2, 5000), data=st.data())
def test_sparse_group_pvalue_equals_scipy_hypergeometric_tail(total, data):
    current_size = data.draw(st.integers(1, total - 1))
    pooled = data.draw(st.integers(0, total))
    current_count = data.draw(st.integers(max(0, current_size + pooled - total), min(pooled, current_size)))
    result = sparse_group_pvalue(pooled - current_count, current_count, total - current_size, current_size)
    expected = stats.hypergeom.sf(current_count - 1, total, pooled, current_size)
    assert result == pytest.approx(expected, rel=1e-9, abs=1e-300)
