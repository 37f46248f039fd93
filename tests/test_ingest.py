"""Ingestion and validation: real files, a real monitor, a real SQLite ledger.

Every way a batch can fail is checked for its reason text, for the copy in
``.driftdeck/quarantine/`` with its ``.reason.txt``, and for the original file
being left exactly as it was.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import threading
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import app.ingest
from app.config import load_config
from app.fsutil import sha256_bytes
from app.ingest import FileSnapshot, parse_batch, quarantine, read_stable
from app.models import category_texts
from app.monitor import Monitor
from app.readers import UnreadableFile, read_table
from app.store import FileRecord
from app.validation import InvalidBatch
from tests.conftest import INGEST_ONLY_CONFIG, backdate, make_batch, wait_until, write_batch, write_config

MAX_FILE_MB = 0.5
SMALL_LIMIT_CONFIG = INGEST_ONLY_CONFIG.replace("settle_seconds = 0.3", f"settle_seconds = 0.3\nmax_file_mb = {MAX_FILE_MB}")


def good_frame(rows: int = 20) -> pd.DataFrame:
    return make_batch(0, rows=rows)


def csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    return buffer.getvalue()


def drop(folder: Path, name: str, data: bytes) -> Path:
    """Put a file in the data folder as if it landed a minute ago (so it is already settled)."""
    path = folder / name
    path.write_bytes(data)
    return backdate(path)


def ingest_once(folder: Path) -> dict[str, FileRecord]:
    """Run ``watch --once`` in process and return the ledger by file name."""
    monitor = Monitor(folder)
    try:
        monitor.run_once()
        return {record.name: record for record in monitor.store.files()}
    finally:
        monitor.close()


def with_column(frame: pd.DataFrame, column: str, edit: Callable[[pd.Series], pd.Series]) -> pd.DataFrame:
    changed = frame.copy()
    changed[column] = edit(changed[column])
    return changed


def text_in_row_3(values: pd.Series) -> pd.Series:
    values = values.astype(object)
    values.iloc[2] = "abc"
    return values


def mostly_missing(values: pd.Series) -> pd.Series:
    values = values.copy()
    values.iloc[:16] = np.nan  # 16 of 20 rows: 80 % missing
    return values


def one_infinity(values: pd.Series) -> pd.Series:
    values = values.copy()
    values.iloc[4] = np.inf
    return values


def truncated_gzip() -> bytes:
    whole = gzip.compress(csv_bytes(good_frame()))
    return whole[: len(whole) // 2]


def gzip_bomb() -> bytes:
    """About 15 KB on disk that expands to over 6 MB of valid CSV rows."""
    header = csv_bytes(good_frame()).split(b"\n")[0] + b"\n"
    return gzip.compress(header + b"0,0,0,red,1,2025-01-06 00:00:00\n" * 200_000)


def ragged_csv() -> bytes:
    lines = csv_bytes(good_frame()).split(b"\n")
    lines[5] += b",7"
    return b"\n".join(lines)


@dataclass(frozen=True)
class BadBatch:
    name: str
    content: Callable[[], bytes]
    reason: str  # the start of the reason recorded in the ledger


BAD_BATCHES = [
    BadBatch("random.parquet", lambda: np.random.default_rng(1).bytes(700), "not a readable .parquet file: "),
    BadBatch("truncated.csv.gz", truncated_gzip,
             "not a readable .csv.gz file: Compressed file ended before the end-of-stream marker was reached"),
    BadBatch("not-gzip.csv.gz", lambda: csv_bytes(good_frame()), "not a readable .csv.gz file: Not a gzipped file"),
    BadBatch("empty.csv", lambda: b"", "empty file (0 bytes)"),
    BadBatch("header-only.csv", lambda: csv_bytes(good_frame().iloc[:0]), "header only: the file has no rows"),
    BadBatch("no-x2.csv", lambda: csv_bytes(good_frame().drop(columns=["x2"])), "missing feature column(s): 'x2'"),
    BadBatch("text-in-x1.csv", lambda: csv_bytes(with_column(good_frame(), "x1", text_in_row_3)),
             "column 'x1' must be numeric, found text 'abc' in row 3 (1 such value(s))"),
    BadBatch("sparse-x3.csv", lambda: csv_bytes(with_column(good_frame(), "x3", mostly_missing)),
             "column 'x3' is 80% missing (limit 50%, watch.max_missing_share)"),
    BadBatch("inf-x2.csv", lambda: csv_bytes(with_column(good_frame(), "x2", one_infinity)),
             "column 'x2' has 1 non-finite value(s) (inf)"),
    BadBatch("inf-x2.parquet", lambda: parquet_bytes(with_column(good_frame(), "x2", one_infinity)),
             "column 'x2' has 1 non-finite value(s) (inf)"),
    BadBatch("half-labels.csv", lambda: csv_bytes(with_column(good_frame(), "label", lambda v: v + 0.5)),
             "target 'label' has non-integer value(s) such as 0.5: a classification task needs class labels"),
    BadBatch("bomb.csv.gz", gzip_bomb, f"decompresses to more than {MAX_FILE_MB} MB (watch.max_file_mb); refused"),
    BadBatch("ragged.csv", ragged_csv, "not a readable .csv file: CSV parse error: Expected 6 columns, got 7"),
    BadBatch("latin1.csv", lambda: csv_bytes(good_frame()).replace(b"red", "rød".encode("latin-1")),
             "not UTF-8 text (byte "),
    BadBatch("broken.jsonl", lambda: b'{"x1": 1.0}\n{not json\n', "not a readable .jsonl file: JSON parse error"),
    BadBatch("two-x1.csv", lambda: b"x1,x1,x2,x3,color,label,ts\n1,2,3,4,red,1,2025-01-06\n",
             "duplicate column name(s): 'x1'"),
    BadBatch("bad-date.csv", lambda: csv_bytes(with_column(good_frame(), "ts", lambda v: v.where(v.index != 1, "soon"))),
             "timestamp column 'ts' has value(s) that are not dates, such as 'soon'"),
]


def assert_quarantined(folder: Path, record: FileRecord, content: bytes, reason: str) -> None:
    """The ledger says quarantined with ``reason``, and a byte-exact copy sits beside a reason file."""
    assert record.status == "quarantined"
    assert record.reason.startswith(reason), record.reason
    quarantine = folder / ".driftdeck" / "quarantine"
    copy = quarantine / f"{record.sha256[:12]}-{record.name}"
    assert copy.read_bytes() == content
    reason_text = (quarantine / f"{copy.name}.reason.txt").read_text()
    assert f"file: {record.name}\n" in reason_text
    assert f"sha256: {record.sha256}\n" in reason_text
    assert f"reason: {reason}" in reason_text


@pytest.mark.parametrize("bad", BAD_BATCHES, ids=[bad.name for bad in BAD_BATCHES])
def test_each_invalid_batch_is_quarantined_with_its_reason(ingest_dir: Path, bad: BadBatch) -> None:
    write_config(ingest_dir, SMALL_LIMIT_CONFIG)
    content = bad.content()
    original = drop(ingest_dir, bad.name, content)
    mtime_before = original.stat().st_mtime_ns

    ledger = ingest_once(ingest_dir)

    assert list(ledger) == [bad.name]
    assert_quarantined(ingest_dir, ledger[bad.name], content, bad.reason)
    assert original.read_bytes() == content and original.stat().st_mtime_ns == mtime_before


def test_text_target_is_refused_for_regression(ingest_dir: Path) -> None:
    write_config(ingest_dir, INGEST_ONLY_CONFIG.replace('task = "classification"', 'task = "regression"'))
    frame = with_column(good_frame(), "label", lambda v: v.map({0: "no", 1: "yes"}))
    content = csv_bytes(frame)
    drop(ingest_dir, "words.csv", content)
    ledger = ingest_once(ingest_dir)
    first_word = frame["label"].iloc[0]
    assert_quarantined(ingest_dir, ledger["words.csv"], content,
                       f"target 'label' must be numeric for regression, found '{first_word}'")


def test_text_far_past_the_first_parse_block_is_still_named(ingest_dir: Path) -> None:
    """Arrow infers CSV types block by block (1 MB); a word in row 25,000 must still get the precise reason."""
    frame = make_batch(0, rows=30_000)
    frame["x1"] = frame["x1"].astype(object)
    frame.loc[24_999, "x1"] = "unknown"
    content = csv_bytes(frame)
    assert len(content) > 2 << 20
    with pytest.raises(InvalidBatch) as caught:
        parse_batch(FileSnapshot("large.csv", content, len(content), 0), load_config(ingest_dir))
    assert caught.value.reasons == ["column 'x1' must be numeric, found text 'unknown' in row 25000 (1 such value(s))"]


def test_every_reason_is_reported_not_only_the_first(ingest_dir: Path) -> None:
    frame = with_column(with_column(good_frame(), "x1", text_in_row_3), "x2", one_infinity)
    drop(ingest_dir, "two-problems.csv", csv_bytes(frame))
    reason = ingest_once(ingest_dir)["two-problems.csv"].reason
    assert "column 'x1' must be numeric" in reason
    assert "column 'x2' has 1 non-finite value(s) (inf)" in reason


def test_unknown_extra_column_is_a_warning_not_a_rejection(ingest_dir: Path) -> None:
    drop(ingest_dir, "extra.csv", csv_bytes(good_frame().assign(region="north")))
    monitor = Monitor(ingest_dir)
    try:
        monitor.run_once()
        (record,) = monitor.store.files()
        messages = [event.message for event in monitor.store.events()]
    finally:
        monitor.close()
    assert (record.status, record.rows, record.labeled) == ("ingested", 20, True)
    assert "extra.csv: unknown extra column(s) ignored: 'region'" in messages
    assert not any((ingest_dir / ".driftdeck" / "quarantine").iterdir())


def test_file_above_the_size_limit_is_refused_without_reading_it(ingest_dir: Path) -> None:
    write_config(ingest_dir, SMALL_LIMIT_CONFIG)
    big = csv_bytes(make_batch(0, rows=8000))
    assert len(big) > MAX_FILE_MB * (1 << 20)
    drop(ingest_dir, "big.csv", big)
    record = ingest_once(ingest_dir)["big.csv"]
    assert record.status == "quarantined"
    assert record.reason == f"file is {len(big) / (1 << 20):.4g} MB, above watch.max_file_mb ({MAX_FILE_MB} MB)"
    with pytest.raises(UnreadableFile):
        read_stable(ingest_dir / "big.csv", int(MAX_FILE_MB * (1 << 20)))


@pytest.mark.parametrize("name", ["batch.csv", "batch.csv.gz", "batch.parquet", "batch.jsonl"])
def test_every_format_gives_the_same_clean_frame(ingest_dir: Path, name: str) -> None:
    frame = good_frame(rows=50)
    path = write_batch(ingest_dir, name, frame)
    snapshot = read_stable(path, max_bytes=1 << 20)
    batch = parse_batch(snapshot, load_config(ingest_dir))

    assert (batch.name, batch.rows, batch.labeled, batch.warnings) == (name, 50, True, [])
    assert batch.sha256 == snapshot.sha256 and len(snapshot.data) == path.stat().st_size
    for column in ("x1", "x2", "x3"):
        assert batch.frame[column].dtype == np.float64
        # pandas writes JSON numbers with 10 decimal places
        np.testing.assert_allclose(batch.frame[column].to_numpy(), frame[column].to_numpy(), rtol=0, atol=1e-9)
    assert batch.frame["color"].tolist() == frame["color"].tolist()
    assert batch.frame["label"].tolist() == [str(v) for v in frame["label"]]
    assert (batch.frame["ts"] == pd.to_datetime(frame["ts"])).all()


@pytest.mark.parametrize("name", ["batch.csv", "batch.parquet", "batch.jsonl"])
def test_missing_categories_are_nan_and_the_others_text_in_every_format(ingest_dir: Path, name: str) -> None:
    """Parquet's categorical column is read dictionary-encoded, CSV's and JSONL's as text: the same column comes out."""
    frame = good_frame(rows=40)
    frame["color"] = frame["color"].astype(object)
    frame.loc[[0, 7, 8], "color"] = None
    path = write_batch(ingest_dir, name, frame)
    color = parse_batch(read_stable(path, max_bytes=1 << 20), load_config(ingest_dir)).frame["color"]

    assert color.dtype == object
    assert color.isna().tolist() == [value is None for value in frame["color"]]
    assert color.dropna().tolist() == frame["color"].dropna().tolist()
    assert {type(value) for value in color} == {str, float}  # text, and NaN where missing


