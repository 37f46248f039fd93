"""Hostile input: files, names, snapshots, configs and links built to break driftdeck.

Every batch, however broken, must end as a valid batch or a quarantine with a
reason (``InvalidBatch``), within a memory bound; names and values are shown
literally, never interpreted; a snapshot file driftdeck did not write is
never loaded; nothing is written outside the data and state folders.
Breakages still open are marked ``xfail(strict=True)`` with what breaks.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.cli import main
from app.config import Config, ConfigError, load_config
from app.fsutil import sha256_file
from app.ingest import read_batch
from app.commands import CommandFailed
from app.engine.monitor import Monitor
from app.readers import MAX_COLUMNS
from app.replay import replay
from app.snapshots import SnapshotError
from app.validation import Batch, InvalidBatch
from tests.conftest import (BASE_CONFIG, INGEST_ONLY_CONFIG, REPO_ROOT, copy_of, make_batch, processed_folder, tree,
                            wait_until, write_batch, write_config)
from tests.faults import marker_pickle_bytes, peak_rss_growth_mb

FEATURES = ["x1", "x2", "x3", "color"]
MAX_FILE_MB = 1
SMALL_LIMIT_CONFIG = INGEST_ONLY_CONFIG.replace("settle_seconds = 0.3", f"settle_seconds = 0.3\nmax_file_mb = {MAX_FILE_MB}")
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Config:
    """The base schema, no models, ``max_file_mb = 1``."""
    folder = tmp_path_factory.mktemp("config")
    write_config(folder, SMALL_LIMIT_CONFIG)
    return load_config(folder)


def outcome(name: str, data: bytes, config: Config) -> Batch | InvalidBatch:
    """read_batch's answer for a file named ``name`` holding ``data`` (anything raised propagates).

    These tests are about what the readers make of content, so a file above
    ``max_file_mb`` is let in (the limit still bounds decompression).
    """
    size_mb = len(data) / (1 << 20)
    admitting = replace(config, watch=replace(config.watch, max_file_mb=max(config.watch.max_file_mb, size_mb)))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        return read_batch(path, admitting)[1]


def assert_batch_or_reasons(result: Batch | InvalidBatch) -> None:
    if isinstance(result, InvalidBatch):
        assert result.reasons and all(isinstance(reason, str) and reason for reason in result.reasons)
        return
    frame = result.frame
    for column in ("x1", "x2", "x3"):
        assert frame[column].dtype == np.float64
        assert not np.isinf(frame[column].to_numpy()).any(), "an infinity got into a valid batch"
    assert all(isinstance(value, str) or pd.isna(value) for value in frame["color"]), "categories must be text"


def parquet_bytes(table: pa.Table, **options) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, **options)
    return buffer.getvalue()


# --- readers and validator under fuzzing ------------------------------------------------------------


@FUZZ
@given(suffix=st.sampled_from([".csv", ".csv.gz", ".parquet", ".jsonl"]), data=st.binary(max_size=4096))
def test_random_bytes_under_any_batch_name_give_a_batch_or_reasons(config, suffix: str, data: bytes) -> None:
    assert_batch_or_reasons(outcome(f"random{suffix}", data, config))


HOSTILE_TEXT = st.one_of(
    st.sampled_from(["nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e400", "-1e400", "", "NULL", "null", "N/A",
                     "\x1b[31m", "[bold red]x[/]", "\x00", "'; DROP TABLE files;--", "9" * 400, "0x1F", "1,5"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=30),
)


@FUZZ
@given(rows=st.lists(st.lists(HOSTILE_TEXT, min_size=6, max_size=6), min_size=1, max_size=12),
       latin1_row=st.integers(min_value=-1, max_value=11), gzipped=st.booleans())
def test_csv_cells_of_nan_inf_markup_and_mixed_encodings_give_a_batch_or_reasons(
    config, rows: list[list[str]], latin1_row: int, gzipped: bool
) -> None:
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(FEATURES + ["label", "ts"])
    lines = []
    for index, row in enumerate(rows):
        line = io.StringIO()
        csv.writer(line).writerow(row)
        encoded = line.getvalue().encode("latin-1", "replace") if index == latin1_row else line.getvalue().encode()
        lines.append(encoded)
    data = text.getvalue().encode() + b"".join(lines)
    name = "hostile.csv.gz" if gzipped else "hostile.csv"
    assert_batch_or_reasons(outcome(name, gzip.compress(data) if gzipped else data, config))


FLAT_JSON = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                      st.text(max_size=20), st.sampled_from(["NaN", "Infinity", "\x1b[31m", "[link]x"]))


@FUZZ
@given(rows=st.lists(st.fixed_dictionaries({}, optional={column: FLAT_JSON for column in FEATURES + ["label", "ts"]}),
                     min_size=1, max_size=8))
def test_jsonl_of_mixed_flat_values_gives_a_batch_or_reasons(config, rows: list[dict]) -> None:
    data = "".join(json.dumps(row) + "\n" for row in rows).encode()
    assert_batch_or_reasons(outcome("hostile.jsonl", data, config))


def nan_inf_frame(rows: int = 30) -> pd.DataFrame:
    frame = make_batch(0, rows=rows)
    frame.loc[::2, ["x1", "x2", "x3"]] = np.nan
    frame.loc[1::4, "x1"] = np.inf
    frame.loc[3::4, "x2"] = -np.inf
    return frame


@pytest.mark.parametrize("name", ["nan-inf.csv", "nan-inf.parquet", "nan-inf.jsonl", "nan-inf.csv.gz"])
def test_nan_and_inf_everywhere_is_quarantined_with_reasons(config, tmp_path: Path, name: str) -> None:
    path = write_batch(tmp_path, name, nan_inf_frame())
    result = outcome(name, path.read_bytes(), config)
    assert isinstance(result, InvalidBatch)
    assert any("'x1'" in reason for reason in result.reasons), result.reasons


TS = ["2025-01-06"] * 5
NESTED = {
    "list-in-numeric.parquet": lambda: parquet_bytes(pa.table({
        "x1": pa.array([[1.0, 2.0]] * 5), "x2": [1.0] * 5, "x3": [1.0] * 5, "color": ["red"] * 5, "ts": TS})),
    "list-in-category.parquet": lambda: parquet_bytes(pa.table({
        "x1": [1.0] * 5, "x2": [1.0] * 5, "x3": [1.0] * 5, "color": pa.array([["red", "blue"]] * 5), "ts": TS})),
    "struct-in-category.parquet": lambda: parquet_bytes(pa.table({
        "x1": [1.0] * 5, "x2": [1.0] * 5, "x3": [1.0] * 5, "color": pa.array([{"a": 1}] * 5), "ts": TS})),
    "object-in-category.jsonl": lambda: b'{"x1": 1, "x2": 1, "x3": 1, "color": {"a": 1}, "ts": "2025-01-06"}\n' * 5,
}


@pytest.mark.parametrize("name", [
    "list-in-numeric.parquet",
    "list-in-category.parquet",
    "struct-in-category.parquet",
    "object-in-category.jsonl",
])
def test_nested_values_are_quarantined_not_raised(config, name: str) -> None:
    result = outcome(name, NESTED[name](), config)
    assert isinstance(result, InvalidBatch)


def test_brackets_inside_jsonl_strings_are_not_nesting(config) -> None:
    row = {"x1": 1.0, "x2": 2.0, "x3": 3.0, "color": "[bold", "ts": "2025-01-06"}
    result = outcome("brackets.jsonl", ("".join(json.dumps(row) + "\n" for _ in range(50))).encode(), config)
    assert isinstance(result, Batch) and set(result.frame["color"]) == {"[bold"}


def test_deeply_nested_jsonl_is_quarantined_not_a_crash(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    write_config(folder, INGEST_ONLY_CONFIG)
    depth = 50_000
    (folder / "deep.jsonl").write_bytes(b'{"x1": ' + b"[" * depth + b"]" * depth + b"}\n")
    result = subprocess.run([sys.executable, "-m", "app", "watch", str(folder), "--once"], cwd=REPO_ROOT,
                            capture_output=True, timeout=180)  # a crash must not take pytest with it
    assert result.returncode == 0, f"exit status {result.returncode}: {result.stderr[-300:]!r}"
    monitor = Monitor(folder)
    try:
        assert [(r.name, r.status) for r in monitor.store.files()] == [("deep.jsonl", "quarantined")]
    finally:
        monitor.close()


def test_gzip_bomb_is_refused_within_a_memory_bound(config) -> None:
    """About 50 KB that expands to 50 MB of CSV: refused at max_file_mb (1 MB) with little memory."""
    header = ",".join(FEATURES + ["label", "ts"]).encode() + b"\n"
    bomb = gzip.compress(header + b"0" * 50_000_000, compresslevel=9)
    result, growth_mb = peak_rss_growth_mb(lambda: outcome("bomb.csv.gz", bomb, config))
    assert isinstance(result, InvalidBatch)
    assert result.reasons == [f"decompresses to more than {MAX_FILE_MB} MB (watch.max_file_mb); refused"]
    assert growth_mb < 16 * MAX_FILE_MB + 32, f"peak RSS rose by {growth_mb:.0f} MB"


def test_a_parquet_file_that_expands_past_max_file_mb_is_refused(config) -> None:
    rows = 400_000  # ~10 MB of float64 columns alone, ten times the 1 MB limit
    codes = pa.array(np.zeros(rows, dtype=np.int32))
    table = pa.table({"x1": np.zeros(rows), "x2": np.zeros(rows), "x3": np.zeros(rows),
                      "color": pa.DictionaryArray.from_arrays(codes, ["red"]),
                      "ts": pa.DictionaryArray.from_arrays(codes, ["2025-01-06"])})
    data = parquet_bytes(table, compression="zstd")
    assert len(data) < MAX_FILE_MB * (1 << 20) / 10
    result = outcome("bomb.parquet", data, config)
    assert isinstance(result, InvalidBatch) and "max_file_mb" in " ".join(result.reasons)


def test_a_parquet_list_that_expands_past_max_file_mb_is_refused_before_it_is_read(config) -> None:
    elements = 8_000_000  # 64 MB of float64 in one cell, 64 times the 1 MB limit
    values = pa.ListArray.from_arrays(pa.array([0, elements], pa.int32()), pa.array(np.ones(elements)))
    table = pa.table({"x1": [1.0], "x2": [1.0], "x3": [1.0], "color": values, "ts": ["2025-01-06"]})
    data = parquet_bytes(table, compression="zstd")
    del table, values
    assert len(data) < 10_000
    result, growth_mb = peak_rss_growth_mb(lambda: outcome("list-bomb.parquet", data, config))
    assert isinstance(result, InvalidBatch)
    assert growth_mb < 16, f"peak RSS rose by {growth_mb:.0f} MB for a {len(data):,}-byte file"


def wide_csv(columns: int) -> bytes:
    names = [f"c{index}" for index in range(columns)]
    return (",".join(names) + "\n" + ",".join("1" for _ in names) + "\n").encode()


def wide_jsonl(columns: int) -> bytes:
    return (json.dumps({f"c{index}": 1 for index in range(columns)}) + "\n").encode()


def wide_jsonl_second_record(columns: int) -> bytes:
    """A narrow first record, then one with ``columns`` keys: pyarrow takes the union of every record's keys."""
    first = {"x1": 1.0, "x2": 2.0, "x3": 3.0, "color": "red", "ts": "2025-01-06"}
    return (json.dumps(first) + "\n" + json.dumps({**first, **{f"c{i}": 1 for i in range(columns)}}) + "\n").encode()


