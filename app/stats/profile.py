"""Mergeable profiles of a dataset: what drift detection keeps instead of raw rows.

A *reference* profile is built once from a model's training data
(:meth:`Profile.build`). It fixes, per numeric column, a fine set of quantile
bin edges (up to 100 bins). Every later batch is *projected* onto those same
edges (:meth:`Profile.project`), so two profiles on the same edges can be
compared bin by bin and added together exactly (:meth:`Profile.merge`): a
running window of batches needs no raw rows.

Bin convention (the same as ``numpy.histogram``): with edges ``e[0] < ... < e[k]``,
``counts`` has ``k + 2`` slots. Slot 0 counts values below ``e[0]``; slot ``i``
(1..k) counts the left-closed bin ``[e[i-1], e[i])``, except that the last bin
``[e[k-1], e[k]]`` is closed on both sides; slot ``k + 1`` counts values above
``e[k]``.

Missing values are NaN, None, pandas NA and, for numeric columns, +/-inf:
a non-finite number cannot be placed on the value axis, so it is counted as
missing rather than silently skewing sums and extremes.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from app.stats.binning import Moments, NumericProjection, center_of
from app.stats.selection import order_statistics

NUMERIC = "numeric"
CATEGORICAL = "categorical"
DEFAULT_BINS = 100


@dataclass(eq=False)
class NumericProfile:
    """Binned summary of one numeric column.

    ``edges``: float64, shape (k+1,), the reference's unique quantile edges, fixed
    once made (empty when the reference column had no values at all).
    ``counts``: int64, shape (k+2,), see the module docstring for the slots
    (shape (1,) when ``edges`` is empty: one slot for the whole axis).
    ``missing``: rows with no finite value; ``count``: rows with one.
    ``minimum``/``maximum``: extremes of the finite values (None when ``count`` is 0).
    ``total``: sum of the values. ``total_sq``: sum of squared deviations from
    :attr:`center` (a value fixed by the edges), not from 0: squares about a
    nearby point keep the variance accurate for data far from zero (timestamps,
    prices) where ``E[x^2] - E[x]^2`` cancels catastrophically.
    """

    edges: np.ndarray
    counts: np.ndarray
    missing: int
    count: int
    minimum: float | None
    maximum: float | None
    total: float
    total_sq: float

    @property
    def center(self) -> float:
        """Point the squares in ``total_sq`` are taken about: the middle edge (0 without edges)."""
        return center_of(self.edges)

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    @property
    def std(self) -> float | None:
        """Population standard deviation of the finite values (None without values)."""
        if not self.count:
            return None
        offset = self.total / self.count - self.center
        variance = self.total_sq / self.count - offset * offset
        return float(np.sqrt(max(variance, 0.0)))

    @property
    def rows(self) -> int:
        return self.count + self.missing

    def merge(self, other: NumericProfile) -> NumericProfile:
        """Exact sum of two profiles made on the same edges (ValueError otherwise)."""
        if not isinstance(other, NumericProfile) or not np.array_equal(self.edges, other.edges):
            raise ValueError("numeric profiles can only be merged on identical edges")
        return NumericProfile(
            edges=self.edges,
            counts=self.counts + other.counts,
            missing=self.missing + other.missing,
            count=self.count + other.count,
            minimum=_combine_optional(min, self.minimum, other.minimum),
            maximum=_combine_optional(max, self.maximum, other.maximum),
            total=self.total + other.total,
            total_sq=self.total_sq + other.total_sq,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": NUMERIC,
            "edges": [float(edge) for edge in self.edges],
            "counts": [int(count) for count in self.counts],
            "missing": self.missing,
            "count": self.count,
            "minimum": self.minimum,
            "maximum": self.maximum,
            "total": self.total,
            "total_sq": self.total_sq,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NumericProfile:
        return cls(
            edges=np.asarray(data["edges"], dtype=np.float64),
            counts=np.asarray(data["counts"], dtype=np.int64),
            missing=int(data["missing"]),
            count=int(data["count"]),
            minimum=_optional_float(data["minimum"]),
            maximum=_optional_float(data["maximum"]),
            total=float(data["total"]),
            total_sq=float(data["total_sq"]),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NumericProfile):
            return NotImplemented
        return (
            np.array_equal(self.edges, other.edges)
            and np.array_equal(self.counts, other.counts)
            and (self.missing, self.count, self.minimum, self.maximum, self.total, self.total_sq)
            == (other.missing, other.count, other.minimum, other.maximum, other.total, other.total_sq)
        )


@dataclass
class CategoricalProfile:
    """Category counts of one categorical column; categories are compared as strings."""

    counts: dict[str, int]
    missing: int

    @property
    def count(self) -> int:
        """Rows with a (non-missing) category."""
        return sum(self.counts.values())

    @property
    def rows(self) -> int:
        return self.count + self.missing

    def merge(self, other: CategoricalProfile) -> CategoricalProfile:
        if not isinstance(other, CategoricalProfile):
            raise ValueError("a categorical profile can only be merged with a categorical one")
        return CategoricalProfile(
            counts=dict(Counter(self.counts) + Counter(other.counts)),
            missing=self.missing + other.missing,
        )

    def to_dict(self) -> dict[str, Any]:
        return {"kind": CATEGORICAL, "counts": dict(self.counts), "missing": self.missing}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CategoricalProfile:
        return cls(
            counts={str(name): int(count) for name, count in data["counts"].items()},
            missing=int(data["missing"]),
        )


ColumnProfile = NumericProfile | CategoricalProfile


@dataclass
class Profile:
    """Per-column profiles of a dataset with ``rows`` rows."""

    columns: dict[str, ColumnProfile]
    rows: int

    @classmethod
    def build(cls, df: pd.DataFrame, schema: dict[str, str], bins: int = DEFAULT_BINS) -> Profile:
        """Reference profile of ``df``: numeric edges are ``df``'s own quantiles.

        ``schema`` maps column -> "numeric" | "categorical"; ``bins`` is the
        maximum number of fine bins per numeric column (fewer when values tie).
        """
        columns: dict[str, ColumnProfile] = {}
        for name, kind in schema.items():
            if kind == NUMERIC:
                values = numeric_values(df[name]) if name in df else np.full(len(df), np.nan)
                columns[name] = reference_numeric(values, bins)
            elif kind == CATEGORICAL:
                columns[name] = profile_categorical(df[name] if name in df else None, len(df))
            else:
                raise ValueError(f"column {name!r}: unknown kind {kind!r}")
        return cls(columns=columns, rows=len(df))

    def project(self, df: pd.DataFrame) -> Profile:
        """Profile of ``df`` on this profile's edges (categoricals: plain counts); a column it lacks is all missing."""
        numeric = [name for name, column in self.columns.items() if isinstance(column, NumericProfile)]
        projection = Projection(self, rows_per_piece=len(df))
        projection.add({name: numeric_values(df[name]) for name in numeric if name in df},
                       {name: profile_categorical(df[name] if name in df else None, len(df))
                        for name in self.columns if name not in numeric}, len(df))
        return projection.profile()

    def merge(self, other: Profile) -> Profile:
        """Exact sum of two profiles of the same columns on the same edges."""
        if self.columns.keys() != other.columns.keys():
            raise ValueError("profiles with different columns cannot be merged")
        merged = {name: column.merge(other.columns[name]) for name, column in self.columns.items()}
        return Profile(columns=merged, rows=self.rows + other.rows)

    @property
    def schema(self) -> dict[str, str]:
        return {
            name: NUMERIC if isinstance(column, NumericProfile) else CATEGORICAL
            for name, column in self.columns.items()
        }

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "columns": {name: column.to_dict() for name, column in self.columns.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        columns: dict[str, ColumnProfile] = {}
        for name, column in data["columns"].items():
            kind = NumericProfile if column["kind"] == NUMERIC else CategoricalProfile
            columns[name] = kind.from_dict(column)
        return cls(columns=columns, rows=int(data["rows"]))

    def to_json(self) -> str:
        # Python writes floats with repr(), the shortest text that reads back bit-exact.
        return json.dumps(self.to_dict(), allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> Profile:
        return cls.from_dict(json.loads(text))


class Projection:
    """Rows projected onto a reference's edges a piece at a time (a frame, a streamed chunk), exactly.

    A piece: float64 arrays (NaN = missing) per numeric column, counts per
    categorical one; a column not given is all missing. One bin counter per
    column serves every piece (``rows_per_piece``: its scratch).
    """

    def __init__(self, reference: Profile, rows_per_piece: int) -> None:
        self.reference = reference
        self.rows = 0
        self._numeric = {name: NumericProjection(column.edges, rows_per_piece)
                         for name, column in reference.columns.items() if isinstance(column, NumericProfile)}
        self._categorical: dict[str, CategoricalProfile] = {}

    def add(self, numbers: Mapping[str, np.ndarray], categories: Mapping[str, CategoricalProfile], rows: int) -> None:
        for name, projection in self._numeric.items():
            projection.add(numbers[name] if name in numbers else np.full(rows, np.nan))
        for name, column in self.reference.columns.items():
            if isinstance(column, CategoricalProfile):
                piece = categories[name] if name in categories else CategoricalProfile(counts={}, missing=rows)
                known = self._categorical.get(name)
                self._categorical[name] = known.merge(piece) if known else piece
        self.rows += rows

    def profile(self) -> Profile:
        """The profile of every row added so far."""
        columns: dict[str, ColumnProfile] = {}
        for name in self.reference.columns:
            if name in self._numeric:
                numeric = self._numeric[name]
                columns[name] = _numeric_profile(numeric.edges, numeric.counts(), numeric.moments, numeric.rows)
            else:
                columns[name] = self._categorical.get(name, CategoricalProfile(counts={}, missing=self.rows))
        return Profile(columns=columns, rows=self.rows)


def numeric_values(series: pd.Series) -> np.ndarray:
    """Float64 array of a column, NaN where missing (works for nullable dtypes too).

    A float64 column already marks missing values with NaN and is returned
    without a copy (read-only).
    """
    if series.dtype == np.float64:
        return series.to_numpy()
    return series.to_numpy(dtype=np.float64, na_value=np.nan)


def quantile_edges(values: np.ndarray, bins: int = DEFAULT_BINS) -> np.ndarray:
    """Unique reference edges for ``values`` (float64, NaN/inf ignored), shape (k+1,), k <= bins.

    Continuous data: the quantiles at 0, 1/bins, ..., 1 (``edges[0]`` is the
    minimum, ``edges[-1]`` the maximum). When ties leave fewer than ``bins``
    distinct quantiles and the column has at most ``bins`` distinct values, each
    distinct value gets its own bin instead: edges are the values plus one edge
    just above the largest (so a 0/1 column has bins {0} and {1}, and a constant
    column one bin holding exactly that constant). Empty when no value is finite.
    """
    return _edges_of_finite(values[np.isfinite(values)], bins)


def reference_numeric(values: np.ndarray, bins: int = DEFAULT_BINS) -> NumericProfile:
    """Profile of a float64 array on its own :func:`quantile_edges` (what ``Profile.build`` keeps).

    Equal to ``profile_numeric(values, quantile_edges(values, bins))``.
    """
    return profile_numeric(values, quantile_edges(values, bins))


def profile_numeric(values: np.ndarray, edges: np.ndarray) -> NumericProfile:
    """Profile of a float64 array (NaN/inf = missing) on the given edges.

    Works through ``values`` in chunks of 65,536 with reused scratch arrays,
    so its temporary memory stays around two megabytes whatever the batch size.
    """
    projection = NumericProjection(edges, expected_values=len(values))
    projection.add(values)
    return _numeric_profile(edges, projection.counts(), projection.moments, len(values))


def _numeric_profile(edges: np.ndarray, counts: np.ndarray, moments: Moments, rows: int) -> NumericProfile:
    return NumericProfile(edges=edges, counts=counts, missing=rows - moments.count, count=moments.count,
                          minimum=moments.minimum, maximum=moments.maximum, total=moments.total,
                          total_sq=moments.total_sq)


def _edges_of_finite(finite: np.ndarray, bins: int) -> np.ndarray:
    """:func:`quantile_edges` of values already finite."""
    if finite.size == 0:
        return np.empty(0, dtype=np.float64)
    edges = np.unique(_quantiles(finite, np.arange(bins + 1) / bins))
    if len(edges) < bins + 1:
        distinct = np.unique(finite)
        if len(distinct) <= bins:
            return np.append(distinct, np.nextafter(distinct[-1], np.inf))
    return edges


def _quantiles(finite: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """``np.quantile(finite, quantiles)`` (its default "linear" method), bit for bit.

    Picks the two neighbours of each quantile's position with
    :func:`order_statistics` instead of sorting, and interpolates with numpy's
    own arithmetic.
    """
    position = (len(finite) - 1) * quantiles
    below = np.floor(position)
    weight = position - below
    below = below.astype(np.intp)
    above = np.minimum(below + 1, len(finite) - 1)
    low, high = np.split(order_statistics(finite, np.concatenate((below, above))), 2)
    step = high - low
    # numpy interpolates from the nearer neighbour: from below under 0.5, from above from 0.5 on.
    return np.where(weight >= 0.5, high - step * (1 - weight), low + step * weight)


def profile_categorical(series: pd.Series | None, rows: int) -> CategoricalProfile:
    """Category counts of ``series`` (None = column absent: ``rows`` missing values)."""
    if series is None:
        return CategoricalProfile(counts={}, missing=rows)
    pairs = _arrow_text_counts(series)
    if pairs is None:
        pairs = _label_counts(series)
    by_name: Counter[str] = Counter()
    for value, count in pairs:
        by_name[str(value)] += int(count)
    return CategoricalProfile(counts=dict(by_name), missing=len(series) - sum(by_name.values()))


def _label_counts(series: pd.Series) -> Iterable[tuple[Any, int]]:
    """(label, rows) of each distinct non-missing value of ``series`` (see :func:`comparable_labels`)."""
    return comparable_labels(series).value_counts(dropna=True, sort=False).items()


def _arrow_text_counts(series: pd.Series) -> list[tuple[str, int]] | None:
    """(text, rows) of each distinct non-missing value of an Arrow-backed text column; None for other columns.

    Counts with Arrow directly, a quarter faster than through pandas; only the
    distinct values become Python strings.
    """
    if not isinstance(series.array, pd.arrays.ArrowExtensionArray):
        return None
    data = pa.array(series.array)  # the column's own Arrow array (or chunked array), not a copy
    if not (pa.types.is_string(data.type) or pa.types.is_large_string(data.type)):
        return None
    counted = pc.value_counts(data)
    pairs = zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist())
    return [(text, count) for text, count in pairs if text is not None]


def comparable_labels(series: pd.Series) -> pd.Series:
    """Series whose values print as the category names, whatever the batch's dtype.

    A categorical column of integer codes reads as float64 as soon as one value
    is missing; printing 3.0 as "3.0" would make it a new category, so integral
    floats are compared as integers.
    """
    if pd.api.types.is_float_dtype(series.dtype):
        present = series.dropna()
        if np.array_equal(present, np.round(present)) and np.isfinite(present).all():
            return series.astype("Int64")
    return series


def _combine_optional(pick, first: float | None, second: float | None) -> float | None:
    if first is None:
        return second
    if second is None:
        return first
    return pick(first, second)


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)
