"""The live monitor driven headless with Textual's Pilot, on real folders and a real monitor.

Each test copies the seeded base folder (see ``tui_support``): static-lr
serves v1 (its only snapshot); dynamic-lr serves v4 after v1..v3; x3 was
shifted in two training batches, so dynamic-lr sees it drifted and
static-lr does not.
"""

from __future__ import annotations

import asyncio
from functools import partial

from pathlib import Path

import pytest
from tests.conftest import make_batch, write_batch
from textual import events
from textual.widgets import DataTable, RichLog, Static
from tests.tui.tui_support import FIXED_NOW, base_folder, copy_folder, panels_show, slow_fit, wait_until

from app.engine.monitor import Monitor
from app.training import Trainer
from app.tui.app import DriftDeckApp
from app.tui.dashboard import load_dashboard
from app.tui.messages import DashboardLoaded, MonitorChanged
from app.tui.panels import selected_key
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
def fit_release(tmp_path: Path) -> Path:
    """The file whose creation lets the slow monitor's fits go on."""
    return tmp_path / "release-the-fit"


@pytest.fixture
def slow_monitor(folder: Path, fit_release: Path):
    """A monitor whose every fit waits until the test creates ``fit_release``."""
    monitor = Monitor(folder, trainer=Trainer(fit=partial(slow_fit, fit_release)))
    yield monitor
    fit_release.touch()
    monitor.close()


def header(app: DriftDeckApp) -> str:
    return app.query_one("#header", Static).content.plain


def cell(app: DriftDeckApp, table_id: str, row: str, column: str) -> str:
    table = app.query_one(f"#{table_id}", DataTable)
    return table.get_cell(row, column).plain


def log_text(app: DriftDeckApp) -> str:
    return "\n".join(strip.text for strip in app.query_one(RichLog).lines)


async def started(pilot) -> None:
    """The first load is on screen (the event log writes its entries at the refresh after it)."""
    await wait_until(pilot, lambda: pilot.app.load_applied >= 1, what="the first load")
    await pilot.pause()


async def test_history_in_the_store_shows_at_once(monitor):
    app = RecordingApp(monitor, clock=lambda: FIXED_NOW)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        assert cell(app, "models-table", "static-lr", "serving") == "v1"
        assert cell(app, "models-table", "dynamic-lr", "serving") == "v4"
        assert "5 batches" in header(app) and "1 quarantined" in header(app)
        await wait_until(pilot, lambda: "2025-02-10.csv.gz: quarantined" in log_text(app), what="history in the event log")
        assert app.notes == []  # history is shown, not announced


async def test_a_dropped_batch_appears_in_the_panels(monitor, folder):
    app = RecordingApp(monitor, clock=lambda: FIXED_NOW)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        assert cell(app, "features-table", "x3", "status") != "drifted"
        write_batch(folder, "2025-02-17.csv", make_batch(5, rows=400, shift=3.0))  # x3 moves 3 sd
        await wait_until(pilot, lambda: "6 batches" in header(app), what="the new batch in the header")
        await wait_until(pilot, lambda: cell(app, "features-table", "x3", "status") == "drifted",
                         what="x3 drifted in the feature table")
        stored = monitor.store.results("static-lr", limit=1)[0][2]["feature_drift"]["x3"]["psi"]
        assert cell(app, "features-table", "x3", "PSI") == f"{stored:.3f}"
        assert stored >= monitor.config.drift.psi_threshold
        # The event log writes after a refresh, the metrics text on the next frame: waited for, not raced.
        await wait_until(pilot, lambda: "2025-02-17.csv: 400 rows" in log_text(app), what="the batch in the event log")
        await wait_until(pilot, lambda: "2025-02-17.csv" in app.query_one("#latest-metrics", Static).content.plain,
                         what="the batch in the health panel")


async def test_switching_model_switches_the_feature_table(monitor):
    app = RecordingApp(monitor, clock=lambda: FIXED_NOW)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        assert app.selected_model == "static-lr"
        assert cell(app, "features-table", "x3", "status") != "drifted"
        loads = app.loads_started
        await pilot.press("right_square_bracket")
        assert app.selected_model == "dynamic-lr"
        # Shown from the read in hand, which holds every model's panels: no load in between.
        await wait_until(pilot, lambda: panels_show(app, "dynamic-lr"), what="dynamic-lr's panels")
        assert app.loads_started == loads
        expected = monitor.store.results("dynamic-lr", limit=1)[0][2]["feature_drift"]["x3"]
        assert expected["status"] == "drifted"
        assert cell(app, "features-table", "x3", "status") == "drifted"
        assert cell(app, "features-table", "x3", "PSI") == f"{expected['psi']:.3f}"
        assert app.query_one("#features").border_title.endswith("dynamic-lr")
        await pilot.press("left_square_bracket")
        assert app.selected_model == "static-lr"


