"""Judgments a user can trust on data nobody prepared: small batches, rare flags, unlearnable rules,
labels that change vocabulary, dates, and a validate that cannot validate."""

from __future__ import annotations

import shutil
import tomllib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.labels import label_signal, label_signal_issue
from app.engine.monitor import Monitor
from app.engine.assess import unit_change
from app.report import status_report
from app.engine.reproduce import exit_code
from app.scaffold import infer_config_text
from app.stats.profile import Profile
from app.training import Trainer
from tests import faults
from tests.conftest import STATIC_ONLY_CONFIG, backdate, make_batch, write_batch, write_config

SCHEMA = {"x1": "numeric", "x2": "numeric", "x3": "numeric", "color": "categorical"}


OPEN_MONITORS: list[Monitor] = []


@pytest.fixture(autouse=True)
def close_monitors():
    """Each test reads the monitors it ran afterwards; they are closed (store, training process) once it ends."""
    yield
    while OPEN_MONITORS:
        OPEN_MONITORS.pop().close()


def run_stream(folder: Path, batches: list[pd.DataFrame], first: int = 0) -> Monitor:
    for index, frame in enumerate(batches, start=first):
        write_batch(folder, f"b{index:02d}.csv", frame)
    monitor = Monitor(folder)
    OPEN_MONITORS.append(monitor)
    monitor.run_once()
    return monitor


def results(monitor: Monitor, model: str) -> list[dict]:
    return [data for _, _, data in monitor.store.results(model)]


def flag_details(result: dict, kind: str) -> list[str]:
    return [flag["detail"] for flag in result["flags"] if flag["kind"] == kind]


def signal_batch(seed: int, rows: int, slope: float) -> pd.DataFrame:
    """Labels with a logistic dependence on x1: slope 1.0 gives a true ROC AUC of 0.74."""
    frame = make_batch(0, rows=rows, seed=seed)
    rng = np.random.default_rng(seed + 10_000)
    frame["label"] = (rng.random(rows) < 1 / (1 + np.exp(-slope * frame["x1"]))).astype(int)
    return frame


def ring_batch(index: int, rows: int = 800) -> pd.DataFrame:
    """A rule no linear model can learn: positive when |x1| is large (10% of labels flipped)."""
    frame = make_batch(index, rows=rows)
    rng = np.random.default_rng(500 + index)
    frame["label"] = ((frame["x1"].abs() > 0.7) ^ (rng.random(rows) < 0.1)).astype(int)
    return frame


# --- the unit-change rule: like with like, never a rare flag or a sparse count ------------------------------


