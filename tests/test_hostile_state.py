"""A hostile world around the state: configs, stores, folders and names that change under driftdeck.

Each test sets up what a person or another program really does (edits the
config, deletes or replaces the state, renames the data folder, copies files
with their mtimes, names a file with any bytes the file system allows) and
checks that driftdeck says so plainly and loses nothing. Faults are real:
real files, real SQLite (a trigger makes a commit fail), no mocks.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from app.events import EventKind
from app.engine.monitor import Monitor
from app.registry import StatePaths
from app.serving import predictions_path
from app.store import SCHEMA_VERSION, FileStat, ModelState, Store, StoreIncompatible
from tests.conftest import (STATIC_ONLY_CONFIG, backdate, copy_of, make_batch, processed_folder, run_cli, run_once,
                            wait_until, write_batch, write_config)


def ledger(folder: Path) -> list:
    store = Store(folder / ".driftdeck" / "state.db")
    try:
        return store.files()
    finally:
        store.close()


@pytest.fixture(scope="module")
def trained_once(tmp_path_factory) -> Path:
    return processed_folder(tmp_path_factory.mktemp("trained"), STATIC_ONLY_CONFIG,
                            {"b00.csv": make_batch(0, rows=200)})


@pytest.fixture
def trained(trained_once: Path, tmp_path: Path) -> Path:
    """A copy of a folder where static-lr v1 serves, trained on one labeled batch."""
    return copy_of(trained_once, tmp_path)


# --- the store's schema version -------------------------------------------------------------------------


def test_a_store_from_a_newer_driftdeck_is_refused_with_a_clear_message(ingest_dir: Path) -> None:
    run_once(ingest_dir)
    database = ingest_dir / ".driftdeck" / "state.db"
    with contextlib.closing(sqlite3.connect(database)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION  # stamped
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreIncompatible, match="newer driftdeck"):
        Store(database)
    run = run_cli("status", ingest_dir)
    assert run.returncode != 0 and "newer driftdeck" in run.stderr and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


OLD_FILES_TABLE = """
CREATE TABLE files (id INTEGER PRIMARY KEY, name TEXT NOT NULL, sha256 TEXT, size INTEGER, mtime_ns INTEGER,
    status TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', rows INTEGER NOT NULL DEFAULT 0,
    labeled INTEGER NOT NULL DEFAULT 0, seen_at REAL NOT NULL);
