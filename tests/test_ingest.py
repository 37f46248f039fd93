"""Ingestion and validation: real files, a real monitor, a real SQLite ledger.

Every way a batch can fail is checked for its reason text, for the copy in
``.driftdeck/quarantine/`` with its ``.reason.txt``, and for the original file
being left exactly as it was.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import json
import os
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
from app.columns import category_texts
from app.config import Config, load_config
from app.fsutil import sha256_bytes
from app.ingest import FileChanged, FileSnapshot, quarantine, read_batch
from app.engine.monitor import Monitor
from app.readers import CSV_BLOCK_BYTES, UnreadableFile, read_table
from app.store import FileRecord
from app.validation import Batch, InvalidBatch
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


def outcome(folder: Path, name: str, data: bytes, config: Config) -> Batch | InvalidBatch:
    """read_batch's answer for a file named ``name`` holding ``data``."""
    path = folder / name
    path.write_bytes(data)
    return read_batch(path, config)[1]


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
    BadBatch("sparse-color.csv", lambda: csv_bytes(with_column(good_frame(), "color", mostly_missing)),
             "column 'color' is 80% missing (limit 50%, watch.max_missing_share)"),
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
    invalid = outcome(ingest_dir, "large.csv", content, load_config(ingest_dir))
    assert invalid.reasons == ["column 'x1' must be numeric, found text 'unknown' in row 25000 (1 such value(s))"]


def test_a_column_of_text_is_named_as_text_not_also_as_missing(ingest_dir: Path) -> None:
    """A numeric column whose every value is a word has one problem: a reason about missing values would
    send the producer looking for empty cells that are not there."""
    frame = with_column(good_frame(), "x1", lambda values: values.map(lambda _: "oops"))
    invalid = outcome(ingest_dir, "words-in-x1.csv", csv_bytes(frame), load_config(ingest_dir))
    assert invalid.reasons == ["column 'x1' must be numeric, found text 'oops' in row 1 (20 such value(s))"]


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
        read_batch(ingest_dir / "big.csv", load_config(ingest_dir))


@pytest.mark.parametrize("name", ["batch.csv", "batch.csv.gz", "batch.parquet", "batch.jsonl"])
def test_every_format_gives_the_same_clean_frame(ingest_dir: Path, name: str) -> None:
    frame = good_frame(rows=50)
    path = write_batch(ingest_dir, name, frame)
    snapshot, batch = read_batch(path, load_config(ingest_dir))

    assert (batch.name, batch.rows, batch.labeled, batch.warnings) == (name, 50, True, [])
    assert batch.sha256 == snapshot.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (snapshot.size, snapshot.data) == (path.stat().st_size, None)  # a valid batch's bytes are not kept
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
    color = read_batch(path, load_config(ingest_dir))[1].frame["color"]

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
        "arrow column": pa.chunked_array([words[:100], words[100:]], pa.string()),
        "arrow dictionaries, one per chunk": pa.chunked_array([pa.array(words[:100]).dictionary_encode(),
                                                               pa.array(words[100:]).dictionary_encode()]),
    }
    for form, values in forms.items():
        texts = category_texts(values)
        assert texts.dtype == object, form
        assert texts.isna().tolist() == [word is None for word in words], form
        assert texts.dropna().tolist() == [word for word in words if word is not None], form
    for values in (pd.Series(codes), pd.Series(codes).astype("category")):  # integral floats lose their ".0"
        assert category_texts(values).dropna().tolist() == [str(int(code)) for code in codes if code == code]


def large_csv(rows: int = 30_000) -> bytes:
    """A valid batch of several CSV parse blocks (about 2.4 MB)."""
    content = csv_bytes(make_batch(0, rows=rows))
    assert len(content) > 2 * CSV_BLOCK_BYTES
    return content


@pytest.mark.parametrize("name, content", [
    ("valid.csv", large_csv()),
    ("parse-error-in-block-1.csv", large_csv().replace(b"\n", b",7\n", 100)),
    ("wide-header.csv", b",".join([b"c"] * 20_000) + b"\n" + large_csv()),
    ("latin1.csv", "rød,1\n".encode("latin-1") + large_csv()),
    ("valid.parquet", parquet_bytes(make_batch(0, rows=3000))),
], ids=["valid", "parse-error-early", "wide-header", "not-utf8", "parquet"])
def test_the_hash_covers_every_byte_of_the_file_however_far_the_parse_got(ingest_dir: Path, name: str,
                                                                          content: bytes) -> None:
    """Streamed into the parser and hashed on the way: the SHA-256 is hashlib's on the whole file, and a rejected
    file's kept bytes (the quarantine's copy) are the file's."""
    path = drop(ingest_dir, name, content)
    snapshot, result = read_batch(path, load_config(ingest_dir))
    assert snapshot.sha256 == hashlib.sha256(content).hexdigest()
    assert snapshot.size == len(content)
    assert (snapshot.data == content) if isinstance(result, InvalidBatch) else (snapshot.data is None)
    assert isinstance(result, Batch) == name.startswith("valid")


