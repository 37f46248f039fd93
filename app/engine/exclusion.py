"""Excluding an ingested batch after the fact, and including it again.

``exclude`` marks a batch ``excluded`` in the ledger, keeping why, who asked
and when. From then on no training window, reference profile, verdict or
validation uses it, and every snapshot that learned from it is tainted (see
:mod:`app.lineage`). A serving snapshot that is tainted is dealt with at once:

- dynamic: retrained on its own window less the batch; the candidate faces the
  gate against the last untainted snapshot that served. If it fails (or
  nothing is left to train on), that snapshot serves again. With no untainted
  snapshot at all, the candidate faces the naive baseline as a first model
  does; if it fails too, the tainted one keeps serving, flagged.
- static: flagged ``tainted``, with a retrain offered; it never retrains on
  its own.

Every change of the serving pointer this makes is recorded with the reason
``excluded FILE``, and the serving files follow. ``include`` lifts the
exclusion, and with it the taint and the flag. A repair already made stays:
it was gated like any promotion, and ``rollback``/``promote`` undo it.

Both run on the monitor's thread, as every command does.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from app.commands import CommandFailed, CommandResult
from app.events import Event, EventKind
from app.lineage import excluded_batches, repair_batches, taint_of
from app.stats.profile import Profile
from app.store import FileRecord, SnapshotRecord

if TYPE_CHECKING:
    from app.monitor import Monitor

TAINTED = "tainted"  # the flag a serving snapshot that learned from an excluded batch carries


def exclude(monitor: Monitor, file: str, reason: str, by: str) -> CommandResult:
    """Exclude the ingested batch ``file``; repair or flag every serving snapshot that learned from it."""
    store = monitor.store
    record = _ingested(store, file)
    with monitor._pointer_lock:
        store.exclude_file(record.id, reason, by)
    excluded = excluded_batches(store)
    _refresh_reference(monitor)
    lines, changes = [], {}
    for name in monitor.runners:
        line, change = _repair(monitor, name, file, excluded)
        if line:
            lines.append(line)
        if change:
            changes[name] = change
    why = f" ({reason})" if reason else ""
    summary = f"{file}: excluded{why}; " + ("; ".join(lines) if lines else "no snapshot learned from it")
    monitor.emit(Event(EventKind.EXCLUDED, summary, file=file,
                       data={"reason": reason, "by": by, "changes": changes, "models": lines}))
    return CommandResult(True, summary, {"file": file, "reason": reason, "by": by, "changes": changes})


def include(monitor: Monitor, file: str) -> CommandResult:
    """Lift the exclusion of ``file``: its taint and flags go; a repair already made stays."""
    store = monitor.store
    record = _excluded(store, file)
    with monitor._pointer_lock:
        store.include_file(record.id)
    excluded = excluded_batches(store)
    _refresh_reference(monitor)
    for name in monitor.runners:
        _mark_taint(monitor, name, excluded)
    summary = f"{file}: included again; it counts for training, the reference and the verdict from now on"
    monitor.emit(Event(EventKind.INCLUDED, summary, file=file))
    return CommandResult(True, summary, {"file": file})


def _ingested(store, file: str) -> FileRecord:
    """The newest ledger entry of ``file`` that reached the models; CommandFailed saying why there is none."""
    entries = [record for record in store.files() if record.name == file]
    if not entries:
        raise CommandFailed(f"{file}: no batch of that name in the ledger (see driftdeck status for the names)")
    usable = [record for record in entries if record.status in ("ingested", "excluded")]
    if not usable:
        last = entries[-1]
        raise CommandFailed(f"{file} was {last.status}{f' ({last.reason})' if last.reason else ''}: it never reached"
                            " a model, so there is nothing to exclude")
    record = usable[-1]
    if record.status == "excluded":
        excluded = store.exclusion(record.id)
        raise CommandFailed(f"{file} is already excluded ({_exclusion_words(excluded)});"
                            f" `driftdeck include` takes it back")
    return record


def _excluded(store, file: str) -> FileRecord:
    entries = [record for record in store.files() if record.name == file]
    if not entries:
        raise CommandFailed(f"{file}: no batch of that name in the ledger (see driftdeck status for the names)")
    excluded = [record for record in entries if record.status == "excluded"]
    if not excluded:
        raise CommandFailed(f"{file} is not excluded ({entries[-1].status}); nothing to include")
    return excluded[-1]


def _exclusion_words(exclusion: dict[str, Any] | None) -> str:
    if not exclusion:
        return "no details recorded"
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(exclusion["time"]))
    parts = [f"since {when}"] + ([f"by {exclusion['by']}"] if exclusion["by"] else [])
    return " ".join(parts) + (f": {exclusion['reason']}" if exclusion["reason"] else "")


def _repair(monitor: Monitor, name: str, file: str, excluded: dict[str, str]) -> tuple[str, dict[str, Any] | None]:
    """Deal with ``name``'s serving snapshot if it learned from an excluded batch; a line saying what happened."""
    serving = monitor.registry.serving(name)
    taint = taint_of(monitor.store, serving, excluded) if serving is not None else None
    if taint is None:
        return "", None
    runner = monitor.runners[name]
    why = f"excluded {file}"
    if not runner.model.is_dynamic:
        _mark_taint(monitor, name, excluded)
        return (f"{name}: v{serving.version} learned from it and is flagged {TAINTED}; retrain it (r, or"
                f" driftdeck retrain {monitor.data_dir} --model {name})"), None
    good = monitor.registry.last_untainted(name)
    ids = _file_ids(monitor.store, repair_batches(serving, excluded))
    with monitor._pointer_lock:
        serving_before = monitor.store.serving_version(name)
    outcome = None
    if ids:
        monitor._set_training(name)
        try:
            outcome = runner.repair(ids, against=good, reason=why)
        finally:
            monitor._set_training(None)
        monitor._commit(None, None, {name: outcome}, serving_before={name: serving_before})
    promoted = outcome is not None and outcome.result.get("action") == "promoted"
    if not promoted and good is not None:
        detail = (f"v{serving.version} learned from {file}; "
                  + (f"its retrain without it was rejected ({outcome.result.get('action_detail', '')}); "
                     if outcome is not None else "nothing else in its window to retrain on; ")
                  + f"v{good.version} is the last snapshot that did not learn from it")
        with monitor._pointer_lock:
            monitor.registry.switch_serving(name, good.version, why, detail, old_status="rolled_back")
            monitor.registry.write_serving_files(name)
        monitor.emit(Event(EventKind.ROLLED_BACK, f"{name}: v{serving.version} → v{good.version}: {detail}", model=name,
                           data={"from": serving.version, "to": good.version, "automatic": True, "excluded": file}))
    _mark_taint(monitor, name, excluded)
    now = monitor.store.serving_version(name)
    if now == serving.version:
        return (f"{name}: v{now} learned from it and still serves, flagged {TAINTED}: no snapshot without it passed"
                f" the gate; retrain it once more labeled batches arrive"), None
    how = "retrained without it" if promoted else "the last snapshot without it"
    return f"{name}: v{serving.version} learned from it; v{now} serves ({how})", {"from": serving.version, "to": now}


