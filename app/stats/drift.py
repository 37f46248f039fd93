"""Univariate drift of each column: a reference profile against a current one.

Both profiles must share numeric edges (the current one is
``reference.project(batch)``), so every statistic is computed from bin counts:
no raw rows are needed and the cost does not depend on the batch size.

Groups. Each column's values are put in a few groups, the same for every
statistic that compares shares (PSI, Jensen-Shannon, chi-square):
  * numeric: the fine bins cut at the reference deciles (10 groups); values
    outside the reference range fall into the outer groups;
  * categorical: one group per reference category plus one "unseen" group for
    current categories the reference never had.
A group that the two samples together are expected to fill with fewer than
``MIN_EXPECTED_ROWS`` rows of the smaller sample is merged with others
(numeric: with its smaller neighbour; categorical: the rarest categories are
packed together, rarest first), so a 200-level categorical against a batch of
50 rows is judged on about 10 groups of about 20 levels each. The groups depend
only on the two samples' pooled counts, which is what keeps the test below exact
in its assumptions (the pooled counts are the margins it conditions on).

Drift decision (see docs/drift.md). A column is drifted when both hold:
  * the change is beyond sampling: the test of change (``change_pvalue``: the
    chi-square test of homogeneity on the groups, exact tests of sparse groups
    and of values outside the reference's range, and KS for numeric columns)
    rejects "same distribution" after Holm's step-down correction across the
    batch's columns at ``false_alarm_rate`` (the chance that a batch drawn
    from the reference distribution flags any column at all);
  * the change matters: PSI less its expected value under no change,
    ``(groups - 1) * (1 / n_reference + 1 / n_current)``, is at least
    ``psi_threshold`` (``psi_watch`` for watch).
A column with no values on one side only (it emptied or filled) is tested on
the chance that every row of the batch is missing at the reference's missing
rate.

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

from app.stats.profile import CATEGORICAL, NUMERIC, CategoricalProfile, NumericProfile, Profile

STABLE = "stable"
WATCH = "watch"
DRIFTED = "drifted"

PSI_GROUPS = 10
PSI_EPSILON = 1e-4
# Cochran's rule for the chi-square approximation: at least 5 expected rows a group.
MIN_EXPECTED_ROWS = 5
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


@dataclass(frozen=True)
class GroupedCounts:
    """Reference and current counts over the same groups, the base of PSI, JS and the test of change.

    ``sparse``: per group, whether the smaller sample is expected (at the
    reference's shares) to put fewer than ``MIN_EXPECTED_ROWS`` rows in it,
    too few for the chi-square approximation; such a group is tested exactly.
    ``outside``: (reference, current) rows outside the reference's range, which
    the outer groups hold; they are also tested exactly as a group of their
    own (None when no group holds them together with values inside the range).
    """

    reference: np.ndarray
    current: np.ndarray
    sparse: np.ndarray
    outside: tuple[int, int] | None = None

    @property
    def groups(self) -> int:
        return len(self.reference)

    def expected_psi(self) -> float:
        """Mean PSI of two samples of these sizes from one distribution over these groups.

        PSI is about the chi-square statistic divided by the effective sample
        size, ``1 / (1 / n_reference + 1 / n_current)``, and that statistic
        averages its degrees of freedom, ``groups - 1``, when nothing changed.
        """
        sizes = self.reference.sum(), self.current.sum()
        if self.groups < 2 or min(sizes) == 0:
            return 0.0
        return float((self.groups - 1) * (1 / sizes[0] + 1 / sizes[1]))

    def pvalue(self) -> float | None:
        """P-value of "both samples come from one distribution" (None when a side is empty).

        The chi-square test of homogeneity on the groups that are not sparse,
        and the exact test (``sparse_group_pvalue``) of each sparse group and of
        the rows outside the reference's range, combined by Bonferroni's rule:
        the smallest p-value times the number of tests.
        """
        reference_size, current_size = int(self.reference.sum()), int(self.current.sum())
        if reference_size == 0 or current_size == 0:
            return None
        dense = ~self.sparse
        pvalues = [chi2_pvalue(self.reference[dense], self.current[dense])] if dense.sum() > 1 else []
        pvalues += [sparse_group_pvalue(int(self.reference[index]), int(self.current[index]), reference_size, current_size)
                    for index in np.flatnonzero(self.sparse)]
        if self.outside is not None:
            pvalues.append(sparse_group_pvalue(*self.outside, reference_size, current_size))
        pvalues = [value for value in pvalues if value is not None]
        return min(1.0, len(pvalues) * min(pvalues)) if pvalues else None


def sparse_group_pvalue(reference_count: int, current_count: int, reference_size: int, current_size: int) -> float:
    """Chance of at least ``current_count`` of a group's pooled rows landing in the current sample.

    Given the pooled rows of the group, the current sample's share of them is
    hypergeometric when nothing changed (the one-sided Fisher exact test): an
    exact p-value at any count. Only an excess can be significant in a group
    this sparse, so the test is one-sided. Equals
    ``scipy.stats.hypergeom.sf(current_count - 1, total, pooled, current_size)``,
    summed here in log space: scipy's call costs a millisecond.
    """
    total, pooled = reference_size + current_size, reference_count + current_count
    lowest = max(current_count, current_size + pooled - total)
    highest = min(pooled, current_size)
    if lowest > highest:
        return 0.0
    if lowest == max(0, current_size + pooled - total):
        return 1.0
    counts = np.arange(lowest, highest + 1, dtype=np.float64)
    log_pmf = (_log_binomial(pooled, counts) + _log_binomial(total - pooled, current_size - counts)
               - _log_binomial(total, current_size))
    largest = log_pmf.max()
    return float(min(1.0, np.exp(largest) * np.sum(np.exp(log_pmf - largest))))


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
    after Holm's correction across all columns at ``false_alarm_rate`` is
    drifted when its excess PSI is >= ``psi_threshold``, watch when >=
    ``psi_watch``; every other column is stable.
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
    significant = holm_rejections(pvalues, false_alarm_rate)
    results = {}
    for name, fields in measured.items():
        excess = fields["psi"] - fields["expected_psi"]
        status = _status(excess, psi_threshold, psi_watch) if name in significant else STABLE
        results[name] = FeatureDrift(column=name, status=status, **fields)
    return results


def drifted_columns(results: dict[str, FeatureDrift]) -> list[str]:
    """Names of the drifted columns, largest excess PSI first."""
    drifted = [result for result in results.values() if result.status == DRIFTED]
    drifted.sort(key=lambda result: (-result.excess_psi, result.column))
    return [result.column for result in drifted]


def change_pvalue(
    reference: NumericProfile | CategoricalProfile,
    current: NumericProfile | CategoricalProfile,
    grouped_pvalue: float | None,
    ks_pvalue: float | None = None,
) -> float | None:
    """P-value of "the column did not change", for a side without values its own.

    With values on both sides: the grouped test's (``GroupedCounts.pvalue``),
    and for a numeric column also the KS test's, combined by Bonferroni's rule
    (KS is the more powerful of the two against a shift of location or spread
    in a small batch). A column that emptied: the chance that every row of the
    batch is missing at the reference's missing rate. A column that filled (the
    reference had no value at all): 0, nothing in the reference could give a
    value. None when neither side has a value.
    """
    if reference.count and current.count:
        if ks_pvalue is None or grouped_pvalue is None:
            return grouped_pvalue
        return min(1.0, 2 * min(grouped_pvalue, ks_pvalue))
    if reference.count:
        return _missing_share(reference) ** current.rows if current.rows else None
    return 0.0 if current.count else None


def holm_rejections(pvalues: dict[str, float | None], family_rate: float) -> set[str]:
    """Names whose hypothesis Holm's step-down procedure rejects at ``family_rate``.

    The chance of rejecting any true hypothesis stays at or below
    ``family_rate`` whatever the dependence between the tests. Names with a
    None p-value take no part and are never rejected.
    """
    tested = sorted((value, name) for name, value in pvalues.items() if value is not None)
    rejected = set()
    for rank, (value, name) in enumerate(tested):
        if value > family_rate / (len(tested) - rank):
            break
        rejected.add(name)
    return rejected


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
        "missing_change": _missing_share(current) - _missing_share(reference),
    }


def categorical_drift(reference: CategoricalProfile, current: CategoricalProfile) -> dict[str, object]:
    """FeatureDrift fields (all but column and status) of a categorical column."""
    reference_counts, current_counts = category_vectors(reference, current)
    unseen = int(current_counts[-1])
    return {
        "kind": CATEGORICAL,
        **_shares_fields(pack_rare_categories(reference_counts, current_counts)),
        "ks": None,
        "ks_pvalue": None,
        "wasserstein": None,
        "unseen_share": unseen / current.count if current.count else 0.0,
        "out_of_range_share": None,
        "missing_change": _missing_share(current) - _missing_share(reference),
    }


def numeric_groups(reference: NumericProfile, current: NumericProfile) -> GroupedCounts:
    """Counts on equal-mass reference groups (see ``quantile_groups``).

    Up to ``PSI_GROUPS`` groups (the reference deciles), fewer when the smaller
    sample has under ``MIN_EXPECTED_ROWS`` rows for each: equal-mass groups are
    where the chi-square approximation holds best. Ties can still leave small
    groups (a 0/1 column with 2% ones); those are sparse. Values outside the
    reference's range, which the outer groups hold, are also tested on their
    own: a batch that leaves the range is then found even when it is small.
    """
    smaller = min(reference.count, current.count)
    groups = int(np.clip(smaller // MIN_EXPECTED_ROWS, 1, PSI_GROUPS)) if smaller else PSI_GROUPS
    cuts = quantile_groups(reference.counts, groups)
    reference_counts = _group(reference.counts, cuts)
    limit = _sparse_limit(reference.count, current.count)
    outside = None
    if len(reference.counts) > 3:  # two bins or more: the outer slots share the outer groups
        outside = (int(reference.counts[0] + reference.counts[-1]), int(current.counts[0] + current.counts[-1]))
    return GroupedCounts(reference_counts, _group(current.counts, cuts), reference_counts < limit, outside)


def pack_rare_categories(reference_counts: np.ndarray, current_counts: np.ndarray) -> GroupedCounts:
    """Categories, the frequent ones alone and the rare ones packed together, rarest last.

    Categories are taken from the most to the least frequent in the reference
    (the unseen bucket last); each that is not sparse (see ``_sparse_limit``)
    keeps a group of its own, and the rest are packed in that order into groups
    that each just reach the limit. Only the last pack can fall short: it is
    then sparse, and new categories in a small batch keep a small group of
    their own instead of being diluted into a large one.
    """
    limit = _sparse_limit(int(reference_counts.sum()), int(current_counts.sum()))
    order = np.argsort(-reference_counts, kind="stable")
    order = order[(reference_counts + current_counts)[order] > 0]
    ordered_reference = reference_counts[order]
    dense = int(np.count_nonzero(ordered_reference >= limit))
    labels = np.arange(len(order))
    ends = np.cumsum(ordered_reference)
    start, group = dense, dense
    while start < len(order):
        reached = ends[start - 1] + limit if start else limit
        stop = int(np.searchsorted(ends, reached, side="left")) + 1
        labels[start:stop] = group
        start, group = stop, group + 1
    packed_reference = np.bincount(labels, weights=ordered_reference, minlength=group).astype(np.int64)
    packed_current = np.bincount(labels, weights=current_counts[order], minlength=group).astype(np.int64)
    return GroupedCounts(packed_reference, packed_current, packed_reference < limit)


def numeric_psi(reference: NumericProfile, current: NumericProfile, groups: int = PSI_GROUPS) -> float:
    """PSI over ``groups`` bins cut at the reference's quantiles (see ``quantile_groups``), none merged."""
    cuts = quantile_groups(reference.counts, groups)
    return psi(_group(reference.counts, cuts), _group(current.counts, cuts))


