"""Counting a numeric column's values into a reference's bins, with its moments, a chunk at a time.

Every numeric value of every batch passes through here (streamed chunks and
whole frames alike), so this is the hot loop of profiling: values go through
in chunks of 65,536 with reused scratch arrays (temporary memory stays around
two megabytes whatever the batch size), and bin counts are exact while only a
few percent of the values are ever compared with the edges (``_BinCounter``).
The slots follow :mod:`app.stats.profile`'s bin convention.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

# Values profiled at a time (bounds temporary memory) and the bounds of the
# uniform grid that bins them quickly (see ``_BinCounter``).
CHUNK_VALUES = 1 << 16
_MIN_GRID_CELLS = 1 << 10
_MAX_GRID_CELLS = 1 << 14
# Squares are summed by BLAS dot products of this many values: OpenBLAS computes a dot of
# up to 10,000 values on the calling thread, so the sum is the same bits whatever the
# thread limit (a threaded dot adds its partial sums in another order).
_DOT_VALUES = 1 << 13
# Adding 1.5 * 2**52 to a float of magnitude below 2**51 rounds it to a whole number, and
# whole numbers from 2**52 to 2**53 are consecutive as int64 bit patterns: a grid cell is
# then an integer subtraction away, cheaper than numpy's float-to-int conversion.
_ROUNDING = 1.5 * 2**52


class NumericProjection:
    """A numeric column's values on fixed edges, added in pieces: bin counts and moments."""

    def __init__(self, edges: np.ndarray, expected_values: int) -> None:
        self.edges = edges
        self.rows = 0
        self.counter = _BinCounter(edges, expected_values)
        self.moments = Moments(center=center_of(edges))
        self.deviations = np.empty(min(expected_values, CHUNK_VALUES))

    def add(self, values: np.ndarray) -> None:
        for chunk, low, high in finite_chunks(values):
            if chunk.size > len(self.deviations):
                self.deviations = np.empty(chunk.size)
            # The moments and the grid both start from the deviations from the centre: one pass for two.
            with np.errstate(over="ignore"):  # values near the float limits: inf, as numpy's sums give
                deviations = np.subtract(chunk, self.moments.center, out=self.deviations[: chunk.size])
                self.moments.add(chunk, deviations, low, high)
            self.counter.add(chunk, deviations, low, high)
        self.rows += len(values)

    def counts(self) -> np.ndarray:
        """Counts so far, int64, shape (k+2,)."""
        return self.counter.counts()