def _file_ids(store, batches: list[tuple[str, str]]) -> list[int]:
    """The ledger ids of ``batches`` (name, SHA-256) that are still ingested, in order."""
    ids = []
    for _, sha in batches:
        record = store.file_by_sha(sha)
        if record is not None and record.status == "ingested":
            ids.append(record.id)
    return ids


def _mark_taint(monitor: Monitor, name: str, excluded: dict[str, str]) -> None:
    """Put the ``tainted`` flag on ``name``'s state while its serving snapshot is tainted, and take it off after."""
    state = monitor.store.model_state(name)
    if not state:
        return
    serving = monitor.registry.serving(name)
    taint = taint_of(monitor.store, serving, excluded) if serving is not None else None
    flags = [flag for flag in state.get("flags", []) if flag["kind"] != TAINTED]
    if taint is not None:
        flags.insert(0, tainted_flag(serving, taint.batches, monitor.data_dir, name))
    if flags != state.get("flags", []):
        monitor.store.save_model_state(name, {**state, "flags": flags})


def tainted_flag(serving: SnapshotRecord, batches: tuple[str, ...], data_dir, model: str) -> dict[str, str]:
    return {"kind": TAINTED, "detail": f"v{serving.version} learned from excluded {', '.join(batches)}: retrain it"
                                       f" (r, or driftdeck retrain {data_dir} --model {model})"}


def _refresh_reference(monitor: Monitor) -> None:
    """Keep the folder's reference profile on its first batch that is not excluded.

    That profile is what drift is measured against before any model serves.
    When the batch it came from is excluded (or an older one is included
    again), it is built again from the first batch that counts; when that
    batch's rows were not archived (it was unlabeled), it is dropped and the
    next batch makes it, as the first batch of a new folder does.
    """
    from app.monitor import FOLDER_KEY

    store = monitor.store
    folder = store.model_state(FOLDER_KEY)
    if "reference" not in folder:
        return
    first = next(iter(store.files("ingested")), None)
    source = folder.get("reference_sha") or next(
        (record.sha256 for record in store.files() if record.status in ("ingested", "excluded")), None)
    if first is None or source == first.sha256:
        return
    try:
        folder["reference"] = Profile.build(monitor.read_archived(first.sha256), monitor.config.schema).to_dict()
        folder["reference_sha"] = first.sha256
    except OSError:
        folder.pop("reference", None)
        folder.pop("reference_sha", None)
    store.save_model_state(FOLDER_KEY, folder)
