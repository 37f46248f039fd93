"""A rollback asked from the shell while many labeled files wait in a running ``watch``.

Usage (from the repository root):

    .venv/bin/python bench/command_latency.py --files 60

What runs: a fresh folder with one static and one dynamic model, both
serving after two labeled batches; then ``python -m app watch DIR
--headless`` in a subprocess and ``--files`` labeled files dropped at once (each
retrains and gates the dynamic model, so each takes a while). Once a few are
in, ``python -m app rollback DIR --model dynamic-lr`` runs in another
subprocess.

What is measured, from the store's clock: the seconds from starting the
command to its handing the rollback over (interpreter start-up and opening the
folder), the seconds from the handover to the answer, how many batches the
watcher finished in between (1: only the file in progress), the median
seconds per batch, and what the rollback did: rolled back from the version
that served when it was asked, or refused saying what changed.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the batch maker and config are the tests' (tests/conftest.py)
from tests.conftest import BASE_CONFIG, backdate, make_batch, write_batch, write_config  # noqa: E402

MODEL = "dynamic-lr"


def driftdeck(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app", *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          check=True)


def batch_times(folder: Path) -> list[float]:
    """When each batch was ingested (seconds since the epoch), from the audit log."""
    with sqlite3.connect(folder / ".driftdeck" / "state.db") as db:
        return [row[0] for row in db.execute("SELECT time FROM events WHERE kind = 'batch_ingested' ORDER BY id")]


def handover_time(folder: Path) -> float:
    with sqlite3.connect(folder / ".driftdeck" / "state.db") as db:
        return db.execute("SELECT time FROM commands WHERE kind = 'rollback'").fetchone()[0]


def ask_rollback(folder: Path) -> tuple[float, float, str]:
    """Run ``rollback`` from the shell; return when it started, when the watcher answered, and its last line."""
    started = time.time()
    process = subprocess.Popen([sys.executable, "-m", "app", "rollback", str(folder), "--model", MODEL], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    answered = None
    with sqlite3.connect(folder / ".driftdeck" / "state.db") as db:
        while process.poll() is None:
            row = db.execute("SELECT status FROM commands WHERE kind = 'rollback'").fetchone()
            if answered is None and row and row[0] in ("done", "failed"):
                answered = time.time()
            time.sleep(0.02)
    out, err = process.communicate()
    return started, answered or time.time(), f"exit {process.returncode}: {(out or err).strip().splitlines()[-1]}"


def prepare(folder: Path) -> None:
    write_config(folder, BASE_CONFIG)
    for index in range(2):
        backdate(write_batch(folder, f"week-{index:03d}.csv", make_batch(index, rows=400)))
    driftdeck("watch", folder, "--once")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=60)
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--ask-after", type=int, default=3, help="batches in before the rollback is asked")
    options = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="driftdeck-command-latency-")) / "data"
    folder.mkdir()
    prepare(folder)
    watch = subprocess.Popen([sys.executable, "-m", "app", "watch", str(folder), "--headless"], cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for index in range(options.files):
            backdate(write_batch(folder, f"week-{index + 2:03d}.csv", make_batch(index + 2, rows=options.rows)))
        while len(batch_times(folder)) < options.ask_after + 2:  # the two bootstrap batches too
            time.sleep(0.2)
        asked, answered, outcome = ask_rollback(folder)
    finally:
        watch.terminate()
        watch.wait(timeout=60)
    handed, batches = handover_time(folder), batch_times(folder)
    meanwhile = [when for when in batches if handed <= when <= answered]
    print(f"files queued: {options.files} labeled files of {options.rows} rows; asked after {options.ask_after} were in")
    print(f"handed over {handed - asked:.2f} s after the command started; answered {answered - handed:.2f} s later")
    print(f"batches finished between the handover and the answer: {len(meanwhile)}")
    print(f"median seconds per batch: {statistics.median(b - a for a, b in zip(batches, batches[1:])):.2f}")
    print(f"the rollback: {outcome}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
