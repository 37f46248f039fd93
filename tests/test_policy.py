"""Training policies, the gate, snapshots and rollback, on real folders and real models."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import app.engine.monitor
from app.labels import label_signal_issue
from app.commands import CommandFailed
from app.engine.monitor import Monitor
from app.engine.train import gate, split_holdout
from app.snapshots import SnapshotError
from app.store import ModelState
from app.training import Trainer
from app.verdict import BatchEvidence, Evidence, decide
from tests.conftest import BASE_CONFIG, make_batch, write_batch, write_config
from tests import faults


STATIC_MODEL = '[[models]]\nname = "static-lr"\nmode = "static"\nestimator = "logistic_regression"\n\n'
DYNAMIC_ONLY = BASE_CONFIG.replace(STATIC_MODEL, "")  # the dynamic logistic regression alone, window 2
assert STATIC_MODEL in BASE_CONFIG


def run_stream(folder: Path, batches: list, trainer: Trainer | None = None) -> Monitor:
    """Write ``batches`` (frames) as b00.csv, b01.csv… and process them all; returns the open monitor."""
    for index, frame in enumerate(batches):
        write_batch(folder, f"b{index:02d}.csv", frame)
    monitor = Monitor(folder, trainer=trainer)
    monitor.run_once()
    return monitor


def results(monitor: Monitor, model: str) -> list[dict]:
    return [data for _, _, data in monitor.store.results(model)]


@pytest.fixture(scope="module")
def concept_flip(tmp_path_factory) -> Monitor:
    """Four batches with one label rule, then six where the rule's main sign flips (shared, module-wide)."""
    folder = tmp_path_factory.mktemp("flip")
    write_config(folder)
    monitor = run_stream(folder, [make_batch(i, flipped=i >= 4) for i in range(10)])
    yield monitor
    monitor.close()


def test_static_model_goes_stale_with_a_performance_drop(concept_flip: Monitor):
    static = results(concept_flip, "static-lr")
    assert [r["action"] for r in static[:4]][1:] == ["none", "none", "none"]
    assert all("performance_drop" in {f["kind"] for f in r["flags"]} for r in static[4:])
    state = concept_flip.store.model_state("static-lr")
    assert state.state == "stale"
    assert state.flags[0]["kind"] == "performance_drop"
    # never retrained on its own
    assert [s.version for s in concept_flip.store.snapshots("static-lr")] == [1]


def test_dynamic_model_recovers_within_two_batches(concept_flip: Monitor):
    dynamic = results(concept_flip, "dynamic-lr")
    before = sum(r["metrics"]["roc_auc"] for r in dynamic[1:4]) / 3
    assert dynamic[4]["metrics"]["roc_auc"] < 0.5  # the change hits the serving model too
    assert dynamic[6]["metrics"]["roc_auc"] > before - 0.05
    assert dynamic[7]["metrics"]["roc_auc"] > before - 0.05
    assert concept_flip.store.model_state("dynamic-lr").state in ("healthy", "watch")


def test_verdict_says_dynamic_training_is_worth_it_after_a_change(concept_flip: Monitor):
    verdict = concept_flip.store.model_state("static-lr").verdict
    assert verdict["needs"] == "dynamic", verdict["text"]
    assert verdict["text"].startswith("dynamic training gains")
    dynamic_verdict = concept_flip.store.model_state("dynamic-lr").verdict
    assert dynamic_verdict["needs"] == "dynamic", dynamic_verdict["text"]
    assert dynamic_verdict["retrains"] >= 5


def test_stable_stream_keeps_static_healthy_and_says_static_is_enough(data_dir: Path):
    monitor = run_stream(data_dir, [make_batch(i) for i in range(7)])
    try:
        state = monitor.store.model_state("static-lr")
        assert state.state == "healthy", state.flags
        assert not any(f["kind"] == "performance_drop" for r in results(monitor, "static-lr") for f in r["flags"])
        assert state.verdict["needs"] == "static", state.verdict["text"]
        assert state.verdict["text"].startswith("static is enough for this data")
    finally:
        monitor.close()