INSERT INTO files (name, sha256, size, mtime_ns, status, seen_at) VALUES ('old.csv', 'ab', 10, 5, 'ingested', 0);
"""


def test_an_older_store_is_migrated_and_stamped(tmp_path: Path) -> None:
    database = tmp_path / "state.db"
    with contextlib.closing(sqlite3.connect(database)) as old:
        old.executescript(OLD_FILES_TABLE)
    store = Store(database)
    try:
        assert [record.name for record in store.files()] == ["old.csv"]
    finally:
        store.close()
    with contextlib.closing(sqlite3.connect(database)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        columns = {row[1] for row in db.execute("PRAGMA table_info(files)")}
    assert {"ctime_ns", "inode"} <= columns


def test_a_store_with_a_renamed_column_is_refused_and_watch_once_fails(ingest_dir: Path) -> None:
    run_once(ingest_dir)
    database = ingest_dir / ".driftdeck" / "state.db"
    with contextlib.closing(sqlite3.connect(database)) as db:
        db.execute("ALTER TABLE files RENAME COLUMN rows TO row_count")
        db.execute("PRAGMA user_version = 0")  # a foreign store carries no stamp
    write_batch(ingest_dir, "b00.csv", make_batch(0, rows=30))
    run = run_cli("watch", ingest_dir, "--once")
    assert run.returncode != 0
    assert "table files lacks column(s) rows" in run.stderr and "Traceback" not in run.stderr


def test_a_store_with_an_extra_required_column_is_refused(ingest_dir: Path) -> None:
    run_once(ingest_dir)
    database = ingest_dir / ".driftdeck" / "state.db"
    with contextlib.closing(sqlite3.connect(database)) as db:
        db.execute("ALTER TABLE snapshots ADD COLUMN owner TEXT NOT NULL DEFAULT 'x'")  # fillable: accepted
        db.execute("CREATE TABLE s2 AS SELECT * FROM snapshots")
        db.executescript("DROP TABLE snapshots; CREATE TABLE snapshots (model TEXT NOT NULL, version INTEGER NOT NULL,"
                         " parent INTEGER, created REAL NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',"
                         " path TEXT, sha256 TEXT, data TEXT NOT NULL DEFAULT '{}', owner TEXT NOT NULL,"
                         " PRIMARY KEY (model, version));")
        db.execute("PRAGMA user_version = 0")
    with pytest.raises(StoreIncompatible, match="table snapshots has column.s. owner that driftdeck cannot fill"):
        Store(database)


def test_a_failed_commit_leaves_no_orphan_snapshot_file(trained: Path) -> None:
    """A trigger makes the insert of v2's snapshot row fail inside the batch's commit."""
    database = trained / ".driftdeck" / "state.db"
    with contextlib.closing(sqlite3.connect(database)) as db:
        db.execute("CREATE TRIGGER refuse BEFORE INSERT ON snapshots BEGIN SELECT RAISE(ABORT, 'injected'); END")
        db.commit()
    # a static model trains nothing after v1: retrain it by hand, which commits a candidate
    events: list = []
    monitor = Monitor(trained)
    monitor.subscribe(events.append)
    try:
        write_batch(trained, "b01.csv", make_batch(1, rows=200))
        monitor.run_once()
        with pytest.raises(sqlite3.IntegrityError, match="injected"):
            monitor.dispatcher.retrain_now("static-lr")
        assert monitor.store.snapshot("static-lr", 2) is None
    finally:
        monitor.close()
    assert any(event.kind == EventKind.TRAINING_STARTED and event.data.get("version") == 2 for event in events), \
        "the fault must land after v2 was trained and written"
    folder = trained / ".driftdeck" / "snapshots" / "static-lr"
    assert sorted(path.name for path in folder.iterdir()) == ["v1.reference.parquet", "v1.skops"]


# --- the ledger: same name, content decides ---------------------------------------------------------------


def same_size_new_content(path: Path) -> bytes:
    """``path``'s bytes with one category changed for another of the same length."""
    data = path.read_bytes()
    changed = data.replace(b",red,", b",tan,", 1)
    assert changed != data and len(changed) == len(data)
    return changed


def test_new_content_with_the_same_name_size_and_mtime_is_ingested(ingest_dir: Path) -> None:
    path = backdate(write_batch(ingest_dir, "b1.csv", make_batch(1, rows=40)))
    run_once(ingest_dir)
    before = os.stat(path)
    path.write_bytes(same_size_new_content(path))  # as `cp -p` or `rsync -t` would leave it
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    events: list = []
    run_once(ingest_dir, events)
    rows = ledger(ingest_dir)
    assert [(row.name, row.status) for row in rows] == [("b1.csv", "ingested"), ("b1.csv", "ingested")]
    assert rows[0].sha256 != rows[1].sha256
    assert [event.kind for event in events].count(EventKind.BATCH_INGESTED) == 1


def test_touching_an_ingested_file_adds_no_row(ingest_dir: Path) -> None:
    path = backdate(write_batch(ingest_dir, "b1.csv", make_batch(1, rows=40)))
    run_once(ingest_dir)
    for seconds in (30, 20):  # `touch`, then a copy of the same bytes without -p
        backdate(path, seconds)
        run_once(ingest_dir)
    path.write_bytes(path.read_bytes())
    backdate(path, 10)
    events: list = []
    run_once(ingest_dir, events)
    assert [(row.name, row.status) for row in ledger(ingest_dir)] == [("b1.csv", "ingested")]
    assert not [event for event in events if event.kind == EventKind.DUPLICATE]
    store = Store(ingest_dir / ".driftdeck" / "state.db")
    try:  # and the next start does not read it again: the ledger holds its stat now
        assert store.knows_file("b1.csv", FileStat.of(os.stat(path)))
    finally:
        store.close()


# --- names ----------------------------------------------------------------------------------------------------


