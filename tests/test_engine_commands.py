"""Commands reach the monitor by one route and are served between files; its shared state is locked.

Races are made to happen at a chosen moment: a probe stops one thread at the
exact step where another could slip in, and lets the other go. Each test then
checks both that the probe fired and what the other thread could do meanwhile.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path

import pytest

from app.commands import Command, CommandFailed, CommandTimeout, hand_over
from app.events import Event, EventKind
from app.engine.monitor import Monitor
from app.registry import Registry, StatePaths
from app.store import Store
from tests.conftest import (STATIC_ONLY_CONFIG, backdate, copy_of, make_batch, start_driftdeck, wait_until,
                            write_batch, write_config)

MODEL = "static-lr"
QUEUED_FILES = 30
PROBE_PATIENCE = 1.0  # how long a stopped thread lets the other one try to slip in
CLI_TIMEOUT = 60  # a command that waited as before (up to an hour) fails the test here


@pytest.fixture(scope="module")
def three_versions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder whose static model served v1, then v2, and now serves v3: a rollback goes to v2."""
    folder = tmp_path_factory.mktemp("three-versions") / "data"
    folder.mkdir()
    write_config(folder, STATIC_ONLY_CONFIG)
    backdate(write_batch(folder, "week-1.csv", make_batch(0, rows=200)))
    monitor = Monitor(folder)
    try:
        monitor.run_once()
        for version in (2, 3):
            monitor.dispatcher.retrain_now(MODEL)
            if monitor.store.serving_version(MODEL) != version:  # the gate kept the other: serve it by hand
                monitor.dispatcher.promote(MODEL, version)
    finally:
        monitor.close()
    return folder


@pytest.fixture
def folder(three_versions: Path, tmp_path: Path) -> Path:
    return copy_of(three_versions, tmp_path)


def serving(folder: Path) -> int:
    with sqlite3.connect(folder / ".driftdeck" / "state.db") as db:
        query = "SELECT version FROM serving WHERE model = ? ORDER BY id DESC LIMIT 1"
        return db.execute(query, (MODEL,)).fetchone()[0]


