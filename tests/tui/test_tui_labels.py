"""Labels that come later, on the live monitor driven with Textual's Pilot: the lag in the header, the estimate
in the health panel while labels are missing, then the realised value, the estimate's error and its track record."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from textual.widgets import Static

from app.engine.monitor import Monitor
from app.tui.app import DriftDeckApp
from tests.conftest import write_batch, write_config
from tests.test_late_labels import LATE_CONFIG, batch_with_ids, sales
from tests.tui.tui_support import wait_until

SIZE = (160, 48)


def header(app: DriftDeckApp) -> str:
    return app.query_one("#header", Static).content.plain


def latest(app: DriftDeckApp) -> str:
    return app.query_one("#latest-metrics", Static).content.plain


async def test_the_dashboard_shows_the_lag_the_estimate_and_then_the_realised_value(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    write_config(folder, LATE_CONFIG.replace("labeled_share = 0.9", "labeled_share = 0.9\nmax_lag_batches = 1"))
    frames = [batch_with_ids(index) for index in range(3)]
    write_batch(folder, "b0.csv", frames[0])
    write_batch(folder, "b1.csv", frames[1].drop(columns="label"))
    write_batch(folder, "b2.csv", frames[2].drop(columns="label"))
    seeding = Monitor(folder)
    try:
        seeding.run_once()
    finally:
        seeding.close()
    monitor = Monitor(folder)
    app = DriftDeckApp(monitor)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: pilot.app.load_applied >= 1, what="the first load")
            assert header(app).endswith("labels lag 1 batch")  # the oldest batch waiting, one batch ago
            assert "(no labels yet)" in latest(app) and "estimate" in latest(app)
            assert "roc_auc ≈ " in latest(app) and "estimate (CBPE)" in latest(app)

            write_batch(folder, "labels_late.csv", pd.concat([sales(frames[2], slice(0, 400)),
                                                             sales(frames[1], slice(0, 400))]))
            await wait_until(pilot, lambda: "before the labels (error" in latest(app),
                             what="the realised value beside the estimate")
            text = latest(app)
            assert "labels from labels_late.csv" in text and "track record ±" in text
            await wait_until(pilot, lambda: "labels lag" not in header(app), what="the lag gone from the header")
    finally:
        monitor.close()
