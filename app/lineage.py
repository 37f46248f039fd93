"""Which snapshots learned from a batch that was excluded after the fact.

Every snapshot records the batches it learned from: their file names
(``files``) and SHA-256 (``batch_shas``), the content the ledger knows them
by. An incremental snapshot continued its parent's model with ``partial_fit``,
so it learned from everything its parent learned from as well. A snapshot that
learned from an excluded batch, directly or through such a parent, is
*tainted*. Taint is worked out from the records and the current exclusions
whenever it is asked for, never stored: ``include`` lifts it by itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from app.store import SnapshotRecord, Store

TAINTED = "tainted"  # the flag of a model whose serving snapshot learned from an excluded batch


@dataclass(frozen=True)
class Taint:
    """A tainted snapshot: its version and the excluded batch files it learned from, oldest first."""

    version: int
    batches: tuple[str, ...]


def excluded_batches(store: Store) -> dict[str, str]:
    """The excluded batches: SHA-256 to file name."""
    return {record.sha256: record.name for record in store.files("excluded") if record.sha256}


def taint_of(store: Store, record: SnapshotRecord, excluded: dict[str, str] | None = None) -> Taint | None:
    """The taint of one snapshot (its incremental ancestors read as needed), or None when it is clean."""
    excluded = excluded_batches(store) if excluded is None else excluded
    if not excluded:
        return None
    chain = [record]
    while continued_parent(chain[-1]) and (parent := store.snapshot(record.model, chain[-1].parent)) is not None:
        chain.append(parent)
    return taints(chain, excluded).get(record.version)


def taint_view(taint: Taint | None) -> dict[str, Any]:
    """For a snapshot's row in a report: ``tainted`` (whether it learned from an excluded batch) and
    ``tainted_by`` (which, oldest first)."""
    return {"tainted": taint is not None, "tainted_by": list(taint.batches) if taint else []}


def taint_words(batches: list[str]) -> str:
    """"tainted: learned from excluded b2.csv", or nothing for a clean snapshot."""
    return f"tainted: learned from excluded {', '.join(batches)}" if batches else ""


def tainted_flag(version: int, batches: tuple[str, ...], data_dir, model: str) -> dict[str, str]:
    """The ``tainted`` flag of ``model`` while ``version``, which learned from ``batches``, serves."""
    return {"kind": TAINTED, "detail": f"v{version} learned from excluded {', '.join(batches)}: retrain it"
                                       f" (r, or driftdeck retrain {data_dir} --model {model})"}


def learned_from(record: SnapshotRecord) -> list[str]:
    """The SHA-256 of the batches ``record`` was fitted on itself (not through a parent), oldest first."""
    return list(record.data.get("batch_shas") or [])


def continued_parent(record: SnapshotRecord) -> bool:
    """Whether ``record`` was fitted by continuing its parent's model (an incremental model with a parent)."""
    return bool((record.data.get("config") or {}).get("incremental")) and record.parent is not None


def taints(records: list[SnapshotRecord], excluded: dict[str, str]) -> dict[int, Taint]:
    """The tainted snapshots among ``records`` (one model's), by version.

    ``excluded`` maps each excluded batch's SHA-256 to its file name.
    """
    found: dict[int, Taint] = {}
    for record in sorted(records, key=lambda r: r.version):
        names = [excluded[sha] for sha in learned_from(record) if sha in excluded]
        if continued_parent(record) and record.parent in found:
            names = [*found[record.parent].batches, *names]
        if names:
            found[record.version] = Taint(record.version, tuple(dict.fromkeys(names)))
    return found


def repair_batches(record: SnapshotRecord, excluded: dict[str, str]) -> list[tuple[str, str]]:
    """(file, SHA-256) of the batches ``record`` learned from, less the excluded ones: its window, repaired."""
    files = record.data.get("files") or []
    return [(name, sha) for name, sha in zip(files, learned_from(record)) if sha not in excluded]


def batch_rows(store: Store) -> list[dict[str, Any]]:
    """Every batch that reached the models (ingested or excluded), newest first, with the snapshots that
    learned from it (``learned_by``: model name to versions) and its exclusion, if any."""
    learned: dict[str, dict[str, list[int]]] = {}
    for record in store.snapshots():
        for sha in record.data.get("batch_shas") or []:
            learned.setdefault(sha, {}).setdefault(record.model, []).append(record.version)
    exclusions = store.exclusions()
    return [{"file": record.name, "sha256": record.sha256, "status": record.status, "rows": record.rows,
             "labeled": record.labeled, "seen_at": record.seen_at, "learned_by": learned.get(record.sha256, {}),
             "exclusion": exclusions.get(record.id)}
            for record in reversed(store.files()) if record.status in ("ingested", "excluded")]


def exclusion_text(exclusion: dict[str, Any] | None) -> str:
    """"excluded 2026-03-02 10:15 by ana: labels inverted by the vendor" (who and why only when recorded)."""
    if not exclusion:
        return "excluded"
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(exclusion["time"]))
    who = f" by {exclusion['by']}" if exclusion.get("by") else ""
    return f"excluded {when}{who}" + (f": {exclusion['reason']}" if exclusion.get("reason") else "")
