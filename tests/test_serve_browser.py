"""``driftdeck serve`` in a real browser: headless Chromium drives the dashboard over textual-serve.

The page draws the terminal on a canvas, so the test reads the screen the way a
user keeps it: the command palette's Screenshot, which the app saves under the
data folder's ``.driftdeck/screenshots/``. Skipped, with the reason, where no
Chromium and ChromeDriver are installed (``.ci/run`` installs Debian's).
"""

from __future__ import annotations

import html
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.tui.tui_support import base_folder, copy_folder

from app.engine_link import engine_running
from app.registry import StatePaths

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
needs_browser = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                   reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,900")
PAGE_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def served_folder(tmp_path_factory, tmp_path):
    folder = copy_folder(base_folder(tmp_path_factory.getbasetemp()), tmp_path / "data")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "app", "serve", str(folder), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: _listening(port), 90, "driftdeck serve to listen")
        yield folder, f"http://127.0.0.1:{port}/"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    assert engine_running(StatePaths(folder / ".driftdeck")) is None, "serve stops the engine it started"


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def screen_text(folder: Path, driver, seen: dict[Path, int]) -> str:
    """Take a screenshot through the command palette and return the text on screen.

    Only "shot" is typed into the palette: none of its letters is a key of the
    dashboard, should the palette not have opened.
    """
    from selenium.webdriver.common.keys import Keys

    terminal_input(driver).send_keys(Keys.CONTROL, "p")
    time.sleep(0.5)
    terminal_input(driver).send_keys("shot")
    time.sleep(0.5)
    terminal_input(driver).send_keys(Keys.ENTER)
    shots = folder / ".driftdeck" / "screenshots"

    def fresh() -> list[Path]:
        return [path for path in shots.glob("*.svg") if path.stat().st_size and seen.get(path) != path.stat().st_mtime_ns]

    new = wait_for(fresh, 20, "the palette's screenshot to be saved")
    time.sleep(0.3)  # the file is written in one go; give it a moment to be complete
    seen.update({path: path.stat().st_mtime_ns for path in new})
    svg = new[0].read_text()
    return html.unescape(re.sub(r"<[^>]+>", "", svg)).replace("\xa0", " ")


def terminal_input(driver):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, ".xterm-helper-textarea")


@needs_browser
def test_the_dashboard_works_in_a_browser(served_folder, browser, tmp_path):
    from selenium.webdriver.common.by import By

    folder, url = served_folder
    browser.get(url)
    wait_for(lambda: "-first-byte" in (browser.find_element(By.TAG_NAME, "body").get_attribute("class") or ""),
             PAGE_TIMEOUT, "the dashboard's first bytes in the page")
    seen: dict[Path, int] = {}
    wait_for(lambda: "Snapshots — static-lr" in screen_text(folder, browser, seen), PAGE_TIMEOUT,
             "the dashboard to show the first model")

    # The palette that took the last screenshot closes after its command has run: on a busy machine a key sent
    # at once can still land in it. A key that found the palette is sent again, once the screen shows it unmoved.
    time.sleep(1.0)
    terminal_input(browser).send_keys("]")
    try:
        wait_for(lambda: "Snapshots — dynamic-lr" in screen_text(folder, browser, seen), 15, "] to select the next model")
    except AssertionError:
        assert "Snapshots — static-lr" in screen_text(folder, browser, seen)
        time.sleep(1.0)
        terminal_input(browser).send_keys("]")
        wait_for(lambda: "Snapshots — dynamic-lr" in screen_text(folder, browser, seen), 30,
                 "] (sent again) to select the next model")
    assert engine_running(StatePaths(folder / ".driftdeck")) is not None, "the tab is attached to serve's engine"
    picture = tmp_path / "served-dashboard.png"
    browser.save_screenshot(str(picture))
    assert picture.stat().st_size > 10_000
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_serve_warns_when_bound_beyond_this_machine():
    from app.tui.serve import exposure_warning

    assert exposure_warning("127.0.0.1") is None
    assert exposure_warning("localhost") is None
    assert exposure_warning("::1") is None
    assert "anyone who can reach" in exposure_warning("0.0.0.0")


def test_serve_refuses_a_port_in_use_in_one_line(tmp_path_factory, tmp_path):
    folder = copy_folder(base_folder(tmp_path_factory.getbasetemp()), tmp_path / "data")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run([sys.executable, "-m", "app", "serve", str(folder), "--port", str(port)],
                             capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in run.stderr
    assert "Traceback" not in run.stderr
