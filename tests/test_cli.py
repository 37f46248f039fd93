"""The command line as a user runs it: ``python -m app`` in a subprocess, or ``main`` in this process where the
interpreter's start-up proves nothing more; real folders, real SQLite."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from app.cli import main
from app.config import load_config
from app.store import Store
from tests.conftest import (BASE_CONFIG, REPO_ROOT, STATIC_ONLY_CONFIG, CliRun, backdate, make_batch, run_cli, run_once,
                            start_driftdeck, write_batch, write_config)

COMMAND_TIMEOUT = 120


def driftdeck(*args: str | Path, timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess:
    """Run ``python -m app ARGS`` to completion and capture its output."""
    return subprocess.run([sys.executable, "-m", "app", *map(str, args)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout)


def read_until_kind(process: subprocess.Popen, kind: str, timeout: float = 60.0) -> list[dict]:
    """Read JSON event lines from ``process`` until one of ``kind`` arrives; return them all."""
    events = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"driftdeck exited before a {kind} event: {process.stderr.read()}")
        events.append(json.loads(line))
        if events[-1]["kind"] == kind:
            return events
    raise AssertionError(f"no {kind} event within {timeout} s")


def assert_one_line_error(result: subprocess.CompletedProcess | CliRun, *fragments: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("driftdeck: ")
    for fragment in fragments:
        assert fragment in lines[0]


# --- status --json -----------------------------------------------------------------------------


def test_status_json_lists_models_and_every_batch(data_dir: Path) -> None:
    write_config(data_dir, STATIC_ONLY_CONFIG)
    good = write_batch(data_dir, "week-1.csv", make_batch(0, rows=200))
    (data_dir / "week-2-resent.csv").write_bytes(good.read_bytes())
    (data_dir / "broken.parquet").write_bytes(b"definitely not parquet")
    run_once(data_dir)  # in this process, as the status that reads it: no interpreter start-up to wait for
    result = run_cli("status", data_dir, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)

    assert [(model["name"], model["mode"]) for model in report["models"]] == [("static-lr", "static")]
    assert report["models"][0]["serving_version"] == 1
    batches = {batch["file"]: batch for batch in report["batches"]}
    assert set(batches) == {"week-1.csv", "week-2-resent.csv", "broken.parquet"}
    for batch in report["batches"]:
        assert {"file", "sha256", "status", "reason", "rows", "labeled", "results"} <= set(batch)
        assert batch["status"] in ("ingested", "quarantined", "duplicate")
    ingested = batches["week-1.csv"]
    assert (ingested["status"], ingested["rows"], ingested["labeled"], ingested["reason"]) == ("ingested", 200, True, "")
    assert set(ingested["results"]) == {"static-lr"}
    assert ingested["results"]["static-lr"]["action"] == "promoted"
    resent = batches["week-2-resent.csv"]
    assert (resent["status"], resent["reason"], resent["sha256"]) == ("duplicate", "same content as week-1.csv",
                                                                      ingested["sha256"])
    assert batches["broken.parquet"]["status"] == "quarantined"
    assert batches["broken.parquet"]["reason"].startswith("not a readable .parquet file")
    assert report["counts"] == {"ingested": 1, "excluded": 0, "quarantined": 1, "duplicate": 1, "skipped": 0}


# --- errors: one line, no traceback --------------------------------------------------------------
# One error goes through ``python -m app`` (nothing the interpreter prints may add a line); the others
# through ``main`` in this process, where an exception that escapes fails the test.


def test_missing_folder_is_a_one_line_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    assert_one_line_error(driftdeck("status", missing), str(missing), "no such folder")


def test_folder_without_config_is_a_one_line_error(tmp_path: Path) -> None:
    assert_one_line_error(run_cli("watch", tmp_path, "--once"), "no config found", "driftdeck init")


def test_bad_config_is_a_one_line_error_naming_the_key(data_dir: Path) -> None:
    write_config(data_dir, BASE_CONFIG.replace('mode = "dynamic"', 'mode = "online"'))
    assert_one_line_error(
        run_cli("status", data_dir, "--json"),
        'driftdeck.toml: models[1].mode must be "static" or "dynamic", got "online"',
    )


def test_damaged_state_database_is_a_one_line_error(ingest_dir: Path) -> None:
    state = ingest_dir / ".driftdeck"
    state.mkdir()
    (state / "state.db").write_bytes(b"this is not a SQLite database" * 200)
    result = run_cli("status", ingest_dir)
    assert result.returncode != 0 and result.stderr.startswith("driftdeck: ") and "state.db" in result.stderr


def test_state_path_that_is_a_file_is_a_one_line_error(tmp_path: Path, ingest_dir: Path) -> None:
    not_a_folder = tmp_path / "state-file"
    not_a_folder.write_text("")
    result = run_cli("status", ingest_dir, "--state", not_a_folder)
    assert result.returncode != 0 and result.stderr.startswith("driftdeck: ") and str(not_a_folder) in result.stderr


# --- watch --headless ----------------------------------------------------------------------------


def test_headless_json_prints_one_event_per_line_and_stops_on_sigint(ingest_dir: Path) -> None:
    write_batch(ingest_dir, "week-1.csv", make_batch(0, rows=50))
    process = start_driftdeck("watch", ingest_dir, "--headless", "--json", bufsize=1,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        events = read_until_kind(process, "batch_ingested")
        process.send_signal(signal.SIGINT)
        rest, errors = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    events += [json.loads(line) for line in rest.splitlines()]  # every line must be one JSON object

    assert process.returncode in (0, 130)
    assert "Traceback" not in errors
    for event in events:
        assert set(event) == {"time", "kind", "model", "file", "message", "data"}
    ingested = [event for event in events if event["kind"] == "batch_ingested"]
    assert [(e["file"], e["data"]["rows"], e["data"]["labeled"]) for e in ingested] == [("week-1.csv", 50, True)]


def test_sigkill_mid_ingestion_leaves_a_store_that_resumes(ingest_dir: Path) -> None:
    """Kill -9 after the first batch is in; `watch --once` then brings every file in exactly once."""
    total = 100
    for index in range(total):
        backdate(write_batch(ingest_dir, f"batch-{index:03d}.csv", make_batch(index, rows=10)))
    process = start_driftdeck("watch", ingest_dir, "--headless", "--json", bufsize=1,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        read_until_kind(process, "batch_ingested")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        process.stdout.close()
        process.stderr.close()

    database = ingest_dir / ".driftdeck" / "state.db"
    with sqlite3.connect(database) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        ingested_before_kill = db.execute("SELECT COUNT(*) FROM files WHERE status = 'ingested'").fetchone()[0]
    assert 1 <= ingested_before_kill < total  # the kill landed mid-way, or this test proves nothing

    assert main(["watch", str(ingest_dir), "--once"]) == 0  # the restart, in this process

    store = Store(database)
    try:
        records = store.files()
    finally:
        store.close()
    per_name = Counter(record.name for record in records if record.status == "ingested")
    assert sorted(per_name) == [f"batch-{index:03d}.csv" for index in range(total)]
    assert set(per_name.values()) == {1}
    assert len(records) == total  # no duplicates, no quarantines: nothing was seen half-way


# --- init ---------------------------------------------------------------------------------------------


def test_init_writes_a_config_and_refuses_to_overwrite_it(tmp_path: Path) -> None:
    write_batch(tmp_path, "week-1.csv", make_batch(0, rows=60))
    assert run_cli("init", tmp_path, "--target", "label", "--timestamp", "ts").returncode == 0
    config = load_config(tmp_path)
    assert (config.target, config.timestamp, config.task) == ("label", "ts", "classification")

    assert_one_line_error(run_cli("init", tmp_path, "--target", "label"), "already exists; pass --force")
    assert load_config(tmp_path).timestamp == "ts"  # untouched

    assert run_cli("init", tmp_path, "--target", "label", "--id-column", "x1", "--force").returncode == 0
    assert load_config(tmp_path).id_column == "x1"
