"""Drift alarms calibrated to the sample sizes: rare when nothing changed, at any batch size.

Unshifted batches of 50 to 10,000 rows against a 100,000-row reference must
flag at most 1% of their columns (a fixed 0.2 PSI threshold flags about half of
them at 50 rows), a known shift must still be found, and the null distribution
the decision relies on is checked against a Monte Carlo simulation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from app.stats.calibration import (benjamini_hochberg, chi2_pvalue, largest_excess_pvalue, numeric_groups,
                                   pack_rare_categories, psi_floor)
from app.stats.drift import DRIFTED, STABLE, categorical_drift, drifted_columns, feature_drift, psi
from app.stats.profile import CategoricalProfile, Profile, profile_numeric, reference_numeric

REFERENCE_ROWS = 100_000
NUMERIC = [f"num_{index:02d}" for index in range(16)]
CATEGORICAL = ["channel", "tier", "sku", "flag_text"]
SCHEMA = {**dict.fromkeys(NUMERIC, "numeric"), **dict.fromkeys(CATEGORICAL, "categorical")}
SHIFTED = ["num_00", "num_01", "num_02", "channel", "tier"]
SKU_SHARES = 1 / np.arange(1, 201) ** 0.8 / np.sum(1 / np.arange(1, 201) ** 0.8)  # 200 levels, Zipf-like


def make_frame(rows: int, seed: int, shifted: bool = False) -> pd.DataFrame:
    """16 numeric columns (normal, skewed, a rare 0/1, a date-like ordinal, counts, ...) and 4 categorical."""
    rng = np.random.default_rng(seed)
    columns = {
        "num_00": rng.normal(11.5 if shifted else 10.0, 2.0, rows),          # mean shift of 0.75 std
        "num_01": rng.lognormal(1.0, 1.0 if shifted else 0.5, rows),         # spread doubles
        "num_02": rng.uniform(-5.0, 8.0 if shifted else 5.0, rows),          # range widens
        "num_03": (rng.random(rows) < 0.02).astype(float),                   # rare 0/1
        "num_04": rng.lognormal(0.0, 1.5, rows),                             # heavily skewed
        "num_05": rng.integers(738_000, 739_500, rows).astype(float),        # date-like ordinal (day numbers)
        "num_06": rng.poisson(0.3, rows).astype(float),                      # sparse counts, mostly zero
        "num_07": rng.gamma(2.0, 3.0, rows),
    }
    for index in range(8, 16):
        columns[f"num_{index:02d}"] = rng.normal(index, 1.0 + index % 3, rows)
    channel_shares = [0.1, 0.2, 0.3, 0.4] if shifted else [0.4, 0.3, 0.2, 0.1]
    columns["channel"] = rng.choice(np.array(["web", "app", "shop", "phone"]), rows, p=channel_shares)
    tiers = np.array(["gold", "silver", "bronze", "new_a", "new_b"])
    columns["tier"] = rng.choice(tiers, rows, p=[0.3, 0.2, 0.2, 0.15, 0.15] if shifted else [0.4, 0.3, 0.3, 0, 0])
    columns["sku"] = rng.choice(np.array([f"sku_{index:03d}" for index in range(200)]), rows, p=SKU_SHARES)
    columns["flag_text"] = rng.choice(np.array(["yes", "no"]), rows, p=[0.03, 0.97])
    return pd.DataFrame(columns)


@pytest.fixture(scope="module")
def reference() -> Profile:
    return Profile.build(make_frame(REFERENCE_ROWS, seed=1), SCHEMA)


def alarms(reference: Profile, rows: int, seeds: range, shifted: bool = False) -> list[list[str]]:
    """The drifted columns of each batch of ``rows`` rows, one batch per seed."""
    return [drifted_columns(feature_drift(reference, reference.project(make_frame(rows, seed, shifted))))
            for seed in seeds]


# --- false alarms -------------------------------------------------------------------------

# Seeds per batch size: 600 column-batches at 50 rows, 80 at 10,000.
NULL_SEEDS = {50: 30, 200: 15, 1_000: 8, 10_000: 4}


@pytest.mark.parametrize("rows", sorted(NULL_SEEDS))
def test_unshifted_batches_flag_at_most_one_percent_of_their_columns(reference, rows):
    flagged = alarms(reference, rows, range(100, 100 + NULL_SEEDS[rows]))
    column_batches = len(flagged) * len(SCHEMA)
    assert sum(map(len, flagged)) / column_batches <= 0.01
    # The family of columns is corrected for: few batches flag anything at all.
    assert sum(1 for names in flagged if names) / len(flagged) <= 0.05


def with_dates(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """``frame`` with columns derived from a timestamp spread over one year: many ties, few distinct values."""
    rng = np.random.default_rng(seed)
    stamps = pd.to_datetime(1_700_000_000 + rng.integers(0, 365 * 86_400, len(frame)), unit="s")
    return frame.assign(weekday=stamps.day_of_week.to_numpy(float), month=stamps.month.to_numpy(float),
                        day_of_year=stamps.day_of_year.to_numpy(float), hour=stamps.hour.to_numpy(float))


DATED_SCHEMA = {**SCHEMA, **dict.fromkeys(["weekday", "month", "day_of_year", "hour"], "numeric")}


@pytest.mark.parametrize(("rows", "batches"), [(50, 250), (300, 120)])
def test_monte_carlo_false_alarms_stay_under_the_rate_with_rare_wide_and_date_columns(rows, batches):
    """Unshifted batches (a rare 0/1, a 200-level categorical, date-derived columns, 24 columns in all):
    at most 1% of column-batches flagged, and the batches flagging anything within the family rate."""
    reference = Profile.build(with_dates(make_frame(REFERENCE_ROWS, seed=1), seed=2), DATED_SCHEMA)
    flagged = [drifted_columns(feature_drift(reference, reference.project(with_dates(make_frame(rows, seed), seed))))
               for seed in range(20_000, 20_000 + batches)]
    assert sum(map(len, flagged)) / (batches * len(DATED_SCHEMA)) <= 0.01
    family_rate = 0.01
    assert np.mean([bool(names) for names in flagged]) <= family_rate + 3 * np.sqrt(family_rate * (1 - family_rate) / batches)


def test_a_200_level_categorical_is_not_drifted_at_1000_rows(reference):
    statuses = [feature_drift(reference, reference.project(make_frame(1_000, seed)))["sku"].status
                for seed in range(300, 320)]
    assert statuses == [STABLE] * 20


def test_batches_of_10_to_20_rows_rarely_raise_drift(reference):
    flagged = [names for rows in (10, 15, 20) for names in alarms(reference, rows, range(400, 410))]
    assert sum(1 for names in flagged if names) / len(flagged) <= 0.05


# --- power --------------------------------------------------------------------------------


@pytest.mark.parametrize(("rows", "least_power"), [(50, 0.9), (200, 0.9), (1_000, 0.98), (10_000, 1.0)])
def test_a_known_shift_is_found(reference, rows, least_power):
    flagged = alarms(reference, rows, range(500, 510), shifted=True)
    found = sum(len(set(names) & set(SHIFTED)) for names in flagged)
    assert found / (len(flagged) * len(SHIFTED)) >= least_power
    assert all(set(names) <= set(SHIFTED) for names in flagged)


def test_a_rare_binary_column_that_turns_common_is_drifted_even_at_50_rows(reference):
    frame = make_frame(50, seed=600)
    frame["num_03"] = np.r_[np.ones(30), np.zeros(20)]
    result = feature_drift(reference, reference.project(frame))["num_03"]
    assert result.status == DRIFTED and result.chi2_pvalue < 1e-10


# --- the null distribution against Monte Carlo ----------------------------------------------


@pytest.fixture(scope="module")
def normal_reference():
    return reference_numeric(np.random.default_rng(2).normal(size=REFERENCE_ROWS))


@pytest.mark.parametrize("rows", [50, 200])
def test_the_test_of_change_is_calibrated_on_identical_distributions(normal_reference, rows):
    """The chi-square's P(p < alpha) is alpha (within Monte Carlo error), the combined test's at most alpha;
    from 20 rows a group PSI follows its chi-square form."""
    rng = np.random.default_rng(rows)
    runs = 1_500
    chi2, combined, psis, expected = np.empty(runs), np.empty(runs), np.empty(runs), np.empty(runs)
    for run in range(runs):
        current = profile_numeric(rng.normal(size=rows), normal_reference.edges)
        grouped = numeric_groups(normal_reference, current)
        chi2[run] = chi2_pvalue(grouped.reference, grouped.current)
        combined[run] = grouped.pvalue()
        psis[run] = psi(grouped.reference, grouped.current)
        expected[run] = grouped.expected_psi()
    assert grouped.groups == 10 and not grouped.sparse.any()
    for alpha in (0.05, 0.01):
        error = 4 * np.sqrt(alpha * (1 - alpha) / runs)
        assert abs(np.mean(chi2 < alpha) - alpha) <= error
        assert np.mean(combined < alpha) <= alpha + error
    if rows >= 200:  # at 5 rows a group (50 rows) PSI runs about 25% above its large-sample form
        assert np.mean(psis) == pytest.approx(expected.mean(), rel=0.1)
        # PSI's 99th percentile against the chi-square one scaled to PSI (PSI ~ chi-square / effective size).
        effective = 1 / (1 / REFERENCE_ROWS + 1 / rows)
        assert np.quantile(psis, 0.99) == pytest.approx(stats.chi2.isf(0.01, 9) / effective, rel=0.15)


@pytest.mark.parametrize("rows", [50, 1_000])
def test_a_200_level_categorical_test_is_calibrated(rows):
    """Within 1.5 x alpha: many groups of about 5 expected rows make the chi-square a little liberal."""
    rng = np.random.default_rng(rows + 1)
    reference_counts = np.append(rng.multinomial(REFERENCE_ROWS, SKU_SHARES), 0)  # last: the unseen bucket
    runs = 1_000
    pvalues = np.empty(runs)
    for run in range(runs):
        current = np.append(rng.multinomial(rows, SKU_SHARES), 0)
        pvalues[run] = pack_rare_categories(reference_counts, current).pvalue()
    for alpha in (0.05, 0.01):
        assert np.mean(pvalues < alpha) <= 1.5 * alpha + 3 * np.sqrt(alpha * (1 - alpha) / runs)
    assert np.mean(pvalues < 0.05) >= 0.025  # calibrated, not merely conservative


SHOPS = np.array([f"shop_{index:03d}" for index in range(200)])


def shop_profile(rng, rows: int, shares: np.ndarray, new_rows: int = 0) -> CategoricalProfile:
    values = rng.choice(SHOPS, rows, p=shares)
    values[:new_rows] = "shop_new"
    names, counts = np.unique(values, return_counts=True)
    return CategoricalProfile(dict(zip(names.tolist(), counts.tolist())), missing=0)


@pytest.mark.parametrize("rows", [50, 400])
def test_levels_a_small_reference_never_saw_are_not_drift(rows):
    """A 400-row reference of a 200-level column misses many rare levels; batches of the same
    distribution then have 10-20% of rows in levels it never saw, and were drifted nearly every time."""
    rng = np.random.default_rng(rows + 7)
    runs = 600
    pvalues = np.empty(runs)
    for run in range(runs):
        shares = rng.dirichlet(np.full(len(SHOPS), 0.5))
        reference, current = shop_profile(rng, 400, shares), shop_profile(rng, rows, shares)
        pvalues[run] = categorical_drift(reference, current)["chi2_pvalue"]
    for alpha in (0.05, 0.01):
        assert np.mean(pvalues < alpha) <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / runs)


@pytest.mark.parametrize("reference_rows", [400, REFERENCE_ROWS])
def test_a_new_level_in_a_tenth_of_a_50_row_batch_is_found(reference_rows):
    """Packed with the other rare levels it would be diluted; the largest single excess finds it."""
    rng = np.random.default_rng(reference_rows)
    runs = 200
    found = 0
    for _ in range(runs):
        shares = rng.dirichlet(np.full(len(SHOPS), 0.5))
        reference, current = shop_profile(rng, reference_rows, shares), shop_profile(rng, 50, shares, new_rows=5)
        found += categorical_drift(reference, current)["chi2_pvalue"] < 0.01
    assert found / runs >= 0.95


def test_the_largest_excess_is_scipys_hypergeometric_tail_times_the_categories():
    reference, current = np.array([30, 0, 4, 9]), np.array([2, 6, 0, 3])
    tails = stats.hypergeom.sf(current - 1, reference.sum() + current.sum(), reference + current, current.sum())
    bonferroni = tails[current > 0].min() * np.count_nonzero(current)
    assert largest_excess_pvalue(reference, current, int(reference.sum()), int(current.sum())) == pytest.approx(bonferroni, rel=1e-9)
    assert largest_excess_pvalue(reference, np.zeros(4, dtype=int), int(reference.sum()), 0) is None


def test_benjamini_hochberg_steps_up_and_controls_the_family_when_nothing_changed():
    assert benjamini_hochberg({"a": 0.01, "b": 0.04, "c": 0.2}, 0.05) == {"a"}  # 0.04 > 2 * 0.05 / 3
    # Step-up: "a" misses its own bound (0.02 > 0.05 / 3), and is rejected with the 3rd, which meets 0.05.
    assert benjamini_hochberg({"a": 0.02, "b": 0.025, "c": 0.04, "d": None}, 0.05) == {"a", "b", "c"}
    rng = np.random.default_rng(3)
    family = [benjamini_hochberg(dict(enumerate(rng.random(20))), 0.05) for _ in range(4_000)]
    assert np.mean([bool(rejected) for rejected in family]) <= 0.05 + 4 * np.sqrt(0.05 * 0.95 / 4_000)
    # 5 of 20 hypotheses false: the share of true ones among the rejected stays under the rate on average.
    false_shares = []
    for _ in range(2_000):
        pvalues = {**dict(enumerate(rng.random(15))), **{f"moved_{index}": value for index, value in enumerate(rng.random(5) * 1e-4)}}
        rejected = benjamini_hochberg(pvalues, 0.05)
        false_shares.append(sum(1 for name in rejected if isinstance(name, int)) / max(len(rejected), 1))
    assert np.mean(false_shares) <= 0.05 + 4 * np.std(false_shares) / np.sqrt(2_000)


def test_the_psi_floor_is_the_lower_tail_of_psi_for_a_change_of_the_threshold():
    """Monte Carlo: batches from a distribution whose decile PSI is 0.2 fall under the floor about 5% of the time."""
    reference = reference_numeric(np.random.default_rng(4).normal(size=REFERENCE_ROWS))
    rng = np.random.default_rng(5)
    for rows in (200, 2_000):
        shift = 0.44  # a mean shift of 0.44 standard deviations: decile PSI about 0.2
        below, true_psi = [], None
        large = numeric_groups(reference, profile_numeric(rng.normal(shift, size=400_000), reference.edges))
        true_psi = psi(large.reference, large.current)
        for _ in range(600):
            grouped = numeric_groups(reference, profile_numeric(rng.normal(shift, size=rows), reference.edges))
            floor = psi_floor(true_psi, grouped.groups, REFERENCE_ROWS, rows)
            below.append(psi(grouped.reference, grouped.current) < floor)
        assert 0.01 <= np.mean(below) <= 0.1
    assert psi_floor(0.2, 10, REFERENCE_ROWS, 1_000_000) == pytest.approx(0.2, abs=0.01)
    assert psi_floor(0.2, 10, REFERENCE_ROWS, 50) < 9 * (1 / REFERENCE_ROWS + 1 / 50)  # under sampling's own PSI


def test_a_10_row_reference_against_10_row_batches_rarely_raises_drift():
    """A monitor bootstrapped on one small file: a fixed PSI threshold flagged every batch."""
    schema = {"x1": "numeric", "x2": "numeric", "x3": "numeric", "color": "categorical"}

    def small(seed: int, rows: int) -> pd.DataFrame:
        rng = np.random.default_rng(seed)
        return pd.DataFrame({**{name: rng.normal(size=rows) for name in ("x1", "x2", "x3")},
                             "color": rng.choice(["red", "green", "blue"], rows)})

    for rows in (10, 20):
        reference = Profile.build(small(0, rows), schema)
        flagged = [drifted_columns(feature_drift(reference, reference.project(small(seed, rows))))
                   for seed in range(1, 41)]
        assert sum(1 for names in flagged if names) / len(flagged) <= 0.05
