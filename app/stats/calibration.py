"""Whether a column's change is beyond sampling: the groups, the test of change, and the family of columns.

Two samples of one distribution never look alike, and the smaller they are the
more they differ by chance. This module owns what that chance is at given
sample sizes, so that :mod:`app.stats.drift` can judge a column on the change
sampling does not explain:

  * the groups every share statistic is computed on (numeric: equal-mass
    groups at the reference's quantiles; categorical: the frequent categories
    alone and the rare ones packed together by their pooled counts), fixed
    without looking at which sample a row came from, beyond the sizes;
  * the expected PSI of two samples of these sizes when nothing changed;
  * the test of change of one column (chi-square on the dense groups, exact
    tests of sparse ones and of values outside the reference's range, and KS
    for numeric columns);
  * the correction across a batch's columns (Benjamini-Hochberg);
  * the least PSI that does not show a change to be smaller than a threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

from app.stats.profile import CategoricalProfile, NumericProfile

PSI_GROUPS = 10
# Cochran's rule for the chi-square approximation: at least 5 expected rows a group.
MIN_EXPECTED_ROWS = 5
# A PSI significantly below psi_threshold at this level shows the change to be smaller (see ``psi_floor``).
EFFECT_LEVEL = 0.05
# Categories of a pack whose excess is tested exactly (see ``largest_excess_pvalue``).
EXACT_EXCESS_CANDIDATES = 3


@dataclass(frozen=True)
class GroupedCounts:
    """Reference and current counts over the same groups, the base of PSI, JS and the test of change.

    ``sparse``: per group, whether the smaller sample is expected (at the
    reference's shares for numeric groups, at the pooled shares for packed
    categories) to put fewer than ``MIN_EXPECTED_ROWS`` rows in it,
    too few for the chi-square approximation; such a group is tested exactly.
    ``outside``: current rows outside the reference's range (its extremes are
    the first and last edges), which the outer groups hold; they are also
    tested exactly on their own (None when no group holds them together with
    values inside the range). ``packed_excess``: for packed categories, the
    p-value of the largest excess of any one of them (see
    ``largest_excess_pvalue``), which a pack would dilute.
    """

    reference: np.ndarray
    current: np.ndarray
    sparse: np.ndarray
    outside: int | None = None
    packed_excess: float | None = None

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
        the exact test (``sparse_group_pvalue``) of each sparse group and that of
        the rows outside the reference's range (``outside_range_pvalue``),
        combined by Bonferroni's rule: the smallest p-value times the number of tests.
        """
        reference_size, current_size = int(self.reference.sum()), int(self.current.sum())
        if reference_size == 0 or current_size == 0:
            return None
        dense = ~self.sparse
        pvalues = [chi2_pvalue(self.reference[dense], self.current[dense])] if dense.sum() > 1 else []
        pvalues += [sparse_group_pvalue(int(self.reference[index]), int(self.current[index]), reference_size, current_size)
                    for index in np.flatnonzero(self.sparse)]
        if self.outside is not None:
            pvalues.append(outside_range_pvalue(self.outside, reference_size, current_size))
        pvalues.append(self.packed_excess)
        pvalues = [value for value in pvalues if value is not None]
        return min(1.0, len(pvalues) * min(pvalues)) if pvalues else None


def outside_range_pvalue(outside: int, reference_size: int, current_size: int) -> float:
    """Chance that at least ``outside`` of the current rows fall outside the reference's range when nothing changed.

    The reference's range runs from its smallest to its largest value, so
    this is a question about order statistics, not about a group's pooled
    count: with the ``N = n + m`` rows of both samples in order and every
    choice of the reference's ``n`` places equally likely, ``k`` current
    rows lie outside exactly when ``j`` of them come before the first
    reference row and ``k - j`` after the last, hence
    ``P(X = k) = (k + 1) C(N - k - 2, n - 2) / C(N, n)`` and, summed by the
    hockey-stick identity, ``P(X >= k) = (C(N - k, n) + k C(N - k - 1, n - 1)) / C(N, n)``.
    Ties (a value equal to an extreme is inside) only lower ``X``, so the
    test stays valid, conservatively, for discrete data.
    """
    total = reference_size + current_size
    if outside <= 0 or reference_size < 2:
        return 1.0
    if outside > current_size:
        return 0.0
    log_whole = _log_binomial(total, reference_size)
    beyond = np.exp(_log_binomial(total - outside, reference_size) - log_whole)
    split = outside * np.exp(_log_binomial(total - outside - 1, reference_size - 1) - log_whole)
    return float(min(1.0, beyond + split))


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


def benjamini_hochberg(pvalues: dict[str, float | None], rate: float) -> set[str]:
    """Names whose hypothesis the Benjamini-Hochberg step-up procedure rejects at ``rate``.

    With the p-values sorted, p(1) <= ... <= p(m), the k smallest are rejected
    for the largest k with p(k) <= k * rate / m. When every hypothesis is true
    (nothing changed in the batch) this rejects anything exactly when Simes'
    test does, so the chance of rejecting any at all is at most ``rate`` for
    independent or positively dependent tests. When some are false (columns
    that moved), the expected share of true hypotheses among the rejected ones
    stays at or below ``rate``, and the threshold eases with every column that
    moved. Names with a None p-value take no part and are never rejected.
    """
    tested = sorted(((value, name) for name, value in pvalues.items() if value is not None), key=lambda pair: pair[0])
    passing = [rank for rank, (value, _) in enumerate(tested, start=1) if value <= rank * rate / len(tested)]
    return {name for _, name in tested[: max(passing, default=0)]}


