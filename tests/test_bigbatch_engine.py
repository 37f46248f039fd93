"""A partitioned Parquet batch through the whole engine: noticed, streamed, measured, predicted, recorded once."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from app.bigbatch import batch_sha256
from app.cli import main
from app.engine.monitor import Monitor
from app.workspace import Workspace
from tests.conftest import STREAMED_CONFIG, backdate, make_batch, wait_until, write_batch, write_config


def write_partitioned(folder: Path, first: int, parts: int = 3, rows: int = 3000, success: bool = True) -> Path:
    folder.mkdir()
    for index in range(parts):
        make_batch(first + index, rows=rows).to_parquet(folder / f"part-{index:03d}.parquet", row_group_size=800)
    if success:
        (folder / "_SUCCESS").write_bytes(b"")
    return folder


def results(folder: Path) -> dict[str, dict]:
    with Workspace.open(folder, read_only=True) as workspace:
        names = {record.id: (record.name, record.status, record.rows) for record in workspace.store.files()}
        return {names[file_id][0]: {"rows": names[file_id][2], **data}
                for file_id, _, data in workspace.store.results("static-lr")}


def test_watch_once_streams_a_partitioned_folder_against_the_serving_model(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    write_config(data, STREAMED_CONFIG)
    backdate(write_batch(data, "week-00.csv", make_batch(0, rows=600)))  # settled: taken in name order
    write_partitioned(data / "week-01", first=1)
    (data / "notes").mkdir()  # a folder without Parquet parts is not a batch
    (data / "notes" / "readme.csv").write_text("a,b\n1,2\n")

    assert main(["watch", str(data), "--once"]) == 0
    seen = results(data)
    assert sorted(seen) == ["week-00.csv", "week-01"]
    streamed = seen["week-01"]
    assert streamed["rows"] == 9000
    assert streamed["sampled"] == "a uniform sample of 1,500 of 9,000 rows"
    with Workspace.open(data, read_only=True) as workspace:  # drift measured on every row, not the sample
        assert workspace.store.model_state("static-lr").current_profile["rows"] == 9000
    predictions = list((data / ".driftdeck" / "predictions" / "static-lr").glob("*week-01.parquet"))
    assert len(predictions) == 1
    table = pq.read_table(predictions[0])
    assert table.num_rows == 9000 and sorted(table.column("row").to_pylist()) == list(range(9000))

    assert "week-01: streamed" in capsys.readouterr().out
    assert main(["watch", str(data), "--once"]) == 0  # nothing is read twice, not even streamed again
    assert "streamed" not in capsys.readouterr().out
    with Workspace.open(data, read_only=True) as workspace:
        assert [(r.name, r.status) for r in workspace.store.files()] == [("week-00.csv", "ingested"),
                                                                         ("week-01", "ingested")]


def test_the_running_engine_takes_a_folder_once_its_marker_lands(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_config(data, STREAMED_CONFIG.replace("settle_seconds = 0.3", "settle_seconds = 600"))  # only _SUCCESS completes it
    monitor = Monitor(data)
    monitor.start()
    try:
        folder = write_partitioned(data / "2026-02-16", first=5, parts=2, rows=1000, success=False)
        assert not wait_until(lambda: monitor.store.files(), timeout=2.5)  # parts without a marker: still being written
        (folder / "_SUCCESS").write_bytes(b"")
        assert wait_until(lambda: [(r.name, r.status, r.rows) for r in monitor.store.files()]
                          == [("2026-02-16", "ingested", 2000)], timeout=30)
    finally:
        monitor.close()


def test_a_bad_part_quarantines_the_folder_with_its_reason(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_config(data, STREAMED_CONFIG)
    folder = write_partitioned(data / "bad", first=1, parts=2, rows=500)
    broken = make_batch(9, rows=500).drop(columns=["x2"])
    broken.to_parquet(folder / "part-001.parquet")
    assert main(["watch", str(data), "--once"]) == 0
    with Workspace.open(data, read_only=True) as workspace:
        [record] = workspace.store.files()
    assert (record.name, record.status) == ("bad", "quarantined")
    assert "missing feature column(s): 'x2'" in record.reason
    reasons = list((data / ".driftdeck" / "quarantine").glob("*bad.reason.txt"))
    assert len(reasons) == 1
    # Nothing copied, nothing moved: the folder stays as it was, and the reason file names its content.
    assert sorted(p.name for p in (data / ".driftdeck" / "quarantine").iterdir()) == [reasons[0].name]
    assert sorted(p.name for p in folder.iterdir()) == ["_SUCCESS", "part-000.parquet", "part-001.parquet"]
    assert f"sha256: {batch_sha256(folder)}\n" in reasons[0].read_text()
    assert reasons[0].name.startswith(batch_sha256(folder)[:12])
