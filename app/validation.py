"""Check a parsed batch against the config's schema and turn it into a clean frame.

A batch either passes, as a :class:`CleanTable` whose frame has float64
numeric features and string categorical ones (it becomes a :class:`Batch` with
its file's name and hash), or fails with every reason found, each one precise
enough to fix the producer (``column 'age' must be numeric, found text 'abc'
in row 3``).

A chunk of a batch streamed in pieces (:mod:`app.bigbatch`) is checked by the
same rules without becoming a frame (:func:`check_chunk`): its numeric features
as float64 arrays and its categories counted, straight from Arrow. Each rule is
written once and both paths call it: the table's layout (:func:`check_layout`),
numbers (:func:`_missing_numbers`, with text through :func:`_numeric`), the share
missing (:func:`missing_share_reason`), the target (:func:`check_target`), the
time column (:func:`_timestamp`), a category's text (:func:`category_text`).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from app.columns import NUMERIC, category_text, category_texts
from app.config import Config


class InvalidBatch(Exception):
    """The batch fails validation; ``reasons`` lists every problem found."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


@dataclass(frozen=True)
class StreamedRows:
    """A batch too large to hold, read in chunks (:mod:`app.bigbatch`): where its rows are, how many, and
    their profile on each reference's edges (keyed by model name, or the folder's key)."""

    path: Path
    rows: int
    sampled: str  # what the frame holds of them, in words
    profiles: dict[str, Any]


@dataclass
class Batch:
    """One validated batch file.

    ``frame`` has one row per input row, in file order, with the schema's
    feature columns, and the target, timestamp and id columns when present;
    for a ``streamed`` batch, a uniform sample of its rows.
    """

    name: str
    sha256: str
    frame: pd.DataFrame
    labeled: bool
    warnings: list[str] = field(default_factory=list)
    streamed: StreamedRows | None = None

    @property
    def rows(self) -> int:
        return self.streamed.rows if self.streamed else len(self.frame)


@dataclass
class CleanTable:
    """What validation makes of a table that passes: a :class:`Batch` without its file's name and hash."""

    frame: pd.DataFrame
    labeled: bool
    warnings: list[str]


@dataclass
class CheckedChunk:
    """What validation makes of a streamed chunk that passes: what its profiles and totals need, no frame.

    ``numbers``: each numeric feature as float64, NaN where missing (what the
    frame's column would hold); ``categories``: each categorical feature's
    count per category text; ``missing``: each feature's missing rows. The
    share missing is judged on the whole batch (:func:`missing_share_reason`).
    """

    numbers: dict[str, np.ndarray]
    categories: dict[str, dict[str, int]]
    missing: dict[str, int]
    labeled: bool
    warnings: list[str]


def check_layout(schema: pa.Schema, rows: int, config: Config) -> list[str]:
    """The rules about the table as a whole: unique, flat columns, every feature there, rows; its warnings.

    Raises :class:`InvalidBatch` at the first rule broken.
    """
    columns = list(schema.names)
    if len(set(columns)) != len(columns):
        duplicated = sorted({c for c in columns if columns.count(c) > 1})
        raise InvalidBatch([f"duplicate column name(s): {_names(duplicated)}"])
    if rows == 0:
        raise InvalidBatch(["header only: the file has no rows"])
    nested = [field.name for field in schema if pa.types.is_nested(field.type)]
    if nested:
        raise InvalidBatch([f"column(s) {_names(nested)} hold nested values (lists or records); a batch is a flat table"])
    missing = [column for column in config.schema if column not in columns]
    if missing:
        raise InvalidBatch([f"missing feature column(s): {_names(missing)}"])
    known = set(config.schema) | {c for c in (config.target, config.timestamp, config.id_column) if c}
    warnings = []
    extra = [column for column in columns if column not in known]
    if extra:
        warnings.append(f"unknown extra column(s) ignored: {_names(extra)}")
    if config.timestamp and config.timestamp not in columns:
        raise InvalidBatch([f"timestamp column {config.timestamp!r} is missing"])
    return warnings


