"""Bring a bucket's batch objects into the local data folder that stands for it, each exactly once.

The bucket's listing is polled (``watch.list_seconds``); an object is complete
when it is listed (a store shows an object only once its upload has finished).
Each object whose key and ETag (and version, where the store keeps versions)
are new is read whole into a hidden temporary file beside its place, checked
(its size, and its MD5 where the listing gives one) and renamed into place, so the
folder's watcher only ever sees whole files and the ledger decides, by content,
what is new. A read that fails is tried again from the start, with backoff;
after the last attempt an event says so and the next listing tries again: an
object is never half-ingested and never lost. An object replaced under the
same key has a new ETag and is read again; one deleted between the listing
and the read is reported and skipped. A folder of objects (a partitioned batch)
is read once it is complete in the bucket (its ``_SUCCESS`` listed, or nothing
in it changed over one listing interval), into a hidden folder that is renamed
into place when every part is there. Which keys were read at which ETag is
kept in ``.driftdeck-objects.db`` in the folder, so a restart reads nothing twice.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from app.events import Event, EventKind
from app.fsutil import CHUNK_BYTES, FILE_MODE, fsync_dir
from app.objectstore import (StoreError, StoreLocation, first_line, is_refusal, open_store, parse_store_url,
                             store_error_in_words)
from app.readers import is_batch_name

INDEX_NAME = ".driftdeck-objects.db"
SUCCESS_MARKER = "_SUCCESS"  # written last into a partitioned batch's folder: the folder is complete
READ_CHUNK_BYTES = 8 * CHUNK_BYTES
MD5_ETAG = re.compile(r"[0-9a-f]{32}")  # a single-part upload's ETag is the MD5 of its bytes


@dataclass(frozen=True)
class ListedObject:
    """One object as the listing showed it."""

    key: str  # below the prefix, "/"-separated
    path: str  # as the file system names it
    etag: str
    version: str
    size: int
    md5: str = ""  # the bytes' MD5 in hex where the listing gives it, "" where it does not


@dataclass(frozen=True)
class MirrorPass:
    """What one listing brought: keys read, keys whose read failed, keys gone before they were read."""

    fetched: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    vanished: tuple[str, ...] = ()


class ObjectReadFailed(Exception):
    """Every attempt to read an object failed; the message says why the last one did."""


class BucketMirror:
    """Mirrors ``location``'s batch objects into ``folder``; ``emit`` receives its events.

    :meth:`sync` makes one pass (list, then read what is new, in key order
    with ``_SUCCESS`` markers after the files beside them); :meth:`start` runs
    a pass every ``list_seconds`` on a thread of its own until :meth:`stop`.
    """

    def __init__(self, location: StoreLocation, folder: Path, emit: Callable[[Event], None], *,
                 list_seconds: float = 10.0, attempts: int = 4, backoff_seconds: float = 0.5,
                 filesystem: Any = None) -> None:
        self.location = location
        self.folder = Path(folder)
        self.emit = emit
        self.list_seconds = list_seconds
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds
        self.fs = filesystem if filesystem is not None else open_store(location)
        self.index = ObjectIndex(self.folder / INDEX_NAME)
        self.unreachable: str | None = None  # why the last listing failed, until one works again
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sync(self) -> MirrorPass:
        """List the bucket once and read every new object; a failed listing is an event, not an exception."""
        try:
            listed = list_objects(self.location, self.fs)
        except StoreError as error:
            if self.unreachable != str(error):
                self.emit(Event(EventKind.FOLDER_MISSING, f"{error}; listing again in {self.list_seconds:g} s",
                                data={"source": self.location.url}))
            self.unreachable = str(error)
            return MirrorPass()
        if self.unreachable is not None:
            self.unreachable = None
            self.emit(Event(EventKind.FOLDER_BACK, f"{self.location.url}: listed again", data={"source": self.location.url}))
        return self.fetch_all(listed)

    def fetch_all(self, listed: list[ListedObject]) -> MirrorPass:
        """Read each listed object not read before at its ETag; each failure is an event.

        A folder's objects (a partitioned batch) are read only once the folder
        is complete in the bucket, into a hidden folder renamed into place when
        all are there, so the local folder never shows a batch half there.
        """
        done = _Tally()
        folders: dict[str, list[ListedObject]] = {}
        for item in listed:
            if "/" in item.key:
                folders.setdefault(item.key.split("/", 1)[0], []).append(item)
            elif not self._stop.is_set() and not self.index.has(item):
                if (sha256 := self._taken(item, self.folder / item.key, done)) is not None:
                    self.index.record(item, sha256)
        for name, items in folders.items():
            if not self._stop.is_set():
                self._fetch_folder(name, items, done)
        return MirrorPass(tuple(done.fetched), tuple(done.failed), tuple(done.vanished))

    def _fetch_folder(self, name: str, items: list[ListedObject], done: _Tally) -> None:
        """Read a folder's new objects once it is complete: its ``_SUCCESS`` is listed, or nothing in it changed
        since the previous listing (which the index keeps, so a ``watch --once`` run later counts too)."""
        signature = "\n".join(f"{item.key}\0{item.etag}\0{item.version}" for item in sorted(items, key=lambda i: i.key))
        settled = self.index.folder_signature(name) == signature
        self.index.record_folder(name, signature)
        new = [item for item in items if not self.index.has(item)]
        if not new or not (settled or any(item.key == f"{name}/{SUCCESS_MARKER}" for item in items)):
            return
        target = self.folder / name
        staging = target if target.exists() else self.folder / f".{name}.partial"
        read = []
        for item in new:
            sha256 = self._taken(item, staging.joinpath(*PurePosixPath(item.key).parts[1:]), done)
            if sha256 is None:
                return  # the whole folder is read again at the next listing
            read.append((item, sha256))
        if staging != target:
            os.replace(staging, target)
            fsync_dir(self.folder)
        for item, sha256 in read:
            self.index.record(item, sha256)

    def _taken(self, item: ListedObject, target: Path, done: _Tally) -> str | None:
        """Read ``item`` into ``target``; its SHA-256, or None when that failed (an event says why)."""
        source = {"source": self.location.url}
        try:
            sha256 = self._fetch(item, target)
        except FileNotFoundError:
            done.vanished.append(item.key)
            self.emit(Event(EventKind.FILE_SKIPPED, f"{item.key}: deleted from {self.location.url} before it"
                            " was read; nothing ingested", file=item.key, data=source))
        except PermissionError:
            done.failed.append(item.key)
            self.emit(Event(EventKind.FILE_ERROR, f"{item.key}: access denied reading it from {self.location.url};"
                            " nothing ingested, read again at the next listing", file=item.key, data=source))
        except ObjectReadFailed as error:
            done.failed.append(item.key)
            self.emit(Event(EventKind.FILE_ERROR, f"{item.key}: {error}; nothing ingested, read again at the"
                            " next listing", file=item.key, data=source))
        else:
            done.fetched.append(item.key)
            return sha256
        return None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._poll, name="driftdeck-mirror", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.index.close()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.sync()
            self._stop.wait(self.list_seconds)

    def _fetch(self, item: ListedObject, target: Path) -> str:
        """Read ``item`` whole into ``target``, trying again from the start on a failed read; its SHA-256."""
        error: BaseException | None = None
        for attempt in range(self.attempts):
            if attempt:
                self._stop.wait(self.backoff_seconds * 2 ** (attempt - 1))
            try:
                return self._download(item, target)
            except FileNotFoundError:
                raise
            except Exception as failure:  # noqa: BLE001 - a dropped connection surfaces as many types
                if is_refusal(failure):
                    raise PermissionError(first_line(failure)) from None
                error = failure
        raise ObjectReadFailed(f"read failed {self.attempts} times, the last: {type(error).__name__}:"
                               f" {first_line(error)}")

    def _download(self, item: ListedObject, target: Path) -> str:
        """Stream the object into a hidden file beside ``target``, check it, rename it into place; its SHA-256."""
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.part")
        sha256, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
        try:
            with self.fs.open(item.path, "rb", block_size=READ_CHUNK_BYTES) as source, open(partial, "wb") as out:
                os.fchmod(out.fileno(), FILE_MODE)
                while chunk := source.read(READ_CHUNK_BYTES):
                    sha256.update(chunk)
                    md5.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            if size != item.size:
                raise TornRead(f"read {size} bytes of {item.size}")
            if item.md5 and md5.hexdigest() != item.md5:
                raise TornRead("the bytes read do not match the object's listed MD5")
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        fsync_dir(target.parent)
        return sha256.hexdigest()


def list_objects(location: StoreLocation, fs: Any) -> list[ListedObject]:
    """The batch objects below ``location``, in the order they are read; StoreError, in words, if it cannot be listed.

    A folder's ``_SUCCESS`` marker comes after the files beside it, so a
    partitioned batch is complete locally only once every part is there.
    """
    try:
        fs.invalidate_cache()
        root = location.named_in(fs)
        found = fs.find(root, detail=True, withdirs=False)
        if not found and not fs.exists(location.named_in(fs, whole_bucket=True)):
            raise FileNotFoundError(location.bucket)  # said in words as a missing bucket
    except Exception as error:  # noqa: BLE001 - the stack under fsspec raises its own types (botocore, aiohttp, OSError)
        raise StoreError(store_error_in_words(location, error)) from None
    objects = [ListedObject(key, path, _etag(info), _version(info), int(info.get("size") or 0), _md5(info))
               for path, info in found.items() if (key := location.key_of(path, root)) and mirrored_key(key)]
    return sorted(objects, key=lambda item: (PurePosixPath(item.key).name == SUCCESS_MARKER, item.key))


@dataclass
class _Tally:
    fetched: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)


class TornRead(OSError):
    """The bytes read are not the whole object the listing showed (cut short, or replaced during the read)."""


def mirrored_key(key: str) -> bool:
    """Keys the mirror reads: batch files and ``_SUCCESS`` markers, in no hidden or ignored folder."""
    parts = PurePosixPath(key).parts
    if not parts or key.startswith("/") or any(part in ("", ".", "..") or part.startswith((".", "_"))
                                                for part in parts[:-1]):
        return False
    return is_batch_name(parts[-1]) or parts[-1] == SUCCESS_MARKER


def _etag(info: dict[str, Any]) -> str:
    """The object's ETag (S3), etag (Azure) or MD5 (Google); a store that keeps none (fsspec's ``memory://``,
    a local or FTP file system) is read again when its size or modification time changes."""
    tag = str(info.get("ETag") or info.get("etag") or info.get("md5Hash") or "").strip('"')
    if tag:
        return tag
    changed = info.get("mtime") or info.get("LastModified") or info.get("last_modified") or info.get("created")
    return f"size {info.get('size')}, changed {changed}"


def _version(info: dict[str, Any]) -> str:
    """The object's version where the store keeps one: S3's VersionId, Azure's version_id, Google's generation
    (which every write of the object changes)."""
    return str(info.get("VersionId") or info.get("version_id") or info.get("generation") or "")


def _md5(info: dict[str, Any]) -> str:
    """The MD5 of the object's bytes in hex, where the listing gives it: a single-part S3 upload's ETag, Google's
    base64 ``md5Hash``, Azure's ``content_md5`` (bytes); "" otherwise (a multipart upload, a composite object)."""
    tag = str(info.get("ETag") or "").strip('"')
    if MD5_ETAG.fullmatch(tag):
        return tag
    if isinstance(digest := (info.get("content_settings") or {}).get("content_md5"), (bytes, bytearray)):
        return digest.hex() if len(digest) == 16 else ""
    try:
        digest = base64.b64decode(str(info.get("md5Hash") or ""), validate=True)
    except binascii.Error:
        return ""
    return digest.hex() if len(digest) == 16 else ""


