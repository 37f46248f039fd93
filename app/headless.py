"""What a headless run prints: each event as a line (or a JSON object), and how a run ended by Ctrl-C exits.

Shared by ``watch --headless`` and ``demo --headless``.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Callable

from app.events import ERROR_KINDS, Event, printable

INTERRUPTED = 130  # the shell's status for a run ended by Ctrl-C


def event_printer(as_json: bool, on_closed: Callable[[], None] | None = None) -> Callable[[Event], None]:
    """Print each event as a line (or a JSON object); when the reader closes stdout, stop printing
    and call ``on_closed``."""
    lock = threading.Lock()
    closed = threading.Event()

    def show(event: Event) -> None:
        if as_json:
            line = json.dumps(event.to_dict(), default=str)
        else:
            stamp = time.strftime("%H:%M:%S", time.localtime(event.time))
            line = f"{stamp} {event.kind:<18} {printable(event.message)}"
        stream = sys.stderr if (event.kind in ERROR_KINDS and not as_json) else sys.stdout
        with lock:
            if closed.is_set():
                return
            try:
                print(line, file=stream, flush=True)
            except BrokenPipeError:
                closed.set()
                silence(stream)
                if on_closed is not None:
                    on_closed()

    return show


def silence(stream) -> None:
    """Point ``stream`` at /dev/null, so nothing (not even the flush at exit) writes to its closed pipe again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, stream.fileno())
    os.close(devnull)
