"""A streamed chunk is checked and measured in Arrow, without a frame: every part must come out exactly as the
whole-file read of that part does (profile counts, missing values, refusals, the sampled rows), whatever
types the producer wrote."""

from __future__ import annotations

import textwrap
import tomllib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from app.bigbatch import _key_generator, batch_parts, sample_threshold, scan_batch
from app.config import parse_config
from app.ingest import read_batch
from app.stats.profile import NumericProfile, Profile
from app.validation import Batch, InvalidBatch, check_chunk

CONFIG = """
target = "label"
timestamp = "ts"
task = "classification"

[schema]
x1 = "numeric"
x2 = "numeric"
color = "categorical"
code = "categorical"

[[models]]
name = "m"
mode = "static"
estimator = "logistic_regression"

[watch]
max_missing_share = 0.9

[scale]
chunk_rows = 1000
sample_rows = 700
"""


@pytest.fixture
def config(tmp_path):
    return parse_config(tomllib.loads(textwrap.dedent(CONFIG)), tmp_path / "driftdeck.toml")


def part(index: int, rows: int = 2500) -> pd.DataFrame:
    rng = np.random.default_rng(index)
    return pd.DataFrame({
        "x1": rng.normal(0, 1, rows),
        "x2": rng.normal(5, 2, rows),
        "color": rng.choice(["red", "green", "blue"], rows),
        "code": rng.integers(0, 4, rows),
        "label": rng.integers(0, 2, rows),
        "ts": pd.Timestamp("2026-01-05") + pd.to_timedelta(rng.integers(0, 86400, rows), unit="s"),
    })


def write(folder: Path, tables: list[pa.Table | pd.DataFrame]) -> Path:
    folder.mkdir()
    for index, table in enumerate(tables):
        if isinstance(table, pd.DataFrame):
            table = pa.Table.from_pandas(table, preserve_index=False)
        pq.write_table(table, folder / f"part-{index:03d}.parquet", row_group_size=900)
    (folder / "_SUCCESS").write_bytes(b"")
    return folder


def reference(config) -> Profile:
    frame = part(99, rows=3000)
    return Profile.build(frame.assign(code=frame["code"].astype(str)), config.schema)


def whole_reads(folder: Path, config) -> list[Batch | InvalidBatch]:
    """Each part read and validated as one whole file, by the in-memory path."""
    return [read_batch(path, config)[1] for path in batch_parts(folder)]


def assert_streamed_as_whole(folder: Path, config) -> None:
    """The streamed scan of ``folder`` equals, part by part, what whole-file reads of its parts give."""
    ref = reference(config)
    scanned = scan_batch(folder, config, {"m": ref})
    lenient = replace(config, watch=replace(config.watch, max_missing_share=1.0))  # a part may be all missing
    wholes = whole_reads(folder, lenient)
    assert all(isinstance(whole, Batch) for whole in wholes), [getattr(w, "reasons", None) for w in wholes]
    assert scanned.reasons == [] and scanned.rows == sum(len(whole.frame) for whole in wholes)
    assert scanned.labeled == any(whole.labeled for whole in wholes)
    expected = ref.project(wholes[0].frame)
    for whole in wholes[1:]:
        expected = expected.merge(ref.project(whole.frame))
    got = scanned.profiles["m"]
    assert got.rows == expected.rows
    for name, column in expected.columns.items():
        mine = got.columns[name]
        if isinstance(column, NumericProfile):
            assert np.array_equal(mine.counts, column.counts), name
            assert (mine.missing, mine.count, mine.minimum, mine.maximum) == (column.missing, column.count,
                                                                             column.minimum, column.maximum), name
            assert mine.total == pytest.approx(column.total) and mine.total_sq == pytest.approx(column.total_sq)
        else:
            assert (mine.counts, mine.missing) == (column.counts, column.missing), name
    # The sample: the rows whose keys are under the threshold, exactly as the whole-file frame has them.
    threshold = sample_threshold(batch_parts(folder), config)
    rows = [whole.frame.iloc[np.flatnonzero(_key_generator(config, index).random(len(whole.frame)) <= threshold)]
            for index, whole in enumerate(wholes)]
    pd.testing.assert_frame_equal(scanned.sample, pd.concat(rows, ignore_index=True))


def test_plain_parts_stream_as_they_read_whole(tmp_path, config):
    assert_streamed_as_whole(write(tmp_path / "b", [part(0), part(1)]), config)


def test_a_chunk_whose_column_is_all_missing(tmp_path, config):
    first, second = part(0), part(1)
    first.loc[:999, "x2"] = np.nan  # the whole first chunk
    first["x2"] = first["x2"].astype("float64")
    second["color"] = second["color"].astype(object)
    second.loc[1000:1999, "color"] = None  # the whole second chunk
    third = part(2).assign(x1=None)  # a column of Arrow's null type, every row
    folder = write(tmp_path / "b", [first, second, third])
    assert pq.read_schema(folder / "part-002.parquet").field("x1").type == pa.null()
    assert_streamed_as_whole(folder, config)
    assert scan_batch(folder, config, {}).rows == 7500


