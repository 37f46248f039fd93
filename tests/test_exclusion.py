"""Excluding a bad batch after the fact, through the command line and the engine, on real folders and models.

The base stream: b0 and b1 follow one label rule; b2's labels were joined from
another target (they follow x3, which the real label ignores): a pipeline gone
wrong that no check on the batch alone can see, since such labels are
learnable. After it, static-lr serves v1 (b0) and dynamic-lr serves a snapshot
trained on b1 and b2.
"""

from __future__ import annotations

import getpass
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from app.cli import main
from app.engine.monitor import Monitor
from app.lineage import taint_of
from app.store import Store
from app.workspace import Workspace
from tests.conftest import REPO_ROOT, make_batch, write_batch, write_config

BAD = "b2.csv"


def wrong_target(frame):
    """``frame`` with labels that follow x3 instead of the stream's rule."""
    return frame.assign(label=(frame["x3"] > 0).astype(int))


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("exclusion") / "base"
    folder.mkdir()
    write_config(folder)
    for index in range(3):
        write_batch(folder, f"b{index}.csv", wrong_target(make_batch(index, rows=400)) if index == 2 else
                    make_batch(index, rows=400))
    assert main(["watch", str(folder), "--once"]) == 0
    with Workspace.open(folder, read_only=True) as workspace:
        serving = workspace.registry.serving("dynamic-lr")
        assert BAD in serving.data["files"]  # the stream's premise: the serving dynamic model learned from b2
        assert workspace.store.serving_version("static-lr") == 1
    return folder


@pytest.fixture
def folder(base: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(base, tmp_path / "data", copy_function=shutil.copy2,
                                ignore=shutil.ignore_patterns("monitor.lock")))


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


# ``driftdeck ARGS`` in a process of its own that SIGKILLs itself when it reaches TARGET (a "module:Class.method").
KILLED_AT = """
import importlib, os, signal, sys
module, attribute = sys.argv[1].split(":")
owner, method = attribute.split(".")
setattr(getattr(importlib.import_module(module), owner), method, lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL))
from app.cli import main
sys.exit(main(sys.argv[2:]))
"""
KILL_TIMEOUT = 300


