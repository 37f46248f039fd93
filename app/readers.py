"""Read one batch file's bytes into a pyarrow Table, strictly.

Readers work on bytes already in memory, so the content that is hashed for the
ledger is exactly the content that is parsed. A file that is not what its name
claims raises :class:`UnreadableFile` with a reason a person can act on.
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Collection
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

BATCH_SUFFIXES = (".csv.gz", ".csv", ".parquet", ".jsonl")
IGNORED_SUFFIXES = (".tmp", ".part")
MAX_COLUMNS = 10_000
MAX_JSON_DEPTH = 32
CELL_BYTES = 8  # a cell takes at least this much once read into memory
_OPENERS = np.frombuffer(b"[{", dtype=np.uint8)
_CLOSERS = np.frombuffer(b"]}", dtype=np.uint8)


class UnreadableFile(Exception):
    """The file cannot be read as the format its name claims."""


def batch_suffix(name: str) -> str | None:
    """The batch format of a file name (``.csv.gz``, ``.csv``, ``.parquet``, ``.jsonl``), or None."""
    lower = name.lower()
    for suffix in BATCH_SUFFIXES:
        if lower.endswith(suffix):
            return suffix
    return None


def is_batch_name(name: str) -> bool:
    """True for names driftdeck reads: a batch suffix, not hidden, not ``_``-prefixed, not partial."""
    if name.startswith((".", "_")) or name.lower().endswith(IGNORED_SUFFIXES):
        return False
    return batch_suffix(name) is not None


def file_stem(name: str) -> str:
    suffix = batch_suffix(name)
    return name[: -len(suffix)] if suffix else Path(name).stem


def read_table(name: str, data: bytes, max_bytes: int, categorical: Collection[str] = ()) -> pa.Table:
    """Parse ``data`` by the format of ``name``.

    ``max_bytes`` bounds the decompressed size of ``.csv.gz`` files, so a tiny
    file that expands without end (a gzip bomb) is refused, not read.
    ``categorical`` names the text columns worth keeping dictionary-encoded
    where the file stores them so (Parquet): they come back as Arrow
    dictionary columns instead of one decoded string per row.
    """
    suffix = batch_suffix(name)
    if suffix is None:
        raise UnreadableFile(f"{name}: not a batch file ({', '.join(BATCH_SUFFIXES)})")
    if not data:
        raise UnreadableFile("empty file (0 bytes)")
    try:
        if suffix == ".csv.gz":
            return _read_csv(_gunzip(data, max_bytes))
        if suffix == ".csv":
            return _read_csv(data)
        if suffix == ".parquet":
            return _read_parquet(data, max_bytes, categorical)
        return _read_jsonl(data)
    except UnreadableFile:
        raise
    except (pa.ArrowException, OSError, ValueError, EOFError, zlib.error) as error:
        raise UnreadableFile(f"not a readable {suffix} file: {_first_line(error)}") from None


def _gunzip(data: bytes, max_bytes: int) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
        while chunk := stream.read(1 << 20):
            out.write(chunk)
            if out.tell() > max_bytes:
                raise UnreadableFile(
                    f"decompresses to more than {max_bytes / (1 << 20):.4g} MB (watch.max_file_mb); refused"
                )
    return out.getvalue()


def _read_csv(data: bytes) -> pa.Table:
    header_end = data.find(b"\n")
    header = data if header_end < 0 else data[:header_end]
    if header.count(b",") + 1 > MAX_COLUMNS:
        raise UnreadableFile(f"header has more than {MAX_COLUMNS} columns")
    try:
        if not data.isascii():  # ASCII is UTF-8; the quick check spares most files a full decode
            data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UnreadableFile(f"not UTF-8 text (byte {error.start}): mixed or binary encoding") from None
    # Arrow's default 1 MB blocks parse in parallel; a column whose later rows
    # disagree with the first block's inferred type is still promoted (to text,
    # for a stray word among numbers), so validation can name the value.
    return pa_csv.read_csv(pa.BufferReader(data), convert_options=pa_csv.ConvertOptions(strings_can_be_null=True))


def _read_parquet(data: bytes, max_bytes: int, categorical: Collection[str]) -> pa.Table:
    """Read after checking the footer: its uncompressed size must fit ``max_bytes`` (a tiny file
    can declare gigabytes of highly compressible columns)."""
    parquet = pq.ParquetFile(pa.BufferReader(data))
    metadata = parquet.metadata
    nested = [field.name for field in parquet.schema_arrow if pa.types.is_nested(field.type)]
    if nested:  # refused before reading: one cell of a list can hold gigabytes
        raise UnreadableFile(f"column(s) {', '.join(map(repr, nested[:5]))} hold nested values (lists or records); "
                             "a batch is a flat table")
    if metadata.num_columns > MAX_COLUMNS:
        raise UnreadableFile(f"more than {MAX_COLUMNS} columns")
    declared = sum(metadata.row_group(index).total_byte_size for index in range(metadata.num_row_groups))
    expanded = max(declared, metadata.num_rows * metadata.num_columns * CELL_BYTES)  # dictionaries hide repeats
    if expanded > max_bytes:
        raise UnreadableFile(
            f"decompresses to {expanded / (1 << 20):,.1f} MB, more than {max_bytes / (1 << 20):g} MB (watch.max_file_mb); refused"
        )
    # Arrow applies read_dictionary to text (and binary) columns only and ignores other names
    return pq.read_table(pa.BufferReader(data), read_dictionary=list(categorical))


def _read_jsonl(data: bytes) -> pa.Table:
    if _most_keys_in_a_line(data) > MAX_COLUMNS:
        raise UnreadableFile(f"more than {MAX_COLUMNS} columns")
    depth = _nesting_depth(data)
    if depth > MAX_JSON_DEPTH:
        raise UnreadableFile(f"JSON nested {depth} levels deep (at most {MAX_JSON_DEPTH}); a batch is a flat table")
    return pa_json.read_json(io.BytesIO(data), read_options=pa_json.ReadOptions(block_size=max(1 << 20, len(data) + 1)))


def _most_keys_in_a_line(data: bytes) -> int:
    """An upper bound on the keys of the widest JSONL record: '":' pairs per line."""
    raw = np.frombuffer(data, dtype=np.uint8)
    if len(raw) < 2:
        return 0
    key_ends = np.flatnonzero((raw[:-1] == ord('"')) & (raw[1:] == ord(":")))
    lines = np.searchsorted(np.flatnonzero(raw == ord("\n")), key_ends)
    return int(np.bincount(lines).max(initial=0)) if len(lines) else 0


def _nesting_depth(data: bytes) -> int:
    """The deepest bracket nesting of any one line of ``data``.

    pyarrow's JSON reader recurses and can crash the process on deep nesting,
    so this is measured before it sees the bytes. Brackets inside strings
    count too, so it is an upper bound, but each line starts again from zero.
    """
    raw = np.frombuffer(data, dtype=np.uint8)
    if not len(raw):
        return 0
    steps = np.isin(raw, _OPENERS).view(np.int8) - np.isin(raw, _CLOSERS).view(np.int8)
    depth = np.cumsum(steps, dtype=np.int32)
    newlines = np.flatnonzero(raw == ord("\n"))
    starts = np.r_[0, newlines + 1]
    starts = starts[starts < len(raw)]
    before = np.r_[0, depth[newlines]][: len(starts)]  # the depth each line starts from
    return int((np.maximum.reduceat(depth, starts) - before).max(initial=0))


def _first_line(error: Exception) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]
