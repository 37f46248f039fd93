"""Batches larger than memory: a folder of Parquet parts, or one big file, read in bounded memory.

A partitioned batch is a folder in the data folder (``2026-02-09/part-*.parquet``),
complete when its ``_SUCCESS`` marker appears or, without one, when its parts
have not changed for ``watch.settle_seconds``. A single file above
``scale.stream_above_mb`` is read the same way, as one part: Parquet, CSV, gzipped
CSV or JSON lines. Each part is streamed in record batches of ``scale.chunk_rows``
(``pyarrow.dataset``; a text file through :mod:`app.text_stream`): every chunk is validated
with the same rules as a whole file and projected onto each reference profile's
edges (profiles add up exactly) straight from its Arrow arrays, and offered to
a uniform sample; only the sampled rows ever become a pandas frame. So the memory
a batch takes depends on the chunk and the sample, never on the batch's size.

The sample is a *bottom-k* sample: every row draws a random key (seeded per part)
and the ``scale.sample_rows`` rows with the smallest keys are kept; that is a
uniform sample without replacement. The keys do not depend on the rows, so the
largest key kept (:func:`sample_threshold`) is found before any row is read,
from the parts' row counts in their footers; each part then keeps the rows whose
keys are at most that, and the parts' samples, in part order, are the batch's.
A text file has no footer: its rows are counted only by reading them, so it
keeps the rows with the smallest keys seen so far, dropping those no longer
among the smallest as it goes (:class:`BottomK`): the same rows, in bounded memory.
The domain classifier and training take it, and the result says so. Each part
is one unit of work (:func:`scan_part`), merged in part order by
:func:`merge_scans`, so a Dask cluster (:mod:`app.cluster`) that scans the parts
gives exactly the result of this process. The batch's content hash is taken on
a thread of its own meanwhile (hashlib lets go of the GIL).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from threadpoolctl import threadpool_limits

from app.columns import CATEGORICAL, columns_of_kind
from app.config import Config, ScaleConfig
from app.fsutil import FILE_MODE, fsync_dir, sha256_file
from app.readers import UnreadableFile, batch_suffix, gzip_stated_size
from app.stats.profile import CategoricalProfile, Profile, Projection
from app.text_stream import TEXT_SUFFIXES, is_text_file, text_batches
from app.validation import Batch, InvalidBatch, StreamedRows, check_chunk, missing_share_reason, validate_table

SUCCESS_MARKER = "_SUCCESS"
PART_SUFFIXES = (".parquet",)
MAX_REASONS = 10
# Arrow reads 16 record batches ahead by default: hundreds of megabytes of decoded row groups at 20 columns.
ONE_AHEAD = {"batch_readahead": 1, "fragment_readahead": 1}
# Pre-buffering reads a row group's column chunks into memory before decoding them: it saves round trips to a
# remote store, but from a local disk it held 150 MB more of a 1M-row part at once and took longer. A buffered
# stream reads each column chunk in small pieces as it is decoded instead of whole: a Dask worker on the C
# allocator peaked 23 MB lower, at the same speed.
NOT_PRE_BUFFERED = pads.ParquetFragmentScanOptions(pre_buffer=False, use_buffered_stream=True)
_KEY_STEP = 1 << 20  # sample keys drawn at a time while finding the sample's threshold


def batch_parts(path: Path) -> list[Path]:
    """The Parquet files of a partitioned batch folder (hive sub-folders too), in name order; ``[path]`` for a file.

    Hidden and ``_``-prefixed names (``_SUCCESS``, ``.part-0.parquet.tmp``) are not parts.
    """
    path = Path(path)
    if not path.is_dir():
        return [path]
    parts = []
    for found in path.rglob("*"):
        relative = found.relative_to(path).parts
        if any(part.startswith((".", "_")) for part in relative):
            continue
        if found.name.lower().endswith(PART_SUFFIXES) and found.is_file():
            parts.append(found)
    return sorted(parts, key=lambda part: part.relative_to(path).as_posix())


def is_batch_folder(path: Path) -> bool:
    """True for a folder (not a link, not hidden or ``_``-prefixed) that holds Parquet parts: a partitioned batch."""
    path = Path(path)
    if path.name.startswith((".", "_")) or path.is_symlink() or not path.is_dir():
        return False
    return bool(batch_parts(path))


def parts_stamp(path: Path) -> tuple[tuple[str, int, int], ...]:
    """Each part's path, size and mtime: a batch that changed while it was read has another stamp."""
    path = Path(path)
    stamp = []
    for part in batch_parts(path):
        stat = part.stat()
        stamp.append((part.as_posix(), stat.st_size, stat.st_mtime_ns))
    return tuple(stamp)


