"""The CLI as a new user meets it: right numbers, one order, readable at 80 columns, mistakes said in words.

Real folders, real SQLite, real training workers; commands run through ``main`` in this process
(or ``python -m app`` where the exit status or a closed pipe is the point).
"""

from __future__ import annotations

import json
import re
import shutil
import stat
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io
from rich.cells import cell_len

from app import demo
from app.cli import main
from app.replay import replay
from app import report
from app.snapshots import TRUSTED_TYPES
from app.store import Store
from tests.conftest import (INGEST_ONLY_CONFIG, STREAM_CONFIG, backdate, copy_of, make_batch, run_once,
                            start_driftdeck, write_batch, write_config)

LONG_NAMES_CONFIG = STREAM_CONFIG + """
[[models]]
name = "flowers-static"
mode = "static"
estimator = "logistic_regression"
bootstrap_batches = 3

[[models]]
name = "flowers-dynamic"
mode = "dynamic"
estimator = "logistic_regression"
bootstrap_batches = 3
window = 3

[drift]
domain_classifier_rows = 500

[watch]
settle_seconds = 0.3
"""


def run_main(capsys: pytest.CaptureFixture, *args: str | Path) -> tuple[int, str, str]:
    """``main(args)`` in this process; return the exit status, stdout and stderr."""
    status = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five labeled weeks, two models with long names: v1 of each trained on weeks 1-3, then two more weeks,
    the last with a drifted feature (so each model has a flag to show)."""
    folder = tmp_path_factory.mktemp("trained") / "data"
    folder.mkdir()
    write_config(folder, LONG_NAMES_CONFIG)
    for week in range(1, 6):
        batch = make_batch(week, rows=300, shift=2.0 if week == 5 else 0.0)
        backdate(write_batch(folder, f"2025-07-{week:02d}.csv", batch), seconds=600 - week)
    run_once(folder)
    return folder


@pytest.fixture
def trained_copy(trained_dir: Path, tmp_path: Path) -> Path:
    """A copy of ``trained_dir`` a test may change."""
    return copy_of(trained_dir, tmp_path)


# --- status ------------------------------------------------------------------------------------


def test_status_limit_counts_every_batch_in_the_header(ingest_dir: Path, capsys: pytest.CaptureFixture) -> None:
    for index in range(8):
        backdate(write_batch(ingest_dir, f"week-{index}.csv", make_batch(index, rows=20)))
    run_once(ingest_dir)
    status, out, _ = run_main(capsys, "status", ingest_dir, "--limit", "3")
    assert status == 0
    assert "Batches (last 3 of 8)" in out
    assert "week-7.csv" in out and "week-4.csv" not in out


def lines_fit(text: str, width: int) -> bool:
    return all(cell_len(line) <= width for line in text.splitlines())


def test_status_fits_80_columns_without_breaking_a_word(trained_dir: Path, capsys: pytest.CaptureFixture,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    status, out, _ = run_main(capsys, "status", trained_dir)
    assert status == 0 and lines_fit(out, 80)
    report = json.loads(run_main(capsys, "status", trained_dir, "--json")[1])
    models, batches = out.split("Batches (")
    for model in report["models"]:
        assert re.search(rf"^│ {model['name']} +│", models, re.MULTILINE), model["name"]
        flag = model["flags"][0]
        for word in f"{flag['kind']}: {flag['detail']} {model['verdict']}".split():
            assert word in models, word
    for batch in report["batches"]:
        assert re.search(rf"^│ {batch['file']} +│", batches, re.MULTILINE), batch["file"]


# --- snapshots -----------------------------------------------------------------------------------


def test_trained_on_names_the_first_and_last_file_and_the_count() -> None:
    files = [f"2025-{month:02d}-01.csv" for month in range(1, 10)]
    assert report.trained_on_text(files) == "2025-01-01.csv … 2025-09-01.csv (9 files)"
    assert report.trained_on_text(files[:2]) == "2025-01-01.csv, 2025-02-01.csv"
    assert report.trained_on_text(files[:1]) == "2025-01-01.csv"


def test_snapshots_list_newest_first_and_fit_80_columns(trained_dir: Path, capsys: pytest.CaptureFixture,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    listing = json.loads(run_main(capsys, "snapshots", trained_dir, "--model", "flowers-dynamic", "--json")[1])
    versions = [row["version"] for row in listing["snapshots"]]
    assert len(versions) >= 2 and versions == sorted(versions, reverse=True)
    first = listing["snapshots"][-1]
    assert first["version"] == 1
    assert first["trained_on"] == "2025-07-01.csv … 2025-07-03.csv (3 files)"
    times = [change["time"] for change in listing["serving_history"]["flowers-dynamic"]]
    assert times == sorted(times, reverse=True)

    monkeypatch.setenv("COLUMNS", "80")
    status, out, _ = run_main(capsys, "snapshots", trained_dir)
    assert status == 0 and lines_fit(out, 80)
    assert "flowers-dynamic" in out and "flowers-static" in out
    shown = [int(number) for number in re.findall(r"│\s*v(\d+)\s", out)]
    dynamic = [row["version"] for row in listing["snapshots"]]
    assert shown[:len(dynamic)] == dynamic or shown[-len(dynamic):] == dynamic


# --- retrain, promote ----------------------------------------------------------------------------


def test_retrain_that_fails_exits_non_zero(ingest_dir: Path) -> None:
    write_config(ingest_dir, LONG_NAMES_CONFIG.replace("settle_seconds = 0.3", "settle_seconds = 0.3\ntrain_timeout = 0.001"))
    backdate(write_batch(ingest_dir, "week-1.csv", make_batch(1, rows=200)))
    run_once(ingest_dir)  # the bootstrap times out too; the batch stays there to retrain on
    process = start_driftdeck("retrain", ingest_dir, "--model", "flowers-static", stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    out, errors = process.communicate(timeout=120)
    assert process.returncode != 0, out
    assert "Traceback" not in errors
    assert "retrain failed" in errors


def test_promote_refuses_a_rejected_snapshot_without_force(trained_copy: Path, capsys: pytest.CaptureFixture) -> None:
    store = Store(trained_copy / ".driftdeck" / "state.db")
    try:
        serving = store.serving_version("flowers-dynamic")
        other = next(s.version for s in store.snapshots("flowers-dynamic") if s.version != serving and s.path)
        reason = "holdout roc_auc 0.512 is below the serving model's 0.803"
        store.set_snapshot_status("flowers-dynamic", other, "rejected", reason)
    finally:
        store.close()

    status, _, errors = run_main(capsys, "promote", trained_copy, "--model", "flowers-dynamic", "--version", str(other))
    assert status != 0
    assert errors.count("\n") == 1 and reason in errors and "--force" in errors and "rejected" in errors
    store = Store(trained_copy / ".driftdeck" / "state.db")
    try:
        assert store.serving_version("flowers-dynamic") == serving
    finally:
        store.close()

    status, out, _ = run_main(capsys, "promote", trained_copy, "--model", "flowers-dynamic", "--version", str(other),
                              "--force")
    assert status == 0 and f"v{other} now serves" in out


# --- mistakes said in words -----------------------------------------------------------------------


def test_init_of_a_missing_folder_says_so_in_words(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    status, _, errors = run_main(capsys, "init", tmp_path / "no" / "such" / "dir", "--target", "label")
    assert status != 0
    assert errors == f"driftdeck: {tmp_path / 'no' / 'such' / 'dir'}: no such folder\n"


def test_predict_of_a_missing_file_says_so_in_words(trained_dir: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "nope.csv"
    status, _, errors = run_main(capsys, "predict", trained_dir, "--model", "flowers-static", missing)
    assert status != 0
    assert "Errno" not in errors
    assert errors == f"driftdeck: {missing}: no such file or folder\n"


@pytest.mark.parametrize("command", [("status", "--json"), ("watch", "--once", "--json")])
def test_a_closed_pipe_ends_the_command_quietly(ingest_dir: Path, command: tuple[str, ...]) -> None:
    for index in range(3):
        backdate(write_batch(ingest_dir, f"week-{index}.csv", make_batch(index, rows=20)))
    if command[0] == "status":
        run_once(ingest_dir)
    process = start_driftdeck(command[0], ingest_dir, *command[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # the reader is gone before the first line, as `| head -0` would be
    errors = process.stderr.read()
    process.wait(timeout=120)
    process.stderr.close()
    assert errors == ""
    assert process.returncode in (0, 141)


# --- export ----------------------------------------------------------------------------------------


def test_export_refuses_a_folder_that_holds_files_without_force(trained_dir: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "export"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    status, _, errors = run_main(capsys, "export", trained_dir, "--model", "flowers-static", "--out", out)
    assert status != 0 and "not empty" in errors and "--force" in errors
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]

    status, _, _ = run_main(capsys, "export", trained_dir, "--model", "flowers-static", "--out", out, "--force")
    assert status == 0 and (out / "flowers-static.skops").is_file() and (out / "notes.txt").read_text() == "mine"

    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_main(capsys, "export", trained_dir, "--model", "flowers-static", "--out", empty)[0] == 0


# --- replay and demo ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o644, 0o640])
def test_replay_keeps_the_source_files_mode(tmp_path: Path, mode: int) -> None:
    source, dest = tmp_path / "source", tmp_path / "dest"
    source.mkdir()
    dest.mkdir()
    write_batch(source, "week-1.csv", make_batch(1, rows=10)).chmod(mode)
    assert replay(source, dest, interval=0) == 1
    assert stat.S_IMODE((dest / "week-1.csv").stat().st_mode) == mode


@pytest.fixture
def tiny_scenario(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A sample scenario of four small batches and no models (the demo machinery, not training, is tested)."""
    samples = tmp_path / "samples"
    scenario = samples / "tiny"
    scenario.mkdir(parents=True)
    write_config(scenario, INGEST_ONLY_CONFIG)
    for index in range(4):
        write_batch(scenario, f"week-{index}.csv", make_batch(index, rows=20))
    monkeypatch.setattr(demo, "SAMPLE_DATA", samples)
    return "tiny"