def test_categories_as_dictionary_text_integers_floats_and_booleans(tmp_path, config):
    encoded = pa.Table.from_pandas(part(0), preserve_index=False)
    encoded = encoded.set_column(2, "color", encoded.column("color").dictionary_encode())
    codes = part(1)["code"].to_numpy().astype("float64")
    codes[::7] = np.nan  # 2.0 and 3.0 must count as "2" and "3", NaN and null as missing
    as_float = pa.Table.from_pandas(part(1), preserve_index=False)
    as_float = as_float.set_column(3, "code", pa.array(codes, mask=np.arange(len(codes)) % 5 == 0, from_pandas=False))
    assert pc.sum(pc.is_nan(as_float.column("code"))).as_py() > 0 and as_float.column("code").null_count > 0
    as_bool = part(2).assign(code=lambda frame: frame["code"] > 1)
    as_text = part(3).assign(code=lambda frame: frame["code"].astype(str))
    folder = write(tmp_path / "b", [encoded, as_float, as_bool, as_text])
    assert pa.types.is_dictionary(pq.read_schema(folder / "part-000.parquet").field("color").type)
    assert_streamed_as_whole(folder, config)
    counts = scan_batch(folder, config, {"m": reference(config)}).profiles["m"].columns["code"].counts
    assert {"0", "1", "2", "3", "True", "False"} <= set(counts) and not any("." in name for name in counts)


def test_numbers_as_integers_nullable_integers_and_text(tmp_path, config):
    ints = part(0).assign(x1=lambda frame: (frame["x1"] * 100).round().astype("int64"))
    nullable = part(1).assign(x2=lambda frame: (frame["x2"] * 10).round().astype("Int64"))
    nullable.loc[::5, "x2"] = pd.NA
    text = part(2).assign(x1=lambda frame: frame["x1"].astype(str))
    folder = write(tmp_path / "b", [ints, nullable, text])
    assert pq.read_schema(folder / "part-001.parquet").field("x2").type == pa.int64()
    assert_streamed_as_whole(folder, config)


def test_nan_and_null_are_both_missing(tmp_path, config):
    frame = part(0)
    values = frame["x1"].to_numpy().copy()
    values[::3] = np.nan
    mask = np.zeros(len(frame), dtype=bool)
    mask[1::3] = True  # a third NaN, a third null, a third values
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.set_column(0, "x1", pa.array(values, mask=mask, from_pandas=False))
    assert table.column("x1").null_count == mask.sum() and np.isnan(values).sum() > 0
    folder = write(tmp_path / "b", [table, part(1)])
    assert_streamed_as_whole(folder, config)
    profile = scan_batch(folder, config, {"m": reference(config)}).profiles["m"].columns["x1"]
    assert profile.missing == int(np.isnan(values).sum() + mask.sum())


def test_dates_and_times_as_timestamps_dates_and_text(tmp_path, config):
    stamped = part(0).assign(ts=lambda frame: frame["ts"].dt.tz_localize("UTC"))
    dated = pa.Table.from_pandas(part(1), preserve_index=False)
    dated = dated.set_column(5, "ts", pa.array(part(1)["ts"].dt.date, type=pa.date32()))
    text = part(2).assign(ts=lambda frame: frame["ts"].astype(str))
    for index, table in enumerate([stamped, dated, text]):
        folder = write(tmp_path / f"b{index}", [table, part(3)])
        assert_streamed_as_whole(folder, config)


@pytest.mark.parametrize("fault, reason", [
    (lambda frame: frame.assign(x2=frame["x2"].where(frame.index != 2210, np.inf)), "1 non-finite value(s) (inf)"),
    (lambda frame: frame.assign(ts=frame["ts"].astype(str).where(frame.index != 2210, "soon")),
     "value(s) that are not dates, such as 'soon'"),
    (lambda frame: frame.assign(label=frame["label"].astype("float64").where(frame.index != 2210, 0.5)),
     "non-integer value(s) such as 0.5"),
])
def test_a_bad_value_in_a_late_chunk_is_refused_as_a_whole_read_refuses_it(tmp_path, config, fault, reason):
    folder = write(tmp_path / "b", [part(0), fault(part(1))])
    scanned = scan_batch(folder, config, {})
    whole = whole_reads(folder, config)[1]
    assert isinstance(whole, InvalidBatch) and len(whole.reasons) == 1 and reason in whole.reasons[0]
    # The same words, saying where: chunks end with the row groups of 900 rows, so row 2,211 of the second
    # part is in the chunk that starts at its row 1,801.
    assert scanned.reasons == [f"{whole.reasons[0]} (rows counted from row 1,801 of part-001.parquet)"]


def test_the_missing_share_is_judged_on_all_rows_with_the_whole_file_words(tmp_path, config):
    frame = part(0, rows=3000)
    frame.loc[:2799, "x1"] = np.nan  # 93% of this part, 3 chunks wholly missing; the limit is 90%
    folder = write(tmp_path / "b", [frame])
    whole = whole_reads(folder, config)[0]
    assert isinstance(whole, InvalidBatch)
    assert scan_batch(folder, config, {}).reasons == whole.reasons == [
        "column 'x1' is 93% missing (limit 90%, watch.max_missing_share)"]
    assert scan_batch(write(tmp_path / "c", [frame, part(1)]), config, {}).reasons == []  # 50% of the batch


def test_numbers_whose_sum_overflows_are_counted_not_refused(config):
    rows = 6
    chunk = pa.record_batch({
        "x1": pa.array([1e308, 1e308, 1e308, -1e308, 2.0, 3.0]),  # finite, though their sum is not
        "x2": pa.array([1e308, 1e308, np.nan, None, np.inf, 1.0], from_pandas=False),
        "color": pa.array(["a"] * rows), "code": pa.array([1] * rows), "label": pa.array([0, 1] * 3),
        "ts": pa.array(pd.date_range("2026-01-05", periods=rows, freq="h")),
    })
    with pytest.raises(InvalidBatch) as refused:
        check_chunk(chunk, config)
    assert refused.value.reasons == ["column 'x2' has 1 non-finite value(s) (inf)"]
    finite = chunk.set_column(1, "x2", pa.array([1e308, 1e308, np.nan, None, 4.0, 1.0], from_pandas=False))
    checked = check_chunk(finite, config)
    assert (checked.missing["x1"], checked.missing["x2"]) == (0, 2) and checked.labeled
