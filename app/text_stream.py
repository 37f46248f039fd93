"""Record batches of one big text file (``.csv``, ``.csv.gz``, ``.jsonl``), read in bounded memory.

A whole-file read (:mod:`app.readers`) lets Arrow infer each column's type from
all of its values. A stream sees one block at a time, and a type inferred per
block need not be the next block's (a column all integers in the first block,
with "3.5" or "n/a" in a later one), so here every column is read as text in
every block, whatever it holds: :func:`app.validation.check_chunk` turns a
numeric feature's text into float64 in Arrow, and falls back to the whole-file
rule, which names the value and its row, when some of it is not a number.
Categorical features come dictionary-encoded, as a whole-file read gives them.
Class labels that are whole numbers read as integer text ("1.0" is "1"), as they
do once a whole-file read has typed them as numbers; labels with a fraction are
numbers, refused as a whole-file read refuses them.

CSV goes through Arrow's streaming reader (a ``.csv.gz`` decompressed as it is
read), checked for width and UTF-8 as a whole-file read checks it. JSON lines
are cut into line-aligned blocks, each checked (UTF-8, width, nesting) before
Arrow parses it alone. Either way the blocks are small (Arrow's reader holds up
to 32 read ahead) and their rows are regrouped into chunks of ``scale.chunk_rows``.
A feature no line of a block has is all missing in that block; one no line of the
file has is the reason a whole-file read gives, once the file's end is reached.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json

from app.columns import CATEGORICAL
from app.config import Config
from app.readers import CheckedCsv, batch_suffix, check_jsonl_text, not_readable
from app.validation import check_layout

TEXT_SUFFIXES = (".csv", ".csv.gz", ".jsonl")
BLOCK_BYTES = 1 << 18  # parsed at a time: as fast as 1 MB blocks, and a quarter of the read-ahead
CATEGORY_TYPE = pa.dictionary(pa.int32(), pa.string())


def is_text_file(path: Path) -> bool:
    return batch_suffix(Path(path).name) in TEXT_SUFFIXES


def text_batches(path: Path, config: Config) -> Iterator[pa.RecordBatch]:
    """The file's rows, in order, in record batches of at most ``scale.chunk_rows``, typed as above.

    Raises :class:`app.readers.UnreadableFile` (not the format its name claims, not UTF-8,
    too wide, cut short) and :class:`app.validation.InvalidBatch` (a JSON lines
    file without a feature column), each with a whole-file read's reason.
    """
    path = Path(path)
    suffix = batch_suffix(path.name)
    batches = _jsonl_batches(path, config) if suffix == ".jsonl" else _csv_batches(path, suffix, config)
    try:
        for chunk in _regrouped(batches, config.scale.chunk_rows):
            yield _labels_as_read(chunk, config)
    except (pa.ArrowException, OSError, ValueError, EOFError) as error:
        raise not_readable(suffix, error) from None


def _csv_batches(path: Path, suffix: str, config: Config) -> Iterator[pa.RecordBatch]:
    with _open(path, suffix) as stream:
        source = CheckedCsv(stream)
        source.check_header()  # an empty file, or one too wide: refused before Arrow sees a byte
        names = pa_csv.read_csv(io.BytesIO(source.header_line() + b"\n")).column_names
        types = {name: CATEGORY_TYPE if config.schema.get(name) == CATEGORICAL else pa.string() for name in names}
        try:
            # Text columns convert no slower on one thread, in less memory. Arrow still reads up to 32 blocks
            # ahead, held as Python bytes: BLOCK_BYTES bounds that.
            reader = pa_csv.open_csv(source, read_options=pa_csv.ReadOptions(block_size=BLOCK_BYTES, use_threads=False),
                                     convert_options=pa_csv.ConvertOptions(column_types=types, strings_can_be_null=True))
            yield from reader
        except (pa.ArrowException, OSError, ValueError, EOFError):
            source.check_utf8()  # text that is not UTF-8 is the reason, as in a whole-file read
            raise
        source.finish()


def _open(path: Path, suffix: str) -> pa.NativeFile:
    return pa.input_stream(str(path), compression="gzip" if suffix == ".csv.gz" else None)


def _jsonl_batches(path: Path, config: Config) -> Iterator[pa.RecordBatch]:
    wanted = [c for c in dict.fromkeys((*config.schema, config.target, config.timestamp, config.id_column)) if c]
    seen: dict[str, None] = {}
    rows = 0
    with open(path, "rb") as handle:
        for block in _line_blocks(handle):
            check_jsonl_text(block)
            try:
                table = pa_json.read_json(io.BytesIO(block), read_options=pa_json.ReadOptions(block_size=len(block) + 1))
            except pa.ArrowInvalid as error:  # its rows counted from the block's start, as a chunk's reasons are
                where = f" (rows counted from row {rows + 1:,} of {path.name})"
                raise pa.ArrowInvalid(str(error).strip().splitlines()[0] + where) from None
            seen.update(dict.fromkeys(table.column_names))
            rows += table.num_rows
            columns = [pc.cast(table.column(name), pa.string()) if name in table.column_names
                       else pa.nulls(table.num_rows, pa.string()) for name in wanted]
            yield from pa.table(columns, names=wanted).to_batches()
    if rows:  # the file's own layout: a feature (or the time column) no line has
        check_layout(pa.schema([(name, pa.string()) for name in seen]), rows, config)


def _line_blocks(handle: BinaryIO) -> Iterator[bytes]:
    """The file's bytes in blocks that end at a line end (the last one, where the file ends): the last line end
    within ``BLOCK_BYTES``, or the first after it for a longer line."""
    rest = b""
    while chunk := handle.read(BLOCK_BYTES):
        data = rest + chunk
        end = data.rfind(b"\n") + 1
        if end:
            yield data[:end]
        rest = data[end:]
    if rest.strip():
        yield rest


def _regrouped(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """The rows of ``batches``, in order, in record batches of ``rows`` (the last may have fewer)."""
    held: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        held.append(batch)
        count += batch.num_rows
        while count >= rows:
            table = pa.Table.from_batches(held)
            yield _one_batch(table.slice(0, rows))
            held, count = table.slice(rows).to_batches(), count - rows
    if count:
        yield _one_batch(pa.Table.from_batches(held))


def _one_batch(table: pa.Table) -> pa.RecordBatch:
    return table.unify_dictionaries().combine_chunks().to_batches()[0]


def _labels_as_read(batch: pa.RecordBatch, config: Config) -> pa.RecordBatch:
    """Class labels that are all whole numbers as integer text, those with a fraction as float64, words as read."""
    target = config.target
    if config.task == "regression" or not target or batch.schema.names.count(target) != 1:
        return batch  # a target named twice is refused by validation
    index = batch.schema.get_field_index(target)
    try:
        numbers = pc.cast(batch.column(index), pa.float64())
    except pa.ArrowInvalid:
        return batch  # words (or numbers among words): labels as written, as a whole-file read gives them
    try:
        labels = pc.cast(pc.cast(numbers, pa.int64()), pa.string())
    except pa.ArrowInvalid:
        labels = numbers  # a fraction: validation refuses it, naming a value
    columns = list(batch.columns)
    columns[index] = labels
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)
