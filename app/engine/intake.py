"""From a file in the data folder to a batch, or to the one ledger entry that says why not.

:class:`Intake` reads a file once (marking it in the store meanwhile, so a
parser that kills the process is not run forever) and decides: skipped (not a
regular file), already known, a duplicate of another file's content,
quarantined (unreadable or refused by validation), or a :class:`Batch` for the
models (or a label file, for :mod:`app.engine.labels`). Every decision but the batch is recorded here, with its event.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path
from stat import S_ISDIR, S_ISREG
from typing import Callable

from app.bigbatch import is_batch_folder, parts_stamp, streamed
from app.cluster import ClusterUnreachable
from app.engine.context import Stage, StageContext
from app.errorlog import log_error
from app.events import Event, EventKind
from app.fsutil import NotRegularFile, file_kind
from app.ingest import FileChanged, FileSnapshot, quarantine, read_batch
from app.label_files import LabelFile, is_label_file, read_label_file
from app.readers import UnreadableFile
from app.stats.profile import Profile
from app.store import FOLDER_KEY, FileStat, StateLost
from app.validation import Batch, InvalidBatch
from app.watcher import watched_file

READ_ATTEMPTS = 2  # reads of a file during which the process died before it is quarantined unread
PROCESS_DIED = "the process died while reading it"
UNHANDLED = "could not be handled under the current config"
# Faults of the machine, not of the file: the file is tried again once they pass, never quarantined for them.
ENVIRONMENT_FAULTS = (OSError, sqlite3.Error, MemoryError, StateLost)


@dataclass(frozen=True)
class Arrival:
    """A file read and validated into a batch the models have not seen, or a label file (see
    :mod:`app.label_files`): ``snapshot`` is what was read."""

    snapshot: FileSnapshot
    batch: Batch | LabelFile


class Intake(Stage):
    """Turns one path into an :class:`Arrival`, or records why it is none.

    ``defer(path)`` holds a new file back while the intake is paused (True when
    it did); ``changed(path)`` hands back a file that changed while it was read.
    """

    def __init__(self, context: StageContext, defer: Callable[[Path], bool], changed: Callable[[Path], None]) -> None:
        super().__init__(context)
        self.defer = defer
        self.changed = changed

    def take(self, path: Path) -> Arrival | None:
        """Read ``path`` if it is a batch nobody has seen; None when that ended in a record or an event."""
        name = path.name
        if not watched_file(self.data_dir, path, self.paths.root):
            self.emit(Event(EventKind.FILE_SKIPPED, f"{name}: not read (a link out of the folder, or not a batch file)",
                            file=name))
            return None
        try:
            stat = path.stat()
        except FileNotFoundError:
            self.emit(Event(EventKind.FILE_ERROR, f"{name}: deleted before it could be read", file=name))
            return None
        if self.store.knows_file(name, FileStat.of(stat)):
            return None
        if self.defer(path):  # a file already in the ledger never waits: nothing is left to do for it
            return None
        if not S_ISREG(stat.st_mode) and not (S_ISDIR(stat.st_mode) and is_batch_folder(path)):
            self._skip(name, stat, f"not a regular file ({file_kind(stat.st_mode)}); only regular files are read")
            return None
        read = self._read_marked(path, stat)
        if read is None:
            return None
        snapshot, batch = read
        if (same := self.store.same_file(name, snapshot.sha256)) is not None:
            self.store.refresh_file(same.id, snapshot.seen)  # touched, or copied over with the same bytes
            return None
        known = self.store.file_by_sha(snapshot.sha256)
        if known is not None:
            self.store.record_file(name, snapshot.sha256, "duplicate", reason=f"same content as {known.name}",
                                   seen=snapshot.seen)
            self.emit(Event(EventKind.DUPLICATE, f"{name}: same content as {known.name}; not processed again",
                            file=name, data={"same_as": known.name}))
            return None
        if isinstance(batch, InvalidBatch):
            self.reject(snapshot, batch.reasons)
            return None
        return Arrival(snapshot, batch)

    def reject(self, snapshot: FileSnapshot, reasons: list[str]) -> None:
        """Quarantine a rejected file: its bytes when ``snapshot`` holds them, and the reasons."""
        placed = quarantine(snapshot, reasons, self.paths.quarantine)
        copied = snapshot.data is not None
        where = f" (see {placed.name}{'' if copied else '.reason.txt'} in the quarantine folder)"
        if not copied and snapshot.sha256 is not None:  # a streamed batch: too large to copy, left unchanged
            where = f" (left where it is, not copied; see {placed.name}.reason.txt in the quarantine folder)"
        sha = snapshot.sha256 if copied else None
        self.store.record_file(snapshot.name, sha, "quarantined", reason="; ".join(reasons), seen=snapshot.seen)
        self.emit(Event(EventKind.BATCH_QUARANTINED, f"{snapshot.name}: quarantined: {'; '.join(reasons)}{where}",
                        file=snapshot.name, data={"reasons": reasons}))

    def quarantine_unhandled(self, snapshot: FileSnapshot, error: Exception) -> None:
        """Quarantine a file that raised ``error`` while it was handled: one line for the person, the
        traceback in the error log."""
        log_error(self.paths.root, error, f"handling {snapshot.name}")
        if snapshot.data is None and snapshot.sha256 is not None:  # a valid batch's bytes are not kept: read again
            snapshot = replace(snapshot, data=self._bytes_if_unchanged(snapshot))
        detail = (str(error).strip().splitlines() or [""])[0]
        self.reject(snapshot, [f"{UNHANDLED}: {type(error).__name__}{': ' + detail if detail else ''}"])

    def _bytes_if_unchanged(self, snapshot: FileSnapshot) -> bytes | None:
        """The file's bytes for the quarantine, if they are still those that were read."""
        try:
            data = (self.data_dir / snapshot.name).read_bytes()
        except OSError:
            return None
        return data if hashlib.sha256(data).hexdigest() == snapshot.sha256 else None

    def _read_marked(self, path: Path, stat: os.stat_result) -> tuple[FileSnapshot, Batch | LabelFile | InvalidBatch] | None:
        """:meth:`_read`, with the file marked in the store as being read meanwhile.

        A mark left by a process that died reading the file (an abort inside a
        parser cannot be caught) gets it read once more; a second death
        quarantines it unread instead of stopping the monitor at every start.
        """
        name = path.name
        died = self.store.begin_reading(name, stat.st_size, stat.st_mtime_ns)
        try:
            if died >= READ_ATTEMPTS:
                self.reject(FileSnapshot.unread(name, stat), [f"{PROCESS_DIED} ({died} times); not read again"])
                return None
            if died:
                self.emit(Event(EventKind.FILE_SEEN, f"{name}: {PROCESS_DIED} last time; reading it once more",
                                file=name, data={"retry": died}))
            return self._read(path, stat)
        finally:
            self.store.end_reading(name)

    def _read(self, path: Path, stat: os.stat_result) -> tuple[FileSnapshot, Batch | LabelFile | InvalidBatch] | None:
        """Read and validate the file; None when that ended in an event instead (skipped, refused, unreadable)."""
        name = path.name
        # Parsed before the ledger lookup: the SHA-256 is taken as the bytes stream into the parser
        # (see read_batch), so the rare duplicate costs one parse thrown away.
        try:
            if is_label_file(name, self.config):
                return read_label_file(path, self.config, self._known_classes())
            if streamed(path, self.config.scale):
                return self._read_streamed(path, stat)
            return read_batch(path, self.config)
        except NotRegularFile as error:
            self._skip(name, stat, str(error))
        except FileChanged:
            self.changed(path)
        except UnreadableFile as error:
            self.reject(FileSnapshot.unread(name, stat), [str(error)])
        except ClusterUnreachable as error:
            self.emit(Event(EventKind.FILE_ERROR, f"{name}: not read: {error}", file=name, data={"reason": str(error)}))
            self.changed(path)  # a running engine tries again once it settles anew; `watch --once`, at its next run
        except OSError as error:
            reason = error.strerror or str(error)
            self.emit(Event(EventKind.FILE_ERROR, f"{name}: cannot be read: {reason}", file=name, data={"reason": reason}))
        except ENVIRONMENT_FAULTS:
            raise
        except Exception as error:  # noqa: BLE001 - a parser's surprise is this file's problem, not the monitor's
            self.quarantine_unhandled(FileSnapshot.unread(name, stat), error)
        return None

    def _known_classes(self) -> set[str]:
        """The classes the serving models know: a label file may give no other."""
        known: set[str] = set()
        for model in self.config.models:
            version = self.store.serving_version(model.name)
            record = self.store.snapshot(model.name, version) if version is not None else None
            known.update((record.data.get("classes") or []) if record is not None else [])
        return known

    def _read_streamed(self, path: Path, stat: os.stat_result) -> tuple[FileSnapshot, Batch | InvalidBatch]:
        """A partitioned folder, or a file too large to hold, read in chunks against every reference drift needs.

        A refused one is quarantined by its reasons only: it stays where it is, unchanged (a copy could need as
        much disk again), and is read again once it changes.
        """
        before = parts_stamp(path)
        scanned = self.streams.scan(path, self.config, self._references())
        if parts_stamp(path) != before:
            raise FileChanged(f"{path.name} changed while it was read")
        # A folder is known again by its own stat, which changes as parts are added, removed or renamed into it.
        snapshot = FileSnapshot(path.name, stat.st_size, stat.st_mtime_ns, scanned.sha256, ctime_ns=stat.st_ctime_ns,
                                inode=stat.st_ino)
        return snapshot, scanned.as_batch(path)

    def _references(self) -> dict[str, Profile]:
        """The profiles a batch's drift is measured against: each serving model's, and the folder's first batch's."""
        references = {}
        if reference := self.store.folder_state().reference:
            references[FOLDER_KEY] = Profile.from_dict(reference)
        for model in self.config.models:
            version = self.store.serving_version(model.name)
            record = self.store.snapshot(model.name, version) if version is not None else None
            if record is not None and "profile" in record.data:
                references[model.name] = Profile.from_dict(record.data["profile"])
        return references

    def _skip(self, name: str, stat: os.stat_result, reason: str) -> None:
        """Record once that ``name`` is not a batch to read (a FIFO, a folder, a device), with why."""
        self.store.record_file(name, None, "skipped", reason=reason, seen=FileStat.of(stat))
        self.emit(Event(EventKind.FILE_SKIPPED, f"{name}: skipped: {reason}", file=name, data={"reason": reason}))