def wide_parquet(columns: int) -> bytes:
    return parquet_bytes(pa.table({f"c{index}": pa.array([1], pa.int8()) for index in range(columns)}),
                         compression=None)


WIDE = [
    pytest.param("wide.csv", lambda: wide_csv(1_000_000), id="csv-a-million-columns"),
    pytest.param("wide.jsonl", lambda: wide_jsonl(MAX_COLUMNS + 1), id="jsonl"),
    pytest.param("wide-later.jsonl", lambda: wide_jsonl_second_record(2 * MAX_COLUMNS), id="jsonl-second-record"),
    pytest.param("wide.parquet", lambda: wide_parquet(MAX_COLUMNS + 1), id="parquet"),
]


@pytest.mark.parametrize(("name", "content"), WIDE)
def test_a_table_wider_than_max_columns_is_refused_within_a_memory_bound(config, name: str, content) -> None:
    data = content()
    result, growth_mb = peak_rss_growth_mb(lambda: outcome(name, data, config))
    assert isinstance(result, InvalidBatch)
    assert any(f"more than {MAX_COLUMNS} columns" in reason for reason in result.reasons), result.reasons
    assert growth_mb < 10 * len(data) / 1e6 + 32, f"peak RSS rose by {growth_mb:.0f} MB"


LONG = 4_000_000
LONG_HEADER = b"x1,x2,x3,color,ts\n"
LONG_TAIL = b",2025-01-06\n"


