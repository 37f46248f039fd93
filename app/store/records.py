"""The typed rows the store hands out, and the JSON its data columns hold."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class FileStat:
    """What identifies a file's version on disk, short of reading it."""

    size: int | None
    mtime_ns: int | None
    ctime_ns: int | None
    inode: int | None

    @classmethod
    def of(cls, stat: os.stat_result) -> "FileStat":
        return cls(stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)


@dataclass(frozen=True)
class FileRecord:
    id: int
    name: str
    sha256: str | None
    status: str
    reason: str
    rows: int
    labeled: bool
    seen_at: float


@dataclass(frozen=True)
class SnapshotRecord:
    model: str
    version: int
    parent: int | None
    created: float
    status: str
    reason: str
    path: str | None
    sha256: str | None
    data: dict[str, Any]


@dataclass(frozen=True)
class ServingChange:
    model: str
    version: int
    time: float
    reason: str
    detail: str


@dataclass(frozen=True)
class StoredEvent:
    id: int
    time: float
    kind: str
    model: str | None
    file: str | None
    message: str
    data: dict[str, Any]


def dumps(data: dict[str, Any]) -> str:
    """``data`` as the JSON a data column holds; NumPy numbers and arrays and paths become plain values."""
    return json.dumps(data, default=_json_default, allow_nan=True)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