def missing_share_reason(column: str, missing: int, rows: int, config: Config) -> str | None:
    """The reason a feature with ``missing`` of ``rows`` rows missing is refused, or None within the limit."""
    share = missing / rows
    if share <= config.watch.max_missing_share:
        return None
    return f"column {column!r} is {share:.0%} missing (limit {config.watch.max_missing_share:.0%}, watch.max_missing_share)"


def validate_table(table: pa.Table, config: Config) -> CleanTable:
    """Validate ``table`` against ``config``; raise :class:`InvalidBatch` with all reasons.

    Categorical columns may arrive dictionary-encoded (see
    :func:`app.readers.read_table`); the frame is the same either way.
    """
    warnings = check_layout(table.schema, table.num_rows, config)
    table = _text_typed(table, config)
    columns = list(table.column_names)
    kept = list(dict.fromkeys(c for c in (*config.schema, config.target, config.timestamp, config.id_column)
                              if c and c in columns))
    # Categorical text that Arrow dictionary-encoded becomes category texts straight from its codes, on a
    # second thread (Python objects, made under the GIL) while Arrow converts the rest without the GIL, in
    # output order: float64 features come out ready to use (in one float block), and only the columns
    # that need converting are replaced below.
    arrow_texts = [column for column, kind in config.schema.items()
                   if kind == "categorical" and _is_dictionary_text(table.column(column))]
    with ThreadPoolExecutor(max_workers=1) as worker:
        making_texts = worker.submit(lambda: {column: category_texts(table.column(column)) for column in arrow_texts})
        frame = table.select([column for column in kept if column not in arrow_texts]).to_pandas()
        texts = making_texts.result()
    for column, values in texts.items():  # in output order, so each lands at its place
        frame.insert(kept.index(column), column, values)
    reasons: list[str] = []
    for column, kind in config.schema.items():
        source = frame[column]
        if kind == "numeric":
            values, missing = _numeric(source, column, reasons)
        elif column in texts:
            values, missing = source, table.column(column).null_count
        else:
            values = category_texts(source)
            missing = int(source.isna().sum())  # the same rows, from the Arrow null mask or the codes (fast)
        if reason := missing_share_reason(column, missing, table.num_rows, config):
            reasons.append(reason)
        if values is not source:
            frame[column] = values
    labeled = False
    if config.target and config.target in frame.columns:
        source = frame[config.target]
        frame[config.target] = clean_target(source, config, reasons)
        labeled = bool(source.notna().any())  # the cleaned target is missing exactly where the source is
    if config.timestamp:
        frame[config.timestamp] = _timestamp(frame[config.timestamp], config.timestamp, reasons)
    if reasons:
        raise InvalidBatch(reasons)
    return CleanTable(frame=frame, labeled=labeled, warnings=warnings)


def _is_dictionary_text(column: pa.ChunkedArray) -> bool:
    """Dictionary-encoded text with no missing entry in its dictionaries (pandas could not take one as a category)."""
    if not pa.types.is_dictionary(column.type):
        return False
    text = pa.types.is_string(column.type.value_type) or pa.types.is_large_string(column.type.value_type)
    return text and not any(chunk.dictionary.null_count for chunk in column.chunks)


def check_chunk(chunk: pa.RecordBatch, config: Config) -> CheckedChunk:
    """Check one streamed chunk by the rules :func:`validate_table` applies, without making a frame.

    Numbers and dictionary-encoded or plain text stay in Arrow and numpy;
    only a column of another type (numbers written as text, dates, times) is
    handed to the frame's own rule as a Series. Raises :class:`InvalidBatch`
    with every reason, rows counted from the chunk's first.
    """
    warnings = check_layout(chunk.schema, chunk.num_rows, config)
    reasons: list[str] = []
    numbers: dict[str, np.ndarray] = {}
    categories: dict[str, dict[str, int]] = {}
    missing: dict[str, int] = {}
    for column, kind in config.schema.items():
        values = chunk.column(column)
        if kind == "numeric":
            numbers[column], missing[column] = _numeric_array(values, column, reasons)
        else:
            categories[column] = _category_counts(values)
            missing[column] = chunk.num_rows - sum(categories[column].values())
    labeled = False
    if config.target and config.target in chunk.schema.names:
        target = chunk.column(config.target).to_pandas()
        check_target(target, config, reasons)
        labeled = bool(target.notna().any())
    times = chunk.column(config.timestamp) if config.timestamp else None
    if times is not None and not pa.types.is_timestamp(times.type) and _text_times(times) is None:
        _timestamp(chunk.column(config.timestamp).to_pandas(), config.timestamp, reasons)
    if reasons:
        raise InvalidBatch(reasons)
    return CheckedChunk(numbers=numbers, categories=categories, missing=missing, labeled=labeled, warnings=warnings)


