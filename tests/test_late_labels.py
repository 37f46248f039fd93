"""Labels that come later, through a watching monitor on real files: the join, back-filled metrics, training,
conflicts, unmatched labels after the wait, a refused label file, and what `status --json` says."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from app.commands import Command
from app.engine.monitor import Monitor
from app.events import EventKind
from app.cli_tables import batches_table
from app.label_ledger import unscored
from app.report import status_report
from tests.conftest import (STREAM_CONFIG, TWO_MODELS, backdate, make_batch, run_once, wait_until, write_batch,
                            write_config)

LATE_CONFIG = STREAM_CONFIG.replace('task = "classification"', 'task = "classification"\nid_column = "order"') + TWO_MODELS + """
[labels]
pattern = "labels_*"
wait_seconds = 1.5
labeled_share = 0.9

[drift]
domain_classifier_rows = 300

[watch]
settle_seconds = 0.2
"""


def batch_with_ids(index: int, rows: int = 400) -> pd.DataFrame:
    frame = make_batch(index, rows=rows)
    frame.insert(0, "order", range(index * 10_000, index * 10_000 + rows))
    return frame


def sales(frame: pd.DataFrame, rows: slice) -> pd.DataFrame:
    """A label file's rows: the id and the label of ``rows`` of ``frame``, shuffled."""
    return frame.iloc[rows][["order", "label"]].sample(frac=1.0, random_state=1)


@pytest.fixture
def monitor(tmp_path: Path):
    folder = tmp_path / "data"
    folder.mkdir()
    write_config(folder, LATE_CONFIG)
    monitor = Monitor(folder)
    events = []
    monitor.subscribe(events.append)
    monitor.events = events
    monitor.start()
    yield monitor
    monitor.close()


def arrived(monitor: Monitor, name: str) -> bool:
    return name in {record.name for record in monitor.store.files()}


def deliver(monitor: Monitor, name: str, frame: pd.DataFrame) -> None:
    write_batch(monitor.data_dir, name, frame)
    assert wait_until(lambda: arrived(monitor, name) and monitor.wait_idle(1), timeout=60), name


def batch_view(monitor: Monitor, name: str) -> dict:
    report = status_report(monitor.store, monitor.config)
    return next(batch for batch in report["batches"] if batch["file"] == name)


def test_labels_in_several_files_out_of_order_backfill_metrics_and_train(monitor: Monitor) -> None:
    first, second, third = batch_with_ids(0), batch_with_ids(1), batch_with_ids(2)
    deliver(monitor, "b0.csv", first)  # labelled history: version 1 of both models
    assert monitor.store.serving_version("dynamic-lr") == 1
    deliver(monitor, "b1.csv", second.drop(columns="label"))
    deliver(monitor, "b2.parquet", third.drop(columns="label"))
    waiting = batch_view(monitor, "b1.csv")
    assert waiting["label_coverage"] == 0.0 and waiting["labeled"] is False
    estimate = waiting["results"]["dynamic-lr"]["estimate"]
    assert estimate["metric"] == "roc_auc" and estimate["calibrated"] and 0.5 < estimate["value"] < 1
    assert "metrics" not in waiting["results"]["dynamic-lr"]
    assert monitor.store.snapshots("dynamic-lr")[-1].version == 1  # nothing to train on yet

    # The newer batch's labels first, half of the older one's, and three ids no batch has carried.
    unknown = pd.DataFrame({"order": [900_001, 900_002, 900_003], "label": [1, 0, 1]})
    deliver(monitor, "labels_b.csv", pd.concat([sales(third, slice(0, 400)), sales(second, slice(0, 200)), unknown]))
    third_view, second_view = batch_view(monitor, "b2.parquet"), batch_view(monitor, "b1.csv")
    assert third_view["label_coverage"] == 1.0 and third_view["labels_from"] == ["labels_b.csv"]
    assert second_view["label_coverage"] == 0.5 and second_view["labeled"] is False
    console = Console(width=200, record=True)
    batches = status_report(monitor.store, monitor.config)["batches"]
    console.print(batches_table(batches, len(batches), 200))
    assert any(line.startswith("│ b1.csv") and "│ 50%" in line for line in console.export_text().splitlines())
    realised = third_view["results"]["dynamic-lr"]
    assert realised["serving_version"] == 1 and realised["metrics"]["roc_auc"] > 0.7
    assert realised["estimate_error"] == pytest.approx(estimate_value(realised) - realised["metrics"]["roc_auc"])
    assert realised["baseline_metrics"]["roc_auc"] == pytest.approx(0.5)
    assert "shadow_metrics" not in realised  # no version that learned from a whole window (2 batches) had served
    assert third_view["results"]["static-lr"]["metrics"]["roc_auc"] > 0.7
    trained = monitor.store.snapshots("dynamic-lr")[-1]
    assert trained.version == 2 and trained.data["files"] == ["b0.csv", "b2.parquet"]  # b2 trained once labelled
    assert trained.data["calibration"]["classes"] == ["0", "1"]
    assert monitor.store.serving_version("dynamic-lr") == 2, trained.reason
    result = monitor.submit(Command("validate", "dynamic-lr")).wait(120)  # retrains v2 from the archive, late labels and all
    assert result.ok and result.data["outcome"] == "validated", result.message

    # The rest of the older batch, one row again with the same label, one with another.
    again = second.iloc[[0]][["order", "label"]]
    flipped = second.iloc[[1]][["order", "label"]].assign(label=lambda f: 1 - f["label"])
    deliver(monitor, "labels_a.jsonl", pd.concat([sales(second, slice(200, 400)), again, flipped]))
    second_view = batch_view(monitor, "b1.csv")
    assert second_view["label_coverage"] == 1.0 and second_view["labeled"] is True
    assert second_view["labels_from"] == ["labels_b.csv", "labels_a.jsonl"]
    assert "metrics" in second_view["results"]["static-lr"]
    assert "shadow_metrics" in second_view["results"]["dynamic-lr"]  # v2, from b0 and b2, stands for static training
    conflict = next(event for event in monitor.events if event.kind == EventKind.LABEL_CONFLICT)
    assert f"id '{second['order'].iloc[1]}' of b1.csv: kept '{second['label'].iloc[1]}'" in conflict.message
    labels = status_report(monitor.store, monitor.config)["labels"]
    assert [c["id"] for c in labels["conflicts"]] == [str(second["order"].iloc[1])]
    assert labels["lag"] is None

    # The ids no batch carried are given up on after wait_seconds: an event and a quarantined copy.
    assert wait_until(lambda: any(e.kind == EventKind.LABELS_UNMATCHED for e in monitor.events), timeout=20)
    unmatched = next(event for event in monitor.events if event.kind == EventKind.LABELS_UNMATCHED)
    assert unmatched.message.startswith("3 label(s) of labels_b.csv whose ids no batch carried within 1.5 s")
    copies = list(monitor.paths.quarantine.glob("*labels_b.csv.unmatched.csv"))
    assert len(copies) == 1 and pd.read_csv(copies[0])["id"].tolist() == [900_001, 900_002, 900_003]
    assert status_report(monitor.store, monitor.config)["labels"]["waiting"] == 0