async def test_a_model_key_moves_the_cursor_then_draws_the_panels_over_several_frames(monitor):
    app = RecordingApp(monitor, clock=lambda: FIXED_NOW)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        frames, drawn = [0], []
        display = app._display  # where each frame is written to the terminal

        def counting(screen, renderable) -> None:
            frames[0] += 1
            display(screen, renderable)

        app._display = counting
        for panel in (app.models_panel, app.features_panel, app.health_panel, app.snapshots_panel):
            panel.show = partial(lambda show, panel, *shown: (drawn.append((panel.id, frames[0])), show(*shown)),
                                 panel.show, panel)
        table = app.query_one("#models-table", DataTable)
        app.post_message(events.Key("right_square_bracket", "]"))  # as the terminal sends it, no waiting for idle
        await wait_until(pilot, lambda: panels_show(app, "dynamic-lr"), what="dynamic-lr's panels")
        assert selected_key(table) == "dynamic-lr"
        first_drawn: dict[str, int] = {}  # each panel's first drawing (a load landing meanwhile draws again)
        for panel, frames_before in drawn:
            first_drawn.setdefault(panel, frames_before)
        assert list(first_drawn) == ["models", "features", "health", "snapshots"]
        assert list(first_drawn) == ["models", "features", "health", "snapshots"]  # the key moves the cursor first
        panels = list(first_drawn.values())[1:]  # the frames painted before each panel was drawn
        assert panels == sorted(panels) and len(set(panels)) > 1, f"the panels over several frames: {panels}"


async def test_a_load_that_lands_after_a_newer_one_is_dropped(monitor, folder):
    app = RecordingApp(monitor, clock=lambda: FIXED_NOW)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        older = load_dashboard(monitor, app.selected_model)
        write_batch(folder, "2025-02-17.csv", make_batch(5, rows=400))
        await wait_until(pilot, lambda: app.dashboard.counts["ingested"] == 6, what="the new batch on screen")
        app.post_message(DashboardLoaded(older, app.load_applied - 1))
        await pilot.pause()
        assert app.dashboard.counts["ingested"] == 6
        assert "6 batches" in header(app)


async def test_b_rolls_back_and_the_snapshot_table_follows(monitor):
    app = RecordingApp(monitor, clock=lambda: FIXED_NOW)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await pilot.press("right_square_bracket")
        await wait_until(pilot, lambda: panels_show(app, "dynamic-lr"), what="dynamic-lr's panels")
        assert cell(app, "snapshots-table", "4", "version").startswith("▶")
        await pilot.press("b")
        await wait_until(pilot, lambda: cell(app, "models-table", "dynamic-lr", "serving") == "v3",
                         what="v3 serving in the models table")
        assert monitor.store.serving_version("dynamic-lr") == 3
        await wait_until(pilot, lambda: cell(app, "snapshots-table", "3", "version").startswith("▶"),
                         what="v3 marked serving in the snapshot table")
        assert cell(app, "snapshots-table", "4", "status") == "rolled back"
        assert ("dynamic-lr: v4 → v3", "information") in app.notes


async def test_keys_that_cannot_act_are_greyed_before_any_model_serves(tmp_path):
    from tests.conftest import write_config

    folder = tmp_path / "empty"
    folder.mkdir()
    write_config(folder)
    monitor = Monitor(folder)
    try:
        app = RecordingApp(monitor, clock=lambda: FIXED_NOW)
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            assert app.dashboard.summary(app.selected_model)["serving_version"] is None
            for action in ("validate", "rollback", "promote"):
                assert app.check_action(action, ()) is None, action
            assert app.check_action("retrain", ()) is True
            assert "no files yet" in header(app)
    finally:
        monitor.close()


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


