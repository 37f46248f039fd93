"""Notice batch files in the data folder and report each one once it is complete.

A file is complete when it was moved into place (a rename), or when its size
and mtime have not changed for ``settle_seconds``. A sub-folder that holds
Parquet parts is one partitioned batch (see :mod:`app.bigbatch`), complete
when its ``_SUCCESS`` marker appears or its parts have settled; it is
looked at about once a second, since a watch of the folder alone does not
see files land inside it. The watchdog observer only
marks paths as pending; a small settle thread decides completeness and hands
complete paths, oldest-settled first and in name order within a tick, to the
``on_complete`` callback. A start-up scan puts files that landed while
driftdeck was not running through the same path.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from app.bigbatch import folder_complete, is_batch_folder
from app.readers import is_batch_name

TICK_SECONDS = 0.1
FOLDER_CHECK_SECONDS = 1.0


@dataclass
class _Pending:
    size: int
    mtime_ns: int
    unchanged_since: float
    moved_in: bool


def watched_file(data_dir: Path, path: Path, state_dir: Path) -> bool:
    """True if ``path`` is a batch file directly inside ``data_dir`` that driftdeck should read.

    Sub-folders, the state folder, ignored names, and links that point outside
    the data folder are not read.
    """
    if path.parent != data_dir or state_dir in path.parents or path == state_dir:
        return False
    if not is_batch_name(path.name):
        return is_batch_folder(path)
    if path.is_symlink():
        try:
            resolved = path.resolve(strict=True)
        except OSError:
            return False
        return resolved.parent == data_dir.resolve()
    return True


class FolderWatcher:
    """Watches ``data_dir`` (not recursively) and calls ``on_complete(path)`` per complete file.

    ``on_complete`` runs on the settle thread and must only enqueue work.
    ``poll=True`` uses watchdog's polling observer, for network mounts.
    """

    def __init__(
        self,
        data_dir: Path,
        state_dir: Path,
        on_complete: Callable[[Path], None],
        settle_seconds: float = 1.0,
        poll: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.state_dir = Path(state_dir)
        self.on_complete = on_complete
        self.settle_seconds = settle_seconds
        self._observer = PollingObserver(timeout=0.5) if poll else Observer()
        self._pending: dict[Path, _Pending] = {}
        self._folders: dict[Path, float] = {}  # sub-folders that may become batches -> when last looked at
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._settler = threading.Thread(target=self._settle_loop, name="driftdeck-settle", daemon=True)

    def start(self) -> None:
        self._observer.schedule(_Handler(self), str(self.data_dir), recursive=False)
        self._observer.start()
        self.scan()
        self._settler.start()

    def stop(self) -> None:
        self._stop.set()
        self._observer.stop()
        self._observer.join(timeout=5)
        if self._settler.is_alive():
            self._settler.join(timeout=5)

    def scan(self) -> None:
        """Mark every batch file already in the folder as pending."""
        for entry in sorted(os.scandir(self.data_dir), key=lambda e: e.name):
            if entry.is_dir(follow_symlinks=False) and not is_batch_name(entry.name):
                self.touch_folder(Path(entry.path))
            else:
                self.touch(Path(entry.path))

    def touch_folder(self, path: Path) -> None:
        """Note a sub-folder that may be (or become) a partitioned batch."""
        if path.parent == self.data_dir and path != self.state_dir and not path.name.startswith((".", "_")):
            with self._lock:
                self._folders.setdefault(path, 0.0)

    def touch(self, path: Path, moved_in: bool = False) -> None:
        """Note that ``path`` appeared or changed."""
        if not watched_file(self.data_dir, path, self.state_dir):
            return
        try:
            stat = path.stat()
        except OSError:
            return
        now = time.monotonic()
        with self._lock:
            known = self._pending.get(path)
            if known and (known.size, known.mtime_ns) == (stat.st_size, stat.st_mtime_ns) and not moved_in:
                return
            if not moved_in and time.time() - stat.st_mtime >= self.settle_seconds:
                unchanged_since = now - self.settle_seconds  # untouched for longer than the interval already
            else:
                unchanged_since = now
            self._pending[path] = _Pending(stat.st_size, stat.st_mtime_ns, unchanged_since, moved_in)

    def forget(self, path: Path) -> None:
        with self._lock:
            self._pending.pop(path, None)
            self._folders.pop(path, None)

    def pending_count(self) -> int:
        return len(self.pending_paths())

    def pending_paths(self) -> list[Path]:
        """The paths seen but not complete yet (still changing, or not settled); folders once they hold parts."""
        with self._lock:
            files, folders = list(self._pending), list(self._folders)
        return files + [folder for folder in folders if is_batch_folder(folder)]

    def complete_now(self) -> list[Path]:
        """Pop and return the pending paths that are complete, in name order."""
        now = time.monotonic()
        ready = []
        with self._lock:
            for path, pending in list(self._pending.items()):
                try:
                    stat = path.stat()
                except OSError:
                    del self._pending[path]
                    continue
                if (stat.st_size, stat.st_mtime_ns) != (pending.size, pending.mtime_ns):
                    self._pending[path] = _Pending(stat.st_size, stat.st_mtime_ns, now, False)
                    continue
                if pending.moved_in or now - pending.unchanged_since >= self.settle_seconds:
                    ready.append(path)
                    del self._pending[path]
            folders = [path for path, looked in self._folders.items() if now - looked >= FOLDER_CHECK_SECONDS]
            for path in folders:
                self._folders[path] = now
        for path in folders:
            if not path.is_dir():
                self.forget(path)
            elif is_batch_folder(path) and folder_complete(path, self.settle_seconds):
                self.forget(path)
                ready.append(path)
        return sorted(ready, key=lambda p: p.name)

    def _settle_loop(self) -> None:
        while not self._stop.wait(TICK_SECONDS):
            for path in self.complete_now():
                self.on_complete(path)


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: FolderWatcher) -> None:
        self.watcher = watcher

    def on_created(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            self.watcher.touch_folder(Path(event.src_path))
        else:
            self.watcher.touch(Path(event.src_path))

    def on_modified(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self.watcher.touch(Path(event.src_path))

    def on_closed(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self.watcher.touch(Path(event.src_path))

    def on_moved(self, event: FileSystemEvent) -> None:
        self.watcher.forget(Path(event.src_path))
        if event.is_directory:
            self.watcher.touch_folder(Path(event.dest_path))
        else:
            self.watcher.touch(Path(event.dest_path), moved_in=True)

    def on_deleted(self, event: FileSystemEvent) -> None:
        self.watcher.forget(Path(event.src_path))