def with_sparse_columns(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame["rare"] = (rng.random(len(frame)) < 0.05).astype(int)  # 95% zeros
    frame["visits"] = rng.poisson(0.03, len(frame))               # a sparse count
    return frame


def test_a_rare_binary_or_sparse_count_column_is_never_a_change_of_unit():
    reference = Profile.build(with_sparse_columns(make_batch(0, rows=5000), 1), {**SCHEMA, "rare": "numeric", "visits": "numeric"})
    for seed in range(30):
        batch = with_sparse_columns(make_batch(seed, rows=300), 100 + seed)
        for column in ("rare", "visits"):
            assert unit_change(column, reference.columns[column], batch[column]) is None, (column, seed)


def test_a_real_change_of_unit_is_still_caught_both_ways():
    reference = Profile.build(pd.DataFrame({"grams": np.random.default_rng(0).gamma(2, 500, 2000)}), {"grams": "numeric"})
    batch = pd.Series(np.random.default_rng(1).gamma(2, 500, 300))
    assert "change of unit" in unit_change("grams", reference.columns["grams"], batch / 1000)   # now in kilograms
    assert "change of unit" in unit_change("grams", reference.columns["grams"], batch * 1000)   # now in milligrams
    assert unit_change("grams", reference.columns["grams"], batch) is None


def test_a_stream_with_a_rare_flag_and_a_sparse_count_trains_and_serves(data_dir: Path):
    write_config(data_dir, **{'color = "categorical"': 'color = "categorical"\nrare = "numeric"\nvisits = "numeric"'})
    monitor = run_stream(data_dir, [with_sparse_columns(make_batch(i), 100 + i) for i in range(4)])
    try:
        for model in ("static-lr", "dynamic-lr"):
            assert all(r["trainable"] for r in results(monitor, model)), [r["quality_issues"] for r in results(monitor, model)]
            assert monitor.store.serving_version(model) is not None
    finally:
        monitor.close()


# --- the label check has power, or says it cannot tell ------------------------------------------------------


def test_real_labels_on_a_small_batch_are_never_refused():
    # true ROC AUC 0.74 at 300 rows: refused 55% of the time before
    refused = [seed for seed in range(20) if label_signal_issue(signal_batch(seed, 300, 1.0), SCHEMA, "label", "classification", "ts")]
    assert refused == []
    assert label_signal(signal_batch(0, 300, 1.0), SCHEMA, "label", "classification", "ts").status in ("signal", "undetermined")


def test_shuffled_labels_on_a_large_batch_are_still_refused():
    for seed in range(3):
        frame = make_batch(seed, rows=5000, shuffled=True)
        signal = label_signal(frame, SCHEMA, "label", "classification", "ts")
        assert signal.status == "noise" and "labels look like noise" in signal.message


def test_too_few_rows_are_undetermined():
    assert label_signal(make_batch(0, rows=150, shuffled=True), SCHEMA, "label", "classification", "ts").status == "undetermined"


def test_an_estimator_that_cannot_learn_the_rule_is_named_not_the_labels(data_dir: Path):
    monitor = run_stream(data_dir, [ring_batch(0)])
    try:
        for model in ("static-lr", "dynamic-lr"):
            [first] = results(monitor, model)
            assert first["action"] == "rejected" and monitor.store.serving_version(model) is None
            assert "logistic_regression cannot learn this data" in first["action_detail"]
            assert "a gradient-boosting model reaches ROC AUC 0.8" in first["action_detail"], first["action_detail"]
            assert "corrupted" not in first["action_detail"] and not flag_details(first, "data_quality")
            assert first["trainable"]
    finally:
        monitor.close()


# --- no skill is never healthy ------------------------------------------------------------------------------


def test_a_serving_model_no_better_than_chance_is_flagged_no_skill_and_stale(data_dir: Path):
    # a generous performance_tolerance keeps performance_drop quiet: no_skill alone must make it stale
    write_config(data_dir, **{'estimator = "logistic_regression"\n\n': 'estimator = "logistic_regression"\nperformance_tolerance = 0.9\n\n'})
    monitor = run_stream(data_dir, [make_batch(i) for i in range(2)] + [ring_batch(i) for i in (2, 4)])
    try:
        static = results(monitor, "static-lr")
        assert not flag_details(static[1], "no_skill")
        for result in static[2:]:
            [detail] = flag_details(result, "no_skill")
            assert "not beyond the naive baseline" in detail and "no better than guessing" in detail
            assert not flag_details(result, "performance_drop")
        state = monitor.store.model_state("static-lr")
        assert state.state == "stale" and state.flags[0]["kind"] == "no_skill"
    finally:
        monitor.close()


# --- label vocabulary ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("vocabulary", [{0: "no", 1: "yes"}, {0: "false", 1: "true"}, {0: 1, 1: 2}])
def test_a_change_of_label_vocabulary_is_flagged_and_never_trained_on(data_dir: Path, vocabulary: dict):
    renamed = make_batch(2)
    renamed["label"] = renamed["label"].map(vocabulary)
    monitor = run_stream(data_dir, [make_batch(0), make_batch(1), renamed])
    try:
        for model in ("static-lr", "dynamic-lr"):
            changed = results(monitor, model)[2]
            assert not changed["trainable"] and changed["action"] != "promoted"
            [detail] = flag_details(changed, "data_quality")
            for label in vocabulary.values():
                if str(label) not in ("0", "1"):
                    assert repr(str(label)).lower() in detail.lower()
            assert "'0', '1'" in detail
            assert monitor.registry.serving(model).data["classes"] == ["0", "1"]
            assert "b02.csv" not in monitor.registry.serving(model).data["files"]
    finally:
        monitor.close()


def test_a_new_class_beside_the_known_ones_trains_only_by_an_explicit_retrain(data_dir: Path):
    grown = make_batch(2)
    grown.loc[grown["x2"] > 1.0, "label"] = 2
    monitor = run_stream(data_dir, [make_batch(0), make_batch(1), grown])
    try:
        new = results(monitor, "dynamic-lr")[2]
        assert not new["trainable"] and new["action"] != "promoted" and new["new_classes"] == ["2"]
        assert "new class '2'" in flag_details(new, "data_quality")[0]
        assert monitor.registry.serving("dynamic-lr").data["classes"] == ["0", "1"]
        outcome = monitor.dispatcher.retrain_now("dynamic-lr")
        assert "b02.csv" in monitor.store.snapshot("dynamic-lr", outcome.result.candidate_version).data["files"]
    finally:
        monitor.close()


# --- one verdict --------------------------------------------------------------------------------------------


def test_status_gives_one_verdict_for_the_stream_and_each_model_its_comparison(data_dir: Path):
    monitor = run_stream(data_dir, [make_batch(i, flipped=i >= 3) for i in range(8)])
    try:
        report = status_report(monitor.store, monitor.config)
        verdict = report["verdict"]
        assert set(verdict) >= {"needs", "text", "gain", "noise", "batches"}
        assert verdict["needs"] == "dynamic" and verdict["batches"] == 5
        assert len(verdict["comparisons"]) == 2
        for model in report["models"]:
            assert model["verdict"] == verdict["text"]
            assert model["comparison"]["needs"] in ("static", "dynamic", "undecided")
    finally:
        monitor.close()


def test_few_labeled_batches_give_an_undecided_verdict(data_dir: Path):
    monitor = run_stream(data_dir, [make_batch(i) for i in range(3)])
    try:
        verdict = status_report(monitor.store, monitor.config)["verdict"]
        assert verdict["needs"] == "undecided" and "not enough labeled batches" in verdict["text"]
    finally:
        monitor.close()


# --- init: dates and free text are not categories ---------------------------------------------------------


def test_init_never_makes_a_date_column_or_free_text_a_categorical_feature(tmp_path: Path):
    frame = make_batch(0, rows=200)
    frame["signup_date"] = pd.date_range("2024-01-01", periods=200, freq="D").strftime("%Y-%m-%d")
    frame["comment"] = [f"note number {i} about the order" for i in range(200)]
    frame["size"] = np.where(np.arange(200) % 2, "small", "large")
    write_batch(tmp_path, "2025.csv", frame)
    text = infer_config_text(tmp_path, "label", "ts")
    schema = tomllib.loads(text)["schema"]
    assert "signup_date" not in schema and "comment" not in schema and schema["size"] == "categorical"
    assert '# "signup_date" is left out of the features: its values are dates' in text
    assert '# "comment" is left out of the features: text whose values almost never repeat' in text
    # two time columns and no --timestamp: neither is guessed as the timestamp, neither is a feature
    proposed = tomllib.loads(infer_config_text(tmp_path, "label"))
    assert "timestamp" not in proposed and not {"ts", "signup_date"} & set(proposed["schema"])


# --- validate: three outcomes -------------------------------------------------------------------------------


@pytest.fixture
def served(data_dir: Path) -> Path:
    monitor = run_stream(data_dir, [make_batch(i) for i in range(2)])
    monitor.close()
    return data_dir


def test_validate_says_it_could_not_validate_when_retraining_raises(served: Path):
    monitor = Monitor(served, trainer=Trainer(fit=faults.raising_fit))
    try:
        result = monitor.dispatcher.validate("dynamic-lr")
    finally:
        monitor.close()
    assert result.outcome == "not_validated" and "retraining failed" in result.summary
    assert "could not validate" in result.summary and exit_code([result.outcome]) == 2


def test_validate_says_it_could_not_validate_without_archived_batches(served: Path):
    for archived in (served / ".driftdeck" / "batches").rglob("*"):
        if archived.is_file():
            archived.unlink()
    monitor = Monitor(served)
    try:
        reproductions = [monitor.dispatcher.validate(name) for name in ("static-lr", "dynamic-lr")]
    finally:
        monitor.close()
    assert all(r.outcome == "not_validated" and "not all archived" in r.summary for r in reproductions)
    assert exit_code([r.outcome for r in reproductions]) == 2 and all(r.to_dict()["outcome"] == "not_validated" for r in reproductions)


def test_a_validation_that_could_not_complete_keeps_the_code_regression_flag(data_dir):
    """Only a completed check changes the flag: a retrain that cannot run is `not_validated`, not `validated`."""
    from app.events import EventKind
    from app.engine.monitor import Monitor

    for index in range(2):
        write_batch(data_dir, f"b{index}.csv", make_batch(index, rows=300))
        backdate(data_dir / f"b{index}.csv")
    monitor = Monitor(data_dir)
    try:
        monitor.run_once()
        name = monitor.config.models[0].name
        assert monitor.store.serving_version(name) is not None
        state = monitor.store.model_state(name)
        monitor.store.save_model_state(name, replace(state, flags=[{"kind": "code_regression", "detail": "earlier"}]))
        shutil.rmtree(monitor.paths.batches)  # the training batches are gone: the check cannot be completed
        seen = []
        monitor.subscribe(seen.append)
        result = monitor.dispatcher.validate(name)
        assert result.outcome == "not_validated"
        assert [event.kind for event in seen if event.model == name][-1] == EventKind.NOT_VALIDATED
        assert monitor.store.model_state(name).flags[0]["kind"] == "code_regression"
    finally:
        monitor.close()


def test_unchanged_50_row_batches_rarely_show_a_performance_drop(data_dir: Path):
    """A 50-row batch's ROC AUC varies by about 0.07 and a 60-row holdout's as much: compared with a fixed
    tolerance alone, a model serving batches of the very distribution it learned was flagged "stale" by chance."""
    write_config(data_dir, STATIC_ONLY_CONFIG)
    monitor = run_stream(data_dir, [signal_batch(0, 300, slope=1.0)] + [signal_batch(seed, 50, slope=1.0) for seed in range(1, 41)])
    scored = results(monitor, "static-lr")[1:]
    drops = [result for result in scored if flag_details(result, "performance_drop")]
    assert len(scored) == 40 and len(drops) <= 2


def test_a_candidate_that_learned_but_on_a_holdout_too_small_to_show_it_is_not_said_unable_to_learn(tmp_path: Path):
    """Gradient boosting refused for want of rows is not "unable to learn" because gradient boosting learns the
    same rows: the refusal names the holdout's size instead."""
    write_config(tmp_path, '''
target = "label"
task = "classification"
[schema]
x = "numeric"
[[models]]
name = "dynamic-hgb"
mode = "dynamic"
estimator = "hist_gradient_boosting"
''')
    rng = np.random.default_rng(6)
    x = rng.normal(size=200)  # about 5% positives: a 40-row holdout holds two or three of them
    monitor = run_stream(tmp_path, [pd.DataFrame({"x": x, "label": (x + rng.normal(scale=0.8, size=200) > 1.7).astype(int)})])
    try:
        [first] = results(monitor, "dynamic-hgb")
    finally:
        monitor.close()
    assert first["action"] == "rejected" and "no skill" in first["action_detail"]
    assert "its holdout's 40 rows are too few to tell its skill from chance" in first["action_detail"]
    assert "cannot learn" not in first["action_detail"]