@pytest.mark.parametrize("name, data", [
    ("long-category.csv", LONG_HEADER + b"1,2,3," + b"r" * LONG + LONG_TAIL),
    ("long-number.csv", LONG_HEADER + b"1" * LONG + b",2,3,red" + LONG_TAIL),
    ("long-line.jsonl", b'{"x1": 1, "x2": 2, "x3": 3, "ts": "2025-01-06", "color": "' + b"r" * LONG + b'"}\n'),
    ("many-short-rows.csv", LONG_HEADER + b"1,2,3,red,2025-01-06\n" * (LONG // 20)),
], ids=["csv-long-category", "csv-long-number", "jsonl-long-line", "csv-many-rows"])
def test_long_lines_stay_within_a_memory_bound(config, name: str, data: bytes) -> None:
    result, growth_mb = peak_rss_growth_mb(lambda: outcome(name, data, config))
    assert_batch_or_reasons(result)
    assert growth_mb < 16 * len(data) / 1e6 + 64, f"peak RSS rose by {growth_mb:.0f} MB for {len(data) / 1e6:.0f} MB"


# --- names and values that are markup, escapes or SQL --------------------------------------------------


@dataclass
class CliRun:
    returncode: int
    output: bytes  # stdout and stderr, as a terminal would receive them


def run_cli(*args: str | Path) -> CliRun:
    """``driftdeck ARGS`` in this process (the same code as ``python -m app``), 250 columns wide."""
    stream = io.StringIO()
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "250"
    try:
        with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
            code = main([str(arg) for arg in args])
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous
    return CliRun(code, stream.getvalue().encode("utf-8", "surrogateescape"))


MARKUP_NAME = "[bold red]x.csv"
SQL_NAME = "x'); DROP TABLE files;--.csv"
ESCAPE_NAME = "esc\x1b[31mred\x1b[0m.csv"
NEWLINE_NAME = "two\nlines.csv"
HOSTILE_CATEGORIES = ["\x1b[31m", "[blink]boo[/blink]", "\x1b]8;;http://evil.example\x1b\\link\x1b]8;;\x1b\\"]


@pytest.fixture(scope="module")
def hostile_names(tmp_path_factory) -> dict:
    """A folder whose file names, extra column and categories are markup, escapes and SQL, after
    ``watch --once``; returns the folder and the raw output of ``watch --once`` and ``status``."""
    folder = tmp_path_factory.mktemp("names") / "data"
    folder.mkdir()
    write_config(folder, INGEST_ONLY_CONFIG)
    for index, name in enumerate([MARKUP_NAME, SQL_NAME, ESCAPE_NAME, NEWLINE_NAME]):
        frame = make_batch(index, rows=30)
        frame["color"] = [HOSTILE_CATEGORIES[row % 3] for row in range(30)]
        frame["[link]"] = 1.0
        write_batch(folder, name, frame)
    return {"folder": folder, "watch": run_cli("watch", folder, "--once"), "status": run_cli("status", folder)}


def test_markup_in_names_is_shown_literally(hostile_names) -> None:
    watch, status = hostile_names["watch"], hostile_names["status"]
    assert watch.returncode == 0 and status.returncode == 0, (watch.output, status.output)
    assert f"{MARKUP_NAME}: 30 rows".encode() in watch.output
    assert b"unknown extra column(s) ignored: '[link]'" in watch.output
    assert MARKUP_NAME.encode() in status.output  # Rich would have eaten "[bold red]" as markup


def test_sql_in_a_file_name_is_an_ordinary_name(hostile_names) -> None:
    monitor = Monitor(hostile_names["folder"])
    try:
        statuses = {record.name: record.status for record in monitor.store.files()}
    finally:
        monitor.close()
    assert statuses == {name: "ingested" for name in (MARKUP_NAME, SQL_NAME, ESCAPE_NAME, NEWLINE_NAME)}


@pytest.mark.parametrize("command", ["watch", "status"])
def test_control_characters_in_names_never_reach_the_terminal(hostile_names, command: str) -> None:
    output = hostile_names[command].output
    assert b"\x1b" not in output, "an escape sequence from a file name reached the terminal"
    if command == "watch":
        assert not any(line.startswith(b"lines.csv") for line in output.splitlines()), \
            "a newline in a file name forged a second event line"


async def tui_event_log(folder: Path, names: list[str]) -> str:
    """Drop a batch under each of ``names`` while the dashboard runs; the event log's text once all are in."""
    from textual.widgets import RichLog

    from app.tui.app import DriftDeckApp
    from tests.tui.tui_support import wait_until as pilot_wait_until

    monitor = Monitor(folder)
    app = DriftDeckApp(monitor)
    try:
        async with app.run_test(size=(160, 48)) as pilot:
            for index, name in enumerate(names):
                write_batch(folder, name, make_batch(index, rows=20))

            def log_text() -> str:
                return "\n".join(strip.text for strip in app.query_one(RichLog).lines)

            await pilot_wait_until(pilot, lambda: log_text().count(": 20 rows") == len(names), what="every batch")
            return log_text()
    finally:
        monitor.close()


async def test_the_tui_event_log_shows_markup_and_sql_names_literally(ingest_dir: Path) -> None:
    text = await tui_event_log(ingest_dir, [MARKUP_NAME, SQL_NAME])
    assert f"{MARKUP_NAME}: 20 rows" in text and f"{SQL_NAME}: 20 rows" in text


async def test_the_tui_event_log_never_passes_an_escape_sequence_on(ingest_dir: Path) -> None:
    text = await tui_event_log(ingest_dir, [ESCAPE_NAME])
    assert "red" in text and "\x1b" not in text


# --- snapshot files driftdeck did not write ---------------------------------------------------------------

TWO_ESTIMATORS = {
    'name = "dynamic-lr"\nmode = "dynamic"\nestimator = "logistic_regression"':
        'name = "dynamic-lr"\nmode = "dynamic"\nestimator = "logistic_regression"\nparams = {C = 0.01}',
}


@pytest.fixture(scope="module")
def trained_once(tmp_path_factory) -> Path:
    return processed_folder(tmp_path_factory.mktemp("trained"), BASE_CONFIG, {"b00.csv": make_batch(0, rows=200)},
                            **TWO_ESTIMATORS)


@pytest.fixture
def trained(trained_once: Path, tmp_path: Path) -> Path:
    """A copy of a folder with one labeled batch: static-lr v1 and dynamic-lr v1 (another model) serve."""
    return copy_of(trained_once, tmp_path)


def test_a_snapshot_swapped_in_from_another_model_is_refused(trained: Path) -> None:
    monitor = Monitor(trained)
    try:
        static, dynamic = (monitor.registry.snapshot_file(name, 1) for name in ("static-lr", "dynamic-lr"))
        assert sha256_file(static) != sha256_file(dynamic)
        shutil.copyfile(static, dynamic)
        with pytest.raises(SnapshotError, match="modified after it was written"):
            monitor.registry.load("dynamic-lr", 1)
        probe = write_batch(trained.parent, "probe.csv", make_batch(1, rows=20))
        with pytest.raises(CommandFailed, match="modified after it was written"):
            monitor.workspace.predict_file("dynamic-lr", probe)
        write_batch(trained, "b01.csv", make_batch(1, rows=200))
        monitor.run_once()
        latest = monitor.store.results("dynamic-lr")[-1][2]
        assert "modified after it was written" in latest["load_error"]
        assert "metrics" not in latest  # the swapped model scored nothing
    finally:
        monitor.close()


def test_a_pickle_posing_as_a_snapshot_never_runs(trained: Path) -> None:
    marker = trained.parent / "pickle-ran"
    payload = marker_pickle_bytes(marker)
    monitor = Monitor(trained)
    try:
        # a stray file in the snapshot folder, named like the next version
        (monitor.paths.snapshots / "static-lr" / "v2.skops").write_bytes(payload)
        # the serving version's file replaced, and the store's hash forged to match it
        monitor.registry.snapshot_file("dynamic-lr", 1).write_bytes(payload)
        with monitor.store.transaction() as db:
            db.execute("UPDATE snapshots SET sha256 = ? WHERE model = 'dynamic-lr' AND version = 1",
                       (sha256_file(monitor.registry.snapshot_file("dynamic-lr", 1)),))
        with pytest.raises(SnapshotError, match="not a skops file"):
            monitor.registry.load("dynamic-lr", 1)
        with pytest.raises(CommandFailed):
            monitor.dispatcher.promote("static-lr", 2)
        with pytest.raises(CommandFailed, match="not a skops file"):
            monitor.workspace.export("dynamic-lr", trained.parent / "export")
        write_batch(trained, "b01.csv", make_batch(1, rows=200))
        monitor.run_once()
        assert "not a skops file" in monitor.store.results("dynamic-lr")[-1][2]["load_error"]
        assert monitor.store.serving_version("dynamic-lr") == 2  # nothing to compare with: v2 beat the baseline
        with pytest.raises(CommandFailed, match="not a skops file"):
            monitor.dispatcher.rollback("dynamic-lr")
    finally:
        monitor.close()
    assert not marker.exists()


def test_a_tampered_snapshot_is_never_published_as_the_serving_file(trained: Path) -> None:
    marker = trained.parent / "pickle-ran"
    monitor = Monitor(trained)
    record = monitor.store.snapshot("static-lr", 1)
    serving_file = monitor.paths.serving / "static-lr.skops"
    monitor.close()
    (trained / ".driftdeck" / record.path).write_bytes(marker_pickle_bytes(marker))
    serving_file.unlink()  # e.g. a crash between the commit and the serving-file write
    Monitor(trained).close()  # start-up repairs the serving files
    assert not serving_file.exists() or sha256_file(serving_file) == record.sha256
    assert not marker.exists()


# --- the config is data -----------------------------------------------------------------------------------

PYTHON = "__import__('os').system('touch {marker}')"


@pytest.mark.parametrize("old, new", [
    ('estimator = "logistic_regression"\n\n[[models]]', 'estimator = "{code}"\n\n[[models]]'),
    ('window = 2', 'window = 2\nparams = {{C = "{code}"}}'),
    ('window = 2', 'window = "{code}"'),
    ('name = "static-lr"', 'name = "../../{code}"'),
], ids=["estimator", "param", "window", "model-name"])
def test_python_in_the_config_is_a_config_error_never_run(data_dir: Path, old: str, new: str) -> None:
    marker = data_dir.parent / "config-ran"
    code = PYTHON.format(marker=marker)
    write_config(data_dir, **{old: new.format(code=code)})
    with pytest.raises(ConfigError):
        load_config(data_dir)
    assert not marker.exists()


def test_python_in_a_column_name_is_just_a_column_name(ingest_dir: Path) -> None:
    marker = ingest_dir.parent / "config-ran"
    column = PYTHON.format(marker=marker)
    write_config(ingest_dir, INGEST_ONLY_CONFIG.replace('x3 = "numeric"', f'"{column}" = "numeric"'))
    config = load_config(ingest_dir)
    assert column in config.schema
    frame = make_batch(0, rows=30).rename(columns={"x3": column})
    batch = outcome("b.csv", frame.to_csv(index=False).encode(), config)
    assert isinstance(batch, Batch) and column in batch.frame
    assert not marker.exists()


# --- links and paths ----------------------------------------------------------------------------------------


def test_quarantine_and_replay_never_write_outside_their_folders(tmp_path: Path) -> None:
    source, dest = tmp_path / "source", tmp_path / "data"
    source.mkdir()
    dest.mkdir()
    write_config(dest, INGEST_ONLY_CONFIG)
    tricky = ["..csv", "...csv", "..\\..\\evil.csv", "%2e%2e%2fevil.csv", "-rf.csv", " .csv", "x.csv.gz.csv",
              "\u202egnp.csv", "\u2215etc\u2215evil.csv"]
    for index, name in enumerate(tricky):
        (source / name).write_bytes(b"x1,x2\n1,%d\n" % index if index % 2 else b"\x00garbage %d" % index)
    before = tree(tmp_path)
    replay(source, dest, interval=0)
    monitor = Monitor(dest)
    try:
        monitor.run_once()
        quarantined = [record.name for record in monitor.store.files(status="quarantined")]
    finally:
        monitor.close()
    new = tree(tmp_path).keys() - before.keys()
    assert new and all(Path(name).parts[0] == dest.name for name in new), new
    assert sorted(quarantined) == sorted(name for name in tricky if not name.startswith("."))
    assert len(list((dest / ".driftdeck" / "quarantine").iterdir())) == 2 * len(quarantined)


def test_replay_does_not_follow_a_link_at_its_temporary_name(tmp_path: Path) -> None:
    source, dest, outside = tmp_path / "source", tmp_path / "dest", tmp_path / "outside.txt"
    source.mkdir()
    dest.mkdir()
    outside.write_text("keep me")
    (source / "b.csv").write_text("x1\n1\n")
    (dest / ".b.csv.tmp").symlink_to(outside)
    replay(source, dest, interval=0)
    assert outside.read_text() == "keep me"
    assert not (dest / "b.csv").is_symlink() and (dest / "b.csv").read_text() == "x1\n1\n"


def test_a_link_retargeted_outside_after_it_was_seen_is_not_read(tmp_path: Path, ingest_dir: Path) -> None:
    write_config(ingest_dir, INGEST_ONLY_CONFIG.replace("settle_seconds = 0.3", "settle_seconds = 1.0"))
    inside = write_batch(ingest_dir, "_inside.csv", make_batch(0, rows=20))  # "_": never read itself
    outside = write_batch(tmp_path, "secret.csv", make_batch(1, rows=20))
    monitor = Monitor(ingest_dir)
    monitor.start()
    try:
        link = ingest_dir / "link.csv"
        link.symlink_to(inside)
        assert wait_until(lambda: monitor._watcher.pending_count() == 1, timeout=10)
        retarget = ingest_dir / ".link.tmp"
        retarget.symlink_to(outside)
        os.replace(retarget, link)  # within the settle interval
        assert monitor.wait_idle(timeout=30)
        hashes = {record.sha256 for record in monitor.store.files()}
    finally:
        monitor.close()
    assert sha256_file(outside) not in hashes


def test_state_folders_are_owner_only(tmp_path: Path, ingest_dir: Path) -> None:
    loose = tmp_path / "loose-state"
    (loose / "quarantine").mkdir(parents=True)
    os.chmod(loose, 0o755)
    os.chmod(loose / "quarantine", 0o777)
    for state in (None, tmp_path / "custom" / "state", loose):
        monitor = Monitor(ingest_dir, state)
        try:
            root = monitor.paths.root
            folders = [root] + [path for path in root.iterdir() if path.is_dir()]
        finally:
            monitor.close()
        assert len(folders) >= 6
        made_beforehand = state == loose  # driftdeck never changes the mode of a folder it did not make
        assert oct(root.stat().st_mode & 0o777) == oct(0o755 if made_beforehand else 0o700), root
        assert {oct(path.stat().st_mode & 0o777) for path in folders[1:]} == {oct(0o700)}, root
