"""The typed rows the store hands out, and the JSON its data columns hold."""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


FOLDER_KEY = "__folder__"  # the model_state row of folder-wide facts (FolderState); also the folder's key among profiles


@dataclass(frozen=True)
class ModelState:
    """What a model's next batch, the report and the verdict need from its latest batch: one ``model_state`` row."""

    state: str | None = None  # healthy, watch, stale (app.engine.assess.state_word); None before any batch set it
    flags: list[dict[str, str]] = field(default_factory=list)  # as BatchResult keeps them: {"kind", "detail"}
    verdict: dict[str, Any] | None = None  # the model's comparison of the two policies (Verdict.to_dict())
    current_profile: dict[str, Any] | None = None  # the latest batch's profile (Profile.to_dict())
    validation: dict[str, Any] | None = None  # the last ``validate`` run's result (ValidationResult.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """The JSON object stored: the fields set (``flags`` always)."""
        return _set_fields(self, always={"flags"})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelState:
        """A stored state; keys it does not know are ignored."""
        return cls(**known_fields(cls, data))


@dataclass(frozen=True)
class FolderState:
    """The folder-wide facts kept in the ``FOLDER_KEY`` row of ``model_state``."""

    reference: dict[str, Any] | None = None  # profile of the first batch that counts: drift's reference before any model serves
    reference_sha: str | None = None  # the batch it was built from (an exclusion of that batch builds it again)
    previous_labels: dict[str, Any] | None = None  # label stats of the previous labeled batch (the naive baseline)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object stored: the fields set."""
        return _set_fields(self, always=set())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FolderState:
        """A stored folder row; keys it does not know are ignored."""
        return cls(**known_fields(cls, data))


def _set_fields(record: Any, always: set[str]) -> dict[str, Any]:
    return {item.name: value for item in fields(record)
            if (value := getattr(record, item.name)) is not None or item.name in always}


def known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The items of ``data`` that are fields of dataclass ``cls`` (keys a newer driftdeck wrote, or a reader's
    own, are left out)."""
    known = _field_names(cls)
    return {key: value for key, value in data.items() if key in known}


@functools.cache
def _field_names(cls: type) -> frozenset[str]:  # dataclasses.fields() costs more than the parse of a small row
    return frozenset(item.name for item in fields(cls))


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
