"""Batches larger than memory: partitioned Parquet folders and big files streamed in chunks, here and on Dask."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from app.bigbatch import SUCCESS_MARKER, batch_parts, batch_sha256, folder_complete, scan_batch, streamed
from app.cluster import DaskEngine, LocalEngine
from app.config import parse_config
from app.ingest import read_batch
from app.models import build_pipeline, fit_pipeline
from app.serving import score
from app.stats.profile import Profile
from tests.conftest import STREAM_CONFIG, make_batch

SCALE = """
[[models]]
name = "static-lr"
mode = "static"
estimator = "logistic_regression"

[scale]
chunk_rows = 1000
sample_rows = 1500
stream_above_mb = 0.05
"""


def config_for(folder: Path, text: str = STREAM_CONFIG + SCALE):
    import tomllib

    return parse_config(tomllib.loads(textwrap.dedent(text)), folder / "driftdeck.toml")


def write_parts(folder: Path, frames: list[pd.DataFrame], success: bool = True) -> Path:
    folder.mkdir(parents=True)
    for index, frame in enumerate(frames):
        frame.to_parquet(folder / f"part-{index:03d}.parquet", row_group_size=700)
    if success:
        (folder / SUCCESS_MARKER).write_bytes(b"")
    return folder


@pytest.fixture
def parts(tmp_path) -> tuple[Path, pd.DataFrame]:
    frames = [make_batch(index, rows=3000) for index in range(3)]
    return write_parts(tmp_path / "data" / "2026-02-09", frames), pd.concat(frames, ignore_index=True)


def validated(frame: pd.DataFrame, config, tmp_path: Path) -> pd.DataFrame:
    """The frame a whole-file read of ``frame`` gives: what the streamed chunks must add up to."""
    path = tmp_path / "whole.parquet"
    frame.to_parquet(path)
    _, batch = read_batch(path, config)
    return batch.frame


def test_a_partitioned_folder_is_validated_profiled_and_sampled_over_every_row(parts, tmp_path):
    folder, whole = parts
    config = config_for(folder.parent)
    reference = Profile.build(make_batch(9, rows=2000), config.schema)
    scanned = scan_batch(folder, config, {"static-lr": reference})

    assert scanned.reasons == [] and scanned.labeled and scanned.rows == 9000
    expected = reference.project(validated(whole, config, tmp_path))
    for column, profile in expected.columns.items():
        got = scanned.profiles["static-lr"].columns[column]
        if hasattr(profile, "edges"):
            assert np.array_equal(got.counts, profile.counts) and got.missing == profile.missing
            assert got.total == pytest.approx(profile.total) and got.minimum == profile.minimum
        else:
            assert got.counts == profile.counts
    # The sample: the configured size, distinct rows of the batch, in batch order, from every part alike.
    sample = scanned.sample
    assert len(sample) == 1500 and list(sample.columns) == list(validated(whole, config, tmp_path).columns)
    positions = pd.Index(whole["x1"]).get_indexer(sample["x1"])
    assert (positions >= 0).all() and (np.diff(positions) > 0).all()
    per_part = np.bincount(positions // 3000, minlength=3)
    assert all(400 < count < 600 for count in per_part), per_part  # 500 each expected; a biased sample fails
    assert "uniform sample of 1,500 of 9,000 rows" in scanned.as_batch(folder).warnings[-1]
    again = scan_batch(folder, config, {"static-lr": reference})
    pd.testing.assert_frame_equal(again.sample, sample)  # the same rows every time


def test_a_bad_chunk_is_refused_saying_where(tmp_path):
    frames = [make_batch(0, rows=2000), make_batch(1, rows=2000)]
    frames[1]["x1"] = frames[1]["x1"].astype(str)  # a producer that wrote numbers as text, one of them not a number
    frames[1].loc[1500, "x1"] = "abc"
    folder = write_parts(tmp_path / "data" / "b", frames)
    scanned = scan_batch(folder, config_for(folder.parent), {})
    assert len(scanned.reasons) == 1
    assert "must be numeric, found text 'abc'" in scanned.reasons[0]
    assert "in row 101 (1 such value(s)) (rows counted from row 1,401 of part-001.parquet)" in scanned.reasons[0]


def test_the_missing_share_is_judged_on_all_rows(tmp_path):
    frames = [make_batch(0, rows=2000), make_batch(1, rows=2000)]
    frames[1]["x3"] = np.nan  # one part entirely missing: 50% of the batch, the limit is 50%
    folder = write_parts(tmp_path / "data" / "half", frames)
    assert scan_batch(folder, config_for(folder.parent), {}).reasons == []
    frames[0].loc[:10, "x3"] = np.nan
    folder = write_parts(tmp_path / "data" / "more", frames)
    assert "column 'x3' is 50% missing" in scan_batch(folder, config_for(folder.parent), {}).reasons[0]


def test_a_folder_is_complete_with_its_marker_or_once_settled(tmp_path):
    folder = write_parts(tmp_path / "data" / "p", [make_batch(0, rows=50)], success=False)
    (folder / ".part-001.parquet.tmp").write_bytes(b"half")  # a part being written is not a part
    assert [p.name for p in batch_parts(folder)] == ["part-000.parquet"]
    assert not folder_complete(folder, settle_seconds=60)
    assert folder_complete(folder, settle_seconds=60, now=os.stat(folder).st_mtime + 61)
    (folder / SUCCESS_MARKER).write_bytes(b"")
    assert folder_complete(folder, settle_seconds=60)
    assert streamed(folder, config_for(folder.parent).scale)


def test_the_content_hash_of_a_folder_follows_its_parts(tmp_path):
    first = write_parts(tmp_path / "a", [make_batch(0, rows=50), make_batch(1, rows=50)])
    second = write_parts(tmp_path / "b", [make_batch(0, rows=50), make_batch(1, rows=50)])
    assert batch_sha256(first) == batch_sha256(second)
    make_batch(2, rows=50).to_parquet(second / "part-001.parquet")
    assert batch_sha256(first) != batch_sha256(second)


def test_a_big_single_file_is_streamed_and_predicted_like_a_whole_read(tmp_path):
    config = config_for(tmp_path)
    frame = make_batch(0, rows=4000)
    path = tmp_path / "big.parquet"
    frame.to_parquet(path, row_group_size=500)
    assert streamed(path, config.scale)  # above scale.stream_above_mb
    whole = validated(frame, config, tmp_path)
    pipeline = fit_pipeline(build_pipeline("classification", "logistic_regression", {}, config.schema),
                            whole, whole["label"])
    out = tmp_path / "predictions.parquet"
    assert LocalEngine().predict(path, pipeline, config, 1, out) == 4000
    streamed_predictions = pq.read_table(out).to_pandas().drop(columns="predicted_at")
    in_memory = score(pipeline, whole, 1, config).drop(columns="predicted_at")
    pd.testing.assert_frame_equal(streamed_predictions, in_memory, check_dtype=False)


@pytest.fixture(scope="module")
def dask_scheduler():
    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address="127.0.0.1:0")
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


def test_dask_gives_exactly_the_in_process_result(parts, dask_scheduler, tmp_path):
    folder, whole = parts
    config = config_for(folder.parent)
    reference = Profile.build(make_batch(9, rows=2000), config.schema)
    local = LocalEngine()
    dask = DaskEngine(dask_scheduler)
    try:
        here = local.scan(folder, config, {"m": reference})
        there = dask.scan(folder, config, {"m": reference})
        assert (there.rows, there.labeled, there.reasons, there.sha256) == (here.rows, here.labeled, here.reasons,
                                                                            here.sha256)
        assert there.profiles["m"].to_dict() == here.profiles["m"].to_dict()
        pd.testing.assert_frame_equal(there.sample, here.sample)
        frame = validated(whole, config, tmp_path)
        pipeline = fit_pipeline(build_pipeline("classification", "logistic_regression", {}, config.schema),
                                frame, frame["label"])
        assert dask.predict(folder, pipeline, config, 3, tmp_path / "d.parquet") == 9000
        assert local.predict(folder, pipeline, config, 3, tmp_path / "l.parquet") == 9000
    finally:
        dask.close()
    drop = ["predicted_at"]
    pd.testing.assert_frame_equal(pq.read_table(tmp_path / "d.parquet").to_pandas().drop(columns=drop),
                                  pq.read_table(tmp_path / "l.parquet").to_pandas().drop(columns=drop))
