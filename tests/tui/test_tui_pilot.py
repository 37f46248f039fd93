"""The live monitor driven headless with Textual's Pilot, on real folders and a real monitor.

Each test copies the seeded base folder (see ``tui_support``): static-lr
serves v1 (its only snapshot); dynamic-lr serves v4 after v1..v3; x3 was
shifted in two training batches, so dynamic-lr sees it drifted and
static-lr does not.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import make_batch, write_batch
from textual.widgets import DataTable, RichLog, Static
from tests.tui.tui_support import FIXED_NOW, base_folder, copy_folder, slow_fit, wait_until

from app.monitor import Monitor
from app.training import Trainer
from app.tui.app import DriftDeckApp
from app.tui.messages import MonitorChanged
from app.tui.screens import ConfirmScreen, HelpScreen

SIZE = (160, 48)


class RecordingApp(DriftDeckApp):
    """The app, keeping every notification it shows as (message, severity)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.notes: list[tuple[str, str]] = []

    def notify(self, message: str, *args, severity: str = "information", **kwargs) -> None:
        self.notes.append((message, severity))
        super().notify(message, *args, severity=severity, **kwargs)


@pytest.fixture(scope="session")
def base(tmp_path_factory) -> Path:
    return base_folder(tmp_path_factory.getbasetemp())


@pytest.fixture
def folder(base: Path, tmp_path: Path) -> Path:
    return copy_folder(base, tmp_path / "data")


@pytest.fixture
def monitor(folder: Path):
    monitor = Monitor(folder)
    yield monitor
    monitor.close()


@pytest.fixture
def slow_monitor(folder: Path):
    """A monitor whose every fit takes a few seconds."""
    monitor = Monitor(folder, trainer=Trainer(fit=slow_fit))
    yield monitor
    monitor.close()


def header(app: DriftDeckApp) -> str:
    return app.query_one("#header", Static).content.plain


def cell(app: DriftDeckApp, table_id: str, row: str, column: str) -> str:
    table = app.query_one(f"#{table_id}", DataTable)
    return table.get_cell(row, column).plain


def log_text(app: DriftDeckApp) -> str:
    return "\n".join(strip.text for strip in app.query_one(RichLog).lines)


async def started(pilot) -> None:
    await wait_until(pilot, lambda: pilot.app.loads_applied >= 1, what="the first load")


async def test_history_in_the_store_shows_at_once(monitor):
    app = RecordingApp(monitor, clock=lambda: FIXED_NOW)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        assert cell(app, "models-table", "static-lr", "serving") == "v1"
        assert cell(app, "models-table", "dynamic-lr", "serving") == "v4"
        assert "5 batches ingested" in header(app) and "1 quarantined" in header(app)
        assert "2025-02-10.csv.gz: quarantined" in log_text(app)
        assert app.notes == []  # history is shown, not announced


async def test_a_dropped_batch_appears_in_the_panels(monitor, folder):
    app = RecordingApp(monitor, clock=lambda: FIXED_NOW)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        assert cell(app, "features-table", "x3", "status") != "drifted"
        write_batch(folder, "2025-02-17.csv", make_batch(5, rows=400, shift=3.0))  # x3 moves 3 sd
        await wait_until(pilot, lambda: "6 batches ingested" in header(app), what="the new batch in the header")
        await wait_until(pilot, lambda: cell(app, "features-table", "x3", "status") == "drifted",
                         what="x3 drifted in the feature table")
        stored = monitor.store.results("static-lr", limit=1)[0][2]["feature_drift"]["x3"]["psi"]
        assert cell(app, "features-table", "x3", "PSI") == f"{stored:.3f}"
        assert stored >= monitor.config.drift.psi_threshold
        assert "2025-02-17.csv: 400 rows" in log_text(app)
        assert "2025-02-17.csv" in app.query_one("#latest-metrics", Static).content.plain


async def test_switching_model_switches_the_feature_table(monitor):
    app = RecordingApp(monitor, clock=lambda: FIXED_NOW)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        assert app.selected_model == "static-lr"
        assert cell(app, "features-table", "x3", "status") != "drifted"
        await pilot.press("right_square_bracket")
        assert app.selected_model == "dynamic-lr"
        await wait_until(pilot, lambda: app.dashboard.model == "dynamic-lr", what="dynamic-lr's panels")
        expected = monitor.store.results("dynamic-lr", limit=1)[0][2]["feature_drift"]["x3"]
        assert expected["status"] == "drifted"
        assert cell(app, "features-table", "x3", "status") == "drifted"
        assert cell(app, "features-table", "x3", "PSI") == f"{expected['psi']:.3f}"
        assert app.query_one("#features").border_title.endswith("dynamic-lr")
        await pilot.press("left_square_bracket")
        assert app.selected_model == "static-lr"