def command_rows(folder: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(folder / ".driftdeck" / "state.db") as db:
        return db.execute("SELECT kind, status FROM commands ORDER BY id").fetchall()


def driftdeck(*args: str | Path) -> subprocess.Popen:
    return start_driftdeck(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def queue_unlabeled_files(folder: Path, count: int = QUEUED_FILES) -> None:
    for index in range(count):
        frame = make_batch(index + 1, rows=20).drop(columns="label")
        backdate(write_batch(folder, f"batch-{index:02d}.csv", frame))


class FirstFileHold:
    """A subscriber that stops the monitor's thread once the first batch is in, until released."""

    def __init__(self) -> None:
        self.kinds: list[str] = []
        self.holding = threading.Event()
        self.release = threading.Event()

    def __call__(self, event: Event) -> None:
        self.kinds.append(event.kind)
        if event.kind == EventKind.BATCH_INGESTED and not self.holding.is_set():
            self.holding.set()
            self.release.wait(timeout=120)

    def batches_before(self, kind: str) -> int:
        return self.kinds[:self.kinds.index(kind)].count(EventKind.BATCH_INGESTED)


@pytest.fixture
def busy_monitor(folder: Path):
    """A watching monitor held in its first file, with the other files waiting in its queue."""
    queue_unlabeled_files(folder)
    monitor = Monitor(folder)
    hold = FirstFileHold()
    monitor.subscribe(hold)
    monitor.start()
    try:
        assert hold.holding.wait(60)
        assert wait_until(lambda: monitor._queue.qsize() >= QUEUED_FILES - 1)
        yield monitor, hold
    finally:
        hold.release.set()
        monitor.close()


# --- the model cache -------------------------------------------------------------------------------


def test_the_model_cache_is_never_changed_under_a_load_by_another_thread(folder: Path) -> None:
    """A load stopped between caching its model and marking it newest; another thread caches three more."""
    paths = StatePaths(folder / ".driftdeck")
    store = Store(paths.database)
    registry = Registry(store, paths)
    stopped, others_done = threading.Event(), threading.Event()
    seen: dict[str, bool] = {}

    class StoppingCache(OrderedDict):
        def move_to_end(self, key, last=True):
            if threading.current_thread().name == "loader" and not stopped.is_set():
                stopped.set()
                seen["others cached meanwhile"] = others_done.wait(PROBE_PATIENCE)
            super().move_to_end(key, last)

    def cache_three_others() -> None:
        stopped.wait(30)
        for version in (2, 3, 4):
            registry.remember(MODEL, version, object())
        others_done.set()

    registry._loaded = StoppingCache()
    results, errors = [], []
    loader = threading.Thread(name="loader", target=lambda: _capture(lambda: registry.load(MODEL, 1), results, errors))
    other = threading.Thread(target=cache_three_others)
    try:
        other.start()
        loader.start()
        loader.join(30)
        other.join(30)
    finally:
        store.close()
    assert stopped.is_set(), "the probe never stopped the load"
    assert errors == [] and type(results[0]).__name__ == "Pipeline"
    assert seen["others cached meanwhile"] is False  # they waited for the load to finish
    assert [version for _, version in registry._loaded] == [2, 3, 4]  # three kept per model, oldest dropped


def _capture(action, results: list, errors: list) -> None:
    try:
        results.append(action())
    except Exception as error:  # noqa: BLE001 - the test asserts there was none
        errors.append(error)


# --- pause and resume ---------------------------------------------------------------------------------


def test_a_file_deferred_while_resume_runs_is_never_lost(ingest_dir: Path) -> None:
    """The monitor's thread is stopped as it defers a file; resume comes from another thread right then."""
    monitor = Monitor(ingest_dir)
    monitor.start()
    deferring, resumed = threading.Event(), threading.Event()
    seen: dict[str, bool] = {}

    class StoppingDeferred(dict):
        def __setitem__(self, key, value):
            if threading.current_thread().name == "driftdeck-monitor" and not deferring.is_set():
                deferring.set()
                seen["resume finished meanwhile"] = resumed.wait(PROBE_PATIENCE)
            super().__setitem__(key, value)

    def resume() -> None:
        monitor.submit(Command("resume")).outcome(30)
        resumed.set()

    try:
        monitor.submit(Command("pause")).outcome(0)
        monitor._deferred = StoppingDeferred()
        write_batch(ingest_dir, "week-1.csv", make_batch(0, rows=20))
        assert deferring.wait(30), "the probe never stopped the deferral"
        resumer = threading.Thread(target=resume)
        resumer.start()
        resumer.join(30)
        assert wait_until(lambda: "resume finished meanwhile" in seen)
        assert seen["resume finished meanwhile"] is False  # resume waited for the deferral to finish
        assert wait_until(lambda: [f.name for f in monitor.store.files()] == ["week-1.csv"], timeout=20)
        assert not monitor.paused
    finally:
        monitor.close()


# --- commands are served between files -------------------------------------------------------------------


def test_a_rollback_from_another_process_is_served_after_the_file_in_progress(folder: Path, busy_monitor) -> None:
    monitor, hold = busy_monitor
    cli = driftdeck("rollback", folder, "--model", MODEL)
    try:
        assert wait_until(lambda: command_rows(folder) == [("rollback", "pending")])
        hold.release.set()
        out, err = cli.communicate(timeout=CLI_TIMEOUT)
    finally:
        cli.kill()
    assert cli.returncode == 0, err
    assert out.strip() == f"{MODEL}: rolled back from v3 to v2"
    assert hold.batches_before(EventKind.ROLLED_BACK) == 1  # the file in progress, none of the 29 waiting
    assert command_rows(folder) == [("rollback", "done")]
    assert monitor.wait_idle(60)
    assert hold.kinds.count(EventKind.BATCH_INGESTED) == QUEUED_FILES


def rollback_after_a_promotion(folder: Path, busy_monitor, version: int) -> tuple[subprocess.Popen, str, str]:
    """A rollback asked from the shell while v3 serves; ``version`` is promoted here before it runs."""
    monitor, hold = busy_monitor
    cli = driftdeck("rollback", folder, "--model", MODEL)
    try:
        assert wait_until(lambda: command_rows(folder) == [("rollback", "pending")])
        promotion = monitor.submit(Command("promote", MODEL, version))  # queued here first: it runs first
        hold.release.set()
        out, err = cli.communicate(timeout=CLI_TIMEOUT)
    finally:
        cli.kill()
    assert promotion.outcome(30).message == f"{MODEL}: v{version} now serves (was v3)"
    return cli, out, err


def test_a_rollback_goes_back_from_the_version_that_served_when_it_was_asked(folder: Path, busy_monitor) -> None:
    cli, out, err = rollback_after_a_promotion(folder, busy_monitor, version=1)
    assert cli.returncode == 0, err
    assert out.strip() == f"{MODEL}: rolled back from v1 to v2 (asked while v3 served)"
    assert serving(folder) == 2


def test_a_rollback_refuses_when_what_it_asked_for_already_serves(folder: Path, busy_monitor) -> None:
    cli, out, err = rollback_after_a_promotion(folder, busy_monitor, version=2)
    assert cli.returncode != 0 and out == ""
    assert err.strip().splitlines()[-1] == (f"driftdeck: {MODEL}: not rolled back: v2 already serves "
                                            "(manual: promoted by hand from v3 to v2)")
    assert serving(folder) == 2
    assert EventKind.ROLLED_BACK not in busy_monitor[1].kinds


def test_a_command_not_started_in_time_is_withdrawn_and_never_runs(folder: Path, busy_monitor) -> None:
    monitor, hold = busy_monitor
    ticket = monitor.submit(Command("rollback", MODEL, serving=3))
    with pytest.raises(CommandTimeout, match="did not start within 0.2 s .*withdrawn and nothing was done"):
        ticket.wait(0.2)
    hold.release.set()
    assert monitor.wait_idle(60)
    assert serving(folder) == 3
    assert EventKind.ROLLED_BACK not in hold.kinds


def test_a_command_still_queued_when_the_monitor_closes_is_answered(folder: Path) -> None:
    monitor = Monitor(folder)
    ticket = monitor.submit(Command("rollback", MODEL))
    monitor.close()
    with pytest.raises(CommandFailed, match="the monitor stopped before the rollback of static-lr; nothing was done"):
        ticket.outcome(0)
    assert serving(folder) == 3


# --- a command blocked by another command ------------------------------------------------------------------


def test_a_command_blocked_by_another_command_says_so_at_once_and_leaves_nothing_to_run(folder: Path) -> None:
    holder = Monitor(folder)
    try:
        holder.acquire(role="retrain")
        cli = driftdeck("rollback", folder, "--model", MODEL)
        try:
            out, err = cli.communicate(timeout=CLI_TIMEOUT)
        finally:
            cli.kill()
    finally:
        holder.close()
    assert cli.returncode != 0 and out == ""
    assert err.strip() == (f"driftdeck: another driftdeck (pid {os.getpid()}) is carrying out a retrain in {folder}; "
                           "nothing was done: ask again once it has finished")
    assert command_rows(folder) == []
    later = Monitor(folder)
    try:
        later.run_once()
    finally:
        later.close()
    assert serving(folder) == 3


def test_commands_nobody_waits_for_are_never_carried_out(folder: Path) -> None:
    """Rows from an earlier driftdeck (no deadline), past their deadline, or withdrawn, never run; a live one does."""
    store = Store(folder / ".driftdeck" / "state.db")
    try:
        store.add_command("rollback", MODEL, {}, expires=None)
        store.add_command("rollback", MODEL, {}, expires=time.time() - 1)
        with pytest.raises(CommandTimeout, match="did not take it within 0.3 s; the rollback of static-lr was with"):
            hand_over(store, Command("rollback", MODEL), 0.3, holder=os.getpid())
        gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        with pytest.raises(CommandTimeout, match="stopped before taking it; the rollback of static-lr was withdrawn"):
            hand_over(store, Command("rollback", MODEL), 60, holder=int(gone.stdout))
        store.add_command("promote", MODEL, Command("promote", MODEL, 1).to_args(), expires=time.time() + 60)
    finally:
        store.close()
    monitor = Monitor(folder)
    try:
        monitor.run_once()
        reasons = [change.reason for change in monitor.store.serving_history(MODEL)]
    finally:
        monitor.close()
    assert command_rows(folder) == [("rollback", "expired")] * 4 + [("promote", "done")]
    assert serving(folder) == 1 and "rollback" not in reasons


def test_an_unknown_command_is_refused_where_it_is_asked() -> None:
    with pytest.raises(CommandFailed, match="unknown command 'reboot'"):
        Command("reboot")
