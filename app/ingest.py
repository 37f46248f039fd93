"""Turn one complete file in the data folder into a validated batch, or a quarantine.

The file is read once, in chunks that go straight to the parser (a CSV file is
parsed while it is read) and, on the way, into the SHA-256 for the ledger, so
the bytes hashed are exactly the bytes parsed. The file's size and mtime are
compared before and after the read, so a file that changed while it was read
is never used half-way (it is retried once it settles again).
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from collections.abc import Callable, Collection
from typing import BinaryIO, TypeVar

import pyarrow as pa

from app.columns import CATEGORICAL, columns_of_kind
from app.config import Config
from app.events import printable
from app.fsutil import CHUNK_BYTES, atomic_write_bytes, atomic_write_text, regular_file_opener, sha256_bytes
from app.memory import MB, budget_bytes
from app.readers import UnreadableFile, read_memory_estimate, read_table
from app.names import derived_name
from app.store import FileStat
from app.validation import Batch, InvalidBatch, validate_table


Checked = TypeVar("Checked")


class FileChanged(Exception):
    """The file changed (or vanished) while it was being read: not complete yet."""


@dataclass(frozen=True)
class FileSnapshot:
    """What was read of one file: the size and mtime it was read at, and the SHA-256 of its bytes.

    ``sha256`` is None for a file refused unread (too large). ``data`` holds
    the bytes of a rejected file, for the quarantine; a valid batch's bytes are
    not kept.
    """

    name: str
    size: int
    mtime_ns: int
    sha256: str | None = None
    data: bytes | None = None
    ctime_ns: int | None = None
    inode: int | None = None

    @classmethod
    def unread(cls, name: str, stat: os.stat_result) -> FileSnapshot:
        """A file refused before its bytes were read: only its stat is known."""
        return cls(name, stat.st_size, stat.st_mtime_ns, ctime_ns=stat.st_ctime_ns, inode=stat.st_ino)

    @property
    def seen(self) -> FileStat:
        return FileStat(self.size, self.mtime_ns, self.ctime_ns, self.inode)


def read_batch(path: Path, config: Config) -> tuple[FileSnapshot, Batch | InvalidBatch]:
    """Read, hash, parse and validate the batch file at ``path``, in one pass over its bytes.

    Returns what was read and either the :class:`Batch` or the
    :class:`InvalidBatch` with every reason found; see :func:`read_checked`.
    """
    snapshot, outcome = read_checked(path, config, lambda table: validate_table(table, config),
                                     columns_of_kind(config.schema, CATEGORICAL))
    if isinstance(outcome, InvalidBatch):
        return snapshot, outcome
    return snapshot, Batch(name=path.name, sha256=snapshot.sha256, frame=outcome.frame, labeled=outcome.labeled,
                           warnings=outcome.warnings)


def read_checked(path: Path, config: Config, check: Callable[[pa.Table], Checked],
                 categorical: Collection[str] = ()) -> tuple[FileSnapshot, Checked | InvalidBatch]:
    """Read, hash and parse the file at ``path`` in one pass over its bytes, then ``check`` the table.

    ``check`` returns what the table becomes or raises :class:`InvalidBatch`;
    ``categorical`` names the columns read as text. Returns what was read and
    the checked value or the :class:`InvalidBatch` with every reason found
    (its snapshot then holds the bytes, for :func:`quarantine`). Raises :class:`FileChanged` if the
    file changed while it was read, :class:`UnreadableFile` for a file larger
    than ``watch.max_file_mb`` or one whose read would take more memory than
    its budget (refused before reading), NotRegularFile for a
    folder, FIFO, socket or device (never opened blocking, never read), and
    OSError (e.g. PermissionError, FileNotFoundError) as is.
    """
    max_bytes = int(config.watch.max_file_mb * (1 << 20))
    with open(path, "rb", buffering=0, opener=regular_file_opener) as handle:
        before = os.fstat(handle.fileno())
        if before.st_size > max_bytes:
            raise UnreadableFile(
                f"file is {before.st_size / (1 << 20):.4g} MB, above watch.max_file_mb ({max_bytes / (1 << 20):.4g} MB)"
            )
        _check_memory(path.name, handle.fileno(), before.st_size, max_bytes, config)
        reader = _HashingReader(handle, limit=before.st_size + 1)  # one byte more shows a file that grew since the stat
        try:
            outcome = _parse(path.name, reader, max_bytes, check, categorical)
        finally:
            sha256 = reader.finish()
    after = os.stat(path)
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns) or reader.bytes_read != after.st_size:
        raise FileChanged(f"{path.name} changed while it was read")
    snapshot = FileSnapshot(path.name, after.st_size, after.st_mtime_ns, sha256,
                            ctime_ns=after.st_ctime_ns, inode=after.st_ino)
    if isinstance(outcome, InvalidBatch):
        return _with_bytes(path, snapshot), outcome
    return snapshot, outcome


def _check_memory(name: str, fd: int, size: int, max_bytes: int, config: Config) -> None:
    """UnreadableFile if reading the file would take more memory than its budget (an abort inside Arrow otherwise)."""
    need = read_memory_estimate(name, fd, size, max_bytes)
    budget, source = budget_bytes(config.watch.max_memory_mb)
    if budget is not None and need > budget:
        raise UnreadableFile(f"reading it needs about {need / MB:,.0f} MB of memory, more than the"
                             f" {budget / MB:,.0f} MB it may take ({source}); refused")


def quarantine(snapshot: FileSnapshot, reasons: list[str], quarantine_dir: Path) -> Path:
    """Put a rejected file's bytes into ``quarantine_dir`` with a ``.reason.txt`` beside them.

    The name keeps the original's and adds the first 12 hex digits of its
    SHA-256 (or "unread" when the file was too large to read), so two
    different files of the same name never overwrite each other; a very long
    name is shortened (see :func:`app.names.derived_name`). A snapshot
    without ``data`` (unread, or a streamed batch, which stays where it is)
    gets only the reason file. Returns the quarantined path.
    """
    safe_name = Path(snapshot.name).name
    target = quarantine_dir / derived_name(snapshot.sha256[:12] if snapshot.sha256 else "unread", safe_name)
    if snapshot.data is not None:
        atomic_write_bytes(target, snapshot.data)
    sha = snapshot.sha256 or "not read"
    # People read this file in a terminal: a control character from the file's name or content is shown, not obeyed.
    reason_text = f"file: {printable(safe_name)}\nsha256: {sha}\n" + "".join(f"reason: {printable(r)}\n" for r in reasons)
    atomic_write_text(target.with_name(target.name + ".reason.txt"), reason_text)
    return target


def _parse(name: str, reader: BinaryIO, max_bytes: int, check: Callable[[pa.Table], Checked],
           categorical: Collection[str]) -> Checked | InvalidBatch:
    try:
        return check(read_table(name, reader, max_bytes, categorical))
    except UnreadableFile as error:
        return InvalidBatch([str(error)])
    except InvalidBatch as invalid:
        return invalid


def _with_bytes(path: Path, snapshot: FileSnapshot) -> FileSnapshot:
    """``snapshot`` with the file's bytes read again, for the quarantine.

    Their SHA-256 proves them the bytes that were parsed; FileChanged if they
    are not (the file changed since).
    """
    with open(path, "rb", opener=regular_file_opener) as handle:
        data = handle.read(snapshot.size + 1)
    if sha256_bytes(data) != snapshot.sha256:
        raise FileChanged(f"{path.name} changed while it was read")
    return replace(snapshot, data=data)


class _HashingReader:
    """An open file read for a parser, at most ``limit`` bytes in all, each chunk hashed on the way.

    The SHA-256 is taken on a thread of its own, chunk by chunk in the order
    read, so the parser never waits for it. ``read`` may be called from any
    thread (pyarrow's CSV reader calls it from its own), one call at a time.
    """

    closed = False  # pyarrow asks before it reads

    def __init__(self, handle: BinaryIO, limit: int) -> None:
        self._handle = handle
        self._left = limit
        self.bytes_read = 0
        self._lock = threading.Lock()
        self._read_error: OSError | None = None
        self._digest = hashlib.sha256()
        self._to_hash: queue.SimpleQueue[pa.Buffer | None] = queue.SimpleQueue()  # None: no more chunks
        self._hasher = threading.Thread(target=self._hash_chunks, name="sha256", daemon=True)
        self._hasher.start()

    def read(self, size: int = -1) -> pa.Buffer:
        """The next ``size`` bytes at most (all that is left for -1), in memory from Arrow's pool.

        Arrow frees a chunk it has parsed without going back to Python, and
        its pool hands the memory out again for the next chunks.
        """
        with self._lock:
            wanted = self._left if size < 0 else min(size, self._left)
            buffer = pa.allocate_buffer(wanted)
            try:
                filled = self._fill(memoryview(buffer))
            except OSError as error:
                self._read_error = error  # the file's fault, not the format's: raised again by finish()
                raise
            chunk = buffer if filled == wanted else buffer.slice(0, filled)
            self._left -= filled
            self.bytes_read += filled
            if filled:
                self._to_hash.put(chunk)
            return chunk

    def _fill(self, view: memoryview) -> int:
        """Read into ``view`` until it is full or the file ends; the bytes read.

        A read for the whole file (Parquet, JSONL) takes what one read gives
        for all there is, so one short read (a network file system may give
        one) must not cut the file short.
        """
        filled = 0
        while filled < len(view) and (got := self._handle.readinto(view[filled:])):
            filled += got
        return filled

    def finish(self) -> str:
        """Read what the parser left unread; return the hex SHA-256 of every byte read.

        Raises the OSError of a failed read, even if the parser made it a reason.
        """
        try:
            while self.read(CHUNK_BYTES):
                pass
        finally:
            self._to_hash.put(None)
            self._hasher.join()
        if self._read_error is not None:
            raise self._read_error
        return self._digest.hexdigest()

    def _hash_chunks(self) -> None:
        while (chunk := self._to_hash.get()) is not None:
            self._digest.update(chunk)