def _numeric_array(values: pa.Array, column: str, reasons: list[str]) -> tuple[np.ndarray, int]:
    """A numeric feature's Arrow values as float64 (NaN where missing) and how many are missing.

    Integers and floats convert as ``to_pandas`` then ``astype("float64")`` would,
    and so does text that Arrow reads as numbers throughout (a streamed text
    file's); any other type, and text with a word in it, goes through
    :func:`_numeric`, the frame's rule, which names the word and its row.
    """
    numbers = _text_numbers(values)
    values = values if numbers is None else numbers
    if pa.types.is_integer(values.type) or pa.types.is_floating(values.type):
        array = values.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)  # nulls become NaN
        return array, _missing_numbers(array, column, reasons)
    series, missing = _numeric(values.to_pandas(), column, reasons)
    return series.to_numpy(dtype=np.float64), missing


def _text_typed(table: pa.Table, config: Config) -> pa.Table:
    """``table`` with each numeric feature, and the time column, that is text Arrow reads as numbers (times)
    throughout made so, in Arrow: a streamed text file's columns, or numbers a Parquet file stores as text.
    Text with a word in it stays text, for the frame's rules to name the word."""
    typed = {column: _text_numbers(table.column(column)) for column, kind in config.schema.items() if kind == NUMERIC}
    if config.timestamp and config.timestamp in table.column_names:
        typed[config.timestamp] = _text_times(table.column(config.timestamp))
    for column, values in typed.items():
        if values is not None:
            table = table.set_column(table.column_names.index(column), column, values)
    return table


def _text_numbers(values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray | None:
    """Text values as float64 when Arrow reads every one as a number (missing ones stay missing); else None.

    The text "nan" is a word to the frame's rule (:func:`_numeric`): None for it too.
    """
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        return None
    try:
        numbers = pc.cast(values, pa.float64())
    except pa.ArrowInvalid:
        return None
    return None if pc.any(pc.is_nan(numbers)).as_py() else numbers


def _text_times(values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray | None:
    """Text values as times when Arrow reads every one as an ISO 8601 time; else None (the frame's rule reads it)."""
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        return None
    try:
        return pc.cast(values, pa.timestamp("ns"))
    except pa.ArrowInvalid:
        return None


def _category_counts(values: pa.Array) -> dict[str, int]:
    """Rows per category text (:func:`category_text`) of a categorical feature's Arrow values; missing ones
    (null, NaN) are not counted.

    Text (dictionary-encoded or not), numbers and booleans are counted by Arrow
    and only the distinct values become text; other types go through
    :func:`category_texts`, the frame's rule.
    """
    kind = values.type.value_type if pa.types.is_dictionary(values.type) else values.type
    plain = (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind)
             or pa.types.is_floating(kind) or pa.types.is_boolean(kind))
    counts: dict[str, int] = {}
    if plain and pa.types.is_dictionary(values.type):  # its codes counted: a tenth of value_counts' time
        codes = values.indices.drop_null() if values.null_count else values.indices
        pairs = zip(values.dictionary.to_pylist(), np.bincount(codes.to_numpy(), minlength=len(values.dictionary)))
    elif plain:
        counted = pc.value_counts(values)
        pairs = zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist())
    else:
        pairs = category_texts(pa.chunked_array([values])).value_counts(dropna=True, sort=False).items()
    for value, count in pairs:
        if value is None or value != value:  # null, or a float NaN: missing, as in the frame
            continue
        text = category_text(value)
        counts[text] = counts.get(text, 0) + int(count)
    return counts


