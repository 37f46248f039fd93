"""One process per data folder: the watcher, or one command run by the CLI.

The lock is an ``flock`` on the data folder itself; a note in the state folder
says who holds it and what for, so the one refused can say so in words.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class MonitorBusy(Exception):
    """Another driftdeck process holds this data folder: ``role`` is "watch" or the command it carries out."""

    def __init__(self, message: str, pid: int | None, role: str | None) -> None:
        super().__init__(message)
        self.pid = pid
        self.role = role


class FolderLock:
    """The data folder's lock, held from :meth:`acquire` until :meth:`release`."""

    def __init__(self, data_dir: Path, note: Path) -> None:
        self.data_dir = data_dir
        self.note = note
        self._handle: int | None = None  # a descriptor of the data folder, flocked

    @property
    def held(self) -> bool:
        return self._handle is not None

    def acquire(self, role: str) -> None:
        """Take the data folder's lock: one process per folder, watching (``role`` "watch") or one command.

        The lock is held on the data folder itself, so it survives the state
        folder being moved aside or deleted; ``monitor.lock`` in the state
        folder (``note``) names the process that holds it and what for ("PID ROLE").
        """
        folder = os.open(self.data_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(folder)
            try:
                holder = self.note.read_text().split()
            except OSError:
                holder = []
            raise self._busy(holder) from None
        self._handle = folder
        self.note.write_text(f"{os.getpid()} {role}")

    def _busy(self, holder: list[str]) -> MonitorBusy:
        """Who holds the lock, from what it wrote there ("PID ROLE"; a lock just taken may be empty)."""
        pid = int(holder[0]) if holder and holder[0].isdigit() else None
        role = holder[1] if len(holder) > 1 else None
        if role == "watch":
            return MonitorBusy(f"another driftdeck (pid {pid}) is already watching {self.data_dir}", pid, role)
        if role is None:  # the state folder (and the note in it) moved aside, or a lock taken this instant
            return MonitorBusy(f"another driftdeck (pid {pid or '?'}) is already watching {self.data_dir} or carrying"
                               " out a command in it", pid, role)
        return MonitorBusy(f"another driftdeck (pid {pid or '?'}) is carrying out a {role} in {self.data_dir}",
                           pid, role)

    def release(self) -> None:
        if self._handle is not None:
            os.close(self._handle)
            self._handle = None
