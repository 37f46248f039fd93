"""A single big CSV, gzipped CSV or JSON lines file streamed in bounded memory: the same verdicts, profiles,
sample and predictions as a whole-file read of the same rows, on this process or a Dask cluster."""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.bigbatch import BottomK, scan_batch, streamed
from app.cli import main
from app.cluster import DaskEngine, LocalEngine
from app.config import parse_config
from app.ingest import read_batch
from app.models import build_pipeline, fit_pipeline
from app.serving import score
from app.stats.profile import Profile
from app.validation import InvalidBatch
from app.workspace import Workspace
from tests.conftest import STREAM_CONFIG, STREAMED_CONFIG, backdate, make_batch, write_batch, write_config

ROWS = 25_000  # about 2.7 MB of CSV: a whole-file read parses it in three 1 MB blocks, typing each from the first
LATE_ROW = 20_000  # a row in the last of them
FORMATS = ["b.csv", "b.csv.gz", "b.jsonl"]
SCALE = """
[[models]]
name = "m"
mode = "static"
estimator = "logistic_regression"

[scale]
chunk_rows = 1000
sample_rows = 1500
stream_above_mb = {mb}
"""


def config_for(folder: Path, stream_above_mb: float):
    text = STREAM_CONFIG + SCALE.format(mb=stream_above_mb)
    return parse_config(tomllib.loads(textwrap.dedent(text)), folder / "driftdeck.toml")


def streaming(folder: Path):
    return config_for(folder, 0.0001)


def whole(folder: Path):
    return config_for(folder, 10_000)