def _numeric(values: pd.Series, column: str, reasons: list[str]) -> tuple[pd.Series, int]:
    """``values`` as float64 (the same Series when they already are) and how many are missing.

    Text that is not a number adds a reason, as do infinite values; only empty
    cells count as missing, so a column of text is not also called missing.
    """
    if values.dtype == object or pd.api.types.is_string_dtype(values):
        numbers = pd.to_numeric(values, errors="coerce")
        bad = values.notna() & numbers.isna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            reasons.append(
                f"column {column!r} must be numeric, found text {_shown(values.iloc[row])} in row {row + 1}"
                f" ({int(bad.sum())} such value(s))"
            )
            return numbers.astype("float64"), int(values.isna().sum())
        values = numbers
    if pd.api.types.is_bool_dtype(values):
        values = values.astype("float64")
    if not pd.api.types.is_numeric_dtype(values):
        reasons.append(f"column {column!r} must be numeric, found {values.dtype} values")
        return pd.Series(np.nan, index=values.index), len(values)
    numbers = values if values.dtype == np.float64 else values.astype("float64")
    return numbers, _missing_numbers(numbers.to_numpy(), column, reasons)


def _missing_numbers(array: np.ndarray, column: str, reasons: list[str]) -> int:
    """How many of a numeric feature's float64 values are missing (NaN); a reason for infinite ones."""
    with np.errstate(over="ignore"):  # a sum too large to hold is counted below
        if math.isfinite(array.sum()):  # no NaN nor inf, in one fast pass
            return 0
    non_finite = len(array) - np.count_nonzero(np.isfinite(array))
    missing = np.count_nonzero(np.isnan(array))
    if non_finite > missing:
        reasons.append(f"column {column!r} has {non_finite - missing} non-finite value(s) (inf)")
    return int(missing)


def clean_target(values: pd.Series, config: Config, reasons: list[str]) -> pd.Series:
    """The target as float64 (regression) or class-label text, adding a reason for each value that cannot be one."""
    before = len(reasons)
    numbers = check_target(values, config, reasons)
    if numbers is not None:
        return numbers
    if len(reasons) > before:  # float labels that are not whole: left as they are, the batch is refused
        return values
    return category_texts(values)


def check_target(values: pd.Series, config: Config, reasons: list[str]) -> pd.Series | None:
    """Add a reason for each kind of target value the task cannot take; a regression's target as float64.

    Class labels are any values, but a float one must be whole.
    """
    name = config.target
    if config.task == "regression":
        numbers = pd.to_numeric(values, errors="coerce")
        bad = values.notna() & numbers.isna()
        if bad.any():
            example = values[bad].iloc[0]
            reasons.append(f"target {name!r} must be numeric for regression, found {_shown(example)}")
        elif np.isinf(numbers.to_numpy(dtype="float64")).any():
            reasons.append(f"target {name!r} has non-finite value(s) (inf)")
        return numbers.astype("float64")
    if pd.api.types.is_float_dtype(values):
        present = values.dropna()
        fractional = present[(present % 1) != 0]
        if len(fractional):
            reasons.append(
                f"target {name!r} has non-integer value(s) such as {float(fractional.iloc[0])!r}:"
                " a classification task needs class labels"
            )
    return None


def _timestamp(values: pd.Series, column: str, reasons: list[str]) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(values):
        return values
    try:
        parsed = pd.to_datetime(values.astype(object), errors="coerce", format="mixed")
    except (ValueError, TypeError) as error:  # e.g. a mix of time zones
        reasons.append(f"timestamp column {column!r} cannot be read as one time line: {error}")
        return values
    bad = values.notna() & parsed.isna()
    if bad.any():
        reasons.append(f"timestamp column {column!r} has value(s) that are not dates, such as {_shown(values[bad].iloc[0])}")
    return parsed


def _names(columns: list[str]) -> str:
    return ", ".join(repr(c) for c in columns[:10]) + (f" and {len(columns) - 10} more" if len(columns) > 10 else "")


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "...'"
