"""The engine in its own process, and dashboards that attach to it.

A real ``driftdeck watch --headless`` child, a real Unix socket, real batch
files; the dashboard side is :class:`~app.engine_link.EngineClient`, alone and
inside the real Textual app under Pilot.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import make_batch, run_cli, wait_until, write_batch
from tests.tui.tui_support import base_folder, copy_folder

from app.commands import Command
from app.engine_link import EngineClient, EngineUnavailable, engine_running, socket_path
from app.events import EventKind
from app.registry import StatePaths

ENGINE_START_SECONDS = 60.0


def start_headless(folder: Path) -> subprocess.Popen:
    engine = subprocess.Popen([sys.executable, "-m", "app", "watch", str(folder), "--headless"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    paths = StatePaths(folder / ".driftdeck")
    assert wait_until(lambda: engine_running(paths) is not None or engine.poll() is not None, ENGINE_START_SECONDS)
    assert engine.poll() is None, "the headless engine exited at start"
    return engine


def end(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


@pytest.fixture
def folder(tmp_path_factory, tmp_path) -> Path:
    return copy_folder(base_folder(tmp_path_factory.getbasetemp()), tmp_path / "data")


@pytest.fixture
def headless(folder):
    engine = start_headless(folder)
    yield folder, engine
    end(engine)


def ingested_names(client: EngineClient) -> set[str]:
    return {record.name for record in client.store.files()}


def test_a_dashboard_attaches_to_a_headless_engine_and_its_commands_act_there(headless):
    folder, engine = headless
    client = EngineClient(folder)
    seen = []
    client.subscribe(lambda event: seen.append(event))
    client.acquire()
    try:
        assert not client.owns_engine
        write_batch(folder, "2025-03-03.csv", make_batch(10, rows=300))
        assert wait_until(lambda: any(e.kind == EventKind.BATCH_INGESTED and e.file == "2025-03-03.csv"
                                      for e in seen), 60), "the engine's events reach the dashboard"
        assert "2025-03-03.csv" in ingested_names(client)

        assert client.submit(Command("pause")).outcome(10).ok
        assert wait_until(lambda: any(e.kind == EventKind.PAUSED for e in seen), 10)
        write_batch(folder, "2025-03-10.csv", make_batch(11, rows=300))
        time.sleep(2.0)  # well past the folder's settle time: a watching engine would have taken it
        assert "2025-03-10.csv" not in ingested_names(client), "paused through the dashboard"
        client.submit(Command("resume")).outcome(10)
        assert wait_until(lambda: "2025-03-10.csv" in ingested_names(client), 60)
    finally:
        client.close()
    assert engine.poll() is None, "an engine the dashboard attached to keeps running after it leaves"
    assert engine_running(StatePaths(folder / ".driftdeck")) is not None


def test_the_socket_is_owner_only(headless):
    folder, _ = headless
    address = socket_path(StatePaths(folder / ".driftdeck"))
    assert stat.S_ISSOCK(address.stat().st_mode)
    assert stat.S_IMODE(address.stat().st_mode) == 0o600


def test_a_state_path_too_long_for_a_socket_gets_a_short_owner_only_one(tmp_path):
    deep = tmp_path / ("d" * 120) / ".driftdeck"
    address = socket_path(StatePaths(deep))
    assert len(os.fsencode(address)) <= 100
    assert not str(address).startswith(str(tmp_path))
    assert stat.S_IMODE(address.parent.stat().st_mode) == 0o700
    assert socket_path(StatePaths(deep)) == address, "the same state folder always finds the same socket"


def test_stop_ends_the_engine_cleanly(headless):
    folder, engine = headless
    run = subprocess.run([sys.executable, "-m", "app", "stop", str(folder)], capture_output=True, text=True,
                         timeout=90)
    assert run.returncode == 0, run.stderr
    assert f"pid {engine.pid}" in run.stdout
    assert engine.wait(timeout=10) == 0
    assert not (folder / ".driftdeck" / "engine.json").exists()


def test_stop_without_an_engine_says_so_in_one_line(folder):
    run = run_cli("stop", folder)
    assert run.returncode != 0
    assert run.stderr.strip() == "driftdeck: no engine is running for this folder"


def test_a_dead_engine_is_noticed_within_a_second_and_restarted_without_losing_a_file(folder):
    client = EngineClient(folder)
    client.acquire()
    try:
        assert client.owns_engine
        first = engine_running(client.paths).pid
        os.kill(first, signal.SIGKILL)
        killed_at = time.monotonic()
        assert wait_until(lambda: not client.alive, 5, interval=0.01)
        assert time.monotonic() - killed_at < 1.0, "the dashboard learns of the engine's death within a second"

        write_batch(folder, "2025-03-17.csv", make_batch(12, rows=300))  # lands while no engine runs
        with pytest.raises(EngineUnavailable):
            client.submit(Command("rollback", "dynamic-lr"))
        client.restart()
        assert client.alive
        assert engine_running(client.paths).pid != first
        assert wait_until(lambda: "2025-03-17.csv" in ingested_names(client), 60), \
            "the file that landed while the engine was down is taken by the new one"
    finally:
        client.close()
    assert engine_running(client.paths) is None, "an engine the dashboard started stops when it leaves"


def test_an_engine_that_is_only_slow_to_speak_is_not_called_dead(folder):
    """Other work can hold the cores for seconds while the engine runs at a lower priority: silence is not death.
    The engine is stopped (SIGSTOP) for three seconds, twelve of its state messages' intervals."""
    client = EngineClient(folder)
    client.acquire()
    try:
        engine = engine_running(client.paths).pid
        os.kill(engine, signal.SIGSTOP)
        try:
            assert not wait_until(lambda: not client.alive, 3, interval=0.05)
        finally:
            os.kill(engine, signal.SIGCONT)
        assert client.alive
    finally:
        client.close()


