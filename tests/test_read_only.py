"""``status``, ``snapshots``, ``predict`` and ``export`` read: they change nothing on disk.

Every file and folder under the data folder (its state folder included) is
compared, bytes, mode and mtime, before and after each command; the process's
thread limits too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import main
from app.engine.monitor import Monitor
from tests.conftest import (REPO_ROOT, STATIC_ONLY_CONFIG, backdate, copy_of, make_batch, processed_folder, tree,
                            write_batch, write_config)

MODEL = "static-lr"


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder as ``watch`` leaves it: one labeled and one unlabeled batch in, v1 serving."""
    batches = {"week-1.csv": make_batch(0, rows=200), "week-2.csv": make_batch(1, rows=50).drop(columns="label")}
    return processed_folder(tmp_path_factory.mktemp("watched"), STATIC_ONLY_CONFIG, batches)


@pytest.fixture
def folder(watched: Path, tmp_path: Path) -> Path:
    return copy_of(watched, tmp_path)


def needing_repair(folder: Path) -> Path:
    """State a writer would put right: a folder no longer owner-only, a serving file gone."""
    (folder / ".driftdeck" / "quarantine").chmod(0o755)
    (folder / ".driftdeck" / "serving" / f"{MODEL}.json").unlink()
    return folder


def read_only_commands(folder: Path, outside: Path) -> dict[str, list[str]]:
    probe = write_batch(outside, "probe.csv", make_batch(7, rows=30))
    return {
        "status": ["status", str(folder), "--json"],
        "snapshots": ["snapshots", str(folder), "--json"],
        "predict": ["predict", str(folder), "--model", MODEL, str(probe), "--out", str(outside / "scores.csv")],
        "export": ["export", str(folder), "--model", MODEL, "--out", str(outside / "export")],
    }


@pytest.mark.parametrize("command", ["status", "snapshots", "predict", "export"])
@pytest.mark.parametrize("state", ["as watch left it", "needing repair"])
def test_a_read_only_command_changes_nothing_on_disk(folder: Path, tmp_path: Path, command: str, state: str,
                                                     capsys: pytest.CaptureFixture) -> None:
    if state == "needing repair":
        needing_repair(folder)
    outside = tmp_path / "outside"
    outside.mkdir()
    argv = read_only_commands(folder, outside)[command]
    before = tree(folder)
    assert main(argv) == 0, capsys.readouterr().err
    assert tree(folder) == before
    assert "-wal" not in " ".join(before)  # read with no writer about: the case where SQLite would add files


def test_a_folder_never_watched_reads_as_empty_and_stays_untouched(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    write_config(folder)
    before = tree(folder)
    assert main(["status", str(folder), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["batches"] == [] and [model["serving_version"] for model in report["models"]] == [None, None]
    assert tree(folder) == before and not (folder / ".driftdeck").exists()


def test_status_reads_what_a_running_monitor_just_wrote(folder: Path, capsys: pytest.CaptureFixture) -> None:
    monitor = Monitor(folder)  # holds the store open: its write-ahead log is in use
    try:
        backdate(write_batch(folder, "week-3.csv", make_batch(2, rows=40).drop(columns="label")))
        monitor.run_once()
        assert Path(f"{monitor.paths.database}-wal").exists()
        assert main(["status", str(folder), "--json"]) == 0
    finally:
        monitor.close()
    report = json.loads(capsys.readouterr().out)
    assert [batch["file"] for batch in report["batches"]] == ["week-1.csv", "week-2.csv", "week-3.csv"]


THREAD_PROBE = """
import json, sys
import app.engine.monitor  # the numeric libraries are loaded before the first reading
from threadpoolctl import threadpool_info
from app.cli import main

def threads():
    return {info["filepath"]: info["num_threads"] for info in threadpool_info()}

seen = {}
for argv in json.loads(sys.argv[1]).values():
    before = threads()
    status = main(argv)
    after = threads()
    seen[argv[0]] = [status, {path: (before[path], after[path]) for path in before if before[path] != after[path]}]
print(json.dumps(seen), file=sys.stderr)
"""


def test_read_only_commands_leave_the_process_thread_limits_alone(folder: Path, tmp_path: Path) -> None:
    commands = read_only_commands(folder, tmp_path)
    environment = {**os.environ, "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    result = subprocess.run([sys.executable, "-c", THREAD_PROBE, json.dumps(commands)], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120, env=environment)
    seen = json.loads(result.stderr.strip().splitlines()[-1])
    assert seen == {name: [0, {}] for name in commands}