async def test_the_footer_dims_b_in_place_as_the_selected_model_changes(monitor):
    """Selecting a model that can roll back lights ``b`` on the same key widgets: the footer is not rebuilt."""
    from textual.widgets._footer import FooterKey

    app = RecordingApp(monitor, clock=lambda: FIXED_NOW)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)

        def b_key() -> FooterKey | None:
            return next((key for key in app.query(FooterKey) if key.action == "rollback"), None)

        await wait_until(pilot, lambda: b_key() is not None and b_key().has_class("-disabled"),
                         what="b dimmed for static-lr")
        keys_before = list(app.query(FooterKey))
        await pilot.press("right_square_bracket")
        await wait_until(pilot, lambda: not b_key().has_class("-disabled"), what="b lit for dynamic-lr")
        assert app.selected_model == "dynamic-lr" and app.check_action("rollback", ()) is True
        await pilot.press("left_square_bracket")
        await wait_until(pilot, lambda: b_key().has_class("-disabled"), what="b dimmed again for static-lr")
        assert list(app.query(FooterKey)) == keys_before  # the same widgets throughout
        await pilot.press("p")  # pause: the footer now shows resume, another key, so it is rebuilt
        await wait_until(pilot, lambda: any(key.action == "resume" for key in app.query(FooterKey)),
                         what="resume in the footer")
        assert not any(key.action == "pause" for key in app.query(FooterKey))


async def test_enter_on_a_rejected_snapshot_asks_before_serving_it(folder):
    monitor = Monitor(folder)
    try:
        monitor.store.set_snapshot_status("dynamic-lr", 2, "rejected", "worse than serving by 0.02")
        app = RecordingApp(monitor, clock=lambda: FIXED_NOW)
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            await pilot.press("right_square_bracket")
            await wait_until(pilot, lambda: panels_show(app, "dynamic-lr"), what="dynamic-lr's panels")
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


async def test_r_trains_off_the_ui_thread_and_ends_with_a_verdict(slow_monitor, fit_release):
    app = RecordingApp(slow_monitor, clock=lambda: FIXED_NOW)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await pilot.press("r")
        await wait_until(pilot, lambda: "training static-lr" in header(app), what="training in the header")
        assert app.check_action("retrain", ()) is None  # no second retrain while one runs

        await pilot.press("right_square_bracket")  # handled while the fit is still sleeping
        assert slow_monitor.training is not None
        assert app.selected_model == "dynamic-lr"
        await wait_until(pilot, lambda: panels_show(app, "dynamic-lr"), what="dynamic-lr's panels")
        await pilot.press("p")
        assert "paused" in header(app) and slow_monitor.paused
        assert slow_monitor.training is not None

        fit_release.touch()
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
        # The notification comes with the load; the event log writes at the refresh after it.
        await wait_until(pilot, lambda: "[bold]oops.csv.gz: quarantined" in log_text(app), what="the file in the event log")
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


# --- what a person sees at each size, and the keys that get them there -----------------------

SMALL_SIZES = [(80, 24), (100, 30)]


def shown_inside(app: DriftDeckApp, widget) -> bool:
    """The widget is displayed and lies wholly on the screen."""
    region = widget.region
    return widget.display and region.area > 0 and region.right <= app.size.width and region.bottom <= app.size.height


@pytest.mark.parametrize("size", SMALL_SIZES + [SIZE])
async def test_every_model_and_every_key_fit_on_a_small_screen(monitor, size):
    from textual.widgets._footer import FooterKey

    app = RecordingApp(monitor, clock=lambda: FIXED_NOW)
    async with app.run_test(size=size) as pilot:
        await started(pilot)
        await pilot.pause(0.3)
        line = header(app)
        assert "● watching │ 5 batches" in line and "│ 1 quarantined │ last file 18 h ago" in line
        assert len(line) <= size[0] - 2
        table = app.query_one("#models-table", DataTable)
        assert shown_inside(app, table) and table.virtual_size.width <= table.size.width
        assert table.size.height >= sum(row.height for row in table.rows.values()) + 1  # every model, no scrolling
        for name in ("static-lr", "dynamic-lr"):
            cells = " ".join(table.get_row(name)[i].plain for i in range(len(table.columns)))
            summary = app.dashboard.summary(name)
            assert summary["state"] in cells and "not enough labels yet" in cells  # its state and its comparison
        assert "drifted: x3" in " ".join(cell.plain for cell in table.get_row("dynamic-lr"))

        def every_key_in_the_footer() -> bool:
            keys = {key.key_display: key for key in app.query(FooterKey)}
            wanted = {"r", "b", "v", "p", "[", "]", "1-5", "z", "?", "q"}
            return wanted <= set(keys) and all(shown_inside(app, key) for key in keys.values())

        await wait_until(pilot, every_key_in_the_footer, timeout=5, what="every key in the footer, on screen")