def test_a_rollback_through_the_engine_names_both_versions(headless):
    folder, engine = headless
    client = EngineClient(folder)
    client.acquire()
    try:
        before = client.store.serving_version("dynamic-lr")
        result = client.submit(Command("rollback", "dynamic-lr", serving=before)).outcome(60)
        assert result.data["from"] == before and result.data["to"] < before
        assert wait_until(lambda: client.store.serving_version("dynamic-lr") == result.data["to"], 10)
    finally:
        client.close()


def test_an_exclusion_through_the_engine_reaches_it_with_its_file_reason_and_asker(headless):
    folder, engine = headless
    client = EngineClient(folder)
    client.acquire()
    try:
        command = Command("exclude", file="2025-01-27.jsonl", reason="labels flipped", by="ana")
        result = client.submit(command).outcome(120)
        assert (result.data["file"], result.data["reason"], result.data["by"]) == ("2025-01-27.jsonl", "labels flipped", "ana")
        excluded = next(r for r in client.store.files() if r.name == "2025-01-27.jsonl")
        assert excluded.status == "excluded"
        assert client.store.exclusions()[excluded.id]["by"] == "ana"
        assert client.store.serving_history("dynamic-lr")[-1].reason == "excluded 2025-01-27.jsonl"
    finally:
        client.close()


def test_a_command_to_a_dead_engine_fails_in_words(folder):
    client = EngineClient(folder)
    client.acquire()
    try:
        os.kill(engine_running(client.paths).pid, signal.SIGKILL)
        assert wait_until(lambda: not client.alive, 5)
        with pytest.raises(EngineUnavailable, match="not running"):
            client.submit(Command("pause"))
    finally:
        client.close()


async def test_the_dashboard_keys_act_through_an_attached_engine(headless):
    from app.tui.app import DriftDeckApp

    folder, engine = headless
    client = EngineClient(folder)
    client.acquire()
    watcher = EngineClient(folder)  # a second dashboard sees what the first one's keys did
    watcher.acquire()
    app = DriftDeckApp(client)
    try:
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.pause()
            first = app.selected_model
            await pilot.press("right_square_bracket")
            await pilot.pause()
            assert app.selected_model != first
            await pilot.press("p")
            assert wait_until(lambda: watcher.paused, 10), "p paused the engine, not just this screen"
            await pilot.press("p")
            assert wait_until(lambda: not watcher.paused, 10)

            os.kill(engine.pid, signal.SIGKILL)
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and "engine stopped" not in str(app.header_bar.render()):
                await pilot.pause(0.05)
            assert "engine stopped" in str(app.header_bar.render())
            assert app.check_action("pause", ()) is None, "keys that need the engine are greyed"
            assert app.check_action("restart_engine", ()) is True
    finally:
        client.close()
        watcher.close()
