"""End to end: `driftdeck demo --headless --speed 0` on each sample scenario, judged from `status --json`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest

VALENTINES = ("2026-01-26", "2026-02-02", "2026-02-09")


def run_demo(scenario: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "app", "demo", "--scenario", scenario, "--headless", "--speed", "0",
                           "--keep"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(r"^\S+ replay_finished +replay finished: all \d+ batch files", done.stdout, re.MULTILINE)
    folder = re.search(r"demo folder: (\S+)", done.stdout).group(1)
    try:
        status = subprocess.run([sys.executable, "-m", "app", "status", folder, "--json"],
                                capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(folder)
    assert status.returncode == 0, status.stderr
    return json.loads(status.stdout)


def by_file(report: dict) -> dict[str, dict]:
    return {batch["file"].split(".")[0]: batch for batch in report["batches"]}


def kinds(result: dict) -> set[str]:
    return {flag["kind"] for flag in result.get("flags", [])}


@pytest.fixture(scope="module")
def flowers() -> dict:
    return run_demo("flowers")


def test_flowers_every_batch_is_accounted_for(flowers: dict):
    assert len(flowers["batches"]) == 39
    assert flowers["counts"] == {"ingested": 38, "excluded": 0, "quarantined": 1, "duplicate": 0, "skipped": 0}


def test_flowers_malformed_and_corrupted_batches_are_caught(flowers: dict):
    batches = by_file(flowers)
    assert batches["2025-10-13"]["status"] == "quarantined"
    assert "not a readable .csv.gz file" in batches["2025-10-13"]["reason"]
    corrupted = batches["2025-11-10"]["results"]
    for model in ("flowers-static", "flowers-dynamic"):
        assert "data_quality" in kinds(corrupted[model])
        assert corrupted[model]["action"] != "promoted" and not corrupted[model]["trainable"]


def test_flowers_static_is_flagged_around_valentines_day(flowers: dict):
    batches = by_file(flowers)
    for week in VALENTINES:
        assert "performance_drop" in kinds(batches[week]["results"]["flowers-static"]), week
    before = [b for name, b in batches.items() if name < "2026-01-12" and b["status"] == "ingested"]
    assert not any("performance_drop" in kinds(b["results"]["flowers-static"]) for b in before)


def test_flowers_dynamic_recovers_and_the_verdict_says_dynamic_is_worth_it(flowers: dict):
    batches = by_file(flowers)
    dynamic_auc = batches["2026-02-09"]["results"]["flowers-dynamic"]["metrics"]["roc_auc"]
    static_auc = batches["2026-02-09"]["results"]["flowers-static"]["metrics"]["roc_auc"]
    assert dynamic_auc > 0.7 and dynamic_auc > static_auc + 0.1
    static = next(m for m in flowers["models"] if m["name"] == "flowers-static")
    assert static["verdict"].startswith("dynamic training gains"), static["verdict"]
    assert static["verdict_detail"]["needs"] == "dynamic"


def test_sea_level_static_is_enough():
    report = run_demo("sea_level")
    assert report["counts"]["quarantined"] == 0
    for batch in report["batches"]:
        for result in batch["results"].values():
            assert "performance_drop" not in kinds(result), batch["file"]
    for model in report["models"]:
        assert model["verdict_detail"]["needs"] == "static", model["verdict"]
        assert model["verdict"].startswith("static is enough for this data")
