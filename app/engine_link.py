"""The link between a running engine and the monitors that attach to it.

The engine (``driftdeck watch --headless``, or the child that ``driftdeck
watch`` starts) owns the folder: it ingests, scores, trains and writes the
store. A dashboard in another process attaches over a local socket: it reads
the store itself, receives the engine's events and state (paused, training),
and sends the same commands the keys send. No per-batch work runs in the
dashboard's process, so keys stay responsive while a big batch trains.

The socket lives in the state folder (owner-only) when its path is short
enough for a Unix socket, else in an owner-only folder under the runtime
directory; ``engine.json`` in the state folder says where, with the engine's
pid. The engine also refuses peers of another user (``SO_PEERCRED``).

The wire format is one JSON object per line:

- engine → dashboard: ``{"type": "event", "event": {...}, "state": {...}}``
  for each event, ``{"type": "state", "state": {...}}`` as a heartbeat, and
  ``{"type": "reply", "id": N, "ok": true, "value": ...}`` (or ``"error"``).
- dashboard → engine: ``{"type": "call", "id": N, "op": NAME, "args": {...}}``.
  The op ``command`` carries a :class:`~app.commands.Command` into the
  engine's one command route (the same queue its own files and the CLI's
  commands go through); ``withdraw`` takes back one the dashboard stopped
  waiting for, and a dashboard that goes away withdraws all of its own, so
  nothing runs later without being asked again.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import queue
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from app.commands import Command, CommandFailed, CommandResult, CommandTicket, CommandTimeout
from app.config import Config, load_config
from app.events import Event, EventKind
from app.registry import Registry, StatePaths
from app.store import Store

MAX_SOCKET_PATH = 100  # sockaddr_un holds 108 bytes; keep a margin
HEARTBEAT_SECONDS = 0.25
CALL_TIMEOUT_SECONDS = 30.0
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 40.0
OUTBOX_LIMIT = 1000  # messages queued for one dashboard before it is dropped as stuck


class EngineUnavailable(Exception):
    """No engine answers for this folder, or it stopped while asked."""


class Engine(Protocol):
    """What the dashboard needs of an engine, in this process or another."""

    data_dir: Path
    config: Config
    store: Store
    registry: Registry
    paths: StatePaths
    training: dict[str, Any] | None
    paused: bool
    folder_missing: bool
    waiting_files: int

    @property
    def alive(self) -> bool: ...
    def restart(self) -> None: ...
    def subscribe(self, callback: Callable[[Event], None]) -> None: ...
    def acquire(self) -> None: ...
    def start(self) -> None: ...
    def close(self) -> None: ...
    def submit(self, command: Command) -> CommandTicket: ...


# --- where the socket is ---------------------------------------------------------------

@dataclass(frozen=True)
class EngineAddress:
    pid: int
    socket: Path

    @staticmethod
    def read(paths: StatePaths) -> EngineAddress | None:
        try:
            record = json.loads((paths.engine_file).read_text())
            return EngineAddress(int(record["pid"]), Path(record["socket"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None


def socket_path(paths: StatePaths) -> Path:
    """The state folder's socket, or a short stand-in when that path is too long for a Unix socket."""
    preferred = paths.engine_socket
    if len(os.fsencode(preferred)) <= MAX_SOCKET_PATH:
        return preferred
    runtime = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()) / f"driftdeck-{os.getuid()}"
    runtime.mkdir(mode=0o700, exist_ok=True)
    if runtime.stat().st_uid != os.getuid() or runtime.stat().st_mode & 0o077:
        raise OSError(f"{runtime}: not an owner-only folder of this user; cannot place the engine's socket")
    digest = hashlib.sha256(os.fsencode(paths.root)).hexdigest()[:16]
    return runtime / f"{digest}.sock"


def peer_uid(connection: socket.socket) -> int:
    credentials = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", credentials)[1]


