"""``driftdeck replay``: feed a folder of batch files into another, as a producer would."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

from app.readers import is_batch_name


def batch_files(folder: Path) -> list[Path]:
    """The batch files directly in ``folder``, in name order."""
    return sorted((p for p in Path(folder).iterdir() if p.is_file() and is_batch_name(p.name)), key=lambda p: p.name)


def deliver(source: Path, dest_dir: Path) -> Path:
    """Copy ``source`` into ``dest_dir`` under a temporary name, then rename it into place.

    The temporary file is created new (never through a link planted at its
    name); its name starts with ``.`` and ends with ``.tmp``, which the
    watcher never reads; the rename makes the file appear complete at once.
    The copy keeps the source's permission bits (a new temporary file would
    otherwise be readable by its owner only).
    """
    target = Path(dest_dir) / source.name
    fd, temporary = tempfile.mkstemp(dir=dest_dir, prefix=f".{source.name}.", suffix=".tmp")  # new, never a link
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as data:
            shutil.copyfileobj(data, out)
        shutil.copymode(source, temporary)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def replay(src: Path, dest: Path, interval: float = 2.0, start: int = 0,
           progress: Callable[[str], None] | None = None, stop: Callable[[], bool] | None = None) -> int:
    """Deliver SRC's batch files (from the ``start``-th, in name order) into DEST, ``interval`` seconds apart.

    Returns how many files were delivered. ``stop`` is polled between files.
    """
    src, dest = Path(src), Path(dest)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: no such folder")
    if not dest.is_dir():
        raise FileNotFoundError(f"{dest}: no such folder")
    if src.resolve() == dest.resolve():
        raise ValueError("SRC and DEST are the same folder")
    files = batch_files(src)[start:]
    for index, path in enumerate(files, start=1):
        if stop is not None and stop():
            return index - 1
        deliver(path, dest)
        if progress is not None:
            progress(f"[{index}/{len(files)}] {path.name}")
        if index < len(files) and interval > 0:
            time.sleep(interval)
    return len(files)