def folder_complete(folder: Path, settle_seconds: float, now: float | None = None) -> bool:
    """True when the folder's ``_SUCCESS`` marker is there, or it holds parts none of which changed for
    ``settle_seconds`` (nor did the folder, which changes when a part is added or renamed into it)."""
    folder = Path(folder)
    if (folder / SUCCESS_MARKER).is_file():
        return True
    parts = batch_parts(folder)
    if not parts:
        return False
    try:
        newest = max([folder.stat().st_mtime, *(part.stat().st_mtime for part in parts)])
    except OSError:
        return False  # a part went away while looked at: not settled
    return (time.time() if now is None else now) - newest >= settle_seconds


def streamed(path: Path, scale: ScaleConfig) -> bool:
    """True for a batch read in chunks: a folder of parts, or a Parquet, CSV, gzipped CSV or JSON lines file
    above ``scale.stream_above_mb`` (a gzipped file by the length it states for its content: 200 MB on disk
    can be 2 GB of text)."""
    path = Path(path)
    if path.is_dir():
        return True
    suffix = batch_suffix(path.name)
    if suffix not in (".parquet", *TEXT_SUFFIXES):
        return False
    try:
        size = gzip_stated_size(path) if suffix == ".csv.gz" else path.stat().st_size
    except OSError:  # a FIFO, say: the whole-file read refuses it in words
        return False
    return size > scale.stream_above_mb * (1 << 20)


def batch_sha256(path: Path) -> str:
    """The content hash the ledger keeps: a file's SHA-256; for a folder, the SHA-256 of each part's path and SHA-256."""
    path = Path(path)
    if not path.is_dir():
        return sha256_file(path)
    digest = hashlib.sha256()
    for part in batch_parts(path):
        digest.update(f"{part.relative_to(path).as_posix()}\0{sha256_file(part)}\n".encode())
    return digest.hexdigest()


@dataclass
class PartScan:
    """What streaming one part found: its rows, validation outcome, profiles and sample."""

    rows: int = 0
    labeled: bool = False
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    missing: dict[str, int] = field(default_factory=dict)
    profiles: dict[str, Profile] = field(default_factory=dict)
    sample: pd.DataFrame | None = None  # its rows in the batch's sample, validated as a whole file's


@dataclass(frozen=True)
class ScannedBatch:
    """A streamed batch: its totals over every row, and the uniform sample the models see."""

    name: str
    sha256: str
    rows: int
    labeled: bool
    reasons: list[str]
    warnings: list[str]
    profiles: dict[str, Profile]
    sample: pd.DataFrame

    @property
    def sampled(self) -> str:
        """What the models saw of it, in words (stated in the batch's result)."""
        if len(self.sample) == self.rows:
            return f"all {self.rows:,} rows"
        return f"a uniform sample of {len(self.sample):,} of {self.rows:,} rows"

    def as_batch(self, path: Path) -> Batch | InvalidBatch:
        """The batch the stages after intake take: its sample as the frame, or the reasons it is refused."""
        if self.reasons:
            return InvalidBatch(self.reasons)
        return Batch(name=self.name, sha256=self.sha256, frame=self.sample, labeled=self.labeled,
                     warnings=[*self.warnings, f"streamed: drift and predictions on all rows, scores, the domain"
                               f" classifier and training on {self.sampled}"],
                     streamed=StreamedRows(Path(path), self.rows, self.sampled, self.profiles))


