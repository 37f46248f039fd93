"""The whole engine on a Dask cluster: `watch --once` over partitioned batches stores what the in-process engine
stores, and a cluster that cannot be reached is one event that loses no batch."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from app.cli import main
from app.engine.monitor import Monitor
from app.events import EventKind
from app.workspace import Workspace
from tests.conftest import STREAMED_CONFIG, backdate, make_batch, wait_until, write_batch, write_config


@pytest.fixture(scope="module")
def dask_cluster():
    """A small LocalCluster: one worker process of two threads (a real process boundary, so the tasks and
    their results are pickled as on any cluster)."""
    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address="127.0.0.1:0")
    try:
        yield cluster
    finally:
        cluster.close()


def fill(folder: Path, engine: str) -> Path:
    """A data folder: a labeled CSV that trains version 1, then a partitioned batch, drifted and with gaps."""
    folder.mkdir()
    write_config(folder, STREAMED_CONFIG + engine)
    backdate(write_batch(folder, "week-00.csv", make_batch(0, rows=600)))
    (folder / "week-01").mkdir()
    for index in range(3):
        frame = make_batch(1 + index, rows=2000, shift=1.5)
        frame.loc[frame.index % 7 == index, "x2"] = np.nan  # some missing values in every part
        frame.to_parquet(folder / "week-01" / f"part-{index:03d}.parquet", row_group_size=700)
    (folder / "week-01" / "_SUCCESS").write_bytes(b"")
    return folder


def stored(folder: Path) -> dict:
    """Everything the engine stored about the batches, less what measures time."""
    with Workspace.open(folder, read_only=True) as workspace:
        store = workspace.store
        files = {record.id: (record.name, record.status, record.rows, record.sha256) for record in store.files()}
        results = {files[file_id][0]: {key: value for key, value in data.items() if not key.endswith("_seconds")}
                   for file_id, _, data in store.results("static-lr")}
        profile = store.model_state("static-lr").current_profile
    predictions = {}
    for path in sorted((folder / ".driftdeck" / "predictions" / "static-lr").glob("*.parquet")):
        predictions[path.name] = pq.read_table(path).to_pandas().drop(columns="predicted_at")
    return {"files": sorted(files.values()), "results": results, "profile": profile, "predictions": predictions}


def test_watch_once_on_a_dask_cluster_stores_what_the_local_engine_stores(tmp_path, dask_cluster):
    local = fill(tmp_path / "local", "")
    dask = fill(tmp_path / "dask", f'engine = "dask"\nscheduler = "{dask_cluster.scheduler_address}"\n')
    assert main(["watch", str(local), "--once"]) == 0
    assert main(["watch", str(dask), "--once"]) == 0
    ran = dask_cluster.scheduler.task_prefixes  # the parts were scanned and predicted there, one task each
    assert ran["scan_part"].state_counts["memory"] == 3 and ran["predict_part"].state_counts["memory"] == 3

    here, there = stored(local), stored(dask)
    assert [(name, status, rows) for name, status, rows, _ in here["files"]] == [
        ("week-00.csv", "ingested", 600), ("week-01", "ingested", 6000)]
    assert here["files"] == there["files"]
    drifted = here["results"]["week-01"]
    assert "x3" in drifted["drifted_features"] and drifted["sampled"] == "a uniform sample of 1,500 of 6,000 rows"
    assert here["results"] == there["results"]  # drift per column, scores, flags, quality issues, the sample's words
    assert here["profile"]["columns"]["x2"]["missing"] > 0 and here["profile"] == there["profile"]
    assert sorted(here["predictions"]) == sorted(there["predictions"]) and len(here["predictions"]) == 1  # none before v1 serves
    for name, frame in here["predictions"].items():
        pd.testing.assert_frame_equal(frame, there["predictions"][name])


def test_a_worker_that_scans_loads_neither_scikit_learn_nor_scipy(tmp_path):
    """Each worker process holds its own libraries: the scan path must not pull in the model code."""
    import sys

    from distributed import LocalCluster

    from app.cluster import DaskEngine
    from app.config import load_config
    from app.stats.profile import Profile

    folder = fill(tmp_path / "data", "")
    config = load_config(folder)
    reference = Profile.build(make_batch(9, rows=600), config.schema)
    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0")
    engine = DaskEngine(cluster.scheduler_address)
    try:
        scanned = engine.scan(folder / "week-01", config, {"m": reference})
        # A lambda travels by value: the worker does not import this test module (which loads the whole engine).
        loaded = engine.client().run(lambda: sorted(name for name in ("sklearn", "scipy", "skops") if name in sys.modules))
    finally:
        engine.close()
        cluster.close()
    assert scanned.rows == 6000 and not scanned.reasons
    assert list(loaded.values()) == [[]]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # free once the probe is closed: nothing listens there


def test_an_unreachable_scheduler_is_one_event_and_the_batch_waits(tmp_path, capsys):
    import dask
    import distributed  # noqa: F401 - its config defaults are loaded before one is changed (and restored) below

    folder = fill(tmp_path / "data", f'engine = "dask"\nscheduler = "tcp://127.0.0.1:{closed_port()}"\n')
    started = time.monotonic()
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        assert main(["watch", str(folder), "--once"]) == 1
    assert time.monotonic() - started < 30
    printed = capsys.readouterr()
    out = printed.out + printed.err
    unreachable = [line for line in out.splitlines() if "Dask scheduler" in line]
    assert len(unreachable) == 1 and all("cannot be reached" in line for line in unreachable), out
    assert "Traceback" not in out
    with Workspace.open(folder, read_only=True) as workspace:  # the CSV is in; the folders are not, nor quarantined
        assert [(record.name, record.status) for record in workspace.store.files()] == [("week-00.csv", "ingested")]

    write_config(folder, STREAMED_CONFIG + 'engine = "dask"\nscheduler = "local"\n')  # the next run, with a cluster, takes it
    assert main(["watch", str(folder), "--once"]) == 0
    with Workspace.open(folder, read_only=True) as workspace:
        assert [(record.name, record.status) for record in workspace.store.files()] == [
            ("week-00.csv", "ingested"), ("week-01", "ingested")]


def test_a_running_engine_reads_the_batch_once_the_scheduler_is_up(tmp_path):
    import dask
    from distributed import LocalCluster

    port = closed_port()
    folder = fill(tmp_path / "data", f'engine = "dask"\nscheduler = "tcp://127.0.0.1:{port}"\n')
    events = []
    cluster = None
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        monitor = Monitor(folder)
        monitor.subscribe(events.append)
        monitor.start()
        try:
            assert wait_until(lambda: any(e.kind == EventKind.FILE_ERROR and e.file == "week-01" for e in events))
            assert [record.name for record in monitor.store.files()] == ["week-00.csv"]
            cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, scheduler_port=port,
                                   dashboard_address="127.0.0.1:0")
            assert wait_until(lambda: [(r.name, r.status) for r in monitor.store.files()]
                              == [("week-00.csv", "ingested"), ("week-01", "ingested")], timeout=60)
        finally:
            monitor.close()
            if cluster is not None:
                cluster.close()