def quantile_groups(reference_counts: np.ndarray, groups: int = PSI_GROUPS) -> np.ndarray:
    """Slot indices at which to cut the fine slots into about ``groups`` equal-mass groups.

    Each cut sits at an inner fine edge (not the first or last), the one whose
    reference share below it is nearest to j/groups; cuts that coincide are
    merged, so tied data gives fewer groups. With 100 quantile bins the cuts are
    exactly the reference deciles. A reference with a single bin (a constant
    column) is cut at its two edges instead, so values leaving the constant
    show up as drift.
    """
    bins = len(reference_counts) - 2
    if bins < 1:
        return np.empty(0, dtype=np.intp)
    if bins == 1:
        return np.array([1, 2])
    candidates = np.arange(2, bins + 1)
    share_below = np.cumsum(reference_counts)[candidates - 1] / max(reference_counts.sum(), 1)
    targets = np.arange(1, groups) / groups
    nearest = np.abs(share_below[None, :] - targets[:, None]).argmin(axis=1)
    return np.unique(candidates[nearest])


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
    """Counts over the reference categories (sorted by name) plus a last "unseen" bucket."""
    names = sorted(reference.counts)
    reference_counts = np.array([reference.counts[name] for name in names] + [0], dtype=np.int64)
    seen = [current.counts.get(name, 0) for name in names]
    current_counts = np.array(seen + [current.count - sum(seen)], dtype=np.int64)
    return reference_counts, current_counts


