"""Excluding a batch from the live monitor (``x``), driven with Textual's Pilot on a real folder and monitor.

In the seeded base folder (see ``tui_support``) dynamic-lr serves a snapshot
trained on 2025-01-13.parquet and 2025-01-20.csv (where x3 moved).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Static

from app.engine.monitor import Monitor
from app.tui.app import DriftDeckApp
from app.tui.batches import BatchesScreen, ExcludeScreen
from tests.tui.tui_support import FIXED_NOW, base_folder, copy_folder, panels_show, wait_until

SIZE = (160, 48)
BAD = "2025-01-20.csv"


@pytest.fixture(scope="session")
def base(tmp_path_factory) -> Path:
    return base_folder(tmp_path_factory.getbasetemp())


@pytest.fixture
def monitor(base: Path, tmp_path: Path):
    monitor = Monitor(copy_folder(base, tmp_path / "data"))
    yield monitor
    monitor.close()


def status_of(monitor: Monitor, name: str) -> str:
    return next(record.status for record in monitor.store.files() if record.name == name)


async def pick(pilot, name: str) -> None:
    """Open the batches screen and press enter on ``name``."""
    app = pilot.app
    await wait_until(pilot, lambda: app.load_applied >= 1, what="the first load")
    await pilot.press("x")
    await wait_until(pilot, lambda: isinstance(app.screen, BatchesScreen) and app.screen.is_mounted
                     and app.screen.query_one("#batches-table", DataTable).row_count == len(app.screen.rows),
                     what="the batches screen")
    table = app.screen.query_one("#batches-table", DataTable)
    key = next(key for key, row in app.screen.rows.items() if row["file"] == name)
    table.move_cursor(row=table.get_row_index(key))
    await pilot.press("enter")
    await wait_until(pilot, lambda: isinstance(app.screen, ExcludeScreen), what="the question")


async def test_x_lists_the_batches_and_excludes_one_only_after_a_yes(monitor: Monitor) -> None:
    tainted = monitor.registry.serving("dynamic-lr")
    assert BAD in tainted.data["files"]  # the premise: the serving dynamic model learned from it
    app = DriftDeckApp(monitor, clock=lambda: FIXED_NOW)
    async with app.run_test(size=SIZE) as pilot:
        await pick(pilot, BAD)
        question = str(app.screen.query_one("Static").content)
        assert f"Exclude {BAD}?" in question and f"v{tainted.version}" in question and "dynamic-lr" in question
        assert status_of(monitor, BAD) == "ingested"  # asked, not done
        app.screen.query_one("#exclude-reason", Input).value = "labels flipped"
        await pilot.press("enter")
        await wait_until(pilot, lambda: status_of(monitor, BAD) == "excluded", timeout=60, what="the exclusion")
        exclusion = next(iter(monitor.store.exclusions().values()))
        assert exclusion["reason"] == "labels flipped" and exclusion["by"]
        await wait_until(pilot, lambda: monitor.store.serving_history("dynamic-lr")[-1].reason == f"excluded {BAD}",
                         timeout=60, what="dynamic-lr repaired")
        await pilot.press("right_square_bracket")
        await wait_until(pilot, lambda: panels_show(app, "dynamic-lr")
                         and any(row["tainted"] for row in app.dashboard.view.snapshots), what="the taint in the dashboard")
        table = app.query_one("#snapshots-table", DataTable)
        key = str(tainted.version)
        assert table.get_cell(key, "status").plain == "tainted"
        assert table.get_cell(key, "note").plain.startswith("learned from excluded")
        table.move_cursor(row=table.get_row_index(key))
        await wait_until(pilot, lambda: f"tainted: learned from excluded {BAD}" in
                         app.query_one("#snapshot-note", Static).content.plain, what="the highlighted snapshot's note")


async def test_escape_leaves_the_batch_as_it_was(monitor: Monitor) -> None:
    app = DriftDeckApp(monitor, clock=lambda: FIXED_NOW)
    async with app.run_test(size=SIZE) as pilot:
        await pick(pilot, BAD)
        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, (ExcludeScreen, BatchesScreen)), what="back")
        await pilot.pause(0.5)
        assert status_of(monitor, BAD) == "ingested" and monitor.store.exclusions() == {}


async def test_an_excluded_batch_is_included_again_from_the_same_screen(monitor: Monitor) -> None:
    monitor.dispatcher.exclusions.exclude(BAD, "flipped", "tester")
    app = DriftDeckApp(monitor, clock=lambda: FIXED_NOW)
    async with app.run_test(size=SIZE) as pilot:
        await pick(pilot, BAD)
        assert f"Include {BAD} again?" in str(app.screen.query_one("Static").content)
        await pilot.click("#yes")
        await wait_until(pilot, lambda: status_of(monitor, BAD) == "ingested", timeout=60, what="the inclusion")
        assert monitor.store.exclusions() == {}
        await wait_until(pilot, lambda: app.dashboard.counts["excluded"] == 0, what="the dashboard without it")