def send_line(connection: socket.socket, message: dict[str, Any]) -> None:
    connection.sendall(json.dumps(message, default=str).encode() + b"\n")


def read_lines(connection: socket.socket):
    """Each complete JSON line the peer sends, until it closes."""
    with connection.makefile("rb") as stream:
        for line in stream:
            try:
                yield json.loads(line)
            except ValueError:
                continue


# --- the engine's side -----------------------------------------------------------------

class EngineServer:
    """Serves one running monitor's events, state and commands to attached dashboards."""

    def __init__(self, monitor, on_stop: Callable[[], None]) -> None:
        self.monitor = monitor
        self.on_stop = on_stop
        self.paths: StatePaths = monitor.paths
        self.address = socket_path(self.paths)
        self._listener: socket.socket | None = None
        self._outboxes: list[queue.Queue] = []
        self._outbox_lock = threading.Lock()
        self._closed = threading.Event()

    def start(self) -> None:
        self.address.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        previous = os.umask(0o177)
        try:
            listener.bind(str(self.address))
        finally:
            os.umask(previous)
        listener.listen(8)
        self._listener = listener
        record = {"pid": os.getpid(), "socket": str(self.address)}
        (self.paths.engine_file).write_text(json.dumps(record) + "\n")
        self.monitor.subscribe(self._broadcast_event)
        threading.Thread(target=self._accept, name="driftdeck-engine-link", daemon=True).start()
        threading.Thread(target=self._heartbeat, name="driftdeck-engine-heartbeat", daemon=True).start()

    def close(self) -> None:
        self._closed.set()
        if self._listener is not None:
            self._listener.close()
        if (address := EngineAddress.read(self.paths)) and address.pid == os.getpid():
            (self.paths.engine_file).unlink(missing_ok=True)
            self.address.unlink(missing_ok=True)
        with self._outbox_lock:
            for outbox in self._outboxes:
                outbox.put(None)

    def state(self) -> dict[str, Any]:
        monitor = self.monitor
        return {"paused": monitor.paused, "training": monitor.training, "folder_missing": monitor.folder_missing,
                "waiting_files": monitor.waiting_files}

    def _broadcast_event(self, event: Event) -> None:
        self._broadcast({"type": "event", "event": event.to_dict(), "state": self.state()})

    def _heartbeat(self) -> None:
        while not self._closed.wait(HEARTBEAT_SECONDS):
            self._broadcast({"type": "state", "state": self.state()})

    def _broadcast(self, message: dict[str, Any]) -> None:
        with self._outbox_lock:
            for outbox in list(self._outboxes):
                if outbox.qsize() >= OUTBOX_LIMIT:
                    self._outboxes.remove(outbox)
                    outbox.put(None)
                else:
                    outbox.put(message)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            if peer_uid(connection) != os.getuid():
                connection.close()
                continue
            outbox: queue.Queue = queue.Queue()
            with self._outbox_lock:
                self._outboxes.append(outbox)
            outbox.put({"type": "state", "state": self.state()})
            threading.Thread(target=self._send, args=(connection, outbox), daemon=True).start()
            threading.Thread(target=self._serve_calls, args=(connection, outbox), daemon=True).start()

    def _send(self, connection: socket.socket, outbox: queue.Queue) -> None:
        try:
            while (message := outbox.get()) is not None:
                send_line(connection, message)
        except OSError:
            pass
        finally:
            with self._outbox_lock:
                if outbox in self._outboxes:
                    self._outboxes.remove(outbox)
            connection.close()

    def _serve_calls(self, connection: socket.socket, outbox: queue.Queue) -> None:
        tickets: dict[Any, CommandTicket] = {}
        try:
            for message in read_lines(connection):
                if message.get("type") == "call":
                    self._answer(message, outbox, tickets)
        except OSError:
            pass
        for ticket in tickets.values():  # the dashboard is gone: what it asked for and still waits, never runs
            withdraw(ticket)
        outbox.put(None)

    def _answer(self, message: dict[str, Any], outbox: queue.Queue, tickets: dict[Any, CommandTicket]) -> None:
        call_id, op, args = message.get("id"), message.get("op"), message.get("args") or {}

        def reply(value: Any = None, error: str | None = None) -> None:
            outbox.put({"type": "reply", "id": call_id, "ok": error is None, "value": value, "error": error})

        if op == "command":
            try:
                command = Command.from_row(args["kind"], args.get("model"), args)
            except (CommandFailed, KeyError) as error:
                return reply(error=str(error))
            tickets[call_id] = self.monitor.submit(command, on_finish=lambda result: reply(asdict(result)))
        elif op == "withdraw":
            if (ticket := tickets.pop(args.get("id"), None)) is not None:
                withdraw(ticket)
        elif op == "announce":
            self.monitor.emit(Event.from_dict(args["event"]))
            reply()
        elif op == "wait_idle":
            threading.Thread(target=lambda: reply(self.monitor.wait_idle(float(args["seconds"]))), daemon=True).start()
        elif op == "stop":
            reply()
            threading.Thread(target=self.on_stop, daemon=True).start()
        else:
            reply(error=f"unknown call {op!r}")


