"""``driftdeck init``: infer a folder's schema and task, and write ``driftdeck.toml``."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pandas as pd
import pyarrow as pa

from app.config import CONFIG_NAME, ConfigError, parse_config
from app.readers import UnreadableFile, is_batch_name, read_table

MAX_CLASSES = 20
INFER_MAX_BYTES = 512 << 20
TEXT_UNIQUE_SHARE = 0.9  # a text column with at least this share of distinct values is not a category
TEXT_MIN_ROWS = 20
DATE_SAMPLE = 200
DATE_PATTERN = re.compile(
    r"\d{4}-\d{1,2}-\d{1,2}([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?"
    r"|\d{1,2}/\d{1,2}/\d{2,4}( \d{1,2}:\d{2}(:\d{2})?)?"
)


def infer_config_text(data_dir: Path, target: str, timestamp: str | None = None, id_column: str | None = None) -> str:
    """The TOML text of a config for the batch files already in ``data_dir``.

    Numeric Arrow columns become numeric features, everything else
    categorical. The task is classification when the target is text or bool,
    or whole numbers with at most 20 distinct values; regression otherwise.
    Without ``id_column``, one column named like an id (``id``, ``*_id``,
    ``*Id``) whose whole-number or text values never repeat is taken as the id
    column: it travels with the predictions, and as a feature it would only
    ever look like drift. For the same reason a column of dates or datetimes
    is never a feature: without ``timestamp``, the only such column becomes the
    timestamp; any other is left out, as is text whose values almost never
    repeat. Each column left out is named in a comment of the written config.
    """
    tables = []
    problems = []
    for path in sorted(p for p in Path(data_dir).iterdir() if p.is_file() and is_batch_name(p.name)):
        try:
            tables.append(read_table(path.name, path.read_bytes(), INFER_MAX_BYTES))
        except UnreadableFile as error:
            problems.append(f"{path.name}: {error}")
    if not tables:
        detail = f" ({'; '.join(problems[:3])})" if problems else ""
        raise ConfigError(f"{data_dir}: no readable batch files (.csv, .csv.gz, .parquet, .jsonl) to infer a schema from{detail}")
    table = tables[0]
    columns = table.column_names
    for name, wanted in (("target", target), ("timestamp", timestamp), ("id column", id_column)):
        if wanted is not None and wanted not in columns:
            raise ConfigError(f"{name} {wanted!r} is not a column of {len(columns)} found: {', '.join(columns[:20])}")
    if id_column is None:
        id_column = _likely_id_column(tables, exclude={target, timestamp})
    times = [c for c in columns if c not in {target, id_column} and _is_time_column(tables, c)]
    if timestamp is None and len(times) == 1:
        timestamp = times[0]
    special = {target, timestamp, id_column}
    left_out = {column: "its values are dates or times (a time column only ever looks like drift)"
                for column in times if column not in special}
    left_out.update({column: why for column in columns
                     if column not in special and column not in left_out and (why := _free_text(tables, column))})
    schema = {
        column: "numeric" if _is_number(table.schema.field(column).type) else "categorical"
        for column in columns if column not in special and column not in left_out
    }
    if not schema:
        raise ConfigError("no feature columns left once the target, timestamp and id columns are set aside")
    task = _infer_task(pa.concat_tables([t.select([target]) for t in tables if target in t.column_names], promote_options="permissive")[target])
    lines = [
        "# Written by `driftdeck init`; every key is explained in the README's config reference.",
        f"target = {json.dumps(target)}",
    ]
    if timestamp:
        lines.append(f"timestamp = {json.dumps(timestamp)}")
    if id_column:
        lines.append(f"id_column = {json.dumps(id_column)}")
    lines += [f"task = {json.dumps(task)}", "", "[schema]"]
    lines += [f"# {json.dumps(column)} is left out of the features: {why}" for column, why in left_out.items()]
    lines += [f"{json.dumps(column)} = {json.dumps(kind)}" for column, kind in schema.items()]
    static, dynamic = ("logistic_regression", "hist_gradient_boosting") if task == "classification" else ("ridge", "hist_gradient_boosting")
    lines += [
        "", "[[models]]", 'name = "static"', 'mode = "static"', f'estimator = "{static}"',
        "", "[[models]]", 'name = "dynamic"', 'mode = "dynamic"', f'estimator = "{dynamic}"', "window = 4",
        "", "[drift]", "psi_threshold = 0.2", "psi_watch = 0.1",
        "", "[watch]", "settle_seconds = 1.0", "",
    ]
    return "\n".join(lines)


def write_config(data_dir: Path, target: str, timestamp: str | None, id_column: str | None, force: bool,
                 source: str | None = None) -> Path:
    """Infer and write ``driftdeck.toml``; ``source`` is the object store URL the folder stands for, if any."""
    path = Path(data_dir) / CONFIG_NAME
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists; pass --force to replace it")
    text = infer_config_text(data_dir, target, timestamp, id_column)
    if source is not None:
        header, rest = text.split("\n", 1)
        text = f"{header}\n# The bucket this folder stands for: its objects are read into this folder.\nsource = {json.dumps(source)}\n{rest}"
    parse_config(tomllib.loads(text), path)
    path.write_text(text, encoding="utf-8")
    return path


def _likely_id_column(tables: list[pa.Table], exclude: set[str | None]) -> str | None:
    """The one column named like an id whose values are whole numbers or text, all distinct; else None."""
    first = tables[0]
    candidates = []
    for column in first.column_names:
        kind = first.schema.field(column).type
        named_like_an_id = column.lower() == "id" or column.lower().endswith("_id") or column.endswith("Id")
        if column in exclude or not named_like_an_id or not (pa.types.is_integer(kind) or pa.types.is_string(kind)):
            continue
        values = pa.chunked_array([t[column] for t in tables if column in t.column_names and t[column].type == kind])
        if values.null_count == 0 and len(values.unique()) == len(values):
            candidates.append(column)
    return candidates[0] if len(candidates) == 1 else None


def _is_number(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)


def _infer_task(values: pa.ChunkedArray) -> str:
    kind = values.type
    if pa.types.is_floating(kind):
        present = values.drop_null().to_numpy()
        whole = bool(len(present)) and bool(((present % 1) == 0).all())
        return "classification" if whole and len(set(present.tolist())) <= MAX_CLASSES else "regression"
    if pa.types.is_integer(kind):
        return "classification" if len(values.unique()) <= MAX_CLASSES else "regression"
    return "classification"


def _values(tables: list[pa.Table], column: str) -> pa.ChunkedArray:
    kind = tables[0].schema.field(column).type
    return pa.chunked_array([t[column] for t in tables if column in t.column_names and t[column].type == kind], kind)


def _is_time_column(tables: list[pa.Table], column: str) -> bool:
    """Arrow dates or timestamps, or text whose values all read as dates or datetimes."""
    kind = tables[0].schema.field(column).type
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        return True
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        return False
    sample = [value for value in _values(tables, column).drop_null()[:DATE_SAMPLE].to_pylist() if value.strip()]
    if not sample or not all(DATE_PATTERN.fullmatch(value.strip()) for value in sample):
        return False
    return not pd.to_datetime(pd.Series(sample), errors="coerce", format="mixed").isna().any()


def _free_text(tables: list[pa.Table], column: str) -> str | None:
    """Why a text column is no category (its values almost never repeat), else None."""
    kind = tables[0].schema.field(column).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        return None
    values = _values(tables, column).drop_null()
    distinct = len(values.unique())
    if len(values) < TEXT_MIN_ROWS or distinct < TEXT_UNIQUE_SHARE * len(values):
        return None
    return f"text whose values almost never repeat ({distinct:,} distinct in {len(values):,} rows)"