def chi2_pvalue(reference_counts: np.ndarray, current_counts: np.ndarray) -> float | None:
    """Chi-square homogeneity p-value of two count vectors (None when a side is empty).

    Categories empty on both sides are dropped; a single remaining category
    means identical distributions (p = 1). The arithmetic of
    ``scipy.stats.chi2_contingency(table, correction=False)``, written out:
    scipy's call costs a third of a millisecond in argument handling alone.
    """
    table = np.vstack((reference_counts, current_counts)).astype(np.float64)
    table = table[:, table.sum(axis=0) > 0]
    if table.sum(axis=1).min() == 0:
        return None
    if table.shape[1] < 2:
        return 1.0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    statistic = np.sum((table - expected) ** 2 / expected)
    degrees_of_freedom = table.shape[1] - 1
    return float(special.chdtrc(degrees_of_freedom, statistic))


def _shares_fields(grouped: GroupedCounts) -> dict[str, object]:
    """The FeatureDrift fields computed on the groups: PSI, its expected value under no change, JS, chi-square."""
    return {
        "psi": psi(grouped.reference, grouped.current),
        "expected_psi": grouped.expected_psi(),
        "js": js_distance(grouped.reference, grouped.current),
        "chi2_pvalue": grouped.pvalue(),
        "groups": grouped.groups,
    }


def _sparse_limit(reference_count: int, current_count: int) -> float:
    """Reference rows below which a group is sparse: at the reference's share of it the
    smaller sample would expect fewer than ``MIN_EXPECTED_ROWS`` rows there.

    0 when a side has no values (nothing is sparse then: nothing is tested).
    """
    smaller = min(reference_count, current_count)
    if smaller == 0:
        return 0.0
    return MIN_EXPECTED_ROWS * reference_count / smaller


def _log_binomial(n, k):
    """ln of the binomial coefficient C(n, k), elementwise."""
    return special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1)


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


def _group(counts: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    return np.add.reduceat(counts, np.concatenate(([0], cuts)).astype(np.intp))


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


def _missing_share(profile: NumericProfile | CategoricalProfile) -> float:
    return profile.missing / profile.rows if profile.rows else 0.0