class ObjectIndex:
    """The keys read, each at the ETag and version read: a key is read again only when they change."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._db.execute("CREATE TABLE IF NOT EXISTS objects (key TEXT PRIMARY KEY, etag TEXT NOT NULL,"
                         " version TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL, read_at REAL NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS folders (name TEXT PRIMARY KEY, signature TEXT NOT NULL)")

    def folder_signature(self, name: str) -> str | None:
        """The keys and ETags a folder held at the previous listing."""
        with self._lock:
            row = self._db.execute("SELECT signature FROM folders WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def record_folder(self, name: str, signature: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO folders VALUES (?, ?)", (name, signature))

    def has(self, item: ListedObject) -> bool:
        with self._lock:
            row = self._db.execute("SELECT etag, version FROM objects WHERE key = ?", (item.key,)).fetchone()
        return row == (item.etag, item.version)

    def record(self, item: ListedObject, sha256: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO objects VALUES (?, ?, ?, ?, ?, ?)",
                             (item.key, item.etag, item.version, item.size, sha256, time.time()))

    def close(self) -> None:
        with self._lock:
            self._db.close()


def mirror_for(source: str | None, folder: Path, emit: Callable[[Event], None], list_seconds: float,
               attempts: int) -> BucketMirror | None:
    """The mirror a data folder's config asks for (``source = "s3://..."``), or None for a plain folder."""
    if source is None:
        return None
    return BucketMirror(parse_store_url(source), folder, emit, list_seconds=list_seconds, attempts=attempts)