def test_parquet_categorical_text_columns_are_read_dictionary_encoded() -> None:
    data = parquet_bytes(good_frame())
    plain = read_table("b.parquet", data, 1 << 20)
    encoded = read_table("b.parquet", data, 1 << 20, categorical=["color", "x1", "not-a-column"])

    assert pa.types.is_dictionary(encoded.schema.field("color").type)
    assert not pa.types.is_dictionary(plain.schema.field("color").type)
    assert encoded.schema.field("x1").type == plain.schema.field("x1").type == pa.float64()  # not text: as it is
    assert encoded.column("color").to_pylist() == plain.column("color").to_pylist()


def test_category_texts_gives_the_same_texts_for_every_kind_of_column() -> None:
    words = ["b", None, "a", "b", "c", None] * 50
    codes = [1.0, np.nan, 2.0, 1.0] * 50
    forms = {
        "object": pd.Series(words, dtype=object),
        "arrow text in two chunks": pa.chunked_array([words[:100], words[100:]], pa.string()).to_pandas(),
        "categorical": pd.Series(words, dtype="category"),
    }
    for form, values in forms.items():
        texts = category_texts(values)
        assert texts.dtype == object, form
        assert texts.isna().tolist() == [word is None for word in words], form
        assert texts.dropna().tolist() == [word for word in words if word is not None], form
    for values in (pd.Series(codes), pd.Series(codes).astype("category")):  # integral floats lose their ".0"
        assert category_texts(values).dropna().tolist() == [str(int(code)) for code in codes if code == code]


