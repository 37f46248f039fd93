"""Faults: SIGKILL at random points, over and over; a full or read-only disk; a full database; an old store.

After every kill the store opens, the serving model loads and is one that was
promoted, every snapshot file on record loads (none is half-written), and the
serving folder matches the store; at the end every batch file is in the ledger
exactly once. Each kill is aimed at a moment the engine marks in its events,
and counts only once it is shown to have landed there. A failed write ends in
an event and leaves what was stored intact. ``DRIFTDECK_KILL_ITERATIONS``
(default 5) sets how many kills the loop makes: the bench setting is 30.
"""

from __future__ import annotations

import errno
import json
import os
import queue
import random
import signal
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest

import app.ingest
import app.registry
import app.serving
from app.cli import main
from app.events import EventKind
from app.fsutil import sha256_file
from app.engine.monitor import Monitor
from app.store import Store
from tests.conftest import (BASE_CONFIG, copy_of, make_batch, processed_folder, start_driftdeck, tree, wait_until,
                            write_batch, write_config)
from tests.faults import alive, descendants, failing_write

KILL_SEED = 20250106
KILL_ITERATIONS = int(os.environ.get("DRIFTDECK_KILL_ITERATIONS", "5"))
KILL_POINTS = ("ingestion", "training", "rollback", "snapshot")
# How long after its moment a kill may come, at the first try (halved at each further one), and how many tries.
KILL_DELAYS = {"ingestion": 0.15, "training": 0.15, "snapshot": 0.15, "rollback": 0.4}
KILL_ATTEMPTS = 6
# The dynamic model fits a forest of 100 trees (a few tenths of a second, where a logistic regression takes a few
# milliseconds): long enough for a kill to land while it fits.
SLOW_DYNAMIC_FIT = {'estimator = "logistic_regression"\nwindow = 2':
                    'estimator = "random_forest"\nparams = {n_estimators = 100}\nwindow = 2'}
SERVING_REASONS = {"bootstrap", "promoted", "rollback", "manual", "auto_rollback"}
MODELS = ("static-lr", "dynamic-lr")
EVENT_TIMEOUT = 90.0
CHILDREN_PATIENCE = 30.0  # how long a killed watch's processes may take to end, on a loaded machine


def start(*args: str | Path) -> subprocess.Popen:
    return start_driftdeck(*args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=1)


def kill(process: subprocess.Popen) -> None:
    """SIGKILL ``process`` unless it has ended; wait for it (its return code says which: -SIGKILL if killed)."""
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


@dataclass(frozen=True)
class Kill:
    """One SIGKILL: the point it was aimed at, whether it landed there, and what was seen."""

    point: str
    landed: bool
    note: str


def reached(point: str, event: dict) -> bool:
    """Whether ``event`` (a JSON event line) marks the moment the kill at ``point`` waits for."""
    progress = event["data"].get("progress", 0) if event["kind"] == "training_progress" else None
    if point == "ingestion":
        return event["kind"] == "batch_ingested"  # the kill lands in the next file's read, checks or commit
    if point == "training":
        return progress is not None and 0.3 <= progress < 0.9  # the child is fitting
    return progress is not None and progress >= 0.9  # "snapshot": the child saves; then the file write and commit


def passed(point: str, event: dict) -> bool:
    """Whether ``event``, printed after the moment was reached, shows that the moment was over before the kill."""
    committed = event["kind"] == "batch_ingested"  # the batch in progress reached its commit
    if point == "training":
        return committed or (event["kind"] == "training_progress" and event["data"].get("progress", 0) >= 0.9)
    return committed


def event_lines(process: subprocess.Popen) -> queue.Queue:
    """A queue that a reader thread fills with ``process``'s JSON events (None once its output ends)."""
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        with process.stdout:
            for line in process.stdout:
                lines.put(json.loads(line))
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


def rest_of(lines: queue.Queue) -> list[dict]:
    """The events still to come from an ended process (its output up to its death)."""
    rest = []
    while (event := lines.get(timeout=EVENT_TIMEOUT)) is not None:
        rest.append(event)
    return rest


