"""Univariate drift of each column: a reference profile against a current one.

Both profiles must share numeric edges (the current one is
``reference.project(batch)``), so every statistic is computed from bin counts:
no raw rows are needed and the cost does not depend on the batch size.

Groups and the test of change live in :mod:`app.stats.calibration`: every
statistic that compares shares (PSI, Jensen-Shannon, chi-square) is computed on
the same groups, fixed from the reference's counts and the two sample sizes.

Drift decision (see docs/drift.md). A column is drifted when both hold:
  * the change is beyond sampling: the column's test of change
    (``calibration.change_pvalue``) rejects "same distribution" after the
    Benjamini-Hochberg correction across the batch's columns at
    ``false_alarm_rate`` (the chance that a batch drawn from the reference
    distribution flags any column at all);
  * the change may matter: its PSI does not show, at these sample sizes, a
    change smaller than ``psi_threshold`` (``psi_watch`` for watch), that is
    PSI reaches ``calibration.psi_floor``. On large samples that floor is the
    threshold plus the PSI sampling alone gives; on a batch of 50 rows it is
    under what sampling alone gives, and a change beyond sampling is drifted.

Other statistics (the KS p-value also takes part in the test of change):
  * KS statistic of numeric columns: the largest gap between the two CDFs at
    the fine edges. This never exceeds the exact two-sample statistic
    (``scipy.stats.ks_2samp``) and falls short of it by at most the largest
    share of either sample in one fine slot (about 0.01 with 100
    reference-quantile bins, unless the current data piles up inside one
    reference bin). The p-value is the KS distribution's at the effective
    sample size ``n_ref * n_cur / (n_ref + n_cur)`` (as in
    ``ks_2samp(method="asymp")``; the asymptotic Kolmogorov form above an
    effective size of 10,000); being based on a lower statistic it is conservative.
  * Wasserstein-1 distance of numeric columns: the area between the two CDFs,
    with each slot's mass spread evenly across it (slots outside the edges
    reach to the observed minimum/maximum), divided by the reference standard
    deviation. Its error is at most the sum over slots of width x (reference
    share + current share).

Missing values are left out of the distributions and reported as
``missing_change``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import special, stats

from app.stats.calibration import (
    GroupedCounts,
    benjamini_hochberg,
    change_pvalue,
    missing_share,
    numeric_groups,
    pack_rare_categories,
    psi_floor,
)
from app.stats.profile import CATEGORICAL, NUMERIC, CategoricalProfile, NumericProfile, Profile

STABLE = "stable"
WATCH = "watch"
DRIFTED = "drifted"

PSI_EPSILON = 1e-4
DEFAULT_FALSE_ALARM_RATE = 0.01
# Above this effective sample size the exact KS distribution gets slow (tens of
# ms per call); its asymptotic form is then within 1% where p < 0.5.
EXACT_KS_MAX_N = 10_000


@dataclass
class FeatureDrift:
    """Drift statistics of one column; fields that do not apply to its kind are None.

    Shares and ``missing_change`` are fractions in [0, 1] (``missing_change`` in
    [-1, 1]: current missing share minus reference missing share). ``psi``,
    ``js`` and ``chi2_pvalue`` are computed on the same ``groups`` groups;
    ``expected_psi`` is the PSI two samples of these sizes show on average when
    nothing changed. ``chi2_pvalue`` is the column's test of change on those
    groups (``GroupedCounts.pvalue``), before the correction across columns.
    """

    column: str
    kind: str
    psi: float
    expected_psi: float
    js: float
    chi2_pvalue: float | None
    groups: int
    ks: float | None
    ks_pvalue: float | None
    wasserstein: float | None
    unseen_share: float | None
    out_of_range_share: float | None
    missing_change: float
    status: str

    @property
    def excess_psi(self) -> float:
        """PSI beyond what sampling alone gives at these sizes: the effect the thresholds judge."""
        return self.psi - self.expected_psi

    def to_dict(self) -> dict[str, object]:
        return asdict(self)



def psi(expected_counts, actual_counts, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index between two count vectors over the same bins.

    PSI = sum((a - e) * ln(a / e)) over bins, with ``e`` and ``a`` the bins'
    shares of their totals. Shares below ``epsilon`` (empty bins) are raised to
    ``epsilon`` before the sum, without renormalising, so an empty bin adds a
    large but finite term: a bin holding 10% of one side and nothing of the
    other adds about 0.1 * ln(0.1 / 1e-4) = 0.69. A side with no values at all
    has every share at ``epsilon``, so a column that empties (or fills) has a large PSI.
    """
    expected = _smoothed_shares(expected_counts, epsilon)
    actual = _smoothed_shares(actual_counts, epsilon)
    if expected.shape != actual.shape:
        raise ValueError("psi needs two count vectors over the same bins")
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def js_distance(first_counts, second_counts) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between two count vectors.

    Equals ``scipy.spatial.distance.jensenshannon(first, second, base=2)``;
    defined here as 0 when both sides are empty and 1 when only one is.
    """
    first = np.asarray(first_counts, dtype=np.float64)
    second = np.asarray(second_counts, dtype=np.float64)
    first_total, second_total = first.sum(), second.sum()
    if first_total == 0 or second_total == 0:
        return 0.0 if first_total == second_total else 1.0
    first, second = first / first_total, second / second_total
    middle = (first + second) / 2
    divergence = (_relative_entropy(first, middle) + _relative_entropy(second, middle)) / 2
    return float(np.sqrt(max(divergence, 0.0) / np.log(2)))


def feature_drift(
    reference: Profile,
    current: Profile,
    psi_threshold: float = 0.2,
    psi_watch: float = 0.1,
    false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE,
) -> dict[str, FeatureDrift]:
    """Drift of every reference column; ``current`` must be ``reference.project(...)``-made.

    Status (see the module docstring): a column whose change is significant
    after the Benjamini-Hochberg correction across all columns at
    ``false_alarm_rate`` is drifted when its PSI reaches the floor of
    ``psi_threshold`` at its sample sizes (``calibration.psi_floor``), watch
    when it reaches that of ``psi_watch``; every other column is stable.
    """
    measured: dict[str, dict[str, object]] = {}
    pvalues: dict[str, float | None] = {}
    for name, reference_column in reference.columns.items():
        current_column = current.columns.get(name)
        if current_column is None or type(current_column) is not type(reference_column):
            raise ValueError(f"column {name!r}: current profile does not match the reference")
        if isinstance(reference_column, NumericProfile):
            measured[name] = numeric_drift(reference_column, current_column)
        else:
            measured[name] = categorical_drift(reference_column, current_column)
        fields = measured[name]
        pvalues[name] = change_pvalue(reference_column, current_column, fields["chi2_pvalue"], fields["ks_pvalue"])
    significant = benjamini_hochberg(pvalues, false_alarm_rate)
    results = {}
    for name, fields in measured.items():
        status = STABLE
        if name in significant:
            sizes = fields["groups"], reference.columns[name].count, current.columns[name].count
            status = _status(fields["psi"], psi_floor(psi_threshold, *sizes), psi_floor(psi_watch, *sizes))
        results[name] = FeatureDrift(column=name, status=status, **fields)
    return results


def drifted_columns(results: dict[str, FeatureDrift]) -> list[str]:
    """Names of the drifted columns, largest excess PSI first."""
    drifted = [result for result in results.values() if result.status == DRIFTED]
    drifted.sort(key=lambda result: (-result.excess_psi, result.column))
    return [result.column for result in drifted]



def numeric_drift(reference: NumericProfile, current: NumericProfile) -> dict[str, object]:
    """FeatureDrift fields (all but column and status) of a numeric column."""
    if not np.array_equal(reference.edges, current.edges):
        raise ValueError("numeric drift needs both profiles on the same edges")
    ks, ks_pvalue = ks_statistic(reference, current)
    return {
        "kind": NUMERIC,
        **_shares_fields(numeric_groups(reference, current)),
        "ks": ks,
        "ks_pvalue": ks_pvalue,
        "wasserstein": normalised_wasserstein(reference, current),
        "unseen_share": None,
        "out_of_range_share": out_of_range_share(current),
        "missing_change": missing_share(current) - missing_share(reference),
    }


def categorical_drift(reference: CategoricalProfile, current: CategoricalProfile) -> dict[str, object]:
    """FeatureDrift fields (all but column and status) of a categorical column."""
    reference_counts, current_counts = category_vectors(reference, current)
    unseen = int(current_counts[reference_counts == 0].sum())
    return {
        "kind": CATEGORICAL,
        **_shares_fields(pack_rare_categories(reference_counts, current_counts)),
        "ks": None,
        "ks_pvalue": None,
        "wasserstein": None,
        "unseen_share": unseen / current.count if current.count else 0.0,
        "out_of_range_share": None,
        "missing_change": missing_share(current) - missing_share(reference),
    }



def ks_statistic(reference: NumericProfile, current: NumericProfile) -> tuple[float | None, float | None]:
    """Binned two-sample KS statistic and its p-value (None, None when a side has no values)."""
    if reference.count == 0 or current.count == 0 or len(reference.edges) == 0:
        return None, None
    gap = np.abs(_cdf_at_edges(reference) - _cdf_at_edges(current))
    statistic = float(gap.max())
    effective_n = reference.count * current.count / (reference.count + current.count)
    if round(effective_n) <= EXACT_KS_MAX_N:
        pvalue = stats.kstwo.sf(statistic, round(effective_n))
    else:
        pvalue = special.kolmogorov(statistic * math.sqrt(effective_n))  # = stats.kstwobign.sf, without its overhead
    return statistic, float(np.clip(pvalue, 0.0, 1.0))


def normalised_wasserstein(reference: NumericProfile, current: NumericProfile) -> float | None:
    """Binned Wasserstein-1 distance in units of the reference standard deviation.

    None when a side has no values or the reference is constant (std 0), where
    the distance has no scale to be measured in.
    """
    if reference.count == 0 or current.count == 0 or len(reference.edges) == 0 or not reference.std:
        return None
    positions = np.concatenate((
        [min(reference.edges[0], reference.minimum, current.minimum)],
        reference.edges,
        [max(reference.edges[-1], reference.maximum, current.maximum)],
    ))
    gap = _cdf_at_positions(reference) - _cdf_at_positions(current)
    area = _area_of_absolute_linear(np.diff(positions), gap[:-1], gap[1:])
    return area / reference.std


def out_of_range_share(current: NumericProfile) -> float:
    """Share of the current values outside the reference edges (the reference's [min, max])."""
    if current.count == 0:
        return 0.0
    if len(current.edges) == 0:
        return 1.0
    return float(current.counts[0] + current.counts[-1]) / current.count


def category_vectors(
    reference: CategoricalProfile, current: CategoricalProfile
) -> tuple[np.ndarray, np.ndarray]:
    """Counts of every category either side has, sorted by name: the reference's, then the current's."""
    names = sorted(set(reference.counts) | set(current.counts))
    reference_counts = np.array([reference.counts.get(name, 0) for name in names], dtype=np.int64)
    current_counts = np.array([current.counts.get(name, 0) for name in names], dtype=np.int64)
    return reference_counts, current_counts



def _shares_fields(grouped: GroupedCounts) -> dict[str, object]:
    """The FeatureDrift fields computed on the groups: PSI, its expected value under no change, JS, chi-square."""
    return {
        "psi": psi(grouped.reference, grouped.current),
        "expected_psi": grouped.expected_psi(),
        "js": js_distance(grouped.reference, grouped.current),
        "chi2_pvalue": grouped.pvalue(),
        "groups": grouped.groups,
    }



def _status(value: float, threshold: float, watch: float) -> str:
    if value >= threshold:
        return DRIFTED
    if value >= watch:
        return WATCH
    return STABLE


def _smoothed_shares(counts, epsilon: float) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    shares = counts / total if total > 0 else np.zeros_like(counts)
    return np.maximum(shares, epsilon)


def _relative_entropy(shares: np.ndarray, reference: np.ndarray) -> float:
    """Sum of p * ln(p / q) over the bins where p > 0 (q > 0 there by construction)."""
    present = shares > 0
    return float(np.sum(shares[present] * np.log(shares[present] / reference[present])))



def _cdf_at_edges(profile: NumericProfile) -> np.ndarray:
    """Share of values below each edge (at or below, for the last edge), shape (k+1,)."""
    return np.cumsum(profile.counts)[:-1] / profile.count


def _cdf_at_positions(profile: NumericProfile) -> np.ndarray:
    """CDF at [overall minimum, edges..., overall maximum], shape (k+3,)."""
    return np.concatenate(([0.0], np.cumsum(profile.counts) / profile.count))


def _area_of_absolute_linear(widths: np.ndarray, start: np.ndarray, end: np.ndarray) -> float:
    """Sum of the integrals of |f| for f linear from ``start`` to ``end`` over ``widths``.

    Where f keeps its sign the area is a trapezoid; where it crosses zero it is
    two triangles with total area width * (start^2 + end^2) / (2 (|start| + |end|)).
    """
    magnitude = np.abs(start) + np.abs(end)
    crosses = start * end < 0
    safe = np.where(magnitude > 0, magnitude, 1.0)
    area = np.where(crosses, (start**2 + end**2) / (2 * safe), magnitude / 2)
    return float(np.sum(widths * area))