def test_the_hash_is_taken_once_on_a_second_thread(ingest_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    content = csv_bytes(good_frame())
    hashing_threads = []

    def recording_sha256(data: bytes) -> str:
        hashing_threads.append(threading.get_ident())
        return sha256_bytes(data)

    monkeypatch.setattr(app.ingest, "sha256_bytes", recording_sha256)
    config = load_config(ingest_dir)
    batch = parse_batch(FileSnapshot("b.csv", content, len(content), 0), config)
    assert batch.sha256 == hashlib.sha256(content).hexdigest()
    assert len(hashing_threads) == 1 and hashing_threads[0] != threading.get_ident()

    known = FileSnapshot("c.csv", content, len(content), 0)
    assert known.sha256 == batch.sha256  # the monitor asks first, for the duplicate check
    assert parse_batch(known, config).sha256 == batch.sha256
    assert len(hashing_threads) == 2  # that one ask, and no second hashing in parse_batch


def test_reading_a_small_file_allocates_its_size_not_the_limit(ingest_dir: Path) -> None:
    """read_stable asks for the stat'ed size plus one byte, not watch.max_file_mb's worth."""
    content = csv_bytes(good_frame())
    path = drop(ingest_dir, "small.csv", content)
    tracemalloc.start()
    try:
        snapshot = read_stable(path, max_bytes=1 << 30)
        peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert snapshot.data == content
    assert peak_bytes < 64 * len(content)


def test_a_batch_without_the_target_column_is_unlabeled(ingest_dir: Path) -> None:
    drop(ingest_dir, "no-labels.csv", csv_bytes(good_frame().drop(columns=["label"])))
    record = ingest_once(ingest_dir)["no-labels.csv"]
    assert (record.status, record.rows, record.labeled) == ("ingested", 20, False)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    suffix=st.sampled_from([".csv", ".csv.gz", ".parquet", ".jsonl"]),
    cut=st.integers(min_value=0, max_value=3000),
    edits=st.lists(st.tuples(st.integers(0, 3000), st.integers(0, 255)), max_size=6),
)
def test_any_damage_to_a_batch_gives_a_batch_or_reasons_never_a_crash(
    ingest_dir: Path, suffix: str, cut: int, edits: list[tuple[int, int]]
) -> None:
    """Truncate a valid file anywhere and flip bytes: parse_batch returns a Batch or raises InvalidBatch."""
    frame = good_frame()
    content = {
        ".csv": csv_bytes(frame),
        ".csv.gz": gzip.compress(csv_bytes(frame), mtime=0),
        ".parquet": parquet_bytes(frame),
        ".jsonl": frame.to_json(orient="records", lines=True).encode(),
    }[suffix]
    damaged = bytearray(content[: cut % (len(content) + 1)])
    for position, value in edits:
        if damaged:
            damaged[position % len(damaged)] = value
    config = load_config(ingest_dir)
    try:
        batch = parse_batch(FileSnapshot(f"fuzz{suffix}", bytes(damaged), len(damaged), 0), config)
    except InvalidBatch as invalid:
        assert invalid.reasons and all(isinstance(reason, str) and reason for reason in invalid.reasons)
    else:
        assert list(batch.frame.columns[:4]) == ["x1", "x2", "x3", "color"]