def test_shuffled_labels_never_reach_the_serving_model(data_dir: Path):
    frames = [make_batch(i) for i in range(4)] + [make_batch(4, shuffled=True)] + [make_batch(i) for i in (5, 6)]
    monitor = run_stream(data_dir, frames)
    try:
        corrupted = results(monitor, "dynamic-lr")[4]
        assert corrupted["action"] != "promoted"
        assert not corrupted["trainable"]
        assert any("labels look like noise" in f["detail"] for f in corrupted["flags"] if f["kind"] == "data_quality")
        serving = monitor.registry.serving("dynamic-lr")
        assert "b04.csv" not in serving.data["files"]
        assert results(monitor, "dynamic-lr")[6]["metrics"]["roc_auc"] > 0.8
    finally:
        monitor.close()


def test_the_label_check_runs_only_when_no_serving_model_already_predicts_the_labels(data_dir: Path, monkeypatch):
    checked = []

    def counting_check(frame, *args, **kwargs):
        checked.append(len(checked))
        return label_signal_issue(frame, *args, **kwargs)

    monkeypatch.setattr(app.engine.monitor, "label_signal_issue", counting_check)
    frames = [make_batch(0), make_batch(1), make_batch(2, shuffled=True)]
    monitor = run_stream(data_dir, frames)
    try:
        # b00: nothing serves yet, so it is checked; b01: both models predict its labels, so it is not;
        # b02: shuffled, no model predicts it, so it is checked once for both models, and refused.
        assert len(checked) == 2
        for model in ("static-lr", "dynamic-lr"):
            assert results(monitor, model)[1]["trainable"]
            assert not results(monitor, model)[2]["trainable"]
    finally:
        monitor.close()


def test_a_bad_promotion_is_rolled_back_on_its_own(data_dir: Path):
    # batch 4's labels are inverted (learnable, so no check refuses them); a window of one batch
    # lets its candidate win on its own holdout and serve. On batch 5 the previous snapshot is far
    # better, so driftdeck rolls back on its own.
    write_config(data_dir, **{"window = 2": "window = 1"})
    frames = [make_batch(i) for i in range(4)] + [make_batch(4)] + [make_batch(i) for i in (5, 6)]
    frames[4]["label"] = 1 - frames[4]["label"]
    monitor = run_stream(data_dir, frames)
    try:
        dynamic = results(monitor, "dynamic-lr")
        assert dynamic[4]["action"] == "promoted"
        assert dynamic[5]["action"] == "rolled_back"
        history = monitor.store.serving_history("dynamic-lr")
        rollback = next(change for change in history if change.reason == "auto_rollback")
        bad = dynamic[4]["candidate_version"]
        assert rollback.version == dynamic[4]["serving_version"]
        assert monitor.store.snapshot("dynamic-lr", bad).status == "rolled_back"
        assert dynamic[5]["flags"][0]["kind"] == "performance_drop"
    finally:
        monitor.close()


def test_a_batch_of_one_class_after_a_bad_promotion_judges_nothing_and_the_next_batch_rolls_back(data_dir: Path):
    """ROC AUC is not defined on a batch of one class: the rollback compared NaN with NaN and rolled back."""
    write_config(data_dir, **{"window = 2": "window = 1"})
    frames = [make_batch(i) for i in range(4)] + [make_batch(4)] + [make_batch(5, rows=40), make_batch(6)]
    frames[4]["label"] = 1 - frames[4]["label"]
    frames[5]["label"] = 1
    monitor = run_stream(data_dir, frames)
    try:
        dynamic = results(monitor, "dynamic-lr")
        assert dynamic[4]["action"] == "promoted"
        assert dynamic[5]["fewest_class_rows"] == 0 and dynamic[5]["action"] != "rolled_back"
        assert dynamic[6]["action"] == "rolled_back"
    finally:
        monitor.close()


def test_rollback_then_promote_returns_to_the_same_version(concept_flip: Monitor):
    before = concept_flip.store.serving_version("dynamic-lr")
    came_from, went_to = concept_flip.dispatcher.rollback("dynamic-lr")
    assert came_from == before and went_to < before
    assert concept_flip.store.serving_version("dynamic-lr") == went_to
    assert concept_flip.store.snapshot("dynamic-lr", before).status == "rolled_back"
    serving_file = json.loads((concept_flip.paths.serving / "dynamic-lr.json").read_text())
    assert serving_file["version"] == went_to and serving_file["why"] == "rollback"
    concept_flip.dispatcher.promote("dynamic-lr", before)
    assert concept_flip.store.serving_version("dynamic-lr") == before
    reasons = [change.reason for change in concept_flip.store.serving_history("dynamic-lr")][-2:]
    assert reasons == ["rollback", "manual"]