async def test_b_rolls_back_and_the_snapshot_table_follows(monitor):
    app = RecordingApp(monitor, clock=lambda: FIXED_NOW)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await pilot.press("right_square_bracket")
        await wait_until(pilot, lambda: app.dashboard.model == "dynamic-lr", what="dynamic-lr's panels")
        assert cell(app, "snapshots-table", "4", "version").startswith("▶")
        await pilot.press("b")
        await wait_until(pilot, lambda: cell(app, "models-table", "dynamic-lr", "serving") == "v3",
                         what="v3 serving in the models table")
        assert monitor.store.serving_version("dynamic-lr") == 3
        await wait_until(pilot, lambda: cell(app, "snapshots-table", "3", "version").startswith("▶"),
                         what="v3 marked serving in the snapshot table")
        assert cell(app, "snapshots-table", "4", "status") == "rolled back"
        assert ("dynamic-lr: v4 → v3", "information") in app.notes


async def test_b_is_greyed_and_inert_without_an_earlier_snapshot(monitor):
    app = RecordingApp(monitor, clock=lambda: FIXED_NOW)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        assert app.selected_model == "static-lr" and monitor.registry.previous_good("static-lr") is None
        assert app.check_action("rollback", ()) is None  # shown dimmed in the footer
        await pilot.press("b")
        await pilot.pause(0.3)
        assert monitor.store.serving_version("static-lr") == 1
        assert cell(app, "models-table", "static-lr", "serving") == "v1"
        assert app.notes == []


async def test_enter_on_a_rejected_snapshot_asks_before_serving_it(folder):
    monitor = Monitor(folder)
    try:
        monitor.store.set_snapshot_status("dynamic-lr", 2, "rejected", "worse than serving by 0.02")
        app = RecordingApp(monitor, clock=lambda: FIXED_NOW)
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            await pilot.press("right_square_bracket")
            await wait_until(pilot, lambda: app.dashboard.model == "dynamic-lr", what="dynamic-lr's panels")
            table = app.query_one("#snapshots-table", DataTable)
            table.focus()
            table.move_cursor(row=table.get_row_index("2"))
            await pilot.press("enter")
            await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
            await pilot.press("y")
            await wait_until(pilot, lambda: cell(app, "models-table", "dynamic-lr", "serving") == "v2",
                             what="v2 serving")
            assert monitor.store.serving_version("dynamic-lr") == 2
            assert ("dynamic-lr: v4 → v2", "information") in app.notes
    finally:
        monitor.close()


async def test_r_trains_off_the_ui_thread_and_ends_with_a_verdict(slow_monitor):
    app = RecordingApp(slow_monitor, clock=lambda: FIXED_NOW)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await pilot.press("r")
        await wait_until(pilot, lambda: "training static-lr" in header(app), what="training in the header")
        assert app.check_action("retrain", ()) is None  # no second retrain while one runs

        await pilot.press("right_square_bracket")  # handled while the fit is still sleeping
        assert slow_monitor.training is not None
        assert app.selected_model == "dynamic-lr"
        await wait_until(pilot, lambda: app.dashboard.model == "dynamic-lr", what="dynamic-lr's panels")
        await pilot.press("p")
        assert "paused" in header(app) and slow_monitor.paused
        assert slow_monitor.training is not None

        await pilot.press("left_square_bracket")
        await wait_until(pilot, lambda: "2" in app.query_one("#snapshots-table", DataTable).rows,
                         what="the retrained v2 in the snapshot table", timeout=30)
        status = cell(app, "snapshots-table", "2", "status")
        assert status in ("serving", "rejected")
        outcome = "promoted" if status == "serving" else "rejected"
        await wait_until(pilot, lambda: f"static-lr: {'v2 serves' if outcome == 'promoted' else 'candidate v2'}"
                         in log_text(app), what="the outcome in the event log")
        assert app.check_action("retrain", ()) is True


async def test_a_broken_file_is_an_error_notification_shown_literally(monitor, folder):
    app = RecordingApp(monitor, clock=lambda: FIXED_NOW)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        (folder / "[bold]oops.csv.gz").write_bytes(b"not gzip")
        await wait_until(pilot, lambda: any(s == "error" for _, s in app.notes), what="an error notification")
        message = next(m for m, s in app.notes if s == "error")
        assert message.startswith("[bold]oops.csv.gz: quarantined")
        assert "[bold]oops.csv.gz: quarantined" in log_text(app)
        assert "2 quarantined" in header(app)
        assert app.is_running


async def test_help_and_maximize(monitor):
    app = RecordingApp(monitor, clock=lambda: FIXED_NOW)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        app.post_message(MonitorChanged("batch_ingested"))  # the next tick reloads the panels under the help
        await pilot.pause(3 * app.tick_seconds + app.load_interval)
        assert app.is_running and isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("tab")
        await pilot.press("z")
        assert app.screen.maximized is app.query_one("#features")
        await pilot.press("z")
        assert app.screen.maximized is None