def test_no_bad_file_stops_the_watcher(ingest_dir: Path) -> None:
    """All the bad files at once into a running monitor, then a good one: the good one is still ingested."""
    write_config(ingest_dir, SMALL_LIMIT_CONFIG)
    monitor = Monitor(ingest_dir)
    monitor.start()
    try:
        for bad in BAD_BATCHES:
            (ingest_dir / bad.name).write_bytes(bad.content())
        assert wait_until(lambda: len(monitor.store.files()) == len(BAD_BATCHES))
        write_batch(ingest_dir, "good.csv", make_batch(1, rows=20))  # not the bytes of any bad file
        assert wait_until(lambda: monitor.store.counts().get("ingested") == 1)
        assert monitor.wait_idle()
        statuses = {record.name: record.status for record in monitor.store.files()}
        kinds = {event.kind for event in monitor.store.events()}
    finally:
        monitor.close()
    assert statuses == {**{bad.name: "quarantined" for bad in BAD_BATCHES}, "good.csv": "ingested"}
    assert "error" not in kinds  # every bad file was a quarantine, none an unexpected exception


def test_quarantine_events_carry_every_reason(ingest_dir: Path) -> None:
    frame = with_column(with_column(good_frame(), "x1", text_in_row_3), "x2", one_infinity)
    drop(ingest_dir, "bad.csv", csv_bytes(frame))
    monitor = Monitor(ingest_dir)
    seen = []
    monitor.subscribe(seen.append)
    try:
        monitor.run_once()
    finally:
        monitor.close()
    (event,) = [event for event in seen if event.kind == "batch_quarantined"]
    assert event.file == "bad.csv"
    assert len(event.data["reasons"]) == 2
    assert json.loads(json.dumps(event.to_dict()))["data"]["reasons"] == event.data["reasons"]


def test_the_reason_file_shows_control_characters_instead_of_obeying_them(tmp_path: Path) -> None:
    snapshot = FileSnapshot("evil\x1b[2Jname.csv", b"a,b\n1,2\n", size=8, mtime_ns=0)
    placed = quarantine(snapshot, ["column 'x\x1b]0;owned\x07' is missing"], tmp_path)
    text = placed.with_name(placed.name + ".reason.txt").read_text()
    assert "\x1b" not in text and "\x07" not in text
    assert "file: evil\\x1b[2Jname.csv" in text
    assert "reason: column 'x\\x1b]0;owned\\x07' is missing" in text
