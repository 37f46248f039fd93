"""Where the details of an unexpected error go: ``STATE/logs/errors.log``, never the terminal.

A person sees one line that says what failed and where the details are; the
traceback is appended to the log for whoever fixes it.
"""

from __future__ import annotations

import os
import time
import traceback
from pathlib import Path

LOG_FOLDER = "logs"
LOG_NAME = "errors.log"
LOG_BYTES = 5 << 20  # past this the log becomes errors.log.1 (the one before is dropped): a repeating error fills no disk


def log_error(state_root: Path | None, error: BaseException, context: str) -> Path | None:
    """Append ``error``'s traceback to the state folder's error log; its path, or None if it cannot be written.

    Only a state folder that already exists receives it: an error handler
    never creates a state folder where there was none.
    """
    if state_root is None or not Path(state_root).is_dir():
        return None
    folder = Path(state_root) / LOG_FOLDER
    path = folder / LOG_NAME
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        if path.exists() and path.stat().st_size > LOG_BYTES:
            os.replace(path, path.with_name(LOG_NAME + ".1"))
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        text = "".join(traceback.format_exception(error))
        with open(path, "a", encoding="utf-8", errors="backslashreplace") as handle:
            handle.write(f"--- {stamp} pid {os.getpid()} {context}\n{text}")
    except OSError:
        return None
    return path