def estimate_value(result: dict) -> float:
    return result["estimate"]["value"]


def test_labels_that_come_first_wait_for_their_batch(monitor: Monitor) -> None:
    first, second = batch_with_ids(0), batch_with_ids(1)
    deliver(monitor, "b0.csv", first)
    deliver(monitor, "labels_early.csv", sales(second, slice(0, 400)))
    assert status_report(monitor.store, monitor.config)["labels"]["waiting"] == 400
    deliver(monitor, "b1.csv", second.drop(columns="label"))  # within wait_seconds: it takes them at once
    view = batch_view(monitor, "b1.csv")
    assert view["label_coverage"] == 1.0 and view["labels_from"] == ["labels_early.csv"]
    assert "metrics" in view["results"]["dynamic-lr"]
    assert status_report(monitor.store, monitor.config)["labels"]["waiting"] == 0


def test_a_bad_label_file_is_quarantined_with_its_reasons_and_a_copy_is_a_duplicate(monitor: Monitor) -> None:
    first, second = batch_with_ids(0), batch_with_ids(1)
    deliver(monitor, "b0.csv", first)
    deliver(monitor, "b1.csv", second.drop(columns="label"))
    bad = pd.DataFrame({"order": [10_000, 10_000, 10_001], "label": [0, 1, 7]})
    deliver(monitor, "labels_bad.csv", bad)
    record = next(r for r in monitor.store.files() if r.name == "labels_bad.csv")
    assert record.status == "quarantined"
    assert "1 id(s) labelled differently within the file, such as '10000'" in record.reason
    assert "label(s) '7' are none of the known classes ('0', '1')" in record.reason
    assert batch_view(monitor, "b1.csv")["label_coverage"] == 0.0  # nothing of it was used
    good = sales(second, slice(0, 400))
    deliver(monitor, "labels_good.csv", good)
    deliver(monitor, "labels_copy.csv", good)
    copy = next(r for r in monitor.store.files() if r.name == "labels_copy.csv")
    assert copy.status == "duplicate" and batch_view(monitor, "b1.csv")["labels_from"] == ["labels_good.csv"]


