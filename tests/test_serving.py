"""Serving outside driftdeck: prediction files, the stable serving path, predict and export."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import skops.io

from app.fsutil import sha256_file
from app.engine.monitor import Monitor
from app.serving import predictions_path
from app.snapshots import TRUSTED_TYPES
from tests.conftest import make_batch, write_batch, write_config


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Monitor:
    """A dynamic model promoted a few times, then rolled back by hand, then fed two more batches."""
    folder = tmp_path_factory.mktemp("served")
    write_config(folder)
    for index in range(4):
        write_batch(folder, f"b{index:02d}.csv", make_batch(index))
    monitor = Monitor(folder)
    monitor.run_once()
    monitor.dispatcher.rollback("dynamic-lr")
    for index in (4, 5):
        write_batch(folder, f"b{index:02d}.parquet", make_batch(index))
    monitor.run_once()
    yield monitor
    monitor.close()


def prediction_file(monitor: Monitor, model: str, batch_name: str) -> Path:
    record = next(record for record in monitor.store.files("ingested") if record.name == batch_name)
    return predictions_path(monitor.paths.predictions, model, batch_name, record.sha256)


def serving_file_matches_store(monitor: Monitor, model: str) -> dict:
    record = monitor.registry.serving(model)
    info = json.loads((monitor.paths.serving / f"{model}.json").read_text())
    assert info["version"] == record.version
    assert info["sha256"] == record.sha256 == sha256_file(monitor.paths.serving / f"{model}.skops")
    return info


def test_serving_path_follows_promotion_and_rollback(served: Monitor):
    info = serving_file_matches_store(served, "dynamic-lr")
    assert info["why"] in ("promoted", "bootstrap", "rollback")
    before = served.store.serving_version("dynamic-lr")
    came_from, went_to = served.dispatcher.rollback("dynamic-lr")
    info = serving_file_matches_store(served, "dynamic-lr")
    assert (came_from, info["version"], info["why"]) == (before, went_to, "rollback")
    assert info["detail"] == f"rolled back from v{before} to v{went_to}"
    served.dispatcher.promote("dynamic-lr", before)
    info = serving_file_matches_store(served, "dynamic-lr")
    assert info["why"] == "manual" and info["version"] == before


def test_a_consumer_loads_the_serving_file_with_the_documented_trusted_types(served: Monitor):
    model = skops.io.load(served.paths.serving / "static-lr.skops", trusted=list(TRUSTED_TYPES))
    frame = make_batch(9)
    proba = model.predict_proba(frame[["x1", "x2", "x3", "color"]])
    assert proba.shape == (len(frame), 2)


def test_every_batch_has_predictions_from_the_version_that_served_then(served: Monitor):
    for model in ("static-lr", "dynamic-lr"):
        for file_id, _, data in served.store.results(model):
            record = served.store.file(file_id)
            path = predictions_path(served.paths.predictions, model, record.name, record.sha256)
            if data["serving_version"] is None:
                assert not path.exists()  # nothing served before the first model was trained
                continue
            predictions = pd.read_parquet(path)
            assert len(predictions) == served.store.file(file_id).rows
            assert set(predictions["model_version"]) == {data["serving_version"]}
            assert {"row", "prediction", "proba_0", "proba_1", "predicted_at"} <= set(predictions.columns)
    # across the rollback: b04 was scored by the version the rollback chose
    rollback = next(c for c in served.store.serving_history("dynamic-lr") if c.reason == "rollback")
    b04 = pd.read_parquet(prediction_file(served, "dynamic-lr", "b04.parquet"))
    assert set(b04["model_version"]) == {rollback.version}


def test_predict_matches_what_the_monitor_wrote(served: Monitor, tmp_path: Path):
    version = served.store.serving_version("static-lr")
    written = pd.read_parquet(prediction_file(served, "static-lr", "b05.parquet"))
    out = tmp_path / "scores.csv"
    done = subprocess.run(
        [sys.executable, "-m", "app", "predict", str(served.data_dir), "--model", "static-lr",
         str(served.data_dir / "b05.parquet"), "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    scored = pd.read_csv(out)
    assert (scored["model_version"] == version).all()
    assert (scored["prediction"].astype(str) == written["prediction"].astype(str)).all()
    assert scored["proba_1"].to_numpy() == pytest.approx(written["proba_1"].to_numpy(), abs=1e-12)


def test_predict_refuses_an_invalid_file_with_the_reason(served: Monitor, tmp_path: Path):
    bad = tmp_path / "bad.csv"
    make_batch(1).drop(columns=["x2"]).to_csv(bad, index=False)
    out = tmp_path / "never.csv"
    done = subprocess.run(
        [sys.executable, "-m", "app", "predict", str(served.data_dir), "--model", "static-lr", str(bad), "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode != 0
    assert "missing feature column(s): 'x2'" in done.stderr and "Traceback" not in done.stderr
    assert not out.exists()


def test_export_writes_model_card_and_profile(served: Monitor, tmp_path: Path):
    written = served.workspace.export("dynamic-lr", tmp_path / "export")
    names = sorted(path.name for path in written)
    assert names == ["dynamic-lr.card.json", "dynamic-lr.card.md", "dynamic-lr.profile.json", "dynamic-lr.skops"]
    card = json.loads((tmp_path / "export" / "dynamic-lr.card.json").read_text())
    assert card["version"] == served.store.serving_version("dynamic-lr") and card["serving"]
    assert card["predicts"]["target"] == "label" and card["policy"] == "dynamic"
    assert card["features"] == {"x1": "numeric", "x2": "numeric", "x3": "numeric", "color": "categorical"}
    assert card["holdout_metrics"]["roc_auc"] > 0.7 and card["trained_on"]["files"]
    assert "verdict" in card and "drift_at_export" in card
    assert "# Model card: dynamic-lr" in (tmp_path / "export" / "dynamic-lr.card.md").read_text()
    assert sha256_file(tmp_path / "export" / "dynamic-lr.skops") == served.registry.serving("dynamic-lr").sha256
