"""Whether a column's change is beyond sampling: the groups, the test of change, and the family of columns.

Two samples of one distribution never look alike, and the smaller they are the
more they differ by chance. This module owns what that chance is at given
sample sizes, so that :mod:`app.stats.drift` can judge a column on the change
sampling does not explain:

  * the groups every share statistic is computed on (numeric: equal-mass
    groups at the reference's quantiles; categorical: the frequent categories
    alone and the rare ones packed together), fixed from the reference's
    counts and the two sample sizes only;
  * the expected PSI of two samples of these sizes when nothing changed;
  * the test of change of one column (chi-square on the dense groups, exact
    tests of sparse ones and of values outside the reference's range, and KS
    for numeric columns);
  * the correction across a batch's columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

from app.stats.profile import CategoricalProfile, NumericProfile

PSI_GROUPS = 10
# Cochran's rule for the chi-square approximation: at least 5 expected rows a group.
MIN_EXPECTED_ROWS = 5


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
        return missing_share(reference) ** current.rows if current.rows else None
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
    reference_counts = group_counts(reference.counts, cuts)
    limit = sparse_limit(reference.count, current.count)
    outside = None
    if len(reference.counts) > 3:  # two bins or more: the outer slots share the outer groups
        outside = (int(reference.counts[0] + reference.counts[-1]), int(current.counts[0] + current.counts[-1]))
    return GroupedCounts(reference_counts, group_counts(current.counts, cuts), reference_counts < limit, outside)


def pack_rare_categories(reference_counts: np.ndarray, current_counts: np.ndarray) -> GroupedCounts:
    """Categories, the frequent ones alone and the rare ones packed together, rarest last.

    Categories are taken from the most to the least frequent in the reference
    (the unseen bucket last); each that is not sparse (see ``_sparse_limit``)
    keeps a group of its own, and the rest are packed in that order into groups
    that each just reach the limit. Only the last pack can fall short: it is
    then sparse, and new categories in a small batch keep a small group of
    their own instead of being diluted into a large one.
    """
    limit = sparse_limit(int(reference_counts.sum()), int(current_counts.sum()))
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


def sparse_limit(reference_count: int, current_count: int) -> float:
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


def group_counts(counts: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    return np.add.reduceat(counts, np.concatenate(([0], cuts)).astype(np.intp))


def missing_share(profile: NumericProfile | CategoricalProfile) -> float:
    return profile.missing / profile.rows if profile.rows else 0.0

