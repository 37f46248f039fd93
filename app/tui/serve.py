"""``driftdeck serve``: the same monitor in a web browser.

textual-serve runs one ``driftdeck watch DATA_DIR`` per browser tab and relays
its screen and keys over a websocket, so the browser shows exactly the
terminal dashboard, with the same keys. Every tab attaches to the folder's
engine: the one already running, or one that ``serve`` starts and stops with
itself, so closing a tab never stops the engine. The command is built here,
never from the browser: the page can do only what the dashboard can.

The child is started in isolated mode (``python -I``): it imports driftdeck's
installed code only, whatever the folder ``serve`` was started in holds.
"""

from __future__ import annotations

import ipaddress
import shlex
import socket
import sys
from pathlib import Path

from app.config import load_config
from app.engine_link import engine_running, start_engine, stop_engine
from app.registry import StatePaths

LOOPBACK_NAMES = ("localhost",)


def watch_command(data_dir: Path, state: Path | None) -> str:
    """The shell command textual-serve runs for each browser tab."""
    argv = [sys.executable, "-I", "-m", "app", "watch", str(data_dir.resolve())]
    if state is not None:
        argv += ["--state", str(state.resolve())]
    return shlex.join(argv)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str) -> str | None:
    """A warning when the monitor would be reachable from other machines, else None."""
    if is_loopback(host):
        return None
    return (f"warning: serving on {host}: anyone who can reach this address can see the monitor "
            "and press its keys (promote, roll back, retrain); there is no login. "
            "Bind to 127.0.0.1 and use an SSH tunnel unless this network is trusted.")


def check_port_free(host: str, port: int) -> None:
    """Raise OSError with a readable message when ``host:port`` cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise OSError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None


def serve(data_dir: Path, state: Path | None, host: str, port: int) -> int:
    """Serve the monitor of ``data_dir`` until Ctrl-C or SIGTERM."""
    from textual_serve.server import Server

    if not data_dir.is_dir():
        raise OSError(f"{data_dir}: no such folder")
    load_config(data_dir)
    check_port_free(host, port)
    if warning := exposure_warning(host):
        print(warning, file=sys.stderr)
    server = Server(watch_command(data_dir, state), host=host, port=port,
                    title=f"driftdeck — {data_dir.resolve().name}")
    paths = StatePaths(state.resolve() if state else data_dir.resolve() / ".driftdeck")
    own_engine = None if engine_running(paths) else start_engine(data_dir.resolve(), state, paths)
    try:
        server.serve()
    finally:
        if own_engine is not None:
            stop_engine(paths)
    return 0
