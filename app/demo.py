"""``driftdeck demo``: a fresh folder, a sample scenario, and the monitor watching it fill up."""

from __future__ import annotations

import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from app.config import CONFIG_NAME, load_config
from app.engine_link import Engine, EngineClient
from app.monitor import Monitor
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


def run_demo(scenario: str, speed: float, headless: bool = False, as_json: bool = False) -> int:
    folder, source, start = prepare_demo_folder(scenario)
    print(f"demo folder: {folder}", file=sys.stderr if as_json else sys.stdout, flush=True)
    monitor = Monitor(folder) if headless else EngineClient(folder)
    stop = threading.Event()
    training_weeks = {path.name for path in batch_files(folder)}

    def feed() -> None:
        # the season starts once the training weeks are in: they come first, as they would in life
        wait_for_files(monitor, training_weeks, SETTLE_WAIT_SECONDS, stop)
        replay(source, folder, interval=speed, start=start, stop=stop.is_set)

    feeder = threading.Thread(target=feed, name="driftdeck-replay", daemon=True)
    if not headless:
        from app.tui.app import run_tui

        try:
            return run_tui(monitor, on_ready=feeder.start)
        finally:
            stop.set()
    from app.cli import event_printer

    expected = {path.name for path in batch_files(source)}
    monitor.subscribe(event_printer(as_json))
    monitor.start()
    feeder.start()
    try:
        feeder.join()
        wait_for_files(monitor, expected, SETTLE_WAIT_SECONDS)
        monitor.wait_idle(SETTLE_WAIT_SECONDS)
    except KeyboardInterrupt:
        stop.set()
    finally:
        monitor.close()
    print(f"demo done: inspect it with `driftdeck status {folder}`", file=sys.stderr, flush=True)
    return 0


def wait_for_files(monitor: Engine, names: set[str], timeout: float, stop: threading.Event | None = None) -> bool:
    """Block until every name in ``names`` is in the ledger (ingested, quarantined or duplicate)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not (stop and stop.is_set()):
        if names <= {record.name for record in monitor.store.files()}:
            return True
        time.sleep(0.1)
    return False