class ChangingFile(io.FileIO):
    """A file that ``change`` edits (through another handle) just before the second read from it."""

    change: Callable[[Path], None] = staticmethod(lambda path: None)

    def __init__(self, path, *args, **kwargs) -> None:
        super().__init__(path, *args, **kwargs)
        self.path, self.reads = Path(path), 0

    def readinto(self, buffer) -> int:
        self.reads += 1
        if self.reads == 2:
            self.change(self.path)
        return super().readinto(buffer)

    def read(self, size: int = -1) -> bytes:
        data = bytearray(size if size >= 0 else self.path.stat().st_size + 1)
        return bytes(data[: self.readinto(data)])


def append_a_row(path: Path) -> None:
    with open(path, "ab") as handle:
        handle.write(b"0,0,0,red,1,2025-01-06 00:00:00\n")


def truncate_to_half(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def fail_to_read(path: Path) -> None:
    raise OSError(errno.EIO, "Input/output error", str(path))


@pytest.mark.parametrize("change", [append_a_row, truncate_to_half])
def test_a_file_changed_while_it_streams_into_the_parser_raises_file_changed(
    ingest_dir: Path, monkeypatch: pytest.MonkeyPatch, change: Callable[[Path], None]
) -> None:
    path = drop(ingest_dir, "growing.csv", large_csv())
    monkeypatch.setattr(ChangingFile, "change", staticmethod(change))
    monkeypatch.setattr(app.ingest, "open", lambda file, *args, **kwargs: ChangingFile(file, "rb"), raising=False)
    with pytest.raises(FileChanged):
        read_batch(path, load_config(ingest_dir))


def test_a_read_error_part_way_is_raised_as_is_not_made_a_reason(
    ingest_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The monitor reports an OSError as "cannot be read" and tries again later; a quarantine would be for good."""
    path = drop(ingest_dir, "failing.csv", large_csv())
    monkeypatch.setattr(ChangingFile, "change", staticmethod(fail_to_read))
    monkeypatch.setattr(app.ingest, "open", lambda file, *args, **kwargs: ChangingFile(file, "rb"), raising=False)
    with pytest.raises(OSError) as caught:
        read_batch(path, load_config(ingest_dir))
    assert caught.value.errno == errno.EIO


class TricklingFile(io.FileIO):
    """A file whose reads return at most 1,000 bytes each, as a network file system may."""

    def readinto(self, buffer) -> int:
        return super().readinto(memoryview(buffer)[:1000])


@pytest.mark.parametrize("name, content, rows", [
    ("trickle.csv", large_csv(), 30_000),
    ("trickle.parquet", parquet_bytes(make_batch(0, rows=3000)), 3000),
], ids=["csv", "parquet"])
def test_short_reads_do_not_cut_the_file_short(ingest_dir: Path, monkeypatch: pytest.MonkeyPatch, name: str,
                                               content: bytes, rows: int) -> None:
    """A read may return less than asked before the end of the file; the parser still sees every byte."""
    path = drop(ingest_dir, name, content)
    monkeypatch.setattr(app.ingest, "open", lambda file, *args, **kwargs: TricklingFile(file, "rb"), raising=False)
    snapshot, batch = read_batch(path, load_config(ingest_dir))
    assert snapshot.sha256 == sha256_bytes(content)
    assert isinstance(batch, Batch) and batch.rows == rows


def test_a_rejected_file_rewritten_during_the_parse_is_not_quarantined_with_other_bytes(
    ingest_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same size and mtime, other bytes: the copy for the quarantine no longer hashes as the bytes parsed."""
    content = csv_bytes(with_column(good_frame(), "x1", text_in_row_3))
    path = drop(ingest_dir, "rewritten.csv", content)
    stat = path.stat()
    real_read_table = app.ingest.read_table

    def read_table_then_rewrite(*args, **kwargs):
        table = real_read_table(*args, **kwargs)
        path.write_bytes(content.replace(b"abc", b"xyz"))
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        return table

    monkeypatch.setattr(app.ingest, "read_table", read_table_then_rewrite)
    with pytest.raises(FileChanged):
        read_batch(path, load_config(ingest_dir))


def test_utf8_is_checked_across_parse_blocks_with_the_offset_of_the_first_bad_byte() -> None:
    """The check sees the file block by block (as Arrow reads it); a character may straddle two blocks."""
    body = large_csv()
    head = body[: body.rindex(b"\n", 0, CSV_BLOCK_BYTES - 100) + 1]  # whole lines, ending shortly before block 2
    filler = b"e" * (CSV_BLOCK_BYTES - 1 - len(head) - len(b"0,0,0,"))
    across = head + b"0,0,0," + filler + "é".encode() + b",1,2025-01-06\n" + body[len(head):]
    assert across[CSV_BLOCK_BYTES - 1: CSV_BLOCK_BYTES + 1] == "é".encode()  # its two bytes in two blocks
    assert filler.decode() + "é" in read_table("across.csv", across, 1 << 30).column("color").to_pylist()

    middle = 3 * CSV_BLOCK_BYTES // 2
    for bad in (body[:middle] + b"\xf8" + body[middle:],  # in block 2
                body + "é".encode()[:1],  # a character cut off at the end
                across[:CSV_BLOCK_BYTES] + b"x" + across[CSV_BLOCK_BYTES:]):  # a straddling character broken
        with pytest.raises(UnicodeDecodeError) as expected:
            bad.decode("utf-8")
        with pytest.raises(UnreadableFile, match=rf"^not UTF-8 text \(byte {expected.value.start}\): "):
            read_table("bad.csv", bad, 1 << 30)


def test_a_jsonl_key_that_is_not_utf8_is_a_reason_not_a_crash() -> None:
    """Arrow's JSON reader takes such a key as a column name that cannot be read back (found by the fuzz test)."""
    data = b'{"x1": 1.0, "\x80x2": 2.0}\n'
    with pytest.raises(UnicodeDecodeError) as expected:
        data.decode("utf-8")
    with pytest.raises(UnreadableFile, match=rf"^not UTF-8 text \(byte {expected.value.start}\): "):
        read_table("bad.jsonl", data, 1 << 30)


def test_text_that_is_not_utf8_is_the_reason_even_after_an_earlier_parse_error() -> None:
    """As when the whole file was checked before the parse: the parse stops at a ragged row in block 1, the
    check still reads on to the Latin-1 byte in block 3."""
    body = large_csv()
    ragged = body[:1000].replace(b"\n", b",7\n", 3) + body[1000 : 2 * CSV_BLOCK_BYTES]
    content = ragged + "ø".encode("latin-1") + body[2 * CSV_BLOCK_BYTES :]
    with pytest.raises(UnreadableFile, match=rf"^not UTF-8 text \(byte {len(ragged)}\): "):
        read_table("ragged.csv", content, 1 << 30)
    with pytest.raises(UnreadableFile, match="^not a readable .csv file: CSV parse error"):
        read_table("ragged.csv", content.replace("ø".encode("latin-1"), b"o"), 1 << 30)


def test_csv_categorical_columns_come_dictionary_encoded_and_every_other_column_as_without() -> None:
    """Arrow dictionary-encodes low-cardinality text while it parses; only the named categorical columns keep it."""
    frame = make_batch(0, rows=4000)
    frame["x1"] = frame["x1"].astype(object)
    frame.loc[3000, "x1"] = "unknown"  # a stray word in a later block of a numeric column
    frame["label"] = frame["label"].map({0: "no", 1: "yes"})
    data = csv_bytes(frame)
    plain = read_table("b.csv", data, 1 << 30)
    table = read_table("b.csv", data, 1 << 30, categorical=["color"])

    assert pa.types.is_dictionary(table.schema.field("color").type)
    assert table.column("color").to_pylist() == plain.column("color").to_pylist()
    assert table.drop_columns(["color"]).equals(plain.drop_columns(["color"]))
    assert plain.schema.field("label").type == plain.schema.field("x1").type == pa.string()


def test_reading_a_small_file_allocates_its_size_not_the_limit(ingest_dir: Path) -> None:
    """The file is read into memory of at most its stat'ed size plus one byte, never watch.max_file_mb's worth."""
    write_config(ingest_dir, INGEST_ONLY_CONFIG.replace("[watch]", "[watch]\nmax_file_mb = 1024"))
    config = load_config(ingest_dir)
    arrow_pool = pa.default_memory_pool()
    for name, content in (("small.csv", csv_bytes(good_frame())), ("small.parquet", parquet_bytes(good_frame()))):
        path = drop(ingest_dir, name, content)
        arrow_peak_before = arrow_pool.max_memory()  # the peak since the process started
        tracemalloc.start()
        try:
            snapshot, batch = read_batch(path, config)
            python_peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert isinstance(batch, Batch) and snapshot.size == len(content)
        assert python_peak < 16 << 20, f"{name}: {python_peak:,} bytes at the peak"
        assert arrow_pool.max_memory() <= max(arrow_peak_before, 16 << 20), f"{name}: Arrow's pool peaked higher"


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
    """Truncate a valid file anywhere and flip bytes: read_batch returns a Batch or an InvalidBatch."""
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
    result = outcome(ingest_dir, f"fuzz{suffix}", bytes(damaged), load_config(ingest_dir))
    if isinstance(result, InvalidBatch):
        assert result.reasons and all(isinstance(reason, str) and reason for reason in result.reasons)
    else:
        assert list(result.frame.columns[:4]) == ["x1", "x2", "x3", "color"]


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
    data = b"a,b\n1,2\n"
    snapshot = FileSnapshot("evil\x1b[2Jname.csv", size=8, mtime_ns=0, sha256=sha256_bytes(data), data=data)
    placed = quarantine(snapshot, ["column 'x\x1b]0;owned\x07' is missing"], tmp_path)
    text = placed.with_name(placed.name + ".reason.txt").read_text()
    assert "\x1b" not in text and "\x07" not in text
    assert "file: evil\\x1b[2Jname.csv" in text
    assert "reason: column 'x\\x1b]0;owned\\x07' is missing" in text
