"""What trained a snapshot: library versions and the model's config hash.

Each snapshot records :func:`environment_record` and :func:`model_config_hash`
when it is trained; :func:`environment_diff` later says what changed, so a
person can tell why a reloaded model might behave differently.
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import app

LIBRARIES = ("scikit-learn", "numpy", "pandas", "scipy", "pyarrow", "skops")
CONFIG_HASH_KEY = "config_hash"
CONFIG_HASH_HEX_CHARS = 16
MISSING = "(none)"


def library_version(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return MISSING


def environment_record() -> dict[str, str]:
    """Versions of python, driftdeck and the libraries a pipeline depends on (a fresh copy)."""
    return dict(_environment())


@functools.cache
def _environment() -> tuple[tuple[str, str], ...]:
    """Read once per process: versions cannot change under a running interpreter."""
    record = {"python": platform.python_version(), "driftdeck": app.__version__}
    record.update({name: library_version(name) for name in LIBRARIES})
    return tuple(record.items())


def model_config_hash(model_fields: dict[str, Any]) -> str:
    """First 16 hex chars of the SHA-256 of ``model_fields`` as canonical JSON.

    ``model_fields`` is the model's part of the config (estimator, params,
    window, incremental, features/schema, target, task); key order does not
    change the hash, any value does.
    """
    canonical = json.dumps(model_fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:CONFIG_HASH_HEX_CHARS]


def environment_diff(recorded: dict[str, str], current: dict[str, str]) -> list[str]:
    """One line per key whose value differs, e.g. ``"scikit-learn 1.5.0 -> 1.6.1"``.

    Keys come in the order of ``recorded``, then keys only ``current`` has.
    A key missing on one side shows as "(none)"; ``config_hash`` reads
    "config hash a1b2 -> c3d4". Empty list: nothing changed.
    """
    keys = list(recorded) + [key for key in current if key not in recorded]
    lines = []
    for key in keys:
        before, after = recorded.get(key, MISSING), current.get(key, MISSING)
        if before != after:
            lines.append(f"{key.replace('_', ' ')} {before} -> {after}")
    return lines