def test_prediction_files_of_x_csv_and_x_parquet_do_not_collide(trained: Path) -> None:
    write_batch(trained, "x.csv", make_batch(1, rows=50))
    write_batch(trained, "x.parquet", make_batch(2, rows=70))
    run_once(trained)
    rows = {record.name: record for record in ledger(trained)}
    root = trained / ".driftdeck" / "predictions"
    paths = {name: predictions_path(root, "static-lr", name, rows[name].sha256) for name in ("x.csv", "x.parquet")}
    assert paths["x.csv"] != paths["x.parquet"]
    assert len(pd.read_parquet(paths["x.csv"])) == 50 and len(pd.read_parquet(paths["x.parquet"])) == 70


def test_a_name_that_is_not_utf8_is_ingested_shown_with_escapes_and_kept_exactly(ingest_dir: Path) -> None:
    raw = b"caf\xe9-\xff.csv"  # latin-1 bytes, as an old producer writes them
    name = os.fsdecode(raw)
    write_batch(ingest_dir, name, make_batch(0, rows=30))
    run = run_cli("watch", ingest_dir, "--once")
    assert run.returncode == 0, run.stderr
    assert "caf\\xe9-\\xff.csv: 30 rows" in run.stdout
    assert "\udcff" not in run.stdout + run.stderr  # nothing a UTF-8 terminal would refuse
    [record] = ledger(ingest_dir)
    assert (os.fsencode(record.name), record.status) == (raw, "ingested")
    status = run_cli("status", ingest_dir, "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["counts"]["ingested"] == 1


def test_a_240_byte_name_is_quarantined(ingest_dir: Path) -> None:
    name = "q" * 236 + ".csv"
    (ingest_dir / name).write_bytes(b"not,a\nbatch\n")
    backdate(ingest_dir / name)
    run = run_cli("watch", ingest_dir, "--once")
    assert run.returncode == 0 and "File name too long" not in run.stderr, run.stderr
    [record] = ledger(ingest_dir)
    assert record.status == "quarantined"
    placed = sorted(path.name for path in (ingest_dir / ".driftdeck" / "quarantine").iterdir())
    assert len(placed) == 2 and placed[1] == placed[0] + ".reason.txt"
    assert all(len(os.fsencode(entry)) <= 255 for entry in placed)


def test_a_245_byte_name_gets_its_predictions_and_is_not_retrained(trained: Path) -> None:
    name = "p" * 241 + ".csv"
    write_batch(trained, name, make_batch(1, rows=60))
    events: list = []
    run_once(trained, events)
    assert not [event for event in events if event.kind == EventKind.ERROR], [e.message for e in events]
    record = next(record for record in ledger(trained) if record.name == name)
    assert record.status == "ingested"
    path = predictions_path(trained / ".driftdeck" / "predictions", "static-lr", name, record.sha256)
    assert len(pd.read_parquet(path)) == 60
    again: list = []
    run_once(trained, again)
    assert not [event for event in again if event.kind in (EventKind.TRAINING_STARTED, EventKind.BATCH_INGESTED)]


# --- a config that no longer matches the serving snapshots ---------------------------------------------------

CONFIG_EDITS = {
    "feature-dropped": ({'x3 = "numeric"\n': ""}, "'x3' is no longer a feature"),
    "numeric-to-categorical": ({'x3 = "numeric"': 'x3 = "categorical"'}, "'x3' was numeric, now categorical"),
    "task-flipped": ({'task = "classification"': 'task = "regression"', '"logistic_regression"': '"ridge"'},
                     "trained for classification, the config now says regression"),
}


@pytest.mark.parametrize("edit", CONFIG_EDITS, ids=list(CONFIG_EDITS))
def test_a_config_that_no_longer_matches_is_said_plainly_and_the_model_is_not_scored(trained: Path, edit: str) -> None:
    replacements, change = CONFIG_EDITS[edit]
    write_config(trained, STATIC_ONLY_CONFIG, **replacements)
    write_batch(trained, "b01.csv", make_batch(1, rows=200))
    watch = run_cli("watch", trained, "--once")
    assert watch.returncode == 0 and "Traceback" not in watch.stderr, watch.stderr
    announced = [line for line in watch.stdout.splitlines() if "config_changed" in line]
    assert len(announced) == 1 and change in announced[0] and "retrain" in announced[0]
    kinds = [line.split()[1] for line in (watch.stdout + watch.stderr).splitlines()]
    assert "error" not in kinds and "file_error" not in kinds
    assert not any(word in watch.stdout for word in ("rmse", "roc_auc")), "a model of another config was scored"
    assert [(row.name, row.status) for row in ledger(trained)] == [("b00.csv", "ingested"), ("b01.csv", "ingested")]

    status = run_cli("status", trained, "--json")
    [model] = json.loads(status.stdout)["models"]
    assert model["state"] == "other config" and change in model["flags"][0]["detail"]
    [result] = [batch["results"]["static-lr"] for batch in json.loads(status.stdout)["batches"] if batch["file"] == "b01.csv"]
    assert "metrics" not in result and result["flags"][0]["kind"] == "config_changed"

    for command in (("predict", trained, "--model", "static-lr", trained / "b01.csv"), ("validate", trained)):
        run = run_cli(*command)
        assert run.returncode == 2 and "Traceback" not in run.stderr + run.stdout
        assert change in run.stderr + run.stdout

    retrain = run_cli("retrain", trained, "--model", "static-lr")  # the retrain offered: on the current config
    assert retrain.returncode == 0 and "promoted" in retrain.stdout, retrain.stdout + retrain.stderr
    after = json.loads(run_cli("status", trained, "--json").stdout)["models"][0]
    assert after["serving_version"] == 2 and after["state"] != "other config"
    assert run_cli("predict", trained, "--model", "static-lr", trained / "b01.csv").returncode == 0


def test_an_unexpected_error_in_any_command_is_one_line_and_a_logged_traceback(ingest_dir: Path, monkeypatch) -> None:
    run_once(ingest_dir)

    def broken(*args, **kwargs):
        raise ZeroDivisionError("injected")

    monkeypatch.setattr("app.report.status_report", broken)  # a fault deep inside the command, not the handler
    run = run_cli("status", ingest_dir)
    assert run.returncode == 1
    assert run.stderr.count("\n") == 1 and "ZeroDivisionError: injected" in run.stderr
    assert "Traceback" not in run.stdout + run.stderr
    log = ingest_dir / ".driftdeck" / "logs" / "errors.log"
    assert str(log) in run.stderr
    text = log.read_text()
    assert "Traceback" in text and "ZeroDivisionError: injected" in text and "driftdeck status" in text


# --- what validate found stands --------------------------------------------------------------------------------

HGB = {'estimator = "logistic_regression"': 'estimator = "hist_gradient_boosting"'}
CRIPPLED = {'estimator = "logistic_regression"': 'estimator = "hist_gradient_boosting"\nparams = {max_iter = 1, max_depth = 1}'}


def flags_of(folder: Path) -> list[str]:
    store = Store(folder / ".driftdeck" / "state.db")
    try:
        return [flag["kind"] for flag in (store.model_state("static-lr") or ModelState()).flags]
    finally:
        store.close()


def test_the_code_regression_flag_stands_until_the_snapshot_stops_serving(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    write_config(folder, STATIC_ONLY_CONFIG, **HGB)
    write_batch(folder, "b00.csv", make_batch(0, rows=400))
    run_once(folder)
    write_config(folder, STATIC_ONLY_CONFIG, **CRIPPLED)  # a change that makes today's retrain worse
    assert run_cli("validate", folder).returncode == 1
    assert flags_of(folder)[0] == "code_regression"
    write_batch(folder, "b01.csv", make_batch(1, rows=100).drop(columns=["label"]))  # unlabeled
    write_batch(folder, "b02.csv", make_batch(2, rows=400))  # labeled: scored, the static model keeps serving
    run_once(folder)
    assert len(ledger(folder)) == 3
    assert flags_of(folder)[0] == "code_regression", "the next batches must not clear what validate found"
    write_config(folder, STATIC_ONLY_CONFIG, **HGB)
    retrain = run_cli("retrain", folder, "--model", "static-lr")
    assert "promoted" in retrain.stdout, retrain.stdout + retrain.stderr  # v2 serves: the flag was about v1
    write_batch(folder, "b03.csv", make_batch(3, rows=100).drop(columns=["label"]))
    run_once(folder)
    assert "code_regression" not in flags_of(folder)


# --- the state deleted or replaced under a running engine ------------------------------------------------------


@contextlib.contextmanager
def watching(folder: Path, state_dir: Path | None = None):
    """A started monitor on ``folder`` and the events it emits; closed on the way out."""
    monitor = Monitor(folder, state_dir)
    events: list = []
    monitor.subscribe(events.append)
    monitor.start()
    try:
        yield monitor, events
    finally:
        monitor.close()


def ingested(monitor: Monitor, name: str) -> bool:
    return any(record.name == name for record in monitor.store.files())


def test_a_deleted_state_stops_the_watcher_before_it_writes_into_a_new_one(ingest_dir: Path) -> None:
    state = ingest_dir / ".driftdeck"
    with watching(ingest_dir) as (monitor, events):
        write_batch(ingest_dir, "b0.csv", make_batch(0, rows=30))
        assert wait_until(lambda: ingested(monitor, "b0.csv"))
        shutil.rmtree(state)
        StatePaths(state).create(ingest_dir)  # another driftdeck makes a new state where the old one was
        Store(state / "state.db").close()
        write_batch(ingest_dir, "b1.csv", make_batch(1, rows=30))
        assert wait_until(lambda: monitor.fatal is not None, timeout=20)
        assert "replaced" in monitor.fatal
        assert not ingested(monitor, "b1.csv")  # stopped at b1, the first write after the state went
        assert any(event.kind == EventKind.ERROR and "replaced" in event.message for event in events)
    assert ledger(ingest_dir) == []  # the new state holds nothing the old engine wrote
    assert not any(list((state / sub).iterdir()) for sub in ("batches", "predictions", "quarantine"))
    run_once(ingest_dir)
    assert sorted(record.name for record in ledger(ingest_dir)) == ["b0.csv", "b1.csv"]  # nothing lost


def test_a_database_overwritten_in_place_is_never_written_again(ingest_dir: Path) -> None:
    database = ingest_dir / ".driftdeck" / "state.db"
    garbage = os.urandom(1 << 16)
    with watching(ingest_dir) as (monitor, events):
        write_batch(ingest_dir, "b0.csv", make_batch(0, rows=30))
        assert wait_until(lambda: ingested(monitor, "b0.csv"))
        inode = os.stat(database).st_ino
        with open(database, "r+b") as handle:  # the same file, its bytes replaced
            handle.write(garbage)
            handle.truncate()
        assert os.stat(database).st_ino == inode
        write_batch(ingest_dir, "b1.csv", make_batch(1, rows=30))
        assert wait_until(lambda: monitor.fatal is not None, timeout=20)
        assert not [event for event in events if event.kind == EventKind.BATCH_INGESTED and event.file == "b1.csv"]
    assert database.read_bytes() == garbage  # not one SQLite page written into it, at close either


def test_watch_headless_exits_with_one_line_when_its_state_is_replaced(ingest_dir: Path) -> None:
    import subprocess
    import sys
    import threading

    write_batch(ingest_dir, "b0.csv", make_batch(0, rows=30))
    process = subprocess.Popen([sys.executable, "-m", "app", "watch", str(ingest_dir), "--headless"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = threading.Timer(90, process.kill)  # bounded, whatever happens
    deadline.start()
    try:
        assert "b0.csv: 30 rows" in process.stdout.readline()
        database = ingest_dir / ".driftdeck" / "state.db"
        moved = ingest_dir / "garbage.db"
        moved.write_bytes(os.urandom(4096))
        os.replace(moved, database)  # a new file under the old name
        write_batch(ingest_dir, "b1.csv", make_batch(1, rows=30))
        stdout, stderr = process.communicate()
    finally:
        deadline.cancel()
        process.kill()
    assert process.returncode == 2, stderr
    assert "replaced while driftdeck ran" in stderr and "Traceback" not in stderr
    assert "b1.csv" not in stdout


def test_the_lock_survives_the_state_folder_being_moved_aside(ingest_dir: Path) -> None:
    from app.engine.lock import MonitorBusy

    first = Monitor(ingest_dir)
    try:
        first.acquire()
        os.rename(ingest_dir / ".driftdeck", ingest_dir / ".driftdeck-aside")
        second = Monitor(ingest_dir)
        try:
            with pytest.raises(MonitorBusy, match="already watching"):
                second.acquire()
        finally:
            second.close()
    finally:
        first.close()


def test_the_advice_to_move_a_damaged_state_aside_says_to_stop_the_watcher_first(ingest_dir: Path) -> None:
    run_once(ingest_dir)
    (ingest_dir / ".driftdeck" / "state.db").write_bytes(os.urandom(8192))
    for suffix in ("-wal", "-shm"):
        (ingest_dir / ".driftdeck" / f"state.db{suffix}").unlink(missing_ok=True)
    run = run_cli("status", ingest_dir)
    assert run.returncode == 2
    assert "stop any running watcher, then move the state folder aside" in run.stderr


# --- the data folder renamed or deleted under a running watcher -------------------------------------------------


def test_a_data_folder_renamed_away_and_back_is_reported_and_watched_again(ingest_dir: Path) -> None:
    from app.tui.header import HeaderState, header_text

    away = ingest_dir.with_name("away")
    with watching(ingest_dir) as (monitor, events):
        write_batch(ingest_dir, "b0.csv", make_batch(0, rows=30))
        assert wait_until(lambda: ingested(monitor, "b0.csv"))
        os.rename(ingest_dir, away)
        assert wait_until(lambda: any(event.kind == EventKind.FOLDER_MISSING for event in events), timeout=10)
        assert "folder missing" in header_text(HeaderState("data", False, folder_missing=monitor.folder_missing)).plain
        write_batch(away, "b1.csv", make_batch(1, rows=30))  # lands while the folder is elsewhere
        os.rename(away, ingest_dir)
        assert wait_until(lambda: any(event.kind == EventKind.FOLDER_BACK for event in events), timeout=10)
        assert not monitor.folder_missing
        write_batch(ingest_dir, "b2.csv", make_batch(2, rows=30))
        assert wait_until(lambda: ingested(monitor, "b1.csv") and ingested(monitor, "b2.csv"), timeout=20)
        assert monitor.fatal is None


def test_a_data_folder_deleted_and_made_again_is_watched_again(ingest_dir: Path, tmp_path: Path) -> None:
    config = (ingest_dir / "driftdeck.toml").read_text()
    with watching(ingest_dir, tmp_path / "state") as (monitor, events):
        shutil.rmtree(ingest_dir)
        assert wait_until(lambda: monitor.folder_missing, timeout=10)
        ingest_dir.mkdir()
        (ingest_dir / "driftdeck.toml").write_text(config)
        assert wait_until(lambda: not monitor.folder_missing, timeout=10)
        write_batch(ingest_dir, "b0.csv", make_batch(0, rows=30))
        assert wait_until(lambda: ingested(monitor, "b0.csv"), timeout=20)
    kinds = [event.kind for event in events]
    assert kinds.index(EventKind.FOLDER_MISSING) < kinds.index(EventKind.FOLDER_BACK)


def test_a_model_trained_on_a_name_that_is_not_utf8_exports_its_card(trained: Path, tmp_path: Path) -> None:
    name = os.fsdecode(b"caf\xe9.csv")
    write_batch(trained, name, make_batch(1, rows=200))
    monitor = Monitor(trained)
    try:
        monitor.run_once()
        assert monitor.dispatcher.retrain_now("static-lr").result.action == "promoted"
        written = monitor.workspace.export("static-lr", tmp_path / "export")
    finally:
        monitor.close()
    card = next(path for path in written if path.name.endswith(".card.md")).read_text()
    assert "caf\\xe9.csv" in card
    assert name in json.loads(next(path for path in written if path.name.endswith(".card.json")).read_text())["trained_on"]["files"]