class BottomK:
    """A part's rows whose sample keys are at most ``threshold`` and among the ``k`` smallest offered, in
    row order, held as they come: at most ``2 k`` rows at a time.

    Past ``2 k``, the rows no longer among the ``k`` smallest are dropped and the
    threshold falls to the ``k``-th smallest key. With the threshold of
    :func:`sample_threshold` a part never holds more than ``k`` rows, so nothing is dropped.
    """

    def __init__(self, k: int, threshold: float) -> None:
        self.k = k
        self.threshold = threshold
        self._batches: list[pa.RecordBatch] = []
        self._keys: list[np.ndarray] = []
        self.held = 0

    def offer(self, chunk: pa.RecordBatch, keys: np.ndarray) -> None:
        chosen = np.flatnonzero(keys <= self.threshold)
        if not len(chosen):
            return
        self._batches.append(chunk.take(pa.array(chosen)))
        self._keys.append(keys[chosen])
        self.held += len(chosen)
        if self.held > 2 * self.k:
            self._drop_beyond_k()

    def rows(self) -> list[pa.RecordBatch]:
        """The rows with the ``k`` smallest keys offered (at most ``threshold``), in the order offered."""
        if self.held > self.k:
            self._drop_beyond_k()
        return self._batches

    def _drop_beyond_k(self) -> None:
        self.threshold = float(np.partition(np.concatenate(self._keys), self.k - 1)[self.k - 1])
        batches, keys = [], []
        for batch, batch_keys in zip(self._batches, self._keys):
            chosen = np.flatnonzero(batch_keys <= self.threshold)
            if len(chosen):
                batches.append(batch.take(pa.array(chosen)))
                keys.append(batch_keys[chosen])
        self._batches, self._keys = batches, keys
        self.held = sum(len(batch_keys) for batch_keys in keys)


def scan_part(path: Path, part_index: int, config: Config, references: dict[str, Profile],
              threshold: float) -> PartScan:
    """Stream one part: check each chunk, project it onto each reference, and keep its rows whose sample
    keys are at most ``threshold`` (see :func:`sample_threshold`) and among its ``scale.sample_rows``
    smallest, in order.

    ``references`` maps a name (a model, or the folder) to the profile whose
    edges the part is projected onto. A chunk is checked and measured in Arrow
    and numpy (:func:`app.validation.check_chunk`); only the rows kept for the
    sample are taken from it, and they become a frame once, through the
    whole-file validation, at the part's end. A chunk that fails validation
    ends the part's scan with its reasons, each saying where in the part it was found.
    """
    scan = PartScan(missing={column: 0 for column in config.schema})
    rng = _key_generator(config, part_index)
    sample = BottomK(config.scale.sample_rows, threshold)
    projections = {name: Projection(reference, config.scale.chunk_rows) for name, reference in references.items()}
    try:
        for chunk in _chunks(path, config, used_only=True):
            if not chunk.num_rows:
                continue
            try:
                checked = check_chunk(chunk, config)
            except InvalidBatch as invalid:
                where = f" (rows counted from row {scan.rows + 1:,} of {Path(path).name})"
                scan.reasons = [reason + where for reason in invalid.reasons]
                break
            for column, count in checked.missing.items():
                scan.missing[column] += count
            categories = {column: CategoricalProfile(counts=counts, missing=checked.missing[column])
                          for column, counts in checked.categories.items()}
            for projection in projections.values():
                projection.add(checked.numbers, categories, chunk.num_rows)
            sample.offer(chunk, rng.random(chunk.num_rows))
            scan.rows += chunk.num_rows
            scan.labeled = scan.labeled or checked.labeled
            scan.warnings = list(dict.fromkeys([*scan.warnings, *checked.warnings]))
        scan.profiles = {name: projection.profile() for name, projection in projections.items() if projection.rows}
        kept = sample.rows()
        if kept and not scan.reasons:
            lenient = replace(config, watch=replace(config.watch, max_missing_share=1.0))  # judged on all rows
            scan.sample = validate_table(pa.Table.from_batches(kept), lenient).frame
    except UnreadableFile as error:  # a text file, refused with a whole-file read's reason
        scan.reasons = [str(error)]
    except InvalidBatch as invalid:  # a JSON lines file's layout, known at its end
        scan.reasons = invalid.reasons
    except (pa.ArrowException, OSError, ValueError) as error:
        scan.reasons = [f"{Path(path).name}: not a readable Parquet file: {str(error).strip().splitlines()[0][:300]}"]
    return scan


