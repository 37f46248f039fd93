"""Lineage and the replay of what an excluded batch cost, on a real folder, real models and a real store."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from rich.console import Console

from app.exclusion_cost import ArchivedBatch, cost_table, replay_cost
from app.lineage import Taint, repair_batches, taints
from app.engine.monitor import Monitor
from app.store import SnapshotRecord
from tests.conftest import make_batch, run_once, write_batch, write_config


@pytest.fixture(scope="module")
def stream(tmp_path_factory) -> Path:
    """Five batches; the third's labels were joined from another target (they follow x3, which the real label
    ignores)."""
    folder = tmp_path_factory.mktemp("cost")
    write_config(folder)
    for index in range(5):
        frame = make_batch(index)
        write_batch(folder, f"b{index}.csv", frame.assign(label=(frame["x3"] > 0).astype(int)) if index == 2 else frame)
    run_once(folder)
    return folder


def archived(folder: Path) -> list[ArchivedBatch]:
    monitor = Monitor(folder)
    try:
        return [ArchivedBatch(record.name, record.sha256, monitor.context.archive.path(record.sha256))
                for record in monitor.store.files("ingested")]
    finally:
        monitor.close()


def state_fingerprint(folder: Path) -> dict[str, str]:
    state = folder / ".driftdeck"
    return {str(path.relative_to(state)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(state.rglob("*")) if path.is_file() and path.suffix not in (".lock",)
            and not path.name.endswith(("-wal", "-shm"))}


def test_every_snapshot_that_learned_from_a_batch_is_tainted_and_no_other(stream: Path) -> None:
    monitor = Monitor(stream)
    try:
        bad = monitor.store.files("ingested")[2]
        for model in ("static-lr", "dynamic-lr"):
            records = monitor.store.snapshots(model)
            found = taints(records, {bad.sha256: bad.name})
            learned = {r.version for r in records if bad.sha256 in r.data.get("batch_shas", [])}
            assert set(found) == learned
            assert all(taint.batches == ("b2.csv",) for taint in found.values())
        assert taints(monitor.store.snapshots("dynamic-lr"), {bad.sha256: bad.name})  # the stream did learn from it
        assert not taints(monitor.store.snapshots("static-lr"), {bad.sha256: bad.name})  # trained on b0 only
    finally:
        monitor.close()


def test_the_repaired_window_is_the_snapshots_own_less_the_excluded_batch(stream: Path) -> None:
    monitor = Monitor(stream)
    try:
        bad = monitor.store.files("ingested")[2]
        excluded = {bad.sha256: bad.name}
        tainted = taints(monitor.store.snapshots("dynamic-lr"), excluded)
        assert tainted
        for version in tainted:
            record = monitor.store.snapshot("dynamic-lr", version)
            kept = repair_batches(record, excluded)
            assert [name for name, _ in kept] == [name for name in record.data["files"] if name != "b2.csv"]
            assert bad.sha256 not in [sha for _, sha in kept]
    finally:
        monitor.close()


def record(version: int, shas: list[str], parent: int | None, incremental: bool) -> SnapshotRecord:
    return SnapshotRecord("m", version, parent, 0.0, "retired", "", f"v{version}.skops", "x",
                          {"files": [f"{sha}.csv" for sha in shas], "batch_shas": shas,
                           "config": {"incremental": incremental}})


def test_an_incremental_snapshot_inherits_its_parents_taint_and_a_refit_one_does_not() -> None:
    chain = [record(1, ["a"], None, True), record(2, ["b"], 1, True), record(3, ["c"], 2, True)]
    assert taints(chain, {"a": "a.csv"}) == {1: Taint(1, ("a.csv",)), 2: Taint(2, ("a.csv",)), 3: Taint(3, ("a.csv",))}
    assert taints(chain, {"b": "b.csv", "a": "a.csv"})[3] == Taint(3, ("a.csv", "b.csv"))
    refit = [record(1, ["a"], None, False), record(2, ["b"], 1, False)]
    assert taints(refit, {"a": "a.csv"}) == {1: Taint(1, ("a.csv",))}


def test_the_replay_with_the_batch_reproduces_history_and_without_it_no_model_learns_from_it(stream: Path) -> None:
    batches = archived(stream)
    before = state_fingerprint(stream)
    cost = replay_cost(stream, batches, batches[2])
    assert state_fingerprint(stream) == before  # the real state is only read
    monitor = Monitor(stream)
    try:
        names = {r.id: r.name for r in monitor.store.files("ingested")}
        recorded = {(names[file_id], model): data for file_id, model, data in monitor.store.results()}
    finally:
        monitor.close()
    assert {row.file for row in cost.rows} == {"b3.csv", "b4.csv"}
    assert {row.model for row in cost.rows} == {"static-lr", "dynamic-lr"}
    for row in cost.rows:
        happened = recorded[(row.file, row.model)]
        assert row.with_version == happened["serving_version"]
        assert row.with_value == pytest.approx(happened["metrics"][happened["metric"]])
        assert "b2.csv" not in row.without_trained_on
        assert row.gain == pytest.approx(row.without_value - row.with_value)  # roc_auc: higher is better
    dynamic_b3 = next(row for row in cost.rows if (row.file, row.model) == ("b3.csv", "dynamic-lr"))
    assert "b2.csv" in dynamic_b3.with_trained_on and not dynamic_b3.same_model
    summary = cost.to_dict()["summary"]["dynamic-lr"]
    assert summary["batches"] == 2 and summary["other_model"] >= 1
    text = _render(cost_table(cost, 120))
    assert "Without b2.csv" in text and "dynamic-lr" in text and f"{dynamic_b3.gain:+.4f}" in text
    assert f"v{dynamic_b3.with_version} {dynamic_b3.with_value:.4f}" in text


def _render(table) -> str:
    console = Console(width=120, record=True)
    console.print(table)
    return console.export_text()
