"""Commands people give the monitor, and the one route they take to it.

Pause, resume, retrain, rollback, promote and validate are each a
:class:`Command`. Whoever asks (the TUI, the CLI in the process that holds the
folder, or another process through the store's ``commands`` table) hands it to
:meth:`app.engine.monitor.Monitor.submit` and waits on the :class:`CommandTicket` it
gets back. The monitor carries commands out between files, before any file
still waiting; a command that has not started when its asker stops waiting is
withdrawn, so nothing runs later that nobody waits for.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from app.store import Store

HANDOVER_POLL_SECONDS = 0.1
GATE_KINDS = ("pause", "resume")  # they only open or close the intake: answered at once, even mid-file
COMMAND_KINDS = (*GATE_KINDS, "retrain", "validate", "rollback", "promote")


class CommandFailed(Exception):
    """A command could not be carried out; the message says why."""


class CommandTimeout(CommandFailed):
    """The asker stopped waiting for a command; the message says whether it was withdrawn or still runs."""


@dataclass(frozen=True)
class Command:
    """What someone asked for.

    ``version``: for ``rollback`` the version to serve (None: the previous good
    snapshot), for ``promote`` the version to serve. ``serving``: for
    ``rollback``, the version that served ``model`` when it was asked; the
    rollback goes back from that version even if another serves by the time it
    runs (None: from whatever serves then).
    """

    kind: str
    model: str | None = None
    version: int | None = None
    serving: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in COMMAND_KINDS:
            raise CommandFailed(f"unknown command {self.kind!r}")
        if self.kind == "promote" and self.version is None:
            raise CommandFailed("promote needs the version to serve")

    @property
    def title(self) -> str:
        return f"{self.kind} of {self.model}" if self.model else self.kind

    def to_args(self) -> dict[str, Any]:
        return {"version": self.version, "serving": self.serving}

    @classmethod
    def from_row(cls, kind: str, model: str | None, args: dict[str, Any]) -> "Command":
        return cls(kind, model, args.get("version"), args.get("serving"))


@dataclass(frozen=True)
class CommandResult:
    """How a command ended: ``message`` is a line for people, ``data`` the details for ``--json``."""

    ok: bool
    message: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str)

    @classmethod
    def from_json(cls, text: str) -> "CommandResult":
        return cls(**json.loads(text))


class CommandTicket:
    """A command on its way through the monitor; the asker waits on it.

    ``on_finish`` is called with the result on the monitor's thread (the
    store's ``commands`` table answers another process that way).
    """

    def __init__(self, command: Command, on_finish: Callable[[CommandResult], None] | None = None) -> None:
        self.command = command
        self._on_finish = on_finish
        self._state_lock = threading.Lock()
        self._state = "queued"  # queued | running | withdrawn | done
        self._done = threading.Event()
        self._result: CommandResult | None = None

    def start(self) -> bool:
        """Called by the monitor before carrying the command out: False if the asker withdrew it."""
        with self._state_lock:
            if self._state != "queued":
                return False
            self._state = "running"
            return True

    def finish(self, result: CommandResult) -> None:
        with self._state_lock:
            self._state = "done"
            self._result = result
        self._done.set()
        if self._on_finish is not None:
            self._on_finish(result)

    def wait(self, timeout: float) -> CommandResult:
        """The result, once the monitor has carried the command out; CommandTimeout after ``timeout`` seconds."""
        if self._done.wait(timeout):
            return self._result
        with self._state_lock:
            if self._state == "queued":
                self._state = "withdrawn"
                raise CommandTimeout(f"the {self.command.title} did not start within {timeout:g} s (the monitor is "
                                     "busy with the file in progress); it was withdrawn and nothing was done")
        raise CommandTimeout(f"the {self.command.title} is still running after {timeout:g} s; "
                             "its outcome will be in the event log")

    def outcome(self, timeout: float) -> CommandResult:
        """Like :meth:`wait`, but a command that failed raises CommandFailed with its message."""
        result = self.wait(timeout)
        if not result.ok:
            raise CommandFailed(result.message)
        return result


def answer_within(models: int, train_timeout: float) -> float:
    """Seconds an asker waits: the file in progress may train every model, and the command one more."""
    return (models + 1) * train_timeout + 60


def hand_over(store: "Store", command: Command, wait_seconds: float, holder: int | None) -> CommandResult:
    """Leave ``command`` for the watching process ``holder`` (a pid) and wait for its result.

    If the watcher has not taken it within ``wait_seconds``, or stops first,
    the command is withdrawn: it never runs later, nobody waiting for it.
    """
    command_id = store.add_command(command.kind, command.model, command.to_args(), expires=time.time() + wait_seconds)
    deadline = time.monotonic() + wait_seconds
    try:
        while True:
            status, result = store.command_outcome(command_id)
            if status in ("done", "failed"):
                return CommandResult.from_json(result)
            _give_up_if_due(store, command_id, command, status, time.monotonic() >= deadline, process_alive(holder),
                            wait_seconds)
            time.sleep(HANDOVER_POLL_SECONDS)
    except KeyboardInterrupt:
        store.expire_command(command_id)
        raise


def _give_up_if_due(store: "Store", command_id: int, command: Command, status: str, late: bool, alive: bool,
                    wait_seconds: float) -> None:
    if status == "pending" and (late or not alive) and store.expire_command(command_id):
        why = f"did not take it within {wait_seconds:g} s" if alive else "stopped before taking it"
        raise CommandTimeout(f"the running driftdeck {why}; the {command.title} was withdrawn and nothing was done")
    if status == "taken" and not alive:
        raise CommandFailed(f"the running driftdeck stopped while carrying out the {command.title};"
                            " see `driftdeck status` for what it did")
    if status == "taken" and late:
        raise CommandTimeout(f"the {command.title} is still running after {wait_seconds:g} s;"
                             " its outcome will be in the event log")


def process_alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True
