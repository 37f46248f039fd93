"""Read one batch file into a pyarrow Table, strictly.

A reader takes the file's bytes, or a binary stream of them: a ``.csv`` stream
is parsed as it is read (see :func:`read_table`), other formats are read whole
first. A file that is not what its name claims raises :class:`UnreadableFile`
with a reason a person can act on.
"""

from __future__ import annotations

import codecs
import gzip
import io
import os
import threading
import zlib
from collections import deque
from collections.abc import Collection
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from app.fsutil import regular_file_opener

DEFLATE_MAX_RATIO = 1032  # deflate's largest expansion: a run of one byte

BATCH_SUFFIXES = (".csv.gz", ".csv", ".parquet", ".jsonl")
IGNORED_SUFFIXES = (".tmp", ".part")
MAX_COLUMNS = 10_000
MAX_JSON_DEPTH = 32
CELL_BYTES = 8  # a cell takes at least this much once read into memory
CSV_BLOCK_BYTES = 1 << 20  # Arrow parses CSV blocks of this size in parallel, inferring types from the first
BytesLike = bytes | pa.Buffer  # what a stream's read() may give: ingest reads into Arrow's memory pool
# Peak memory of a read (Arrow, then the validated pandas frame) per decoded byte, rounded up from the
# highest of two runs of bench/read_memory_bench.py: CSV 3.2, gzipped CSV 4.4, JSONL 12.1, Parquet 8.6.
READ_MEMORY_FACTORS = {".csv": 4, ".csv.gz": 5, ".jsonl": 13, ".parquet": 9}
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


def read_table(name: str, source: BytesLike | BinaryIO, max_bytes: int, categorical: Collection[str] = ()) -> pa.Table:
    """Parse ``source``, the file's bytes or a binary stream of them, by the format of ``name``.

    A ``.csv`` stream is parsed while it is read: Arrow's threads parse each
    block as the next is read, so a stream that hashes what it hands out
    hashes alongside the parse. Every byte of it is read, even when the parse
    fails part-way. Other formats read the stream whole first.

    ``max_bytes`` bounds the decompressed size of ``.csv.gz`` files, so a tiny
    file that expands without end (a gzip bomb) is refused, not read.
    ``categorical`` names the text columns worth keeping dictionary-encoded
    (Parquet where the file stores them so, CSV where a parse block has few
    distinct values): they come back as Arrow dictionary columns instead of
    one decoded string per row. Every other column comes back as it would
    without them.
    """
    suffix = batch_suffix(name)
    if suffix is None:
        raise UnreadableFile(f"{name}: not a batch file ({', '.join(BATCH_SUFFIXES)})")
    try:
        if suffix == ".csv":
            return _read_csv(source if hasattr(source, "read") else io.BytesIO(source), categorical)
        data = source.read() if hasattr(source, "read") else source
        if not data:
            raise UnreadableFile("empty file (0 bytes)")
        if suffix == ".csv.gz":
            return _read_csv(io.BytesIO(_gunzip(data, max_bytes)), categorical)
        if suffix == ".parquet":
            return _read_parquet(data, max_bytes, categorical)
        return _read_jsonl(data)
    except UnreadableFile:
        raise
    except (pa.ArrowException, OSError, ValueError, EOFError, zlib.error) as error:
        raise not_readable(suffix, error) from None


def not_readable(suffix: str, error: Exception) -> UnreadableFile:
    """The reason a file that failed to parse as ``suffix`` is refused: the parser's first line."""
    return UnreadableFile(f"not a readable {suffix} file: {_first_line(error)}")


def _gunzip(data: BytesLike, max_bytes: int) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
        while chunk := stream.read(1 << 20):
            out.write(chunk)
            if out.tell() > max_bytes:
                raise UnreadableFile(
                    f"decompresses to more than {max_bytes / (1 << 20):.4g} MB (watch.max_file_mb); refused"
                )
    return out.getvalue()


def _read_csv(stream: BinaryIO, categorical: Collection[str]) -> pa.Table:
    source = CheckedCsv(stream)
    source.check_header()
    # A column whose later blocks disagree with the first block's inferred type is
    # still promoted (to text, for a stray word among numbers), so validation can name the value.
    options = pa_csv.ConvertOptions(strings_can_be_null=True, auto_dict_encode=bool(categorical))
    try:
        table = pa_csv.read_csv(source, read_options=pa_csv.ReadOptions(block_size=CSV_BLOCK_BYTES),
                                convert_options=options)
    except Exception:
        source.finish()  # text that is not UTF-8 anywhere in the file is the reason, as if checked before the parse
        raise
    source.finish()
    return _decode_dictionaries(table, keep=categorical)