def bad_value_late(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.astype({"x1": object})
    frame.loc[LATE_ROW, "x1"] = "abc"  # the earlier blocks are all numbers
    return frame


def fraction_label_late(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.astype({"label": float})
    frame.loc[LATE_ROW, "label"] = 0.5
    return frame


def all_empty(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(x3=np.nan)


FAULTS = {
    "none": lambda frame: frame,
    "missing column": lambda frame: frame.drop(columns=["x3"]),
    "text in a numeric column, late": bad_value_late,
    "a fractional class label, late": fraction_label_late,
    "an all-empty column": all_empty,
    "a missing timestamp column": lambda frame: frame.drop(columns=["ts"]),
}


def as_whole_file_words(reason: str) -> str:
    """A streamed chunk's reason (a row counted from the chunk's start, the chunk's place) in a whole read's words."""
    where = re.search(r" \(rows counted from row ([\d,]+) of [^)]*\)$", reason)
    if not where:
        return reason
    reason, start = reason[: where.start()], int(where[1].replace(",", ""))
    return re.sub(r" in row (\d+)\b", lambda row: f" in row {int(row[1]) + start - 1}", reason)


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("name", FORMATS)
def test_a_streamed_file_has_the_verdict_and_profile_of_a_whole_read(tmp_path, name, fault):
    frame = FAULTS[fault](make_batch(0, rows=ROWS))
    path = write_batch(tmp_path, name, frame)
    reference = Profile.build(make_batch(9, rows=2000), streaming(tmp_path).schema)
    assert streamed(path, streaming(tmp_path).scale) and not streamed(path, whole(tmp_path).scale)

    scanned = scan_batch(path, streaming(tmp_path), {"m": reference})
    _, read = read_batch(path, whole(tmp_path))

    if isinstance(read, InvalidBatch):
        assert fault != "none"
        assert [as_whole_file_words(reason) for reason in scanned.reasons] == read.reasons
        return
    assert not scanned.reasons and scanned.rows == len(read.frame) == ROWS and scanned.labeled == read.labeled
    expected = reference.project(read.frame)
    for column, profile in expected.columns.items():
        got = scanned.profiles["m"].columns[column]
        if hasattr(profile, "edges"):
            assert np.array_equal(got.counts, profile.counts) and got.missing == profile.missing
            assert got.total == pytest.approx(profile.total)
        else:
            assert got.counts == profile.counts and got.missing == profile.missing
    # The sample: rows of the batch, as the whole read gives them, in batch order.
    positions = pd.Index(read.frame["x1"]).get_indexer(scanned.sample["x1"])
    assert len(scanned.sample) == 1500 and (positions >= 0).all() and (np.diff(positions) > 0).all()
    assert (scanned.sample["label"].to_numpy() == read.frame["label"].to_numpy()[positions]).all()
    assert (scanned.sample["color"].to_numpy() == read.frame["color"].to_numpy()[positions]).all()


def test_the_fault_tests_write_what_they_claim(tmp_path):
    """The late bad value is in a later block than the first: a whole read's first block types x1 as numbers."""
    path = write_batch(tmp_path, "b.csv", bad_value_late(make_batch(0, rows=ROWS)))
    assert path.stat().st_size > 2 * (1 << 20)
    assert b"abc" not in path.read_bytes()[: 1 << 20] and b"abc" in path.read_bytes()
    _, read = read_batch(path, whole(tmp_path))
    assert read.reasons == [f"column 'x1' must be numeric, found text 'abc' in row {LATE_ROW + 1} (1 such value(s))"]


def test_a_text_file_samples_the_rows_a_parquet_file_of_the_same_rows_samples(tmp_path):
    frame = make_batch(0, rows=ROWS)
    config = streaming(tmp_path)
    parquet = scan_batch(write_batch(tmp_path, "b.parquet", frame), config, {}).sample
    for name in FORMATS:
        sample = scan_batch(write_batch(tmp_path, name, frame), config, {}).sample
        # the same keys, the same rows (as near as text keeps the numbers: pandas writes JSON to 10 decimals)
        assert np.allclose(sample["x1"].to_numpy(), parquet["x1"].to_numpy(), rtol=0, atol=1e-9)


def test_the_running_sample_holds_at_most_twice_its_size_and_keeps_the_smallest_keys():
    k = 100
    sample = BottomK(k, np.inf)
    rng = np.random.default_rng(1)
    all_keys = []
    for start in range(0, 5000, 70):
        keys = rng.random(70)
        all_keys.append(keys)
        sample.offer(pa.record_batch({"row": np.arange(start, start + 70)}), keys)
        assert sample.held <= 2 * k
    rows = np.concatenate([batch.column("row").to_numpy() for batch in sample.rows()])
    assert np.array_equal(rows, np.sort(np.argsort(np.concatenate(all_keys))[:k]))


def test_a_truncated_gzip_is_refused_saying_so(tmp_path):
    path = write_batch(tmp_path, "b.csv.gz", make_batch(0, rows=ROWS * 4))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # cut mid-stream
    scanned = scan_batch(path, streaming(tmp_path), {})
    assert scanned.reasons and scanned.reasons[0].startswith("not a readable .csv.gz file: ")
    assert scanned.rows > 0  # the fault struck part-way through, after rows had been read
    _, read = read_batch(path, whole(tmp_path))
    assert read.reasons[0].startswith("not a readable .csv.gz file: ")


def test_text_that_is_not_utf8_late_in_a_stream_is_the_reason_a_whole_read_gives(tmp_path):
    frame = make_batch(0, rows=ROWS).astype({"color": object})
    frame.loc[LATE_ROW, "color"] = "caf\udce9"  # a Latin-1 byte in a UTF-8 file
    path = tmp_path / "b.csv"
    path.write_bytes(frame.to_csv(index=False).encode("utf-8", "surrogateescape"))
    _, read = read_batch(path, whole(tmp_path))
    assert scan_batch(path, streaming(tmp_path), {}).reasons == read.reasons
    assert read.reasons[0].startswith("not UTF-8 text (byte ")


def test_big_text_files_are_quarantined_in_place_or_ingested_by_watch_once(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_config(data, STREAMED_CONFIG.replace("[watch]", "[watch]\nmax_file_mb = 1") + "stream_above_mb = 0.5\n")
    backdate(write_batch(data, "week-00.csv", make_batch(0, rows=600)))
    backdate(write_batch(data, "week-01.csv", make_batch(1, rows=ROWS)))  # above max_file_mb: streamed, never held
    backdate(write_batch(data, "week-02.csv", bad_value_late(make_batch(2, rows=ROWS))))
    cut = write_batch(data, "week-03.csv.gz", make_batch(3, rows=ROWS * 2))
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size * 3 // 4])
    backdate(cut)
    assert main(["watch", str(data), "--once"]) == 0
    with Workspace.open(data, read_only=True) as workspace:
        files = {record.name: record for record in workspace.store.files()}
    assert (files["week-01.csv"].status, files["week-01.csv"].rows) == ("ingested", ROWS)
    assert files["week-02.csv"].status == "quarantined"
    assert "column 'x1' must be numeric, found text 'abc'" in files["week-02.csv"].reason
    assert files["week-03.csv.gz"].status == "quarantined"
    assert "not a readable .csv.gz file" in files["week-03.csv.gz"].reason
    quarantine = data / ".driftdeck" / "quarantine"
    assert sorted(p.name.split("-", 1)[1] for p in quarantine.iterdir()) == ["week-02.csv.reason.txt",
                                                                             "week-03.csv.gz.reason.txt"]
    assert (data / "week-02.csv").exists() and (data / "week-03.csv.gz").exists()  # left in place, not copied
    predictions = list((data / ".driftdeck" / "predictions" / "static-lr").glob("*week-01.csv.parquet"))
    assert len(predictions) == 1 and pq.read_table(predictions[0]).num_rows == ROWS


@pytest.mark.parametrize("name", FORMATS)
def test_a_streamed_text_file_is_predicted_like_a_whole_read(tmp_path, name):
    config = streaming(tmp_path)
    frame = make_batch(0, rows=4000)
    path = write_batch(tmp_path, name, frame)
    _, read = read_batch(path, whole(tmp_path))
    pipeline = fit_pipeline(build_pipeline("classification", "logistic_regression", {}, config.schema),
                            read.frame, read.frame["label"])
    out = tmp_path / "predictions.parquet"
    assert LocalEngine().predict(path, pipeline, config, 1, out) == 4000
    streamed_predictions = pq.read_table(out).to_pandas().drop(columns="predicted_at")
    in_memory = score(pipeline, read.frame, 1, config).drop(columns="predicted_at")
    pd.testing.assert_frame_equal(streamed_predictions, in_memory, check_dtype=False)


def test_dask_scans_and_predicts_a_single_csv_as_one_part(tmp_path):
    from distributed import LocalCluster

    config = streaming(tmp_path)
    path = write_batch(tmp_path, "b.csv.gz", make_batch(0, rows=6000))
    reference = Profile.build(make_batch(9, rows=2000), config.schema)
    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address="127.0.0.1:0")
    dask = DaskEngine(cluster.scheduler_address)
    try:
        there = dask.scan(path, config, {"m": reference})
        assert cluster.scheduler.task_prefixes["scan_part"].state_counts["memory"] == 1
        here = LocalEngine().scan(path, config, {"m": reference})
        assert (there.rows, there.reasons, there.sha256) == (here.rows, here.reasons, here.sha256)
        assert there.profiles["m"].to_dict() == here.profiles["m"].to_dict()
        pd.testing.assert_frame_equal(there.sample, here.sample)
        pipeline = fit_pipeline(build_pipeline("classification", "logistic_regression", {}, config.schema),
                                here.sample, here.sample["label"])
        assert dask.predict(path, pipeline, config, 1, tmp_path / "d.parquet") == 6000
    finally:
        dask.close()
        cluster.close()


MEMORY_PROBE = """
import sys, tomllib, tracemalloc
from pathlib import Path
import pyarrow as pa
from app.bigbatch import scan_batch
from app.config import parse_config
from tests.test_bigbatch_text import STREAM_CONFIG, SCALE
path = Path(sys.argv[1])
config = parse_config(tomllib.loads(STREAM_CONFIG + SCALE.format(mb=0.0001)), path.parent / "driftdeck.toml")
tracemalloc.start()
scanned = scan_batch(path, config, {})
assert not scanned.reasons, scanned.reasons
print(scanned.rows, pa.default_memory_pool().max_memory(), tracemalloc.get_traced_memory()[1])
"""


def peaks(path: Path) -> tuple[int, int]:
    """Arrow's and Python's (numpy's too) peak allocations while ``path`` streams, in a fresh process."""
    probe = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(path)], capture_output=True, text=True,
                           cwd=Path(__file__).parent.parent, check=True)
    rows, arrow_peak, python_peak = map(int, probe.stdout.split())
    assert rows == len(pd.read_csv(path, usecols=["x1"])) if path.suffix != ".jsonl" else rows > 0
    return arrow_peak, python_peak


def write_rows(path: Path, rows: int) -> int:
    """``rows`` rows in ``path`` (a quickly compressed gzip); the bytes of its text."""
    frame = pd.concat([make_batch(index, rows=50_000) for index in range(rows // 50_000)], ignore_index=True)
    text = frame.to_json(orient="records", lines=True) if path.suffix == ".jsonl" else frame.to_csv(index=False)
    data = text.encode()
    path.write_bytes(gzip.compress(data, compresslevel=1) if path.suffix == ".gz" else data)
    return len(data)


@pytest.mark.parametrize("name", ["b.csv.gz", "b.jsonl"])
def test_a_file_several_times_the_memory_it_takes_streams(tmp_path, name):
    """400k rows (34 to 44 MB of text) streamed: Arrow's peak and Python's each stay under a third of the text,
    set by the chunk, the parse blocks Arrow reads ahead (32 of 256 KB at most) and the sample, not the file."""
    text_bytes = write_rows(tmp_path / name, 400_000)
    arrow_peak, python_peak = peaks(tmp_path / name)
    assert text_bytes > 30 * (1 << 20)
    assert arrow_peak < text_bytes / 3 and python_peak < text_bytes / 3, (arrow_peak, python_peak, text_bytes)


def test_a_gzipped_file_is_streamed_by_the_length_of_its_content_not_its_size_on_disk(tmp_path):
    """Text compresses five to ten times: a gzipped file a fifth of ``stream_above_mb`` on disk can hold several
    times it, which a whole-file read would hold in memory, decoded and parsed."""
    path = tmp_path / "repetitive.csv.gz"
    text = make_batch(0, rows=200).round(1).to_csv(index=False).encode() * 80  # the same rows again: compresses well
    path.write_bytes(gzip.compress(text))
    limit = 2 * len(path.read_bytes()) / (1 << 20)  # twice the file's size on disk, a fraction of its content
    assert len(text) > 4 * limit * (1 << 20)
    assert streamed(path, config_for(tmp_path, limit).scale)
    assert not streamed(path, config_for(tmp_path, 1.1 * len(text) / (1 << 20)).scale)
    fifo = tmp_path / "fifo.csv.gz"
    os.mkfifo(fifo)
    assert not streamed(fifo, config_for(tmp_path, limit).scale)  # never opened blocking: the whole-file read refuses it
