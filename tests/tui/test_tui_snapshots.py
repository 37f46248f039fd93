"""SVG snapshots of the dashboard over the seeded base store (``pytest --snapshot-update`` to accept changes).

The store's times and training durations are fixed (``tui_support``), the
app's clock is injected, times print in UTC and the folder shows as "data",
so the pictures are the same on every machine.
"""

from __future__ import annotations

import asyncio

import html
import os
import re
import time
from pathlib import Path

import pytest
from textual.pilot import Pilot

from app.engine.monitor import Monitor
from app.tui.app import DriftDeckApp
from tests.tui.tui_support import FIXED_NOW, base_folder, copy_folder, panels_show, wait_until

SIZES = {"160x48": (160, 48), "100x30": (100, 30), "80x24": (80, 24)}
WIDE = SIZES["160x48"]
PANEL_KEYS = {"models": "1", "features": "2", "health": "3", "snapshots": "4", "events": "5"}
SNAPSHOTS = Path(__file__).parent / "__snapshots__" / "test_tui_snapshots"
README_SCREENSHOT = Path(__file__).parents[2] / "docs" / "dashboard.svg"


@pytest.fixture(scope="session")
def base(tmp_path_factory) -> Path:
    return base_folder(tmp_path_factory.getbasetemp())


@pytest.fixture
def utc():
    """Print times in UTC while the test runs."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if before is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = before
    time.tzset()


@pytest.fixture
def make_app(base: Path, tmp_path: Path, monkeypatch, utc):
    """Build the app over a private copy of the base folder, shown as "data"."""
    folder = copy_folder(base, tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    monitors = []

    def make() -> DriftDeckApp:
        monitor = Monitor(folder)
        monitors.append(monitor)
        return DriftDeckApp(monitor, clock=lambda: FIXED_NOW)

    yield make
    for monitor in monitors:
        monitor.close()


def prepare(model: str | None = None, panel: str | None = None, maximize: bool = False):
    """A ``run_before`` that waits for the data, selects ``model``, goes to ``panel`` and maximizes it."""

    async def run_before(pilot: Pilot) -> None:
        app = pilot.app
        await wait_until(pilot, lambda: app.load_applied >= 1, what="the first load")
        # The copied folder's files have new inodes, so the monitor checks their content once: draw after that.
        assert await asyncio.to_thread(app.monitor.wait_idle, 30)
        settled = app._start_load()
        await wait_until(pilot, lambda: app.load_applied >= settled, what="a load after the monitor settled")
        if model is not None:
            while app.selected_model != model:
                await pilot.press("right_square_bracket")
            await wait_until(pilot, lambda: panels_show(app, model), what=f"{model}'s panels")
        if panel is not None:
            await pilot.press(PANEL_KEYS[panel])
        if maximize:
            await pilot.press("z")
            await wait_until(pilot, lambda: app.screen.maximized is not None, what="a maximized panel")
        await pilot.pause(0.2)
        run_before.screen = screen_text(app.export_screenshot())

    run_before.screen = ""
    return run_before


def screen_text(svg: str) -> str:
    """The characters of a screenshot, row by row: printed when a picture differs, to say how."""
    rows: dict[float, list[tuple[float, str]]] = {}
    for x, y, text in re.findall(r'<text class="[^"]*" x="([\d.]+)" y="([\d.]+)"[^>]*>(.*?)</text>', svg):
        rows.setdefault(float(y), []).append((float(x), html.unescape(text)))
    return "\n".join("".join(text for _, text in sorted(row)) for _, row in sorted(rows.items()))


@pytest.fixture
def same_picture(snap_compare):
    """``snap_compare`` that, when the picture differs, shows the screen's text in the failure."""

    def compare(app, size: tuple[int, int], run_before) -> None:
        assert snap_compare(app, terminal_size=size, run_before=run_before), f"the screen was:\n{run_before.screen}"

    return compare


@pytest.mark.parametrize("size", list(SIZES))
def test_dashboard(same_picture, make_app, size):
    same_picture(make_app(), SIZES[size], prepare())


@pytest.mark.parametrize("panel", ["health", "snapshots", "events"])
def test_each_panel_on_a_small_screen(same_picture, make_app, panel):
    same_picture(make_app(), SIZES["80x24"], prepare("dynamic-lr", panel))


@pytest.mark.parametrize("panel", list(PANEL_KEYS))
def test_each_panel_maximized(same_picture, make_app, panel):
    same_picture(make_app(), WIDE, prepare("dynamic-lr", panel, maximize=True))


def test_the_readme_screenshot_is_the_wide_dashboard():
    """docs/dashboard.svg is the 160x48 snapshot; after accepting a new one, copy it there."""
    snapshot = SNAPSHOTS / "test_dashboard[160x48].svg"
    assert README_SCREENSHOT.read_text() == snapshot.read_text(), (
        f"docs/dashboard.svg is out of date: cp '{snapshot}' docs/dashboard.svg")