@pytest.mark.parametrize("size", [(80, 24), SIZE])
async def test_each_panel_is_one_key_away(monitor, size):
    app = RecordingApp(monitor, clock=lambda: FIXED_NOW)
    async with app.run_test(size=size) as pilot:
        await started(pilot)
        for key, panel in (("3", "#health"), ("5", "#events"), ("2", "#features"), ("4", "#snapshots"),
                           ("1", "#models")):
            await pilot.press(key)
            await pilot.pause(0.1)
            widget = app.query_one(panel)
            assert shown_inside(app, widget), panel
            assert app.focused is not None and widget in app.focused.ancestors_with_self, panel


async def test_the_histogram_follows_the_most_drifted_feature_until_the_cursor_moves(monitor, folder):
    app = RecordingApp(monitor, clock=lambda: FIXED_NOW)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        table = app.query_one("#features-table", DataTable)
        drawing = app.query_one("#distribution")
        assert selected_key(table) == table.coordinate_to_cell_key((0, 0)).row_key.value
        x2_jumps = make_batch(5, rows=400).drop(columns=["label"])
        x2_jumps["x2"] += 4.0
        write_batch(folder, "2025-02-17.csv", x2_jumps)
        await wait_until(pilot, lambda: table.row_count and table.get_row_at(0)[0].plain == "x2",
                         what="x2 on top of the feature table")
        await wait_until(pilot, lambda: drawing._data[:1] == ("x2",), what="the histogram on x2")
        assert selected_key(table) == "x2"

        await pilot.press("2", "down")  # the person picks the second feature
        await pilot.pause(0.2)
        picked = selected_key(table)
        assert picked != "x2" and drawing._data[0] == picked
        x1_jumps = make_batch(6, rows=400).drop(columns=["label"])
        x1_jumps["x1"] += 6.0
        write_batch(folder, "2025-02-24.csv", x1_jumps)
        await wait_until(pilot, lambda: table.get_row_at(0)[0].plain == "x1", what="x1 on top")
        await pilot.pause(0.3)
        assert selected_key(table) == picked and drawing._data[0] == picked


async def test_the_feature_table_uses_the_room_it_has_without_scrollbars(monitor):
    app = RecordingApp(monitor, clock=lambda: FIXED_NOW)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await pilot.pause(0.3)
        table = app.query_one("#features-table", DataTable)
        assert table.size.height >= 11  # a header and ten features fit before any scrolling
        assert not table.show_vertical_scrollbar and not table.show_horizontal_scrollbar
        assert table.virtual_size.width <= table.size.width
        distribution = app.query_one("#distribution")
        assert distribution.region.bottom <= app.query_one("#features").content_region.bottom


async def open_snapshots_of_dynamic_lr(pilot) -> DataTable:
    app = pilot.app
    await started(pilot)
    await pilot.press("right_square_bracket")
    await wait_until(pilot, lambda: panels_show(app, "dynamic-lr"), what="dynamic-lr's panels")
    await pilot.press("4")
    return app.query_one("#snapshots-table", DataTable)


async def test_enter_on_a_snapshot_always_asks_naming_the_version(monitor):
    app = RecordingApp(monitor, clock=lambda: FIXED_NOW)
    async with app.run_test(size=SIZE) as pilot:
        table = await open_snapshots_of_dynamic_lr(pilot)
        await pilot.press("end")  # the last row (the oldest version), never sideways
        assert table.scroll_x == 0 and selected_key(table) == "1"
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
        assert "Serve dynamic-lr v1 in place of v4?" in app.screen.question.plain
        await pilot.press("n")
        await pilot.pause(0.2)
        assert monitor.store.serving_version("dynamic-lr") == 4
        await pilot.press("home")
        assert selected_key(table) == "4" and app.check_action("promote", ()) is None  # v4 already serves
        await pilot.press("down", "enter", "y")
        await wait_until(pilot, lambda: monitor.store.serving_version("dynamic-lr") == 3, what="v3 serving")
        assert ("dynamic-lr: v4 → v3", "information") in app.notes