def killed_at(target: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", KILLED_AT, target, *argv], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=KILL_TIMEOUT)


def snapshots_json(capsys, folder: Path) -> dict:
    status, out, _ = run(capsys, "snapshots", str(folder), "--json")
    assert status == 0
    return json.loads(out)


def test_excluding_a_batch_retrains_the_serving_dynamic_model_without_it(folder: Path, capsys) -> None:
    with Workspace.open(folder, read_only=True) as workspace:
        tainted = workspace.registry.serving("dynamic-lr")
        bad = next(r for r in workspace.store.files() if r.name == BAD)
        clean = max(r.version for r in workspace.store.snapshots("dynamic-lr")
                    if r.status in ("retired", "serving") and BAD not in r.data["files"])
    asked = time.time()
    status, out, err = run(capsys, "exclude", str(folder), BAD, "--reason", "labels inverted by the vendor")
    assert status == 0, err
    with Workspace.open(folder, read_only=True) as workspace:
        store, registry = workspace.store, workspace.registry
        assert next(r for r in store.files() if r.name == BAD).status == "excluded"
        exclusion = store.exclusions()[bad.id]
        assert exclusion["reason"] == "labels inverted by the vendor" and exclusion["by"] == getpass.getuser()
        assert asked <= exclusion["time"] <= time.time()
        serving = registry.serving("dynamic-lr")
        assert serving.version != tainted.version and taint_of(store, serving) is None
        change = store.serving_history("dynamic-lr")[-1]
        assert change.reason == f"excluded {BAD}" and f"v{tainted.version} learned from {BAD}" in change.detail
        assert serving.version > tainted.version  # the retrain passed the gate: the same window, less the batch
        assert serving.data["files"] == [name for name in tainted.data["files"] if name != BAD]
        assert serving.parent == clean  # gated against the last snapshot that did not learn from the batch
        served = json.loads((workspace.paths.serving / "dynamic-lr.json").read_text())
        assert (served["version"], served["sha256"]) == (serving.version, serving.sha256)
        assert served["why"] == f"excluded {BAD}"
        assert all(flag["kind"] != "tainted" for flag in store.model_state("dynamic-lr").flags)
    assert f"v{serving.version} serves" in out

    write_batch(folder, "b3.csv", make_batch(3, rows=400))
    assert main(["watch", str(folder), "--once"]) == 0
    with Workspace.open(folder, read_only=True) as workspace:
        newest = workspace.store.snapshots("dynamic-lr")[-1]
        assert "b3.csv" in newest.data["files"] and BAD not in newest.data["files"]
        assert bad.id not in workspace.store.trainable_ids("dynamic-lr")
    capsys.readouterr()
    status, out, _ = run(capsys, "status", str(folder), "--json")
    report = json.loads(out)
    assert report["counts"]["excluded"] == 1
    entry = next(batch for batch in report["batches"] if batch["file"] == BAD)
    assert entry["status"] == "excluded" and entry["exclusion"]["reason"] == "labels inverted by the vendor"


def test_when_the_retrain_fails_the_gate_the_last_untainted_snapshot_serves(folder: Path, capsys) -> None:
    write_config(folder, **{'window = 2': 'window = 2\nmin_metric = 0.999'})  # no candidate can pass now
    with Workspace.open(folder, read_only=True) as workspace:
        tainted = workspace.registry.serving("dynamic-lr").version
        before = [r for r in workspace.store.snapshots("dynamic-lr") if BAD not in r.data.get("files", [])]
        expected = max(r.version for r in before if r.status in ("retired", "serving"))
    status, out, err = run(capsys, "exclude", str(folder), BAD)
    assert status == 0, err
    with Workspace.open(folder, read_only=True) as workspace:
        store = workspace.store
        assert store.serving_version("dynamic-lr") == expected
        records = store.snapshots("dynamic-lr")
        candidate = records[-1]
        assert candidate.status == "rejected" and BAD not in candidate.data["files"] and "min_metric" in candidate.reason
        assert store.snapshot("dynamic-lr", tainted).status == "rolled_back"
        change = store.serving_history("dynamic-lr")[-1]
        assert (change.version, change.reason) == (expected, f"excluded {BAD}")
        assert "was rejected" in change.detail
        assert json.loads((workspace.paths.serving / "dynamic-lr.json").read_text())["version"] == expected
        # the tainted version is never a rollback target again
        assert workspace.registry.previous_good("dynamic-lr") is None or \
            workspace.registry.previous_good("dynamic-lr").version != tainted


def test_a_static_model_is_flagged_never_retrained_and_include_undoes_the_taint(folder: Path, capsys) -> None:
    status, out, err = run(capsys, "exclude", str(folder), "b0.csv", "--reason", "test rows")
    assert status == 0, err
    assert "static-lr: v1 learned from it and is flagged tainted" in out
    with Workspace.open(folder, read_only=True) as workspace:
        store = workspace.store
        assert [r.version for r in store.snapshots("static-lr")] == [1]  # never retrained on its own
        assert store.serving_version("static-lr") == 1
        state = store.model_state("static-lr")
        assert state.flags[0]["kind"] == "tainted" and "b0.csv" in state.flags[0]["detail"]
        assert "driftdeck retrain" in state.flags[0]["detail"] and state.state == "stale"
    listed = snapshots_json(capsys, folder)
    taint = {(row["model"], row["version"]): (row["tainted"], row["tainted_by"]) for row in listed["snapshots"]}
    assert taint[("static-lr", 1)] == (True, ["b0.csv"])
    for (model, version), (flagged, by) in taint.items():
        with Workspace.open(folder, read_only=True) as workspace:
            learned = "b0.csv" in workspace.store.snapshot(model, version).data.get("files", [])
        assert flagged == learned and by == (["b0.csv"] if learned else [])
    status, out, _ = run(capsys, "validate", str(folder), "--model", "static-lr", "--json")
    assert status == 2 and "excluded b0.csv" in json.loads(out)[0]["summary"]

    status, out, err = run(capsys, "include", str(folder), "b0.csv")
    assert status == 0, err
    assert not any(row["tainted"] for row in snapshots_json(capsys, folder)["snapshots"])
    with Workspace.open(folder, read_only=True) as workspace:
        assert all(flag["kind"] != "tainted" for flag in workspace.store.model_state("static-lr").flags)
        assert next(r for r in workspace.store.files() if r.name == "b0.csv").status == "ingested"
        assert workspace.store.exclusions() == {}


def test_what_cannot_be_excluded_is_refused_in_one_line(folder: Path, capsys) -> None:
    (folder / "broken.csv").write_text("x1,x2\n1\n")
    assert main(["watch", str(folder), "--once"]) == 0
    capsys.readouterr()
    status, _, err = run(capsys, "exclude", str(folder), "nope.csv")
    assert status == 2 and err.count("\n") == 1 and "nope.csv: no batch of that name" in err
    status, _, err = run(capsys, "exclude", str(folder), "broken.csv")
    assert status == 2 and err.count("\n") == 1 and "broken.csv was quarantined" in err
    status, _, err = run(capsys, "include", str(folder), "b1.csv")
    assert status == 2 and "b1.csv is not excluded" in err
    assert run(capsys, "exclude", str(folder), "b1.csv", "--reason", "first")[0] == 0
    status, _, err = run(capsys, "exclude", str(folder), "b1.csv", "--reason", "second")
    assert status == 2 and err.count("\n") == 1 and "b1.csv is already excluded" in err and ": first" in err
    with Workspace.open(folder, read_only=True) as workspace:
        assert [e["reason"] for e in workspace.store.exclusions().values()] == ["first"]


def test_a_running_engine_carries_out_the_exclusion(folder: Path, capsys) -> None:
    monitor = Monitor(folder)
    monitor.start()
    try:
        status, out, err = run(capsys, "exclude", str(folder), BAD, "--reason", "via the engine")
        assert status == 0, err
        assert "handed the exclude to it" in err and f"{BAD}: excluded (via the engine)" in out
        assert next(r for r in monitor.store.files() if r.name == BAD).status == "excluded"
        assert monitor.store.serving_history("dynamic-lr")[-1].reason == f"excluded {BAD}"
        status, out, err = run(capsys, "include", str(folder), BAD)
        assert status == 0 and "included again" in out
    finally:
        monitor.close()


def test_the_replay_shows_what_the_batch_cost(folder: Path, capsys) -> None:
    write_batch(folder, "b3.csv", make_batch(3, rows=400))
    assert main(["watch", str(folder), "--once"]) == 0
    capsys.readouterr()
    status, out, err = run(capsys, "exclude", str(folder), BAD, "--replay", "--json")
    assert status == 0, err
    report = json.loads(out)
    assert report["exclusion"]["file"] == BAD and report["replay"]["file"] == BAD
    rows = report["replay"]["batches"]
    assert {(row["file"], row["model"]) for row in rows} == {("b3.csv", "static-lr"), ("b3.csv", "dynamic-lr")}
    with Workspace.open(folder, read_only=True) as workspace:
        b3 = next(r for r in workspace.store.files() if r.name == "b3.csv")
        recorded = {model: data for file_id, model, data in workspace.store.results() if file_id == b3.id}
    for row in rows:  # with the batch, the replay is the history as it happened
        assert row["with_version"] == recorded[row["model"]]["serving_version"]
        assert row["with_value"] == pytest.approx(recorded[row["model"]]["metrics"]["roc_auc"])
        assert BAD not in row["without_trained_on"]
    dynamic = next(row for row in rows if row["model"] == "dynamic-lr")
    assert BAD in dynamic["with_trained_on"]
    assert dynamic["gain"] == pytest.approx(dynamic["without_value"] - dynamic["with_value"])
    assert report["replay"]["summary"]["dynamic-lr"]["batches"] == 1


def test_an_unlabeled_batch_is_excluded_and_its_replay_says_there_is_nothing_to_replay(folder: Path, capsys) -> None:
    write_batch(folder, "u3.csv", make_batch(3, rows=400).drop(columns=["label"]))
    assert main(["watch", str(folder), "--once"]) == 0
    capsys.readouterr()
    with Workspace.open(folder, read_only=True) as workspace:
        serving = {name: workspace.store.serving_version(name) for name in ("static-lr", "dynamic-lr")}
    status, out, err = run(capsys, "exclude", str(folder), "u3.csv", "--replay")
    assert status == 0, err
    assert "u3.csv: excluded; no serving model learned from it" in out
    assert "nothing to replay: u3.csv was unlabeled" in err
    with Workspace.open(folder, read_only=True) as workspace:
        assert {name: workspace.store.serving_version(name) for name in serving} == serving


@pytest.mark.parametrize("target", ["app.engine.commit:Committer.commit", "app.store.ledger:Ledger.exclusion_repaired"],
                         ids=["before-the-repair-commits", "after-the-repair-before-it-is-marked-done"])
def test_an_exclusion_killed_before_its_repair_is_done_is_finished_at_the_next_start(folder: Path, capsys,
                                                                                      target: str) -> None:
    with Workspace.open(folder, read_only=True) as workspace:
        tainted = workspace.registry.serving("dynamic-lr")
        bad = next(r for r in workspace.store.files() if r.name == BAD)
        versions = [r.version for r in workspace.store.snapshots("dynamic-lr")]
    process = killed_at(target, "exclude", str(folder), BAD, "--reason", "labels inverted by the vendor")
    assert process.returncode == -signal.SIGKILL, process.stderr[-2000:]
    with Workspace.open(folder, read_only=True) as workspace:  # the moment it died at
        store = workspace.store
        assert next(r for r in store.files() if r.name == BAD).status == "excluded"
        assert store.unrepaired_exclusions() == [bad.id]
        if target.endswith("commit"):  # the candidate was trained; its commit never happened
            assert store.serving_version("dynamic-lr") == tainted.version
            assert [r.version for r in store.snapshots("dynamic-lr")] == versions
            assert workspace.registry.snapshot_file("dynamic-lr", max(versions) + 1).exists()
        else:  # the repair was committed
            assert taint_of(store, workspace.registry.serving("dynamic-lr")) is None
        after_kill = [r.version for r in store.snapshots("dynamic-lr")]

    status, out, err = run(capsys, "watch", str(folder), "--once")  # the next start
    assert status == 0, err
    assert f"{BAD}: excluded (labels inverted by the vendor), its repair interrupted; finished now" in out
    with Workspace.open(folder, read_only=True) as workspace:
        store, registry = workspace.store, workspace.registry
        assert store.unrepaired_exclusions() == []
        serving = registry.serving("dynamic-lr")
        assert serving.version != tainted.version and taint_of(store, serving) is None
        assert BAD not in serving.data["files"]
        assert store.serving_history("dynamic-lr")[-1].reason == f"excluded {BAD}"
        assert json.loads((workspace.paths.serving / "dynamic-lr.json").read_text())["version"] == serving.version
        assert all(flag["kind"] != "tainted" for flag in store.model_state("dynamic-lr").flags)
        finished = [r.version for r in store.snapshots("dynamic-lr")]
        if not target.endswith("commit"):
            assert finished == after_kill  # the repair made before the kill is not made twice
        assert store.exclusions()[bad.id]["reason"] == "labels inverted by the vendor"

    status, out, err = run(capsys, "watch", str(folder), "--once")  # and the one after: nothing left to do
    assert status == 0, err
    assert "finished now" not in out
    with Workspace.open(folder, read_only=True) as workspace:
        assert [r.version for r in workspace.store.snapshots("dynamic-lr")] == finished
        assert workspace.store.serving_version("dynamic-lr") == serving.version


def test_an_exclusion_from_a_store_before_the_repair_mark_is_taken_as_repaired(tmp_path: Path) -> None:
    """A store of schema 6 has exclusions without ``repair_pending``: they were repaired at the time."""
    database = tmp_path / "state.db"
    store = Store(database)
    file_id = store.record_file("b0.csv", "0" * 64, "ingested", rows=10, labeled=True)
    store.exclude_file(file_id, "old", "ana")
    store.close()
    with closing(sqlite3.connect(database)) as old:
        old.execute("ALTER TABLE exclusions DROP COLUMN repair_pending")
        old.execute("PRAGMA user_version = 6")
        old.commit()
    store = Store(database)
    try:
        assert store.unrepaired_exclusions() == []
        assert store.exclusions()[file_id]["reason"] == "old"
    finally:
        store.close()


def test_an_include_killed_before_the_states_are_settled_is_settled_at_the_next_start(folder: Path, capsys) -> None:
    status, _, err = run(capsys, "exclude", str(folder), "b0.csv", "--reason", "test rows")
    assert status == 0, err
    process = killed_at("app.engine.exclusion:Excluder._settle_state", "include", str(folder), "b0.csv")
    assert process.returncode == -signal.SIGKILL, process.stderr[-2000:]
    with Workspace.open(folder, read_only=True) as workspace:  # the moment it died at: included, still flagged
        assert next(r for r in workspace.store.files() if r.name == "b0.csv").status == "ingested"
        assert workspace.store.model_state("static-lr").flags[0]["kind"] == "tainted"

    status, _, err = run(capsys, "watch", str(folder), "--once")
    assert status == 0, err
    with Workspace.open(folder, read_only=True) as workspace:
        state = workspace.store.model_state("static-lr")
        assert [flag for flag in state.flags if flag["kind"] == "tainted"] == []