class CheckedCsv:
    """A CSV byte stream on its way into Arrow's parser, checked as it passes.

    :meth:`check_header` looks at the header line before Arrow sees a byte;
    every chunk Arrow reads is checked for UTF-8 as it goes by, and
    :meth:`finish` reads what Arrow left and gives the verdict. Arrow calls
    ``read`` from a thread of its own and takes any bytes-like chunk.
    """

    closed = False  # pyarrow asks before it reads

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()  # one chunk at a time, in order, whichever thread asks
        self._read_ahead: deque[BytesLike] = deque()  # read for the header check, not yet handed to Arrow
        self._utf8 = _Utf8Check()

    def check_header(self) -> None:
        """Read to the end of the header line; UnreadableFile for an empty stream or more than MAX_COLUMNS columns."""
        commas = 0
        while chunk := self._next(CSV_BLOCK_BYTES):
            self._read_ahead.append(chunk)
            text = bytes(chunk)
            header_end = text.find(b"\n")
            commas += text.count(b",", 0, len(text) if header_end < 0 else header_end)
            if header_end >= 0 or commas >= MAX_COLUMNS:
                break
        if not self._read_ahead:
            raise UnreadableFile("empty file (0 bytes)")
        if commas + 1 > MAX_COLUMNS:
            raise UnreadableFile(f"header has more than {MAX_COLUMNS} columns")

    def header_line(self) -> bytes:
        """After :meth:`check_header`: the header line's bytes, without its line end."""
        return b"".join(bytes(chunk) for chunk in self._read_ahead).split(b"\n", 1)[0].rstrip(b"\r")

    def read(self, size: int = CSV_BLOCK_BYTES) -> BytesLike:
        with self._lock:
            return self._read_ahead.popleft() if self._read_ahead else self._next(size)

    def finish(self) -> None:
        """Read the rest of the stream; raise UnreadableFile if any of it was not UTF-8."""
        while self.read(CSV_BLOCK_BYTES):
            pass
        self.check_utf8()

    def check_utf8(self) -> None:
        """Raise UnreadableFile if what was read so far was not UTF-8 (a character cut off at its end counts)."""
        first_bad_byte = self._utf8.first_bad_byte()
        if first_bad_byte is not None:
            raise _not_utf8(first_bad_byte)

    def _next(self, size: int) -> BytesLike:
        chunk = self._stream.read(size)
        self._utf8.feed(chunk)
        return chunk


class _Utf8Check:
    """UTF-8 validity of a byte stream fed in chunks; a character may be split between two."""

    def __init__(self) -> None:
        self._bad_at: int | None = None
        self._pending = b""  # the start of a character whose end is in the next chunk
        self._pending_at = 0  # its offset in the stream

    def feed(self, chunk: BytesLike, final: bool = False) -> None:
        if self._bad_at is not None:
            return
        if not self._pending and _is_ascii(chunk):  # ASCII is UTF-8: most files skip the decode
            self._pending_at += len(chunk)
            return
        data = self._pending + chunk
        try:
            _, used = codecs.utf_8_decode(data, "strict", final)
        except UnicodeDecodeError as error:
            self._bad_at = self._pending_at + error.start
            return
        self._pending, self._pending_at = data[used:], self._pending_at + used

    def first_bad_byte(self) -> int | None:
        """At the end of the stream: the offset of its first byte that is not UTF-8 (a character cut off
        at the end counts), or None."""
        self.feed(b"", final=True)
        return self._bad_at


def _not_utf8(first_bad_byte: int) -> UnreadableFile:
    return UnreadableFile(f"not UTF-8 text (byte {first_bad_byte}): mixed or binary encoding")


def _is_ascii(chunk: BytesLike) -> bool:
    return not len(chunk) or np.frombuffer(chunk, dtype=np.uint8).max() < 0x80  # faster than bytes.isascii


def _decode_dictionaries(table: pa.Table, keep: Collection[str]) -> pa.Table:
    """``table`` with its dictionary columns not named in ``keep`` decoded to plain values."""
    for index, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type) and field.name not in keep:
            table = table.set_column(index, field.name, table.column(index).cast(field.type.value_type))
    return table