def merge_scans(name: str, sha256: Future[str], scans: Iterable[PartScan], config: Config) -> ScannedBatch:
    """One batch from its parts' scans, taken in part order one at a time: sums, merged profiles, the parts'
    samples one after another; ``sha256`` is the batch's content hash, being taken meanwhile."""
    total = PartScan()
    samples: list[pd.DataFrame] = []
    for scan in scans:
        total.rows += scan.rows
        total.labeled = total.labeled or scan.labeled
        total.reasons = list(dict.fromkeys([*total.reasons, *scan.reasons]))[:MAX_REASONS]
        total.warnings = list(dict.fromkeys([*total.warnings, *scan.warnings]))
        for column, count in scan.missing.items():
            total.missing[column] = total.missing.get(column, 0) + count
        for key, profile in scan.profiles.items():
            total.profiles[key] = total.profiles[key].merge(profile) if key in total.profiles else profile
        if scan.sample is not None:
            samples.append(scan.sample)
    reasons = total.reasons
    if not reasons and total.rows == 0:
        reasons = ["header only: the batch has no rows"]
    if not reasons:
        shares = (missing_share_reason(column, total.missing.get(column, 0), total.rows, config)
                  for column in config.schema)
        reasons = [reason for reason in shares if reason]
    sample = pd.concat(samples, ignore_index=True) if samples else pd.DataFrame()
    return ScannedBatch(name=name, sha256=sha256.result(), rows=total.rows, labeled=total.labeled, reasons=reasons,
                        warnings=total.warnings, profiles=total.profiles, sample=sample)


def scan_batch(path: Path, config: Config, references: dict[str, Profile]) -> ScannedBatch:
    """Stream a whole batch (a folder of parts, or one file) in this process; see :mod:`app.cluster` for Dask."""
    parts = batch_parts(path)
    with ThreadPoolExecutor(max_workers=1) as hasher:
        sha256 = hasher.submit(batch_sha256, path)  # first, so that the threshold's key draws overlap it too
        threshold = sample_threshold(parts, config)
        scans = (scan_part(part, index, config, references, threshold) for index, part in enumerate(parts))
        return merge_scans(Path(path).name, sha256, scans, config)


def sample_threshold(parts: list[Path], config: Config) -> float:
    """The largest of the ``scale.sample_rows`` smallest sample keys the parts' rows draw: a row is in the
    batch's sample when its key is at most this. Only the keys are drawn, a million at a time, for the rows
    each part's footer counts (a part that cannot be read counts none: its scan says why). Infinite for a
    text file, whose rows are not counted before they are read: its scan keeps its smallest keys as it goes."""
    if any(is_text_file(part) for part in parts):
        return np.inf
    k = config.scale.sample_rows
    smallest = np.empty(0)
    for index, part in enumerate(parts):
        try:
            rows = pads.dataset(str(part), format=_format(config)).count_rows()
        except (pa.ArrowException, OSError, ValueError):
            continue
        rng = _key_generator(config, index)
        for start in range(0, rows, _KEY_STEP):
            keys = rng.random(min(_KEY_STEP, rows - start))
            if len(smallest) == k:
                keys = keys[keys < smallest.max()]
            smallest = np.concatenate([smallest, keys])
            if len(smallest) > k:
                smallest = np.partition(smallest, k - 1)[:k]
    return float(smallest.max()) if len(smallest) == k else np.inf