def withdraw(ticket: CommandTicket) -> None:
    """Take back ``ticket`` if it has not started; one already running finishes and reports as usual."""
    try:
        ticket.wait(0)
    except CommandTimeout:
        pass


# --- the dashboard's side --------------------------------------------------------------

def engine_running(paths: StatePaths) -> EngineAddress | None:
    """The address of the engine serving this state folder, if one answers."""
    address = EngineAddress.read(paths)
    if address is None:
        return None
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(address.socket))
        return address
    except OSError:
        return None
    finally:
        probe.close()


ENGINE_NICENESS = 10


def start_engine(data_dir: Path, state_dir: Path | None, paths: StatePaths, poll: bool = False) -> subprocess.Popen:
    """Start ``driftdeck watch --headless`` as a child and wait until its socket answers.

    The child runs in isolated mode, so it imports only driftdeck's installed
    code. Its output goes to ``engine.log`` in the state folder.
    """
    argv = [sys.executable, "-I", "-m", "app", "watch", str(data_dir), "--headless"]
    if state_dir is not None:
        argv += ["--state", str(state_dir)]
    if poll:
        argv.append("--poll")
    paths.create(data_dir)
    log = open(paths.engine_log, "ab")
    try:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    finally:
        log.close()
    # The batch work yields the cores to the dashboard's keys: an engine (and the training process it starts,
    # which inherits this) at a lower priority than the window onto it.
    os.setpriority(os.PRIO_PROCESS, child.pid, ENGINE_NICENESS)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise EngineUnavailable(f"the engine did not start: {last_error_line(paths)}")
        if (address := engine_running(paths)) and address.pid == child.pid:
            return child
        time.sleep(0.05)
    child.kill()
    raise EngineUnavailable(f"the engine did not answer within {START_TIMEOUT_SECONDS:.0f} s")


def last_error_line(paths: StatePaths) -> str:
    try:
        lines = paths.engine_log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return lines[-1].removeprefix("driftdeck: ") if lines else "it exited without a word"