def demo_events(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_demo_says_when_the_replay_is_over_and_removes_its_folder(tiny_scenario: str,
                                                                   capsys: pytest.CaptureFixture) -> None:
    assert demo.run_demo(tiny_scenario, 0, headless=True, as_json=True) == 0
    captured = capsys.readouterr()
    events = demo_events(captured.out)
    finished = [event for event in events if event["kind"] == "replay_finished"]
    assert len(finished) == 1 and "replay finished" in finished[0]["message"]
    assert len([event for event in events if event["kind"] == "batch_ingested"]) == 4
    assert events[-1] == finished[0]  # the last word: nothing of the replay comes after it
    folder = Path(re.search(r"demo folder: (\S+)", captured.err).group(1))
    assert not folder.exists()


def test_demo_keeps_its_folder_with_keep(tiny_scenario: str, capsys: pytest.CaptureFixture) -> None:
    assert demo.run_demo(tiny_scenario, 0, headless=True, as_json=True, keep=True) == 0
    folder = Path(re.search(r"demo folder: (\S+)", capsys.readouterr().err).group(1))
    try:
        assert sorted(p.name for p in folder.iterdir() if p.suffix == ".csv") == [f"week-{i}.csv" for i in range(4)]
    finally:
        shutil.rmtree(folder)


# --- labels keep their type -------------------------------------------------------------------------

LABEL_TYPES = {
    "int": (lambda label: label, "logistic_regression", "classification", np.int64),
    "bool": (lambda label: label.astype(bool), "logistic_regression", "classification", np.bool_),
    "text": (lambda label: np.where(label == 1, "yes", "no"), "logistic_regression", "classification", object),
    "float": (lambda label: label * 2.5 + 0.25, "ridge", "regression", np.float64),
}


@pytest.mark.parametrize("label_type", list(LABEL_TYPES))
def test_labels_keep_their_type_end_to_end(label_type: str, ingest_dir: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    convert, estimator, task, dtype = LABEL_TYPES[label_type]
    config = INGEST_ONLY_CONFIG.replace("models = []\n", "").replace('task = "classification"', f'task = "{task}"')
    write_config(ingest_dir, config + f'\n[[models]]\nname = "m"\nmode = "static"\nestimator = "{estimator}"\n')
    for week in (1, 2):
        frame = make_batch(week, rows=200)
        frame["label"] = convert(frame["label"].to_numpy())
        backdate(write_batch(ingest_dir, f"week-{week}.csv", frame), seconds=100 - week)
    run_once(ingest_dir)
    expected = pd.Series(convert(np.array([0, 1])))

    def assert_typed(values) -> None:
        values = np.asarray(values)
        assert values.dtype == dtype, (label_type, values.dtype)
        if dtype is object:
            assert set(values) <= set(expected)

    state = ingest_dir / ".driftdeck"
    (predictions,) = (state / "predictions" / "m").glob("*-week-2.csv.parquet")
    assert_typed(pd.read_parquet(predictions)["prediction"])

    out = tmp_path / "predicted.parquet"
    assert run_main(capsys, "predict", ingest_dir, "--model", "m", ingest_dir / "week-2.csv", "--out", out)[0] == 0
    assert_typed(pd.read_parquet(out)["prediction"])

    exported = tmp_path / "export"
    assert run_main(capsys, "export", ingest_dir, "--model", "m", "--out", exported)[0] == 0
    rows = make_batch(3, rows=50)[["x1", "x2", "x3", "color"]]
    for model_file in (exported / "m.skops", state / "serving" / "m.skops"):
        model = skops.io.load(model_file, trusted=list(TRUSTED_TYPES))
        assert_typed(model.predict(rows))
