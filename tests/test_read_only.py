"""``status``, ``snapshots``, ``predict`` and ``export`` read: they change nothing on disk.

Every file and folder under the data folder (its state folder included) is
compared, bytes, mode and mtime, before and after each command; the process's
thread limits too.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import main
from app.engine.monitor import Monitor
from tests.conftest import BASE_CONFIG, backdate, make_batch, write_batch, write_config

REPO_ROOT = Path(__file__).resolve().parents[1]
DYNAMIC_MODEL = '[[models]]\nname = "dynamic-lr"\nmode = "dynamic"\nestimator = "logistic_regression"\nwindow = 2\n'
MODEL = "static-lr"


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder as ``watch`` leaves it: one labeled and one unlabeled batch in, v1 serving."""
    assert DYNAMIC_MODEL in BASE_CONFIG
    folder = tmp_path_factory.mktemp("watched") / "data"
    folder.mkdir()
    write_config(folder, BASE_CONFIG.replace(DYNAMIC_MODEL, ""))
    backdate(write_batch(folder, "week-1.csv", make_batch(0, rows=200)))
    backdate(write_batch(folder, "week-2.csv", make_batch(1, rows=50).drop(columns="label")))
    monitor = Monitor(folder)
    try:
        monitor.run_once()
    finally:
        monitor.close()
    return folder


@pytest.fixture
def folder(watched: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(watched, copy)
    return copy


def needing_repair(folder: Path) -> Path:
    """State a writer would put right: a folder no longer owner-only, a serving file gone."""
    (folder / ".driftdeck" / "quarantine").chmod(0o755)
    (folder / ".driftdeck" / "serving" / f"{MODEL}.json").unlink()
    return folder


def tree(root: Path) -> dict[str, tuple]:
    """Every file and folder under ``root``: SHA-256 of its bytes (files), mode, size and mtime."""
    found = {}
    for path in sorted([root, *root.rglob("*")]):
        info = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        found[str(path.relative_to(root))] = (digest, info.st_mode, info.st_size, info.st_mtime_ns)
    return found


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