def test_rollback_without_an_earlier_snapshot_is_refused(data_dir: Path):
    monitor = run_stream(data_dir, [make_batch(0)])
    try:
        with pytest.raises(CommandFailed, match="no earlier good snapshot"):
            monitor.dispatcher.rollback("static-lr")
        assert monitor.store.serving_version("static-lr") == 1
    finally:
        monitor.close()


def test_a_tampered_snapshot_is_refused_and_the_model_flagged(data_dir: Path):
    monitor = run_stream(data_dir, [make_batch(0)])
    try:
        path = monitor.registry.snapshot_file("static-lr", 1)
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        monitor.registry.forget("static-lr", 1)
        with pytest.raises(SnapshotError, match="modified after it was written"):
            monitor.registry.load("static-lr", 1)
        write_batch(data_dir, "b01.csv", make_batch(1))
        monitor.run_once()
        latest = results(monitor, "static-lr")[-1]
        assert "modified after it was written" in latest["load_error"]
        assert latest["flags"][0]["kind"] == "data_quality"
        assert "metrics" not in latest
    finally:
        monitor.close()


def test_a_manual_retrain_of_a_static_model_faces_the_gate(concept_flip: Monitor):
    outcome = concept_flip.dispatcher.retrain_now("static-lr")
    assert outcome.result.action in ("promoted", "rejected")
    versions = [s.version for s in concept_flip.store.snapshots("static-lr")]
    assert versions == [1, 2]
    record = concept_flip.store.snapshot("static-lr", 2)
    assert record.data["gate"]
    assert record.data["serving_holdout_metrics"] is not None


def test_a_training_job_that_raises_is_recorded_and_serving_is_untouched(data_dir: Path):
    monitor = run_stream(data_dir, [make_batch(0)])
    monitor.trainer = monitor.runners["dynamic-lr"].train.trainer = Trainer(fit=faults.raising_fit)
    try:
        write_batch(data_dir, "b01.csv", make_batch(1))
        write_batch(data_dir, "b02.csv", make_batch(2))
        monitor.run_once()
        snapshots = {s.version: s for s in monitor.store.snapshots("dynamic-lr")}
        assert snapshots[2].status == "failed" and "RuntimeError: boom" in snapshots[2].reason
        assert monitor.store.serving_version("dynamic-lr") == 1
        assert len(monitor.store.files(status="ingested")) == 3  # the next batch proceeded
    finally:
        monitor.close()


def test_a_training_job_that_hangs_times_out(data_dir: Path):
    monitor = run_stream(data_dir, [make_batch(0)])
    monitor.runners["dynamic-lr"].train.trainer = Trainer(fit=faults.hanging_fit, timeout=1.0)
    try:
        write_batch(data_dir, "b01.csv", make_batch(1))
        monitor.run_once()
        failed = monitor.store.snapshot("dynamic-lr", 2)
        assert failed.status == "failed" and "timed out" in failed.reason
        assert monitor.store.serving_version("dynamic-lr") == 1
    finally:
        monitor.close()