def kill_watch(folder: Path, point: str, delay: float, rng: random.Random) -> Kill:
    """Run ``watch --headless --json``; SIGKILL it up to ``delay`` seconds after the moment ``point`` waits for.

    The kill landed if ``watch`` was still running, printed nothing (up to its
    death) saying that the moment was over, and left a batch file out of the
    ledger: the one it was handling.
    """
    process = start("watch", folder, "--headless", "--json")
    lines = event_lines(process)
    try:
        while True:
            try:
                event = lines.get(timeout=EVENT_TIMEOUT)
            except queue.Empty:
                return Kill(point, False, f"never reached: no event for {EVENT_TIMEOUT:.0f} s")
            if event is None:
                return Kill(point, False, f"never reached: watch exited with {process.wait()}")
            if reached(point, event):
                break
        time.sleep(rng.uniform(0.0, delay))
        kill(process)
        over = [later["message"][:50] for later in rest_of(lines) if passed(point, later)]
        landed = process.returncode == -signal.SIGKILL and not over and unfinished(folder)
        return Kill(point, landed, f"{event['message'][:60]}" + (f"; over before the kill: {over[0]}" if over else ""))
    finally:
        kill(process)


def kill_rollback(folder: Path, delay: float, rng: random.Random) -> Kill:
    """Run ``rollback --model dynamic-lr --to V`` (V an earlier snapshot, chosen at random); SIGKILL it up to
    ``delay`` seconds after it opened the store. The kill landed if the rollback was still running."""
    target = rng.choice(rollback_targets(folder))
    process = start("rollback", folder, "--model", "dynamic-lr", "--to", target)
    database = os.path.realpath(folder / ".driftdeck" / "state.db")
    try:
        deadline = time.monotonic() + EVENT_TIMEOUT
        while database not in open_files(process.pid):
            if time.monotonic() > deadline or process.poll() is not None:
                return Kill("rollback", False, f"rollback to v{target} never opened the store (exit {process.poll()})")
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, delay))
        kill(process)
        landed = process.returncode == -signal.SIGKILL
        return Kill("rollback", landed, f"rollback to v{target}" + ("" if landed else " ended before the kill"))
    finally:
        kill(process)
        process.stdout.close()


def unfinished(folder: Path) -> bool:
    """Whether a batch file in ``folder`` is not in its ledger yet."""
    with closing(sqlite3.connect(folder / ".driftdeck" / "state.db")) as raw:
        ledger = {name for (name,) in raw.execute("SELECT name FROM files")}
    return any(path.name not in ledger for path in folder.glob("*.csv"))


def rollback_targets(folder: Path) -> list[int]:
    """Versions of dynamic-lr that ``rollback --to`` accepts: a model file, not failed, not serving."""
    store = Store(folder / ".driftdeck" / "state.db")
    try:
        serving = store.serving_version("dynamic-lr")
        return [record.version for record in store.snapshots("dynamic-lr")
                if record.path and record.status != "failed" and record.version != serving]
    finally:
        store.close()


def open_files(pid: int) -> set[str]:
    """The paths ``pid`` has open now (it may be exiting: descriptors vanish while they are read)."""
    paths = set()
    try:
        descriptors = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return paths
    for descriptor in descriptors:
        try:
            paths.add(os.readlink(f"/proc/{pid}/fd/{descriptor}"))
        except OSError:
            continue
    return paths


def assert_consistent(folder: Path) -> None:
    """The invariants that must hold after any crash, checked by restarting (opening a Monitor)."""
    with sqlite3.connect(folder / ".driftdeck" / "state.db") as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    monitor = Monitor(folder)  # the restart: opens the store and repairs the serving files
    try:
        store, registry = monitor.store, monitor.registry
        for model in MODELS:
            version = store.serving_version(model)
            serving = {record.version for record in store.snapshots(model) if record.status == "serving"}
            if version is None:
                assert not serving
                continue
            assert store.serving_history(model)[-1].reason in SERVING_REASONS
            assert serving == {version}, f"{model}: serving pointer v{version}, snapshots marked serving {serving}"
            registry.load(model, version)
            record = store.snapshot(model, version)
            assert sha256_file(monitor.paths.serving / f"{model}.skops") == record.sha256
            assert json.loads((monitor.paths.serving / f"{model}.json").read_text())["version"] == version
        for record in store.snapshots():
            if record.path:
                registry.load(record.model, record.version)  # a half-written file would not load
        ingested = Counter(record.name for record in store.files(status="ingested"))
        assert set(ingested.values()) <= {1}, ingested.most_common(3)
    finally:
        monitor.close()


