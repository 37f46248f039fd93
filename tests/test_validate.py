"""Regular validation: a change of code, dependencies or config that hurts a model is caught."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.events import EventKind
from app.engine.monitor import Monitor
from tests.conftest import make_batch, write_batch, write_config

HGB_CONFIG_EDIT = {
    'name = "dynamic-lr"\nmode = "dynamic"\nestimator = "logistic_regression"':
        'name = "dynamic-hgb"\nmode = "dynamic"\nestimator = "hist_gradient_boosting"',
}


@pytest.fixture
def trained(data_dir: Path) -> Path:
    write_config(data_dir, **HGB_CONFIG_EDIT)
    for index in range(3):
        write_batch(data_dir, f"b{index:02d}.csv", make_batch(index))
    monitor = Monitor(data_dir)
    monitor.run_once()
    monitor.close()
    return data_dir


def validate(folder: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app", "validate", str(folder), "--json", *extra],
                          capture_output=True, text=True, timeout=300)


def test_unchanged_environment_reproduces_the_recorded_metrics_exactly(trained: Path):
    done = validate(trained)
    assert done.returncode == 0, done.stderr
    for result in json.loads(done.stdout):
        assert not result["regression"], result["summary"]
        assert result["environment_changes"] == [] and result["config_changes"] == []
        assert result["reloaded"] == result["recorded"]
        assert result["retrained"] == result["recorded"]  # same rows, same seed: the same model
        assert "validated" in result["summary"]


def test_a_crippling_config_edit_is_a_code_regression(trained: Path):
    config = trained / "driftdeck.toml"
    config.write_text(config.read_text().replace(
        'estimator = "hist_gradient_boosting"', 'estimator = "hist_gradient_boosting"\nparams = {max_iter = 1, max_depth = 1}'
    ))
    done = validate(trained, "--model", "dynamic-hgb")
    assert done.returncode == 1
    [result] = json.loads(done.stdout)
    assert result["regression"]
    assert result["retrained"]["roc_auc"] < result["recorded"]["roc_auc"] - 0.01
    assert any("params" in change and "max_depth" in change for change in result["config_changes"])
    monitor = Monitor(trained)
    try:
        events = [e for e in monitor.store.events() if e.kind == EventKind.CODE_REGRESSION]
        assert events and "dynamic-hgb" in events[-1].message
        assert monitor.store.model_state("dynamic-hgb").flags[0]["kind"] == "code_regression"
    finally:
        monitor.close()


def test_a_different_recorded_environment_triggers_the_check_at_start(trained: Path):
    monitor = Monitor(trained)
    record = monitor.registry.serving("static-lr")
    data = dict(record.data, environment={**record.data["environment"], "scikit-learn": "0.0.1"})
    with monitor.store.transaction() as db:
        db.execute("UPDATE snapshots SET data = ? WHERE model = ? AND version = ?",
                   (json.dumps(data), "static-lr", record.version))
    assert any(change.startswith("scikit-learn 0.0.1 -> ") for change in monitor.dispatcher.environment_changed("static-lr"))
    seen = []
    monitor.subscribe(seen.append)
    monitor.start()
    try:
        assert monitor.wait_idle(120)
        checks = [e for e in seen if e.kind in (EventKind.VALIDATED, EventKind.CODE_REGRESSION)]
        assert [e.model for e in checks] == ["static-lr"]
        assert any(change.startswith("scikit-learn 0.0.1 -> ") for change in checks[0].data["environment_changes"])
        assert "scikit-learn 0.0.1 -> " in checks[0].message
    finally:
        monitor.close()


def test_validate_exits_2_with_the_reason_when_it_could_not_validate(trained: Path):
    for archived in (trained / ".driftdeck" / "batches").rglob("*"):
        if archived.is_file():
            archived.unlink()
    done = validate(trained)
    assert done.returncode == 2, done.stdout + done.stderr
    for result in json.loads(done.stdout):
        assert result["outcome"] == "not_validated" and not result["regression"]
        assert "could not validate" in result["summary"] and "not all archived" in result["summary"]
