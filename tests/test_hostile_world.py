"""A hostile world: what the working folder, the state folder and the data folder hold can hang,
hijack or stop nothing.

Each test sets up the hostile thing for real (a FIFO, a device node, an ``app.py`` in the working
folder, a shared ``/tmp``-like folder, an address-space limit, a file that never stops growing),
runs driftdeck in a subprocess with a timeout where a hang is the failure, and checks both that the
fault happened and what driftdeck made of it.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from app.cli import main
from app.config import load_config
from app.fsutil import NotRegularFile, sha256_file
from app.ingest import read_batch
from app.engine.intake import PROCESS_DIED
from tests.conftest import BASE_CONFIG, INGEST_ONLY_CONFIG, make_batch, wait_until, write_batch, write_config

DRIFTDECK = Path(sys.executable).with_name("driftdeck")  # the console script, as a user runs it
RUN_TIMEOUT = 120


def driftdeck(*args: str | Path, cwd: Path | None = None, limit_mb: int | None = None,
              timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess:
    """Run the ``driftdeck`` console script to completion (under ``ulimit -v limit_mb`` if given)."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit_mb << 20, limit_mb << 20))

    return subprocess.run([str(DRIFTDECK), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=limit if limit_mb else None)


def ledger(folder: Path) -> list[tuple[str, str, str]]:
    """(name, status, reason) of every ledger row, oldest first, read straight from the database.

    Empty while the store is still being made (its file exists, owner-only, a moment before its tables).
    """
    with sqlite3.connect(folder / ".driftdeck" / "state.db") as db:
        try:
            return db.execute("SELECT name, status, reason FROM files ORDER BY id").fetchall()
        except sqlite3.OperationalError:
            return []


def marks(folder: Path) -> list[tuple[str, int]]:
    """(name, attempts) of the files marked as being read (none before the store exists)."""
    database = folder / ".driftdeck" / "state.db"
    if not database.exists():
        return []
    try:
        with sqlite3.connect(database) as db:
            return db.execute("SELECT name, attempts FROM reading").fetchall()
    except sqlite3.OperationalError:  # the table is not made yet
        return []


def json_events(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


# --- 1. code in the working folder ------------------------------------------------------------------


def test_code_in_the_working_folder_never_runs_in_the_training_process(tmp_path: Path) -> None:
    """An ``app.py`` where the user runs driftdeck was imported by the training process (``python -c``)."""
    data = tmp_path / "data"
    data.mkdir()
    write_config(data)
    write_batch(data, "b0.csv", make_batch(0))
    hostile = tmp_path / "cwd"
    hostile.mkdir()
    marker = tmp_path / "hijacked"
    (hostile / "app.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")

    watched = driftdeck("watch", data, "--once", cwd=hostile)
    assert watched.returncode == 0, watched.stderr
    assert "training process did not start" not in watched.stdout
    assert watched.stdout.count("promoted ") == 2, watched.stdout  # both models trained in the worker
    validated = driftdeck("validate", data, cwd=hostile)
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert not marker.exists()


# --- 2. --state -------------------------------------------------------------------------------------


def test_a_state_folder_driftdeck_did_not_make_keeps_its_mode_or_is_refused(
    tmp_path: Path, ingest_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    shared = tmp_path / "shared-tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    (shared / "someone-elses.txt").write_text("keep")
    data_mode = ingest_dir.stat().st_mode

    assert main(["status", str(ingest_dir), "--state", str(shared)]) == 2
    assert "not empty and not a driftdeck state folder" in capsys.readouterr().err
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    assert sorted(path.name for path in shared.iterdir()) == ["someone-elses.txt"]

    for holder in (ingest_dir, tmp_path):  # the data folder itself, and a folder that holds it
        assert main(["watch", str(ingest_dir), "--once", "--state", str(holder)]) == 2
        assert "cannot be the data folder or a folder that holds it" in capsys.readouterr().err
    assert ingest_dir.stat().st_mode == data_mode
    assert not (ingest_dir / "quarantine").exists() and not (ingest_dir / "state.db").exists()

    empty = tmp_path / "made-by-the-user"
    empty.mkdir()
    empty.chmod(0o755)
    write_batch(ingest_dir, "b0.csv", make_batch(0, rows=20))
    assert main(["watch", str(ingest_dir), "--once", "--state", str(empty)]) == 0
    assert stat.S_IMODE(empty.stat().st_mode) == 0o755  # not ours to change
    assert {stat.S_IMODE(path.stat().st_mode) for path in empty.iterdir() if path.is_dir()} == {0o700}
    assert stat.S_IMODE((empty / "state.db").stat().st_mode) == 0o600
    assert main(["status", str(ingest_dir), "--state", str(empty)]) == 0  # a driftdeck state now: taken again


# --- 3 and 17. FIFOs, sockets, folders and devices named like batches -------------------------------


def plant_non_files(folder: Path) -> dict[str, str]:
    """A FIFO, a folder, a socket and (where allowed) /dev/zero's device node, named like batches; name -> kind."""
    os.mkfifo(folder / "fifo.csv")
    (folder / "folder.csv").mkdir()
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(folder / "socket.jsonl"))
    planted = {"fifo.csv": "a FIFO", "folder.csv": "a folder", "socket.jsonl": "a socket"}
    try:
        os.mknod(folder / "zero.csv", 0o600 | stat.S_IFCHR, os.makedev(1, 5))
        planted["zero.csv"] = "a character device"
    except PermissionError:
        pass
    return planted


def test_fifos_sockets_folders_and_devices_are_skipped_once_with_a_reason(ingest_dir: Path) -> None:
    """A FIFO named x.csv hung ``watch --once`` forever (opened blocking, no writer), at every start."""
    planted = plant_non_files(ingest_dir)
    write_batch(ingest_dir, "b0.csv", make_batch(0, rows=20))

    first = driftdeck("watch", ingest_dir, "--once", timeout=60)  # a hang is a TimeoutExpired
    assert first.returncode == 0, first.stderr
    rows = ledger(ingest_dir)
    assert ("b0.csv", "ingested", "") in rows
    skipped = {name: reason for name, status, reason in rows if status == "skipped"}
    assert set(skipped) == set(planted)
    for name, kind in planted.items():
        assert f"not a regular file ({kind})" in skipped[name]
    assert stat.S_ISFIFO((ingest_dir / "fifo.csv").stat().st_mode)

    again = driftdeck("watch", ingest_dir, "--once", timeout=60)
    assert again.returncode == 0 and again.stdout == ""  # recorded once: nothing retried at the next start
    assert ledger(ingest_dir) == rows


def test_read_batch_refuses_a_fifo_on_its_descriptor_without_blocking(ingest_dir: Path) -> None:
    """Even a path that became a FIFO after it was looked at: the check is on the descriptor, opened non-blocking."""
    fifo = ingest_dir / "late.csv"
    os.mkfifo(fifo)
    outcome: list[BaseException | object] = []

    def read() -> None:
        try:
            outcome.append(read_batch(fifo, load_config(ingest_dir)))
        except BaseException as error:  # noqa: BLE001 - the test inspects it
            outcome.append(error)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=10)
    if reader.is_alive():  # blocked in open(): let it go (a writer appears and leaves) before failing
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(timeout=10)
        pytest.fail("read_batch blocked opening a FIFO")
    (error,) = outcome
    assert isinstance(error, NotRegularFile) and "a FIFO" in str(error)


def test_a_fifo_or_device_never_stops_the_headless_monitor_nor_is_read_again(ingest_dir: Path) -> None:
    """Headless: a FIFO stopped every later file and SIGTERM took 30 s; a device node was re-read every second."""
    planted = plant_non_files(ingest_dir)
    process = subprocess.Popen([str(DRIFTDECK), "watch", str(ingest_dir), "--headless", "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        database = ingest_dir / ".driftdeck" / "state.db"
        assert wait_until(lambda: database.exists() and len(ledger(ingest_dir)) == len(planted), timeout=30)
        write_batch(ingest_dir, "later.csv", make_batch(1, rows=20))
        assert wait_until(lambda: ("later.csv", "ingested", "") in ledger(ingest_dir), timeout=30)
        time.sleep(1.5)  # a second and a half more of watching: a device read every second would show
        process.send_signal(signal.SIGTERM)
        output, errors = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, errors
    skips = [event["file"] for event in json_events(output) if event["kind"] == "file_skipped"]
    assert sorted(skips) == sorted(planted)  # one event each, never repeated
    assert sorted(name for name, status, _ in ledger(ingest_dir) if status == "skipped") == sorted(planted)


# --- 4. a file that never stops growing -------------------------------------------------------------


def test_once_returns_while_a_file_keeps_growing_and_says_what_it_left(ingest_dir: Path) -> None:
    write_batch(ingest_dir, "done.csv", make_batch(0, rows=20))
    growing = ingest_dir / "growing.csv"
    growing.write_text(make_batch(1, rows=5).to_csv(index=False))
    stop = threading.Event()
    row = make_batch(2, rows=1).to_csv(index=False, header=False)

    def append_forever() -> None:
        with open(growing, "a") as handle:
            while not stop.wait(0.05):
                handle.write(row)
                handle.flush()

    writer = threading.Thread(target=append_forever, daemon=True)
    size_before = growing.stat().st_size
    writer.start()
    try:
        started = time.monotonic()
        result = driftdeck("watch", ingest_dir, "--once", "--json", timeout=60)  # never returned before
        took = time.monotonic() - started
    finally:
        stop.set()
        writer.join()
    assert growing.stat().st_size > size_before  # it grew all along
    assert result.returncode == 0, result.stderr
    left = [event for event in json_events(result.stdout) if event["kind"] == "file_skipped"]
    assert [event["file"] for event in left] == ["growing.csv"] and left[0]["data"] == {"left": True}
    assert "still changing after 3 s; left for the next run" in left[0]["message"]  # ten settle intervals of 0.3 s
    assert [name for name, _, _ in ledger(ingest_dir)] == ["done.csv"]
    assert took < 30


# --- 5. memory --------------------------------------------------------------------------------------

BIG_CSV_MB = 100
ADDRESS_SPACE_HEADROOM_MB = 320  # above what driftdeck's process maps at start: enough to start, not to read the file


def write_big_csv(folder: Path, name: str = "big.csv") -> Path:
    """A valid ~100 MB labeled CSV batch (1.2 million rows), written in a second."""
    header, body = make_batch(0, rows=1000).to_csv(index=False).encode().split(b"\n", 1)
    temporary = folder / f".{name}.tmp"
    with open(temporary, "wb") as handle:
        handle.write(header + b"\n")
        for _ in range(BIG_CSV_MB * (1 << 20) // len(body)):
            handle.write(body)
    return temporary.rename(folder / name)


def address_space_limit_mb() -> int:
    """An address-space limit (``ulimit -v``) a little above what a started driftdeck maps."""
    probe = ("from app.engine.monitor import Monitor\nimport pyarrow.csv, sklearn.linear_model\n"
             "print(next(l for l in open('/proc/self/status') if l.startswith('VmSize')).split()[1])")
    mapped_kb = int(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                                   check=True).stdout)
    return mapped_kb // 1024 + ADDRESS_SPACE_HEADROOM_MB


def test_a_file_too_big_for_the_memory_left_is_refused_with_a_reason(ingest_dir: Path) -> None:
    """Under ``ulimit -v``, a large CSV made Arrow abort (SIGABRT) at every start; now its need is estimated first."""
    write_big_csv(ingest_dir)
    result = driftdeck("watch", ingest_dir, "--once", limit_mb=address_space_limit_mb())
    assert result.returncode == 0, result.stdout + result.stderr
    ((name, status, reason),) = ledger(ingest_dir)
    assert (name, status) == ("big.csv", "quarantined")
    assert "reading it needs about 400 MB of memory, more than the" in reason and "MB available" in reason
    assert (ingest_dir / ".driftdeck" / "quarantine" / "unread-big.csv.reason.txt").exists()


def test_a_file_the_process_dies_reading_is_retried_once_then_quarantined(ingest_dir: Path) -> None:
    """A file whose read kills the process (an abort inside Arrow) stopped the monitor at every start.

    The process is killed (SIGKILL) while it reads the file, as seen from the mark it leaves in the store
    and, the second time, from the notice that it reads the file once more.
    """
    write_big_csv(ingest_dir)
    notice = f"{PROCESS_DIED} last time; reading it once more"
    for attempt in (1, 2):
        process = subprocess.Popen([str(DRIFTDECK), "watch", str(ingest_dir), "--once"], stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL, text=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
        reader.start()
        try:
            assert wait_until(lambda: marks(ingest_dir) == [("big.csv", attempt)]
                              and (attempt == 1 or any(notice in line for line in lines)), timeout=60, interval=0.01)
            process.kill()
            process.wait(timeout=30)
            reader.join(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert ledger(ingest_dir) == [] and marks(ingest_dir) == [("big.csv", attempt)]  # it died reading the file
        assert any(notice in line for line in lines) == (attempt == 2)
    third = driftdeck("watch", ingest_dir, "--once")
    assert third.returncode == 0, third.stdout + third.stderr
    assert ledger(ingest_dir) == [("big.csv", "quarantined", f"{PROCESS_DIED} (2 times); not read again")]
    assert marks(ingest_dir) == []


# --- 15. exit codes ---------------------------------------------------------------------------------


def test_once_exits_1_after_an_error_but_0_after_a_quarantine(tmp_path: Path) -> None:
    quarantining = tmp_path / "quarantining"
    quarantining.mkdir()
    write_config(quarantining, INGEST_ONLY_CONFIG)
    (quarantining / "bad.csv").write_text("x1,x2\nnot,numbers\n")
    assert main(["watch", str(quarantining), "--once"]) == 0
    assert ledger(quarantining)[0][:2] == ("bad.csv", "quarantined")

    failing = tmp_path / "failing"
    failing.mkdir()
    write_config(failing, INGEST_ONLY_CONFIG)
    batch = write_batch(failing, "b0.csv", make_batch(0, rows=20))
    # where the labeled batch's rows are archived on their way in, a folder stands: the write fails
    blocker = failing / ".driftdeck" / "batches" / f"{sha256_file(batch)[:16]}.tmp"
    blocker.mkdir(parents=True)
    assert main(["watch", str(failing), "--once"]) == 1
    with sqlite3.connect(failing / ".driftdeck" / "state.db") as db:
        (message,) = db.execute("SELECT message FROM events WHERE kind = 'error'").fetchone()
    assert message.startswith("b0.csv: IsADirectoryError")


def test_ctrl_c_on_a_headless_watch_exits_130(ingest_dir: Path) -> None:
    write_batch(ingest_dir, "b0.csv", make_batch(0, rows=20))
    process = subprocess.Popen([str(DRIFTDECK), "watch", str(ingest_dir), "--headless", "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert '"batch_ingested"' in process.stdout.readline()  # running, and watching
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130


# --- 16. the training process and the terminal --------------------------------------------------------

NOISY_TRAINING = BASE_CONFIG.replace(
    'estimator = "logistic_regression"\n\n', 'estimator = "logistic_regression"\nparams = {max_iter = 1}\n\n', 1,
).replace(
    'estimator = "logistic_regression"\nwindow = 2',
    'estimator = "random_forest"\nwindow = 2\nparams = {n_jobs = -1, n_estimators = 5000}',
).replace("settle_seconds = 0.3", "settle_seconds = 0.3\ntrain_timeout = 2")


def test_the_training_process_never_writes_to_the_terminal(tmp_path: Path) -> None:
    """A fit's warnings, and the semaphores a killed n_jobs=-1 fit leaves, reached the terminal from the worker."""
    data = tmp_path / "data"
    data.mkdir()
    write_config(data, NOISY_TRAINING)
    write_batch(data, "b0.csv", make_batch(0))
    result = driftdeck("watch", data, "--once", "--json")  # every event on stdout: stderr is left to the rest
    assert "dynamic-lr: training v1 failed: timed out after 2 s" in result.stdout  # the fit was killed mid-way
    assert result.stderr == ""  # was: the fit's ConvergenceWarning, then "leaked semaphore objects"
    assert "ConvergenceWarning" in (data / ".driftdeck" / "training.log").read_text()  # the worker's output, kept
