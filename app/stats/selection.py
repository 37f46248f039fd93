"""Exact order statistics of a large array without sorting all of it.

A reference profile needs about 200 order statistics per numeric column (the
two neighbours of each of its 101 quantiles), not the whole sorted column, and
sorting 100,000 values costs ten times more than one pass over them. The
values are counted on a uniform grid between their extremes; only the cells
that hold a wanted rank are sorted, usually a few percent of the values.
"""

from __future__ import annotations

import numpy as np

# About one grid cell per 8 values, within these bounds.
_MIN_GRID_CELLS = 1 << 10
_MAX_GRID_CELLS = 1 << 16


def order_statistics(values: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """``np.sort(values)[ranks]`` of finite float64 ``values``, bit for bit.

    The cell of a value, ``floor((value - minimum) * scale)``, never decreases
    as the value grows (IEEE subtraction and multiplication by a positive
    constant are monotone), so every value in a lower cell is at most every
    value in a higher one: the cells are consecutive runs of the sorted array.
    Rank ``r`` then lies in the cell where the running count passes ``r``, at
    its place among that cell's values sorted. With data piled up in a few
    cells (a far outlier stretching the grid) more values are sorted, never
    more than all of them.
    """
    ranks = np.asarray(ranks, dtype=np.intp)
    low, high = float(values.min()), float(values.max())
    cells = int(np.clip(values.size // 8, _MIN_GRID_CELLS, _MAX_GRID_CELLS))
    with np.errstate(divide="ignore", over="ignore"):
        scale = cells / (high - low) if high > low else 0.0
    if not (0 < scale < np.inf):  # constant, or extremes too close or too far for a grid
        return np.sort(values)[ranks]
    cell = np.subtract(values, low)
    np.multiply(cell, scale, out=cell)
    cell = np.minimum(cell.astype(np.intp), cells - 1)
    counts = np.bincount(cell, minlength=cells)
    starts = np.cumsum(counts) - counts  # values in lower cells
    holding = np.searchsorted(starts + counts, ranks, side="right")
    wanted = np.zeros(cells, dtype=bool)
    wanted[holding] = True
    chosen = values[wanted[cell]]
    chosen.sort()
    chosen_before = np.cumsum(np.where(wanted, counts, 0)) - np.where(wanted, counts, 0)
    return chosen[chosen_before[holding] + ranks - starts[holding]]
