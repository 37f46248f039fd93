"""``driftdeck demo``: a fresh folder, a sample scenario, and the monitor watching it fill up."""

from __future__ import annotations

import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from app.config import CONFIG_NAME, load_config
from app.engine.monitor import Monitor
from app.engine_link import Engine, EngineClient, EngineUnavailable
from app.events import Event, EventKind
from app.headless import INTERRUPTED, event_printer
from app.replay import batch_files, deliver, replay

SAMPLE_DATA = Path(__file__).resolve().parent.parent / "sample_data"
SETTLE_WAIT_SECONDS = 600


def prepare_demo_folder(scenario: str) -> tuple[Path, Path, int]:
    """A new temp folder holding the scenario's config and its training weeks.

    Returns (folder, scenario source, how many files were copied in).
    """
    source = SAMPLE_DATA / scenario
    if not (source / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"{source}: sample scenario missing (run `python sample_data/generate.py`)")
    folder = Path(tempfile.mkdtemp(prefix=f"driftdeck-demo-{scenario}-"))
    shutil.copyfile(source / CONFIG_NAME, folder / CONFIG_NAME)
    config = load_config(folder)
    training = max((model.bootstrap_batches for model in config.models), default=1)
    for path in batch_files(source)[:training]:
        deliver(path, folder)
    return folder, source, training


def run_demo(scenario: str, speed: float, headless: bool = False, as_json: bool = False, keep: bool = False) -> int:
    """Run the demo in a new temp folder; remove the folder when it ends unless ``keep``."""
    folder, source, start = prepare_demo_folder(scenario)
    say = sys.stderr if as_json else sys.stdout
    print(f"demo folder: {folder}", file=say, flush=True)
    try:
        return _run_in(folder, source, start, speed, headless, as_json)
    finally:
        if keep:
            print(f"demo folder kept: inspect it with `driftdeck status {folder}`", file=say, flush=True)
        else:
            shutil.rmtree(folder, ignore_errors=True)
            print(f"demo folder removed ({folder}); pass --keep to keep it", file=say, flush=True)


def _run_in(folder: Path, source: Path, start: int, speed: float, headless: bool, as_json: bool) -> int:
    monitor = Monitor(folder) if headless else EngineClient(folder)
    stop = threading.Event()
    training_weeks = {path.name for path in batch_files(folder)}
    expected = {path.name for path in batch_files(source)}

    def feed() -> None:
        # the season starts once the training weeks are in: they come first, as they would in life
        wait_for_files(monitor, training_weeks, SETTLE_WAIT_SECONDS, stop)
        replay(source, folder, interval=speed, start=start, stop=stop.is_set)
        try:
            if wait_for_files(monitor, expected, SETTLE_WAIT_SECONDS, stop) and monitor.wait_idle(SETTLE_WAIT_SECONDS):
                monitor.emit(replay_finished(source.name, len(expected)))  # after the last batch's own events
        except EngineUnavailable:  # the person quit (or the engine stopped) before the replay ended
            pass

    feeder = threading.Thread(target=feed, name="driftdeck-replay", daemon=True)
    if not headless:
        from app.tui.app import run_tui

        try:
            return run_tui(monitor, on_ready=feeder.start)
        finally:
            stop.set()
    monitor.subscribe(event_printer(as_json, on_closed=stop.set))
    monitor.start()
    feeder.start()
    status = 0
    try:
        feeder.join()
        monitor.wait_idle(SETTLE_WAIT_SECONDS)
    except KeyboardInterrupt:
        stop.set()
        status = INTERRUPTED
    finally:
        monitor.close()
    return status


def replay_finished(scenario: str, files: int) -> Event:
    """The event that tells the person watching that no more files will come."""
    return Event(EventKind.REPLAY_FINISHED,
                 f"replay finished: all {files} batch files of the {scenario} scenario are in; no more will come",
                 data={"scenario": scenario, "files": files})


def wait_for_files(monitor: Engine, names: set[str], timeout: float, stop: threading.Event | None = None) -> bool:
    """Block until every name in ``names`` is in the ledger (ingested, quarantined or duplicate)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not (stop and stop.is_set()):
        if names <= {record.name for record in monitor.store.files()}:
            return True
        time.sleep(0.1)
    return False