async def test_the_snapshot_table_keeps_its_version_column_and_a_readable_note(monitor):
    app = RecordingApp(monitor, clock=lambda: FIXED_NOW)
    async with app.run_test(size=(80, 24)) as pilot:
        table = await open_snapshots_of_dynamic_lr(pilot)
        await pilot.pause(0.3)
        assert table.fixed_columns == 1
        assert table.virtual_size.width <= table.size.width  # every column on screen, the note too
        notes = [table.get_row(key)[-1].plain for key in ("1", "4")]
        assert all(len(note) >= 10 for note in notes)


async def test_a_re_promoted_snapshot_says_why_it_serves_now(monitor):
    app = RecordingApp(monitor, clock=lambda: FIXED_NOW)
    async with app.run_test(size=SIZE) as pilot:
        table = await open_snapshots_of_dynamic_lr(pilot)
        await pilot.press("b")
        await wait_until(pilot, lambda: cell(app, "snapshots-table", "3", "version").startswith("▶"), what="v3")
        monitor.dispatcher.promote("dynamic-lr", 4)
        await wait_until(pilot, lambda: cell(app, "snapshots-table", "4", "version").startswith("▶"), what="v4")
        table.move_cursor(row=table.get_row_index("4"))
        await pilot.pause(0.2)
        note = app.query_one("#snapshot-note", Static).content.plain
        assert note.startswith("v4 serving since") and "promoted by hand from v3 to v4" in note
        assert "rolled back" not in note and "rolled back" not in cell(app, "snapshots-table", "4", "note")


async def test_a_paused_header_counts_the_files_that_wait(monitor, folder):
    app = RecordingApp(monitor, clock=lambda: FIXED_NOW)
    async with app.run_test(size=(80, 24)) as pilot:
        await started(pilot)
        # the copied folder's files have new inodes: the monitor checks their content once before pausing
        assert await asyncio.to_thread(monitor.wait_idle, 30)
        await pilot.press("p")
        await wait_until(pilot, lambda: "paused" in header(app), what="paused")
        assert "waiting" not in header(app)
        for index, name in ((5, "2025-02-17.csv"), (6, "2025-02-24.csv")):
            write_batch(folder, name, make_batch(index, rows=200))
        await wait_until(pilot, lambda: "2 files waiting" in header(app), what="two files waiting")
        assert "quarantined" in header(app)
        await pilot.press("p")
        await wait_until(pilot, lambda: "7 batches" in header(app), what="both files taken after resuming")
        assert "waiting" not in header(app)


async def test_the_command_palette_lists_each_action_once_with_promote_and_a_screenshot(monitor, folder,
                                                                                       tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home-without-downloads"))
    app = RecordingApp(monitor, clock=lambda: FIXED_NOW)
    async with app.run_test(size=SIZE) as pilot:
        table = await open_snapshots_of_dynamic_lr(pilot)
        table.move_cursor(row=table.get_row_index("2"))
        await pilot.pause(0.1)
        titles = [command.title for command in app.get_system_commands(app.screen)]
        assert len(titles) == len(set(titles))
        assert {"Promote", "Screenshot", "Maximize", "Help", "Retrain", "Rollback", "Validate"} <= set(titles)
        assert "Keys" not in titles
        screenshot = next(c for c in app.get_system_commands(app.screen) if c.title == "Screenshot")
        screenshot.callback()
        saved = list((folder / ".driftdeck" / "screenshots").glob("*.svg"))
        assert len(saved) == 1 and saved[0].read_text().startswith("<svg")
        assert any("screenshot saved to" in note and saved[0].name in note for note, _ in app.notes)
        promote = next(c for c in app.get_system_commands(app.screen) if c.title == "Promote")
        await promote.callback()  # as the palette runs it
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
        assert "v2" in app.screen.question.plain


async def test_a_folder_standing_for_a_bucket_shows_the_bucket_in_the_header(tmp_path):
    from tests.conftest import write_config

    folder = tmp_path / ".driftdeck-sales-0123456789"
    folder.mkdir()
    config = write_config(folder)
    config.write_text('source = "s3://sales/daily"\n' + config.read_text())
    monitor = Monitor(folder)
    try:
        app = RecordingApp(monitor, clock=lambda: FIXED_NOW)
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            assert "│ s3://sales/daily │" in header(app)
            assert ".driftdeck-sales" not in header(app)
    finally:
        monitor.close()