def test_sigkill_at_random_points_never_corrupts_state_or_loses_a_batch(tmp_path: Path) -> None:
    """Every planned kill lands at its point: one that comes too late (the moment already over) is tried
    again with a shorter delay, and counted only once it lands."""
    folder = tmp_path / "data"
    folder.mkdir()
    write_config(folder, **SLOW_DYNAMIC_FIT)
    written = [write_batch(folder, f"b{index:03d}.csv", make_batch(index, rows=150)).name for index in range(2)]
    assert main(["watch", str(folder), "--once"]) == 0  # dynamic-lr v1 and v2: a rollback has a target from the start
    rng = random.Random(KILL_SEED)
    plan = (list(KILL_POINTS) + [rng.choice(KILL_POINTS) for _ in range(KILL_ITERATIONS - len(KILL_POINTS))])
    plan = plan[:KILL_ITERATIONS]
    kills: list[Kill] = []
    for point in plan:
        for attempt in range(KILL_ATTEMPTS):
            delay = KILL_DELAYS[point] / 2 ** attempt
            if point == "rollback":
                kills.append(kill_rollback(folder, delay, rng))
            else:
                for _ in range(2):
                    name = f"b{len(written):03d}.csv"
                    write_batch(folder, name, make_batch(len(written), rows=150, flipped=len(written) % 4 == 3))
                    written.append(name)
                kills.append(kill_watch(folder, point, delay, rng))
            assert_consistent(folder)
            if kills[-1].landed:
                break

    landed = Counter(kill.point for kill in kills if kill.landed)
    log = [f"{kill.point}: {'landed' if kill.landed else 'missed'}: {kill.note}" for kill in kills]
    assert landed == Counter(plan), "\n".join(log)
    assert main(["watch", str(folder), "--once"]) == 0  # in this process: whatever the kills interrupted
    assert_consistent(folder)
    store = Store(folder / ".driftdeck" / "state.db")
    try:
        records = store.files()
    finally:
        store.close()
    assert sorted((r.name, r.status) for r in records) == [(name, "ingested") for name in written], log
    print(f"\n{len(plan)} kills landed ({dict(landed)}) in {len(kills)} tries over {len(written)} files:",
          *log, sep="\n  ")