class EngineClient:
    """A running engine seen from a dashboard: reads from the store, commands over the socket.

    ``alive`` turns false as soon as the engine's socket closes or falls
    silent; :meth:`restart` starts a new engine when this client started the
    first one (the ledger decides what is left to do, so no file is lost).
    """

    def __init__(self, data_dir: Path, state_dir: Path | None = None, *, poll: bool = False) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.state_dir = state_dir
        self.poll = poll
        self.config: Config = load_config(self.data_dir)
        self.paths = StatePaths(Path(state_dir).resolve() if state_dir else self.data_dir / ".driftdeck")
        self.store: Store | None = None  # opened once an engine has made the state folder
        self.registry: Registry | None = None
        self.training: dict[str, Any] | None = None
        self.paused = False
        self.folder_missing = False
        self.waiting_files = 0
        self.owns_engine = False
        self._child: subprocess.Popen | None = None
        self._subscribers: list[Callable[[Event], None]] = []
        self._connection: socket.socket | None = None
        self._ids = itertools.count(1)
        self._replies: dict[int, queue.Queue] = {}
        self._alive = False

    # --- life cycle ------------------------------------------------------------------

    def engine_running(self) -> bool:
        return engine_running(self.paths) is not None

    def acquire(self) -> None:
        """Attach to the folder's engine, starting one first if none runs."""
        if not self.engine_running():
            self._child = start_engine(self.data_dir, self.state_dir, self.paths, self.poll)
            self.owns_engine = True
        self._connect()

    def start(self) -> None:
        if self._connection is None:
            self.acquire()

    def restart(self) -> None:
        """Start a new engine after the old one died, and attach to it."""
        if self.alive:
            return
        self._disconnect()
        if (old := EngineAddress.read(self.paths)) is not None:  # a dying engine may still accept for a moment
            deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
            while process_exists(old.pid) and time.monotonic() < deadline:
                if self._child is not None:
                    self._child.poll()  # reap the engine this dashboard started
                time.sleep(0.05)
        self.acquire()

    def close(self) -> None:
        """Detach; an engine this dashboard started is stopped, one it attached to keeps running."""
        if self.owns_engine and self.alive:
            try:
                self._call("stop", timeout=5)
            except EngineUnavailable:
                pass
        self._disconnect()
        if self.owns_engine and self._child is not None:
            try:
                self._child.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self._child.kill()
                self._child.wait()
        if self.store is not None:
            self.store.close()

    @property
    def alive(self) -> bool:
        """Connected to an engine whose end of the socket is open. An engine that dies closes it (the kernel
        does, whatever killed it); one that is only slow to speak, its cores taken by other work, is alive."""
        return self._alive

    def subscribe(self, callback: Callable[[Event], None]) -> None:
        self._subscribers.append(callback)

    def _connect(self) -> None:
        address = EngineAddress.read(self.paths)
        if address is None:
            raise EngineUnavailable(f"no engine is running for {self.data_dir}")
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            connection.connect(str(address.socket))
        except OSError as error:
            connection.close()
            raise EngineUnavailable(f"the engine for {self.data_dir} does not answer ({error.strerror})") from None
        self._connection = connection
        if self.store is None:
            self.store = Store(self.paths.database, read_only=True)
            self.registry = Registry(self.store, self.paths)
        self._alive = True
        threading.Thread(target=self._listen, args=(connection,), name="driftdeck-engine-client",
                         daemon=True).start()

    def _disconnect(self) -> None:
        if self._connection is not None:
            try:
                self._connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._connection.close()
            self._connection = None
        self._alive = False

    def _listen(self, connection: socket.socket) -> None:
        try:
            for message in read_lines(connection):
                self._receive(message)
        except OSError:
            pass
        if connection is self._connection:
            self._alive = False
            waiting, self._replies = list(self._replies.values()), {}
            for answer in waiting:
                answer.put({"ok": False, "error": "the engine stopped"})
            self._emit(Event(EventKind.ERROR, "the engine stopped"))

    def _receive(self, message: dict[str, Any]) -> None:
        if state := message.get("state"):
            self.paused = bool(state.get("paused"))
            self.training = state.get("training")
            self.folder_missing = bool(state.get("folder_missing"))
            self.waiting_files = int(state.get("waiting_files") or 0)
        if message.get("type") == "event":
            self._emit(Event.from_dict(message["event"]))
        elif message.get("type") == "reply" and (waiting := self._replies.pop(message.get("id"), None)):
            waiting.put(message)

    def _emit(self, event: Event) -> None:
        for callback in list(self._subscribers):
            callback(event)

    def _send(self, op: str, call_id: int, **args: Any) -> None:
        if self._connection is None or not self._alive:
            raise EngineUnavailable("the engine is not running")
        try:
            send_line(self._connection, {"type": "call", "id": call_id, "op": op, "args": args})
        except OSError:
            raise EngineUnavailable("the engine stopped") from None

    def _call(self, op: str, timeout: float = CALL_TIMEOUT_SECONDS, **args: Any) -> Any:
        """Send ``op`` and wait for the engine's answer."""
        call_id = next(self._ids)
        waiting: queue.Queue = queue.Queue()
        self._replies[call_id] = waiting
        try:
            self._send(op, call_id, **args)
            reply = waiting.get(timeout=timeout)
        except queue.Empty:
            raise EngineUnavailable(f"the engine did not answer {op} within {timeout:.0f} s") from None
        finally:
            self._replies.pop(call_id, None)
        if not reply.get("ok"):
            raise EngineUnavailable(reply.get("error") or f"{op} failed")
        return reply.get("value")

    # --- what the dashboard asks of the engine ----------------------------------------

    def submit(self, command: Command) -> CommandTicket:
        """Hand ``command`` to the engine's command route; wait on the ticket for its result."""
        call_id = next(self._ids)
        ticket = RemoteTicket(command, lambda: self._withdraw(call_id))
        self._replies[call_id] = ticket
        try:
            self._send("command", call_id, kind=command.kind, model=command.model, **command.to_args())
        except EngineUnavailable:
            self._replies.pop(call_id, None)
            raise
        return ticket

    def _withdraw(self, call_id: int) -> None:
        self._replies.pop(call_id, None)
        try:
            self._send("withdraw", next(self._ids), id=call_id)
        except EngineUnavailable:
            pass

    def emit(self, event: Event) -> None:
        """Have the engine announce ``event`` to every dashboard and its log."""
        self._call("announce", event=event.to_dict())

    def wait_idle(self, timeout: float = 60.0) -> bool:
        return bool(self._call("wait_idle", timeout=timeout + CALL_TIMEOUT_SECONDS, seconds=timeout))