def predict_part(path: Path, pipeline, config: Config, version: int) -> pd.DataFrame:
    """Predictions for every row of one part (``row`` counts from the part's start), streamed in chunks.

    The part's predictions are returned whole: a part is the unit a producer
    sizes (and a cluster ships), a batch is any number of them.
    """
    # scikit-learn and skops come with these: a Dask worker that only scans never loads them
    from app.models import predict
    from app.serving import predictions_frame

    frames = []
    offset = 0
    lenient = replace(config, watch=replace(config.watch, max_missing_share=1.0))
    with threadpool_limits(1):
        for chunk in _chunks(path, config, used_only=False):
            if not chunk.num_rows:
                continue
            frame = validate_table(pa.Table.from_batches([chunk]), lenient).frame
            predicted = predictions_frame(predict(pipeline, frame, config.task), frame, version, config.id_column)
            predicted["row"] += offset
            offset += len(frame)
            frames.append(predicted)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


class PredictionWriter:
    """Writes a streamed batch's predictions part after part into one Parquet file, renamed into place at the end."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._writer: pq.ParquetWriter | None = None
        self.rows = 0

    def add(self, predictions: pd.DataFrame) -> None:
        if predictions.empty:
            return
        predictions = predictions.assign(row=predictions["row"] + self.rows)
        table = pa.Table.from_pandas(predictions, preserve_index=False)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._partial, table.schema)
        self._writer.write_table(table.cast(self._writer.schema))
        self.rows += len(predictions)

    def close(self) -> None:
        """Finish the file and rename it into place (an empty batch writes none)."""
        if self._writer is None:
            return
        self._writer.close()
        os.chmod(self._partial, FILE_MODE)
        os.replace(self._partial, self.path)
        fsync_dir(self.path.parent)

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._partial.unlink(missing_ok=True)


def predict_batch(path: Path, pipeline, config: Config, version: int, out: Path) -> int:
    """Predict every row of a streamed batch into ``out`` (Parquet), part by part; the rows written."""
    writer = PredictionWriter(out)
    try:
        for part in batch_parts(path):
            writer.add(predict_part(part, pipeline, config, version))
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return writer.rows


def _key_generator(config: Config, part_index: int) -> np.random.Generator:
    """The sample keys of a part's rows, in row order: seeded by the first model's seed (so a folder's runs
    draw the same rows) and the part's place."""
    return np.random.default_rng([config.models[0].seed if config.models else 0, part_index])


def _chunks(path: Path, config: Config, used_only: bool) -> Iterator[pa.RecordBatch]:
    """A part's record batches of at most ``scale.chunk_rows``: a text file's every column
    (:mod:`app.text_stream`), a Parquet part's through ``pyarrow.dataset`` (only the columns the batch uses
    when ``used_only``)."""
    if is_text_file(path):
        yield from text_batches(path, config)
        return
    dataset = pads.dataset(str(path), format=_format(config))
    columns = None
    if used_only:
        used = [c for c in (*config.schema, config.target, config.timestamp, config.id_column) if c]
        columns = [c for c in dict.fromkeys(used) if c in dataset.schema.names]
    yield from dataset.to_batches(columns=columns, batch_size=config.scale.chunk_rows, **ONE_AHEAD)


def _format(config: Config) -> pads.FileFormat:
    """How to read a Parquet part: categorical text dictionary-encoded, as a whole-file read gives it."""
    categorical = columns_of_kind(config.schema, CATEGORICAL)
    return pads.ParquetFileFormat(read_options=pads.ParquetReadOptions(dictionary_columns=categorical),
                                  default_fragment_scan_options=NOT_PRE_BUFFERED)