def test_killing_watch_also_ends_its_training_process(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    write_config(folder, **{'estimator = "logistic_regression"\nwindow = 2':
                            'estimator = "random_forest"\nparams = {n_estimators = 20000}\nwindow = 2'})
    write_batch(folder, "b00.csv", make_batch(0, rows=300))
    process = start("watch", folder, "--headless", "--json")
    lines = event_lines(process)
    children: list[int] = []
    try:
        while not children:
            event = lines.get(timeout=EVENT_TIMEOUT)
            assert event is not None, f"watch exited with {process.wait()} before it trained"
            if event["kind"] == "training_progress" and event["model"] == "dynamic-lr" and event["data"]["progress"] >= 0.3:
                children = descendants(process.pid)  # the forest is fitting: for minutes, unless it is ended
        kill(process)
        killed = time.monotonic()
        assert children and process.returncode == -signal.SIGKILL
        gone = wait_until(lambda: not any(alive(pid) for pid in children), timeout=CHILDREN_PATIENCE)
        print(f"\n{len(children)} processes below watch, gone {time.monotonic() - killed:.2f} s after it was killed")
        survivors = [pid for pid in children if alive(pid)]
    finally:
        kill(process)
        for pid in children:  # ours: started by the watch process this test started
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert gone, f"still running {CHILDREN_PATIENCE:.0f} s after watch was killed: {survivors}"


# --- a full or read-only disk -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def serving_once(tmp_path_factory) -> Path:
    return processed_folder(tmp_path_factory.mktemp("disk"), BASE_CONFIG, {"b00.csv": make_batch(0, rows=200)})


@pytest.fixture
def serving(serving_once: Path, tmp_path: Path) -> Path:
    """A copy of a folder where both models serve v1, trained on b00.csv."""
    return copy_of(serving_once, tmp_path)


def state_files(folder: Path) -> dict[str, str]:
    """SHA-256 of every snapshot, serving and archived batch file (what must survive a failed write)."""
    return {name: digest for name, (digest, *_) in tree(folder / ".driftdeck").items()
            if digest is not None and Path(name).parts[0] in ("snapshots", "serving", "batches")}


# Where a write can fail: the module whose atomic_write_bytes is replaced, which paths fail, and the
# file that arrives meanwhile (bad files are quarantined, good ones train the dynamic model).
WRITE_SITES = {
    "quarantine copy": (app.ingest, lambda path: True, b"x1,x2\n1,2\n"),
    "snapshot file": (app.registry, lambda path: path.suffix == ".skops" and "snapshots" in path.parts, None),
    "predictions file": (app.serving, lambda path: True, None),
    "serving file": (app.registry, lambda path: "serving" in path.parts, None),
}


@pytest.mark.parametrize("site, code", [(site, errno.ENOSPC) for site in sorted(WRITE_SITES)]
                         + [("quarantine copy", errno.EROFS)],
                         ids=[f"{site}-full" for site in sorted(WRITE_SITES)] + ["quarantine copy-read-only"])
def test_a_failed_write_is_an_event_and_damages_nothing(serving: Path, monkeypatch, site: str, code: int) -> None:
    module, failing, content = WRITE_SITES[site]
    before = state_files(serving)
    if content is None:
        write_batch(serving, "b01.csv", make_batch(1, rows=200))
    else:
        (serving / "b01.csv").write_bytes(content)
    monitor = Monitor(serving)
    seen = []
    monitor.subscribe(seen.append)
    try:
        monkeypatch.setattr(module, "atomic_write_bytes", failing_write(module.atomic_write_bytes, code, failing))
        monitor.run_once()
        errors = [event for event in seen if event.kind == EventKind.ERROR]
        assert errors and os.strerror(code) in errors[0].message, [e.message for e in seen]
        assert {name: sha for name, sha in state_files(serving).items() if name in before} == before
        if site == "serving file":  # the batch committed (v2 promoted); only the copy for other programs failed
            assert [monitor.store.serving_version(model) for model in MODELS] == [1, 2]
        else:  # the batch rolled back whole
            assert [monitor.store.serving_version(model) for model in MODELS] == [1, 1]
            assert [record.name for record in monitor.store.files()] == ["b00.csv"]

        monkeypatch.undo()  # space again: the next scan takes the file
        monitor.run_once()
        statuses = {record.name: record.status for record in monitor.store.files()}
    finally:
        monitor.close()
    assert statuses == {"b00.csv": "ingested", "b01.csv": "quarantined" if content else "ingested"}
    assert_consistent(serving)


def test_a_failed_write_names_the_file_it_was_handling(serving: Path, monkeypatch) -> None:
    write_batch(serving, "b01.csv", make_batch(1, rows=200))
    monitor = Monitor(serving)
    seen = []
    monitor.subscribe(seen.append)
    monkeypatch.setattr(app.serving, "atomic_write_bytes",
                        failing_write(app.serving.atomic_write_bytes, errno.ENOSPC, lambda path: True))
    try:
        monitor.run_once()
    finally:
        monitor.close()
    (error,) = [event for event in seen if event.kind == EventKind.ERROR]
    assert error.file == "b01.csv" or "b01.csv" in error.message


def test_a_full_database_rolls_back_the_whole_batch(serving: Path, monkeypatch) -> None:
    """SQLite refuses the batch's commit: no ledger row, no snapshot row, no pointer change; later it goes in."""
    write_batch(serving, "b01.csv", make_batch(1, rows=200))
    monitor = Monitor(serving)
    seen = []
    monitor.subscribe(seen.append)

    def full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    try:
        monkeypatch.setattr(Store, "save_result", full)
        monitor.run_once()
        assert any("database or disk is full" in event.message for event in seen if event.kind == EventKind.ERROR)
        assert [record.name for record in monitor.store.files()] == ["b00.csv"]
        assert [record.version for record in monitor.store.snapshots("dynamic-lr")] == [1]
        assert [change.version for change in monitor.store.serving_history("dynamic-lr")] == [1]
        monkeypatch.undo()
        monitor.run_once()
        assert [(r.name, r.status) for r in monitor.store.files()] == [("b00.csv", "ingested"), ("b01.csv", "ingested")]
        assert len(monitor.store.snapshots("dynamic-lr")) == 2
    finally:
        monitor.close()
    assert_consistent(serving)


# --- a state folder from an earlier version -------------------------------------------------------------

RESULTS_BEFORE_THE_TRAINABLE_COLUMN = """
CREATE TABLE results (
    file_id INTEGER NOT NULL REFERENCES files(id),
    model TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (file_id, model)
);
"""


def test_a_store_written_before_a_schema_change_still_opens(tmp_path: Path) -> None:
    database = tmp_path / "state.db"
    with sqlite3.connect(database) as old:
        old.executescript(RESULTS_BEFORE_THE_TRAINABLE_COLUMN)
    store = Store(database)
    try:
        with store.transaction() as db:
            file_id = store.record_file("b00.csv", "0" * 64, "ingested", rows=10, labeled=True, db=db)
            store.save_result(file_id, "dynamic-lr", {"trainable": True}, db=db)
        assert store.trainable_ids("dynamic-lr") == [file_id]
    finally:
        store.close()