def test_the_lag_flag_is_raised_beyond_the_limit_and_cleared_when_the_labels_come(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    write_config(folder, LATE_CONFIG.replace("labeled_share = 0.9", "labeled_share = 0.9\nmax_lag_batches = 1"))
    monitor = Monitor(folder)
    events = []
    monitor.subscribe(events.append)
    monitor.start()
    try:
        frames = [batch_with_ids(index) for index in range(3)]
        deliver(monitor, "b0.csv", frames[0])
        deliver(monitor, "b1.csv", frames[1].drop(columns="label"))
        deliver(monitor, "b2.csv", frames[2].drop(columns="label"))
        assert status_report(monitor.store, monitor.config)["labels"]["lag"]["over"] is False  # one batch since b1
        assert not any(f["kind"] == "label_lag" for f in monitor.store.model_state("static-lr").flags)
        deliver(monitor, "b3.csv", batch_with_ids(3).drop(columns="label"))
        lag = status_report(monitor.store, monitor.config)["labels"]["lag"]
        assert (lag["file"], lag["batches_since"], lag["over"]) == ("b1.csv", 2, True)
        flags = {model: [f["kind"] for f in monitor.store.model_state(model).flags] for model in ("static-lr", "dynamic-lr")}
        assert all("label_lag" in kinds for kinds in flags.values()), flags
        deliver(monitor, "b4.csv", batch_with_ids(4).drop(columns="label"))  # still lagging: told once
        raised = [e for e in events if e.kind == EventKind.FLAGGED and "label_lag" in e.message]
        assert len(raised) == 1 and "b1.csv still waits for its labels, 2 batches later" in raised[0].message
        assert "label_lag" in [f["kind"] for f in monitor.store.model_state("static-lr").flags]
        deliver(monitor, "labels_1.csv", pd.concat([sales(frames[1], slice(0, 400)), sales(frames[2], slice(0, 400))]))
        assert status_report(monitor.store, monitor.config)["labels"]["lag"]["file"] == "b3.csv"
        assert not any(f["kind"] == "label_lag" for f in monitor.store.model_state("static-lr").flags)
    finally:
        monitor.close()


def rescore_failures(events: list, name: str) -> list:
    return [e for e in events if e.kind == EventKind.ERROR
            and e.message.startswith(f"{name}: its labels came but it could not be scored again")]


def test_a_rescore_that_fails_is_tried_again_between_files(monitor: Monitor) -> None:
    first, second = batch_with_ids(0), batch_with_ids(1)
    deliver(monitor, "b0.csv", first)
    deliver(monitor, "b1.csv", second.drop(columns="label"))
    b1 = next(r for r in monitor.store.files() if r.name == "b1.csv")
    archived = monitor.context.archive.path(b1.sha256)
    aside = archived.rename(archived.with_suffix(".aside"))  # its rows unreadable for a while
    deliver(monitor, "labels_1.csv", sales(second, slice(0, 400)))
    assert wait_until(lambda: rescore_failures(monitor.events, "b1.csv"), timeout=30)
    failure = rescore_failures(monitor.events, "b1.csv")[0]
    assert "FileNotFoundError" in failure.message and "tried again in 1 s" in failure.message
    view = batch_view(monitor, "b1.csv")
    assert view["label_coverage"] == 1.0  # the labels are kept ...
    assert "metrics" not in view["results"]["dynamic-lr"]  # ... and its results were not scored with them
    assert unscored(monitor.store.read) == [b1.id]

    aside.rename(archived)
    assert wait_until(lambda: "metrics" in batch_view(monitor, "b1.csv")["results"]["dynamic-lr"], timeout=60)
    assert unscored(monitor.store.read) == []
    view = batch_view(monitor, "b1.csv")
    assert view["results"]["static-lr"]["metrics"]["roc_auc"] > 0.7 and view["labeled"] is True
    assert wait_until(lambda: "b1.csv" in monitor.store.snapshots("dynamic-lr")[-1].data.get("files", []), timeout=60)


def test_a_rescore_that_failed_is_done_at_the_next_start(tmp_path: Path) -> None:
    """The serving snapshots' files are unreadable while the labels come; the next start scores the batch."""
    folder = tmp_path / "data"
    folder.mkdir()
    write_config(folder, LATE_CONFIG)
    second = batch_with_ids(1)
    backdate(write_batch(folder, "b0.csv", batch_with_ids(0)))
    backdate(write_batch(folder, "b1.csv", second.drop(columns="label")))
    run_once(folder)
    snapshots = sorted((folder / ".driftdeck" / "snapshots").rglob("v1.skops"))
    assert len(snapshots) == 2
    for path in snapshots:
        path.rename(path.with_suffix(".aside"))
    backdate(write_batch(folder, "labels_1.csv", sales(second, slice(0, 400))))
    events: list = []
    run_once(folder, events)
    assert "SnapshotError" in rescore_failures(events, "b1.csv")[0].message
    monitor = Monitor(folder)
    try:
        b1 = next(r for r in monitor.store.files() if r.name == "b1.csv")
        assert unscored(monitor.store.read) == [b1.id]
        assert "metrics" not in batch_view(monitor, "b1.csv")["results"]["static-lr"]
    finally:
        monitor.close()

    for path in snapshots:
        path.with_suffix(".aside").rename(path)
    events = []
    run_once(folder, events)
    assert not rescore_failures(events, "b1.csv")
    monitor = Monitor(folder)
    try:
        assert unscored(monitor.store.read) == []
        view = batch_view(monitor, "b1.csv")
        assert view["results"]["static-lr"]["metrics"]["roc_auc"] > 0.7
        assert view["results"]["dynamic-lr"]["serving_version"] == 1 and "metrics" in view["results"]["dynamic-lr"]
    finally:
        monitor.close()