def test_killing_the_process_during_training_leaves_serving_and_store_intact(data_dir: Path):
    # version 1 is trained here, quickly; then the config asks for a slow forest, so the watching
    # process is surely killed while it trains version 2
    run_stream(data_dir, [make_batch(0)]).close()
    write_config(data_dir, **{'estimator = "logistic_regression"\nwindow = 2':
                              'estimator = "random_forest"\nparams = {n_estimators = 3000}\nwindow = 2'})
    for index in (1, 2):
        write_batch(data_dir, f"b{index:02d}.csv", make_batch(index))
    folder = data_dir
    process = subprocess.Popen([sys.executable, "-m", "app", "watch", str(folder), "--headless", "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in process.stdout:
            event = json.loads(line)
            if event["kind"] == "training_progress" and event["data"].get("version") == 2 and event["data"]["progress"] >= 0.3:
                break
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    write_config(data_dir)  # back to the quick estimator: the restart need not wait for the forest
    monitor = Monitor(folder)
    try:
        assert monitor.store.serving_version("dynamic-lr") == 1
        monitor.registry.load("dynamic-lr", 1)
        assert json.loads((monitor.paths.serving / "dynamic-lr.json").read_text())["version"] == 1
        monitor.run_once()
        names = [record.name for record in monitor.store.files(status="ingested")]
        assert sorted(names) == ["b00.csv", "b01.csv", "b02.csv"]
    finally:
        monitor.close()


def test_gate_rules():
    assert gate("roc_auc", 0.80, 0.805, 0.5, tolerance=0.01, min_metric=None).passed
    assert not gate("roc_auc", 0.78, 0.80, 0.5, tolerance=0.01, min_metric=None).passed
    assert not gate("roc_auc", 0.90, 0.80, 0.5, tolerance=0.01, min_metric=0.95).passed
    assert not gate("roc_auc", 0.90, 0.80, 0.5, tolerance=0.01, min_metric=None, batch_ok=False).passed
    first = gate("roc_auc", 0.49, None, 0.5, tolerance=0.01, min_metric=None)
    assert not first.passed and first.no_skill and "no skill" in first.reason
    # a first candidate must beat the naive baseline beyond the noise, not by any margin
    assert not gate("roc_auc", 0.53, None, 0.5, tolerance=0.01, min_metric=None, skill_error=0.03).passed
    assert gate("roc_auc", 0.60, None, 0.5, tolerance=0.01, min_metric=None, skill_error=0.03).passed
    # error metrics: lower is better, tolerance is a fraction of the serving value
    assert gate("rmse", 10.05, 10.0, 20.0, tolerance=0.01, min_metric=None).passed
    assert not gate("rmse", 10.2, 10.0, 20.0, tolerance=0.01, min_metric=None).passed


def test_holdout_is_the_newest_rows(data_dir: Path):
    frame = make_batch(0, rows=100).sample(frac=1, random_state=1)
    train, holdout = split_holdout(frame, "ts")
    assert len(holdout) == 20 and holdout["ts"].min() >= train["ts"].max()


def evidence(static, dynamic, errors=None, *, model="m-static", mode="static", metric="roc_auc", seconds=None):
    errors = errors or [None] * len(static)
    seconds = seconds or [None] * len(static)
    return Evidence(model, mode, metric, [BatchEvidence(i, s, d, e, t) for i, (s, d, e, t)
                                          in enumerate(zip(static, dynamic, errors, seconds))])


def test_verdict_weighs_gain_against_noise():
    clear = decide([evidence([0.70, 0.71, 0.69, 0.70, 0.72], [0.80, 0.82, 0.79, 0.81, 0.80], seconds=[0.5] * 5)], required=5)
    assert clear.needs == "dynamic" and "gains 10.0 points of ROC AUC" in clear.text and "5 retrains" in clear.text
    noisy = decide([evidence([0.70, 0.80, 0.65, 0.75], [0.72, 0.77, 0.68, 0.74])], required=4)
    assert noisy.needs == "undecided" and "within the noise" in noisy.text
    flat = decide([evidence([0.80] * 5, [0.80, 0.801, 0.799, 0.80, 0.80], [0.005] * 5)], required=5)
    assert flat.needs == "static" and flat.text.startswith("static is enough")
    errors = decide([evidence([10.0, 10.0, 10.0], [8.0, 8.1, 7.9], metric="rmse")], required=3)
    assert errors.needs == "dynamic" and "cuts RMSE by 20.0%" in errors.text


def test_verdict_needs_verdict_batches_before_it_decides():
    early = decide([evidence([0.70, 0.71], [0.95, 0.96], [0.001, 0.001])], required=5)
    assert early.needs == "undecided" and "(2 of 5)" in early.text and early.gain is None
    # "static is enough ... -0.3 points ± 4.3 points over the last 2 batches" was a firm verdict from no evidence
    wide = decide([evidence([0.70, 0.71], [0.697, 0.707], [0.03, 0.03])], required=2)
    assert wide.needs == "undecided"


def test_an_error_metric_verdict_reads_the_right_way_round():
    # the dynamic shadow's RMSE is lower on every batch, by less than the noise
    small = decide([evidence([10.0] * 5, [9.95] * 5, [0.5] * 5, metric="rmse")], required=5)
    assert small.needs == "undecided" and small.gain > 0
    assert "dynamic training cuts RMSE by 0.5%" in small.text and "+" not in small.text
    worse = decide([evidence([10.0] * 5, [10.05] * 5, [0.5] * 5, metric="rmse")], required=5)
    assert "dynamic training raises RMSE by 0.5%" in worse.text


def test_verdict_with_sampling_errors_sees_a_regime_change_as_a_gain():
    # three batches before a change (no gain) and two after (a large one): the spread of the gains is
    # large, but each batch's own sampling error is small, so the gain is real
    static = [0.86, 0.86, 0.86, 0.45, 0.46]
    dynamic = [0.86, 0.85, 0.86, 0.65, 0.86]
    assert decide([evidence(static, dynamic)], required=5).needs == "undecided"
    assert decide([evidence(static, dynamic, [0.02] * 5)], required=5).needs == "dynamic"


def test_one_verdict_pools_every_model_and_explains_a_stale_model():
    served_static = evidence([0.80] * 5, [0.801] * 5, [0.004] * 5, model="a-static")
    served_dynamic = evidence([0.80] * 5, [0.80] * 5, [0.004] * 5, model="a-dynamic", mode="dynamic")
    states = {"a-static": ModelState(state="stale", flags=[{"kind": "performance_drop", "detail": "..."}]),
              "a-dynamic": ModelState(state="healthy")}
    verdict = decide([served_static, served_dynamic], required=5, states=states)
    assert verdict.needs == "static" and verdict.batches == 5
    assert [c.split(" ")[0] for c in verdict.comparisons] == ["a-static", "a-dynamic"]
    assert "a-static is stale now (performance drop), but retraining has not beaten it beyond the noise" in verdict.text


def test_a_change_of_unit_is_monitored_but_never_trained_on(data_dir: Path):
    frames = [make_batch(i) for i in range(3)]
    frames[2]["x3"] = frames[2]["x3"].abs() * 1000 + 5000
    monitor = run_stream(data_dir, frames)
    try:
        broken = results(monitor, "dynamic-lr")[2]
        assert not broken["trainable"] and broken["action"] != "promoted"
        assert any("change of unit" in flag["detail"] for flag in broken["flags"] if flag["kind"] == "data_quality")
        assert "b02.csv" not in monitor.registry.serving("dynamic-lr").data["files"]
    finally:
        monitor.close()


def test_a_refused_first_candidate_is_followed_by_one_that_learns_from_the_whole_window(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    write_config(folder, text=DYNAMIC_ONLY.replace("window = 2", "window = 3\nmin_metric = 0.999"))
    monitor = run_stream(folder, [make_batch(i) for i in range(4)])
    try:
        trained = {s.version: s.data["files"] for s in monitor.store.snapshots("dynamic-lr")}
    finally:
        monitor.close()
    assert trained == {1: ["b00.csv"], 2: ["b00.csv", "b01.csv"], 3: ["b00.csv", "b01.csv", "b02.csv"],
                       4: ["b01.csv", "b02.csv", "b03.csv"]}


def test_static_training_is_stood_for_by_the_first_version_that_served_having_learned_from_a_whole_window(tmp_path):
    """A first version trained on the one batch there was would credit dynamic training with what more rows
    give: batches are compared with a static counterpart only once a whole-window version has served."""
    folder = tmp_path / "data"
    folder.mkdir()
    write_config(folder, text=DYNAMIC_ONLY)
    monitor = run_stream(folder, [make_batch(i) for i in range(4)])
    try:
        served = [r["serving_version"] for r in results(monitor, "dynamic-lr")]
        compared = ["shadow_metrics" in r for r in results(monitor, "dynamic-lr")]
        files = {s.version: len(s.data["files"]) for s in monitor.store.snapshots("dynamic-lr")}
    finally:
        monitor.close()
    assert files[1] == 1 and files[2] == 2 and served[:3] == [None, 1, 2]
    assert compared[:3] == [False, False, True]


def test_a_batch_without_labels_leaves_the_last_judgment_of_the_serving_version_standing(tmp_path):
    """A model shown no better than guessing, or worse than at training, is not called healthy again because the
    next batch came without labels: only a batch that can tell may clear it."""
    folder = tmp_path / "data"
    folder.mkdir()
    write_config(folder)
    monitor = run_stream(folder, [make_batch(i, flipped=i >= 4) for i in range(6)])
    try:
        assert monitor.store.model_state("static-lr").state == "stale"
        write_batch(folder, "b06.csv", make_batch(6, flipped=True).drop(columns="label"))
        monitor.run_once()
        state = monitor.store.model_state("static-lr")
        assert results(monitor, "static-lr")[-1]["flags"] == []  # the batch itself judges nothing
        assert state.state == "stale" and state.flags[0]["kind"] == "performance_drop"
        assert state.flags[0]["detail"].endswith("(on b05.csv, the last batch that could tell)")
        write_batch(folder, "b07.csv", make_batch(7, flipped=False))
        monitor.run_once()
        assert monitor.store.model_state("static-lr").state in ("healthy", "watch")  # labels that show it is fine
    finally:
        monitor.close()