def _read_parquet(data: BytesLike, max_bytes: int, categorical: Collection[str]) -> pa.Table:
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
    expanded = _parquet_expanded_bytes(metadata)
    if expanded > max_bytes:
        raise UnreadableFile(
            f"decompresses to {expanded / (1 << 20):,.1f} MB, more than {max_bytes / (1 << 20):g} MB (watch.max_file_mb); refused"
        )
    # Arrow applies read_dictionary to text (and binary) columns only and ignores other names
    return pq.read_table(pa.BufferReader(data), read_dictionary=list(categorical))


def _parquet_expanded_bytes(metadata: pq.FileMetaData) -> int:
    """The bytes a Parquet file's columns take once decompressed, as its footer declares them."""
    declared = sum(metadata.row_group(index).total_byte_size for index in range(metadata.num_row_groups))
    return max(declared, metadata.num_rows * metadata.num_columns * CELL_BYTES)  # dictionaries hide repeats


def read_memory_estimate(name: str, fd: int, size: int, max_bytes: int) -> int:
    """The peak memory, in bytes, that reading the open file ``fd`` into a validated batch is expected to take.

    Its decoded size (a gzip's stated length, a Parquet footer's declared
    size; at most ``max_bytes``, past which the read is refused anyway) times
    what each decoded byte of the format took at its peak in
    ``bench/read_memory_bench.py``. Read with ``pread``: the file's position is untouched.
    """
    suffix = batch_suffix(name) or ".csv"
    return READ_MEMORY_FACTORS[suffix] * min(_decoded_bytes(suffix, fd, size), max_bytes)


def gzip_stated_size(path: Path) -> int:
    """The length a gzipped file states for its content (mod 2**32), or its size when that is larger; at most
    what deflate can expand its size to (the last bytes of a file cut short are no length at all).

    Opened non-blocking, regular files only (:class:`NotRegularFile` for the rest).
    """
    with open(path, "rb", buffering=0, opener=regular_file_opener) as handle:
        size = os.fstat(handle.fileno()).st_size
        return min(_decoded_bytes(".csv.gz", handle.fileno(), size), size * DEFLATE_MAX_RATIO)


def _decoded_bytes(suffix: str, fd: int, size: int) -> int:
    try:
        if suffix == ".csv.gz" and size >= 4:
            return max(size, int.from_bytes(os.pread(fd, 4, size - 4), "little"))  # ISIZE: the length mod 2**32
        if suffix == ".parquet" and size >= 12:
            footer = int.from_bytes(os.pread(fd, 4, size - 8), "little") + 8
            tail = os.pread(fd, footer, size - footer) if footer <= size else b""
            return max(size, _parquet_expanded_bytes(pq.read_metadata(pa.BufferReader(tail))))
    except (OSError, pa.ArrowException, ValueError):
        pass  # a file this broken is refused by its read, with a reason
    return size


def _read_jsonl(data: BytesLike) -> pa.Table:
    check_jsonl_text(data)
    return pa_json.read_json(io.BytesIO(data), read_options=pa_json.ReadOptions(block_size=max(1 << 20, len(data) + 1)))


def check_jsonl_text(data: BytesLike) -> None:
    """UnreadableFile for JSON lines Arrow's reader must not see: not UTF-8, too wide, or nested too deep."""
    utf8 = _Utf8Check()  # Arrow's JSON reader lets a key that is not UTF-8 through, as a column name nothing can read
    utf8.feed(data)
    if (first_bad_byte := utf8.first_bad_byte()) is not None:
        raise _not_utf8(first_bad_byte)
    if _most_keys_in_a_line(data) > MAX_COLUMNS:
        raise UnreadableFile(f"more than {MAX_COLUMNS} columns")
    depth = _nesting_depth(data)
    if depth > MAX_JSON_DEPTH:
        raise UnreadableFile(f"JSON nested {depth} levels deep (at most {MAX_JSON_DEPTH}); a batch is a flat table")


def _most_keys_in_a_line(data: BytesLike) -> int:
    """An upper bound on the keys of the widest JSONL record: '":' pairs per line."""
    raw = np.frombuffer(data, dtype=np.uint8)
    if len(raw) < 2:
        return 0
    key_ends = np.flatnonzero((raw[:-1] == ord('"')) & (raw[1:] == ord(":")))
    lines = np.searchsorted(np.flatnonzero(raw == ord("\n")), key_ends)
    return int(np.bincount(lines).max(initial=0)) if len(lines) else 0


def _nesting_depth(data: BytesLike) -> int:
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