def count_in_bins(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of the finite float64 ``values`` in the k+2 slots of ``edges`` (int64, shape (k+2,)).

    Equal to ``np.bincount(np.searchsorted(edges, values, "right"))`` with values
    equal to ``edges[-1]`` moved into the last bin, only several times faster (9x on
    a million normal values); see ``_BinCounter``.
    """
    counter = _BinCounter(edges, expected_values=len(values))
    for chunk, low, high in finite_chunks(values):
        with np.errstate(over="ignore"):
            deviations = chunk - counter.center
        counter.add(chunk, deviations, low, high)
    return counter.counts()


def finite_chunks(values: np.ndarray) -> Iterator[tuple[np.ndarray, float, float]]:
    """Yield ``(finite values, their minimum, their maximum)`` per chunk of ``CHUNK_VALUES``.

    Chunks with no finite value are skipped. NaN and +/-inf reach a chunk's
    minimum or maximum, so two fast reductions spare the finiteness mask in
    the usual chunk, which has no missing value.
    """
    for start in range(0, len(values), CHUNK_VALUES):
        chunk = values[start : start + CHUNK_VALUES]
        low, high = float(chunk.min()), float(chunk.max())
        if not (math.isfinite(low) and math.isfinite(high)):
            chunk = chunk[np.isfinite(chunk)]
            if chunk.size == 0:
                continue
            low, high = float(chunk.min()), float(chunk.max())
        yield chunk, low, high


@dataclass
class Moments:
    """Running count, extremes, sum and sum of squares about ``center`` of finite values."""

    center: float
    count: int = 0
    minimum: float | None = None
    maximum: float | None = None
    total: float = 0.0
    total_sq: float = 0.0

    def add(self, chunk: np.ndarray, deviations: np.ndarray, low: float, high: float) -> None:
        """Take in finite values whose minimum is ``low`` and maximum ``high``.

        ``deviations``: ``chunk - center``, float64, left as it is.
        """
        self.count += chunk.size
        self.total += float(chunk.sum())
        whole = chunk.size - chunk.size % _DOT_VALUES
        blocks = [deviations[start : start + _DOT_VALUES] for start in range(0, whole, _DOT_VALUES)]
        blocks.append(deviations[whole:])
        self.total_sq += sum(float(np.dot(block, block)) for block in blocks)
        self.minimum = low if self.minimum is None else min(self.minimum, low)
        self.maximum = high if self.maximum is None else max(self.maximum, high)


def center_of(edges: np.ndarray) -> float:
    """Point a column's squares are taken about: its middle edge (0 without edges)."""
    return float(edges[(len(edges) - 1) // 2]) if len(edges) else 0.0


def _below_edges(ordered: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Values of an ascending array in the slots before each edge's own slot, int64, shape (k+1,).

    Slot ``i`` starts at ``edges[i - 1]``, so that is the number of values below
    ``edges[i]``, except for the last edge, whose bin holds it: values at or below it.
    """
    below = np.searchsorted(ordered, edges, side="left")
    below[-1] = np.searchsorted(ordered, edges[-1], side="right")
    return below.astype(np.int64, copy=False)


class _BinCounter:
    """Counts finite values into the slots of ``edges``, one chunk at a time.

    Values are first counted on a uniform grid spanning the edges (about one
    cell per 8 expected values, 1,024 to 16,384 cells between the outer edges,
    an eighth more on either side). A cell that holds no
    edge lies wholly inside one bin, so its count goes to that bin as a block;
    only the values in the (at most k+1) cells that hold an edge, a few percent
    of them, are compared with the edges: sorted, then cut at the edges. This
    is exact because the cell index is a monotone function of the value,
    computed by the same float operations for values and edges: every edge in a
    lower cell is below a value, every edge in a higher cell above it.
    """

    def __init__(self, edges: np.ndarray, expected_values: int):
        self.edges = edges
        self.center = center_of(edges)
        grid_cells = int(np.clip(expected_values // 8, _MIN_GRID_CELLS, _MAX_GRID_CELLS))
        with np.errstate(divide="ignore", over="ignore"):
            scale = grid_cells / (edges[-1] - edges[0]) if len(edges) > 1 else 0.0
        # Edges a few ulps apart (a constant column) overflow the scale: one cell, all exact.
        self.scale = scale if np.isfinite(scale) else 0.0
        with np.errstate(over="ignore"):
            edge_positions = self._positions(edges - self.center)
        # The grid reaches an eighth of its width below the first edge and above the last, and
        # values beyond it are clipped into its outer cells: values outside the edges land in cells
        # without an edge (the outer slots), and a chunk seldom has a value to clip.
        margin = grid_cells // 8 + 1
        self.first_position = edge_positions[0] - margin if len(edges) else _ROUNDING
        self.last_position = edge_positions[-1] + margin if len(edges) else _ROUNDING
        self.first_bits = np.float64(self.first_position).view(np.int64)
        self.last_cell = int(self.last_position - self.first_position)
        self.edge_cells = self._cells(edge_positions, np.empty(len(edges), dtype=np.intp))
        self.holds_edge = np.zeros(self.last_cell + 1, dtype=bool)
        self.holds_edge[self.edge_cells] = True
        self.slot_starts = np.concatenate(([0], self.edge_cells))
        self.cell_counts = np.zeros(self.last_cell + 1, dtype=np.int64)
        # Values in edge cells: how many so far, and how many of them lie below each edge's slot.
        self.near_values = 0
        self.near_below_edges = np.zeros(len(edges), dtype=np.int64)
        self.values_without_edges = 0
        self.cells = np.empty(min(expected_values, CHUNK_VALUES), dtype=np.intp)

    def add(self, values: np.ndarray, deviations: np.ndarray, low: float, high: float) -> None:
        """Count finite ``values`` whose minimum is ``low`` and maximum ``high``.

        ``deviations``: ``values - center_of(edges)``, float64, overwritten.
        """
        if len(self.edges) == 0:
            self.values_without_edges += values.size
            return
        if values.size > len(self.cells):
            self.cells = np.empty(values.size, dtype=np.intp)
        positions = self._positions(deviations, out=deviations)
        # Positions rise with the values: when the extremes' are on the grid, so is every value's.
        with np.errstate(over="ignore"):
            lowest, highest = self._positions(np.array((low, high)) - self.center)
        if lowest < self.first_position or highest > self.last_position:
            np.clip(positions, self.first_position, self.last_position, out=positions)
        cells = self._cells(positions, self.cells[: values.size])
        self.cell_counts += np.bincount(cells, minlength=len(self.cell_counts))
        near_edges = values[np.take(self.holds_edge, cells)]  # a copy, free to sort; take: faster than [cells]
        near_edges.sort()
        self.near_below_edges += _below_edges(near_edges, self.edges)
        self.near_values += near_edges.size

    def counts(self) -> np.ndarray:
        """Counts so far, int64, shape (k+2,)."""
        if len(self.edges) == 0:
            return np.array([self.values_without_edges], dtype=np.int64)
        # A slot's block is the cells from its lower edge's cell up to the next edge's cell;
        # edge cells add nothing there, their values were counted exactly.
        block_counts = np.add.reduceat(np.where(self.holds_edge, 0, self.cell_counts), self.slot_starts)
        near_counts = np.diff(np.concatenate(([0], self.near_below_edges, [self.near_values])))
        return block_counts + near_counts

    def _positions(self, deviations: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Grid position of each value from its deviation from the centre, a whole number (see ``_ROUNDING``).

        A deviation beyond the float range is infinite: far off the grid, unless the grid is one
        cell (scale 0), which holds every value.
        """
        if not self.scale:
            positions = np.empty(len(deviations)) if out is None else out
            positions.fill(_ROUNDING)
            return positions
        with np.errstate(over="ignore"):
            positions = np.multiply(deviations, self.scale, out=out)
        return np.add(positions, _ROUNDING, out=positions)

    def _cells(self, positions: np.ndarray, cells: np.ndarray) -> np.ndarray:
        """Grid cell of each position on the grid, written into ``cells``."""
        return np.subtract(positions.view(np.int64), self.first_bits, out=cells)
