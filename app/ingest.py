"""Turn one complete file in the data folder into a validated batch, or a quarantine.

The file is read once into memory: the SHA-256 for the ledger and the parse
are taken from the same bytes, and the file's size and mtime are compared
before and after the read, so a file that changed while it was read is never
used half-way (it is retried once it settles again).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from app.config import Config
from app.events import printable
from app.fsutil import atomic_write_bytes, atomic_write_text, sha256_bytes
from app.models import CATEGORICAL, columns_of_kind
from app.readers import UnreadableFile, read_table
from app.validation import Batch, InvalidBatch, validate_table


class FileChanged(Exception):
    """The file changed (or vanished) while it was being read: not complete yet."""


@dataclass(frozen=True)
class FileSnapshot:
    """The bytes of a file and the size/mtime they were read at."""

    name: str
    data: bytes
    size: int
    mtime_ns: int

    @cached_property
    def sha256(self) -> str:
        """Hex SHA-256 of ``data``, computed once (the ledger, the parse and the archive all ask)."""
        return sha256_bytes(self.data)


def read_stable(path: Path, max_bytes: int) -> FileSnapshot:
    """Read ``path`` whole; raise FileChanged if it changes during the read.

    Raises OSError (e.g. PermissionError, FileNotFoundError) as is, and
    :class:`UnreadableFile` for a file larger than ``max_bytes``.
    """
    before = os.stat(path)
    if before.st_size > max_bytes:
        raise UnreadableFile(
            f"file is {before.st_size / (1 << 20):.4g} MB, above watch.max_file_mb ({max_bytes / (1 << 20):.4g} MB)"
        )
    with open(path, "rb") as handle:
        data = handle.read(before.st_size + 1)  # one byte more shows a file that grew since the stat
    after = os.stat(path)
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns) or len(data) != after.st_size:
        raise FileChanged(f"{path.name} changed while it was read")
    return FileSnapshot(path.name, data, after.st_size, after.st_mtime_ns)


def parse_batch(snapshot: FileSnapshot, config: Config) -> Batch:
    """Parse and validate; raise InvalidBatch with every reason found.

    Meanwhile a second thread takes the snapshot's SHA-256 (hashlib releases
    the GIL on large buffers), unless it is known already.
    """
    max_bytes = int(config.watch.max_file_mb * (1 << 20))
    with ThreadPoolExecutor(max_workers=1) as hasher:
        hashing = hasher.submit(lambda: snapshot.sha256)
        try:
            table = read_table(snapshot.name, snapshot.data, max_bytes, columns_of_kind(config.schema, CATEGORICAL))
        except UnreadableFile as error:
            raise InvalidBatch([str(error)]) from None
        clean = validate_table(table, config)
        return Batch(name=snapshot.name, sha256=hashing.result(), frame=clean.frame, labeled=clean.labeled,
                     warnings=clean.warnings)


def quarantine(snapshot: FileSnapshot, reasons: list[str], quarantine_dir: Path, copy: bool = True) -> Path:
    """Put a rejected file's bytes into ``quarantine_dir`` with a ``.reason.txt`` beside them.

    The name keeps the original's and adds the first 12 hex digits of its
    SHA-256 (or "unread" when the file was too large to read), so two
    different files of the same name never overwrite each other. With
    ``copy=False`` only the reason is written. Returns the quarantined path.
    """
    safe_name = Path(snapshot.name).name
    target = quarantine_dir / f"{snapshot.sha256[:12] if copy else 'unread'}-{safe_name}"
    if copy:
        atomic_write_bytes(target, snapshot.data)
    sha = snapshot.sha256 if copy else "not read"
    # People read this file in a terminal: a control character from the file's name or content is shown, not obeyed.
    reason_text = f"file: {printable(safe_name)}\nsha256: {sha}\n" + "".join(f"reason: {printable(r)}\n" for r in reasons)
    atomic_write_text(target.with_name(target.name + ".reason.txt"), reason_text)
    return target