def psi_floor(threshold: float, groups: int, reference_size: int, current_size: int) -> float:
    """The least PSI that is not significantly below a change of ``threshold`` at these sizes.

    PSI over ``groups`` groups of two samples is about a chi-square statistic
    divided by the effective size ``n = 1 / (1 / reference_size + 1 / current_size)``;
    for a change whose PSI is ``threshold`` that statistic is about noncentral
    chi-square with ``groups - 1`` degrees of freedom and noncentrality
    ``n * threshold``. The floor is its ``EFFECT_LEVEL`` quantile over ``n``
    (Patnaik's scaled chi-square form of the noncentral one): a PSI below it
    shows at that level that the change is smaller than ``threshold``. It tends
    to ``threshold`` as the samples grow; at 50 rows it is under the PSI that
    sampling alone gives on average, so there a change beyond sampling is drifted.
    With a side empty it is ``threshold`` itself.
    """
    if groups < 2 or reference_size == 0 or current_size == 0:
        return threshold
    effective_size = 1 / (1 / reference_size + 1 / current_size)
    freedom, noncentrality = groups - 1, effective_size * threshold
    scale = (freedom + 2 * noncentrality) / (freedom + noncentrality)
    shape = (freedom + noncentrality) ** 2 / (freedom + 2 * noncentrality)
    return float(scale * special.chdtri(shape, 1 - EFFECT_LEVEL) / effective_size)


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
    # Two bins or more: the outer slots share the outer groups. The reference's own rows are never outside
    # its edges when it was built from them (``Profile.build``); the exact test assumes that.
    if len(reference.counts) > 3 and reference.counts[0] + reference.counts[-1] == 0:
        outside = int(current.counts[0] + current.counts[-1])
    return GroupedCounts(reference_counts, group_counts(current.counts, cuts), reference_counts < limit, outside)


def pack_rare_categories(reference_counts: np.ndarray, current_counts: np.ndarray) -> GroupedCounts:
    """Categories, the frequent ones alone and the rare ones packed together, rarest last.

    Frequency here is the pooled count (reference plus current). Ordering and
    packing by the pooled counts only, which the test of homogeneity takes as
    given, keeps that test exact when nothing changed; ordering by the
    reference's counts would pack the categories it happened not to see (a
    rare level of a 200-level column, in a reference of a few hundred rows)
    into a group the reference has by construction no rows in, and every batch
    would look new. Each category whose pooled count reaches the limit (see
    ``pooled_sparse_limit``) keeps a group of its own, and the rest are packed
    in that order into groups that each just reach it. Only the last pack can
    fall short: it is then sparse and tested exactly, so a category that is
    new and frequent in a small batch still stands out there.
    """
    limit = pooled_sparse_limit(int(reference_counts.sum()), int(current_counts.sum()))
    pooled = reference_counts + current_counts
    order = np.argsort(-pooled, kind="stable")
    order = order[pooled[order] > 0]
    ordered_pooled = pooled[order]
    dense = int(np.count_nonzero(ordered_pooled >= limit))
    labels = np.arange(len(order))
    ends = np.cumsum(ordered_pooled)
    start, group = dense, dense
    while start < len(order):
        reached = ends[start - 1] + limit if start else limit
        stop = int(np.searchsorted(ends, reached, side="left")) + 1
        labels[start:stop] = group
        start, group = stop, group + 1
    packed_reference = np.bincount(labels, weights=reference_counts[order], minlength=group).astype(np.int64)
    packed_current = np.bincount(labels, weights=current_counts[order], minlength=group).astype(np.int64)
    packed = order[dense:]
    excess = None  # a pack of one category is already tested on its own
    if len(packed) > group - dense:
        excess = largest_excess_pvalue(reference_counts[packed], current_counts[packed],
                                       int(reference_counts.sum()), int(current_counts.sum()))
    return GroupedCounts(packed_reference, packed_current, packed_reference + packed_current < limit,
                         packed_excess=excess)


def largest_excess_pvalue(reference_counts: np.ndarray, current_counts: np.ndarray,
                          reference_size: int, current_size: int) -> float | None:
    """Bonferroni p-value of the one category, among these, with the most surprising excess in the current sample.

    A pack sums its categories, so a category that is new in a batch (5 of 50
    rows, none of the reference's) is diluted by the other rare ones; alone
    its rows are far beyond chance. The exact test of ``sparse_group_pvalue``
    is taken for the few categories the binomial tail ranks most surprising
    (exact for all of 200 categories would cost milliseconds a column), and
    the smallest p-value times the number of categories that could show an
    excess. Missing the very smallest would only make it larger: still valid.
    None without any category to test.
    """
    possible = np.flatnonzero(current_counts > 0)
    if not len(possible):
        return None
    total = reference_size + current_size
    pooled = reference_counts[possible] + current_counts[possible]
    ranking = special.bdtrc(current_counts[possible] - 1, pooled, current_size / total)
    candidates = possible[np.argsort(ranking, kind="stable")[:EXACT_EXCESS_CANDIDATES]]
    smallest = min(sparse_group_pvalue(int(reference_counts[index]), int(current_counts[index]), reference_size, current_size)
                   for index in candidates)
    return float(min(1.0, smallest * len(possible)))


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


def pooled_sparse_limit(reference_count: int, current_count: int) -> float:
    """Pooled rows below which a group is sparse: at its pooled share the smaller sample
    would expect fewer than ``MIN_EXPECTED_ROWS`` rows there (0 when a side has no values)."""
    smaller = min(reference_count, current_count)
    if smaller == 0:
        return 0.0
    return MIN_EXPECTED_ROWS * (reference_count + current_count) / smaller


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