class RemoteTicket(CommandTicket):
    """A command carried out by an engine in another process; waiting too long withdraws it there too."""

    def __init__(self, command: Command, on_withdraw: Callable[[], None]) -> None:
        super().__init__(command)
        self._on_withdraw = on_withdraw

    def put(self, reply: dict[str, Any]) -> None:
        """The engine's answer (or the news that it stopped) arrives."""
        if self.start():
            result = CommandResult(**reply["value"]) if reply.get("ok") else CommandResult(False, reply.get("error") or "")
            self.finish(result)

    def wait(self, timeout: float) -> CommandResult:
        try:
            return super().wait(timeout)
        except CommandTimeout:
            self._on_withdraw()
            raise


def stop_engine(paths: StatePaths, timeout: float = STOP_TIMEOUT_SECONDS) -> int:
    """Ask the engine serving ``paths`` to stop and wait until its process is gone; return its pid."""
    address = engine_running(paths)
    if address is None:
        raise EngineUnavailable("no engine is running for this folder")
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(str(address.socket))
        send_line(connection, {"type": "call", "id": 1, "op": "stop", "args": {}})
        connection.settimeout(timeout)
        for message in read_lines(connection):
            if message.get("type") == "reply":
                break
    except OSError as error:
        raise EngineUnavailable(f"the engine did not take the stop ({error})") from None
    finally:
        connection.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_exists(address.pid):
            return address.pid
        time.sleep(0.1)
    raise EngineUnavailable(f"the engine (pid {address.pid}) is still running after {timeout:.0f} s")


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A child that has exited but not been reaped still answers kill(0): look at its state.
    try:
        status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return status != "Z"
