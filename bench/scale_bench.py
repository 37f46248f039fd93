"""Batches larger than memory: wall time and peak memory of streaming a partitioned Parquet batch.

For each size in ``--rows`` (default 10M and 50M rows; 20 columns: 18 numeric
features, a category and a label) a partitioned batch (parts of ``--part-rows``
rows and a ``_SUCCESS`` marker) is generated in a temp folder, and each of these
runs in a fresh interpreter that reports its peak resident memory (VmHWM):

- ``floor``: a plain ``pyarrow.dataset`` scan of the same columns, the least any reader pays
  (reading one record batch ahead and without pre-buffering, as driftdeck does: Arrow's defaults
  take hundreds of MB more, and pre-buffering was slower from a local disk too);
- ``stream``: driftdeck's in-process engine (content hash, validation, profile on a
  reference's edges, uniform sample of ``scale.sample_rows``);
- ``hash``: the content hash alone (SHA-256 of every part), which ``stream`` takes on a thread
  of its own while it scans: the CPU it takes from the scan on 2 cores;
- ``dask``: the same on a LocalCluster of 2 single-threaded worker processes, checked identical to
  ``stream``; the workers start with ``ARROW_DEFAULT_MEMORY_POOL=system``, as the README advises (set
  it to another pool to compare). Its memory is given two ways: the *peak of the sum*, the largest
  resident memory the engine's process and the two workers held at once (their RSS summed every
  20 ms by a thread of this driver: a spike shorter than that can slip between samples), and the *sum
  of the peaks*, the engine's VmHWM plus each worker's (an upper bound: the three peak at different
  moments). The cluster's own process (its scheduler and the workers' nannies) is in neither: its
  peak is printed apart;
- ``dask`` with ``scheduler = "local"``: driftdeck's own LocalCluster, a thread per core in
  its process (peak memory: that process's), checked identical too.

Then, at ``--s3-rows`` (default 1M), the object store path: the parts uploaded to
a moto S3 server on localhost (its own process), mirrored into a local folder by
``BucketMirror`` and streamed, against a ``floor`` scan of the same parts.
Targets: peak memory below 1 GB whatever the size; ``stream`` within 3x the floor;
``dask`` identical. Beside the wall time, each in-process run reports the CPU time of its
process (every thread): on a shared machine it moves less with the load than the wall time.

With ``--csv`` (sizes in rows, default 2M), instead: one CSV file of the same 20 columns
(numbers written to 6 decimals, as exports often are), streamed by driftdeck (``stream``,
as above) against ``csv-floor``, ``pyarrow.csv.open_csv`` reading the same file through (the
least a streaming read pays: Arrow's defaults, types inferred, no checks).
The temp folders are deleted at the end.

Run: ``.venv/bin/python bench/scale_bench.py [--rows 1000000,10000000] [--s3-rows 1000000]``,
or ``.venv/bin/python bench/scale_bench.py --csv [2000000,10000000]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import threading
import tomllib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

FEATURES = 18
CATEGORIES = ["north", "south", "east", "west", "centre"]
CONFIG = "target = \"label\"\n\n[schema]\n" + "".join(f"f{i:02d} = \"numeric\"\n" for i in range(FEATURES)) + """\
region = "categorical"

[[models]]
name = "m"
mode = "static"
estimator = "logistic_regression"
"""


def generate(folder: Path, rows: int, part_rows: int, seed: int = 0) -> Path:
    """A partitioned batch of ``rows`` rows in parts of ``part_rows``, written part by part (bounded memory)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for index, start in enumerate(range(0, rows, part_rows)):
        count = min(part_rows, rows - start)
        columns = {f"f{i:02d}": rng.normal(i % 3, 1 + i % 2, count) for i in range(FEATURES)}
        columns["region"] = pa.array(rng.choice(CATEGORIES, count)).dictionary_encode()
        columns["label"] = (columns["f00"] + rng.normal(0, 1, count) > 0).astype(np.int64)
        pq.write_table(pa.table(columns), folder / f"part-{index:04d}.parquet", row_group_size=256_000)
    (folder / "_SUCCESS").write_bytes(b"")
    return folder


def generate_csv(path: Path, rows: int, seed: int = 0) -> Path:
    """One CSV file of ``rows`` rows, the columns of :func:`generate`, written a million rows at a time."""
    path.parent.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    with pa_csv.CSVWriter(str(path), schema=_csv_schema()) as writer:
        for start in range(0, rows, 1_000_000):
            count = min(1_000_000, rows - start)
            columns = {f"f{i:02d}": np.round(rng.normal(i % 3, 1 + i % 2, count), 6) for i in range(FEATURES)}
            columns["region"] = rng.choice(CATEGORIES, count)
            columns["label"] = (columns["f00"] + rng.normal(0, 1, count) > 0).astype(np.int64)
            writer.write_table(pa.table(columns, schema=_csv_schema()))
    return path


def _csv_schema() -> pa.Schema:
    return pa.schema([*((f"f{i:02d}", pa.float64()) for i in range(FEATURES)), ("region", pa.string()),
                      ("label", pa.int64())])


class SummedRssPeak:
    """The largest sum of some processes' resident memory (RSS) seen at once, sampled on a thread of its own."""

    def __init__(self, pids: Callable[[], list[int]], interval: float = 0.02) -> None:
        self.pids = pids
        self.interval = interval
        self.peak_mb = 0.0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> SummedRssPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            total = 0
            for pid in self.pids():
                try:
                    total += psutil.Process(pid).memory_info().rss
                except psutil.NoSuchProcess:  # the engine's process as it ends: the sum stopped growing
                    continue
            self.peak_mb = max(self.peak_mb, total / (1 << 20))
            self.samples += 1


def measure(mode: str, path: Path, extra: str, cluster: subprocess.Popen | None = None) -> dict:
    """Run ``mode`` on ``path`` in a fresh interpreter; its wall time, peak memory and result figures.

    With ``cluster`` (the process of :func:`dask_cluster`), the peak of the summed RSS of that
    interpreter and the cluster's worker processes too, as ``summed_peak_mb``.
    """
    command = [sys.executable, __file__, "--measure", mode, "--path", str(path), "--extra", extra]
    engine = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watched = (lambda: [engine.pid, *cluster_workers(cluster)]) if cluster else (lambda: [engine.pid])
    with SummedRssPeak(watched) as summed:
        stdout, stderr = engine.communicate()
    if engine.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{stderr[-3000:]}")
    figures = json.loads(stdout.strip().splitlines()[-1])
    if cluster:
        figures.update(summed_peak_mb=summed.peak_mb, summed_samples=summed.samples)
    return figures


def cluster_workers(cluster: subprocess.Popen) -> list[int]:
    """The worker processes of :func:`dask_cluster`'s LocalCluster: the children its nannies spawned."""
    workers = []
    for child in psutil.Process(cluster.pid).children():
        try:
            if "spawn_main" in " ".join(child.cmdline()):  # not multiprocessing's resource tracker
                workers.append(child.pid)
        except psutil.NoSuchProcess:
            continue
    return workers


def peak_mb(pid: int | None = None) -> float:
    """The VmHWM of process ``pid`` (this one by default), in MB."""
    for line in Path(f"/proc/{pid or os.getpid()}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_measurement(mode: str, path: Path, extra: str) -> dict:
    """Inside the fresh interpreter: do ``mode`` once and report.

    Every mode imports the same libraries before its clock starts, so ``idle_mb``
    (the peak after the imports) is the same floor under every figure. Those are the product's
    engine's: ``app.engine.monitor`` brings the runners and training, and with them scikit-learn and
    SciPy, which an engine holds whatever engine reads its batches.
    """
    import pandas as pd
    import pyarrow.dataset as pads

    import app.engine.monitor  # noqa: F401 - the engine's interpreter, as the product's

    from app.bigbatch import NOT_PRE_BUFFERED, ONE_AHEAD, batch_parts, batch_sha256
    from app.cluster import DaskEngine, LocalEngine
    from app.config import parse_config
    from app.mirror import BucketMirror
    from app.objectstore import parse_store_url
    from app.stats.profile import Profile

    config = parse_config(tomllib.loads(CONFIG), path.parent / "driftdeck.toml")
    if path.suffix == ".csv":
        first_rows = pd.read_csv(path, nrows=256_000)
    else:
        first_rows = pq.ParquetFile(batch_parts(path)[0]).read_row_group(0).to_pandas()
    reference = Profile.build(first_rows, config.schema)
    figures: dict = {"idle_mb": peak_mb()}
    engine = DaskEngine(extra) if mode == "dask" else LocalEngine()
    if mode == "dask":  # each worker process imports driftdeck once, before its first batch: timed apart
        warming = time.perf_counter()
        engine.client().run(lambda: __import__("app.bigbatch"))
        figures["warm_up_seconds"] = time.perf_counter() - warming
    started, cpu_started = time.perf_counter(), time.process_time()
    if mode == "hash":
        batch_sha256(path)
    elif mode == "csv-floor":
        figures["rows"] = sum(batch.num_rows for batch in pa_csv.open_csv(str(path)))
    elif mode in ("floor", "floor-buffered"):
        columns = [*config.schema, config.target]
        buffered = pads.ParquetFileFormat()  # Arrow's default: a row group's column chunks read ahead whole
        unbuffered = pads.ParquetFileFormat(default_fragment_scan_options=NOT_PRE_BUFFERED)
        scan_format = buffered if mode == "floor-buffered" else unbuffered
        batches = pads.dataset(str(path), format=scan_format).to_batches(columns=columns, batch_size=65_536,
                                                                          **ONE_AHEAD)
        figures["rows"] = sum(batch.num_rows for batch in batches)
    else:
        if mode == "s3":
            local = Path(extra)
            local.mkdir()
            mirror = BucketMirror(parse_store_url("s3://bench/batches"), local, lambda event: None)
            fetched = mirror.sync()
            mirror.stop()
            figures["mirror_seconds"] = time.perf_counter() - started
            figures["objects"] = len(fetched.fetched)
            path = local / path.name
        scanned = engine.scan(path, config, {"m": reference})
        figures["seconds"] = time.perf_counter() - started
        figures.update(rows=scanned.rows, reasons=scanned.reasons, sample=len(scanned.sample),
                       profile=scanned.profiles["m"].to_json(),
                       sample_hash=int(pd.util.hash_pandas_object(scanned.sample, index=False).sum()))
        del scanned  # an engine holds one batch's sample at a time
        if mode == "dask":  # a worker's first task pays for memory and caches that a later batch finds ready
            again = time.perf_counter()
            engine.scan(path, config, {"m": reference})
            figures["again_seconds"] = time.perf_counter() - again
    figures.setdefault("seconds", time.perf_counter() - started)
    figures["cpu_seconds"] = time.process_time() - cpu_started
    if mode == "dask" and extra != "local":  # worker processes of their own
        figures["worker_peak_mb"] = sum(engine.client().run(peak_mb).values())
    engine.close()
    figures["peak_mb"] = peak_mb() + figures.get("worker_peak_mb", 0.0)
    return figures


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def dask_cluster() -> tuple[subprocess.Popen, str]:
    """A LocalCluster of 2 single-threaded worker processes, in a process of its own; its address."""
    port = free_port()
    code = textwrap.dedent(f"""
        import time
        from distributed import LocalCluster
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, scheduler_port={port},
                               dashboard_address="127.0.0.1:0")
        print("ready", flush=True)
        while True:
            time.sleep(1)
    """)
    environment = {**os.environ, "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False",  # as DaskEngine's own
                   "ARROW_DEFAULT_MEMORY_POOL": os.environ.get("ARROW_DEFAULT_MEMORY_POOL", "system")}  # README
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=environment)
    process.stdout.readline()
    return process, f"tcp://127.0.0.1:{port}"


def row(label: str, figures: dict, floor: dict, cpu: bool = True) -> str:
    """One line of the report; ``cpu``: the run's CPU time too (not for Dask: its runs scan twice, or elsewhere).

    Worker processes of their own give two memory figures, each named: the peak of the sum and the sum of the peaks.
    """
    ratio = figures["seconds"] / floor["seconds"]
    spent = f"CPU {figures['cpu_seconds']:5.1f} s" if cpu else " " * 11
    over = (f"{figures['peak_mb'] - figures['idle_mb']:+,.0f} MB over the {figures['idle_mb']:,.0f} MB of the"
            f" interpreter and its libraries")
    if "worker_peak_mb" not in figures:
        memory = f"peak {figures['peak_mb']:6,.0f} MB ({over})"
    else:
        engine = figures["peak_mb"] - figures["worker_peak_mb"]
        memory = (f"peak of the sum {figures['summed_peak_mb']:6,.0f} MB (the engine's and the workers' RSS summed"
                  f" every 20 ms, {figures['summed_samples']:,} samples); sum of the peaks {figures['peak_mb']:,.0f} MB"
                  f" (VmHWM: the engine {engine:,.0f} MB, the workers {figures['worker_peak_mb']:,.0f} MB; the engine"
                  f" {engine - figures['idle_mb']:+,.0f} MB over the {figures['idle_mb']:,.0f} MB of its interpreter"
                  f" and libraries)")
    return f"  {label:<28} {figures['seconds']:8.1f} s {ratio:6.2f}x floor  {spent}  {memory}"


def bench_local(rows: int, part_rows: int, root: Path) -> None:
    path = generate(root / f"rows-{rows}" / "batch", rows, part_rows)
    size = sum(p.stat().st_size for p in path.iterdir()) / (1 << 20)
    print(f"\n{rows:,} rows x 20 columns, {len(list(path.glob('*.parquet')))} parts, {size:,.0f} MB on disk")
    floor = measure("floor", path, "")
    buffered = measure("floor-buffered", path, "")
    stream = measure("stream", path, "")
    hashed = measure("hash", path, "")
    cluster, address = dask_cluster()
    try:
        dask = measure("dask", path, address, cluster)
        cluster_mb = peak_mb(cluster.pid)
    finally:
        cluster.terminate()
        cluster.wait()
    threads = measure("dask", path, "local")
    print(row("pyarrow.dataset scan (floor)", floor, floor))
    print(row("the same scan pre-buffered", buffered, floor) + " (Arrow's default)")
    print(row("streaming, in process", stream, floor))
    print(row("of which the content hash", hashed, floor) + " (alone; on a thread of its own while streaming)")
    print(row("Dask LocalCluster(2 workers)", dask, floor, cpu=False) + f"; workers' first import"
          f" {dask['warm_up_seconds']:.1f} s; the same batch again {dask['again_seconds']:.1f} s; in neither memory"
          f" figure: the cluster's own process (its scheduler and the workers' nannies), peak {cluster_mb:,.0f} MB")
    print(row('Dask scheduler = "local"', threads, floor, cpu=False) + f" (threads in one process); the same batch again"
          f" {threads['again_seconds']:.1f} s")
    same = all(stream[key] == other[key] for key in ("rows", "reasons", "sample", "profile", "sample_hash")
               for other in (dask, threads))
    print(f"  Dask results identical to in-process: {'yes' if same else 'NO'}")
    shutil.rmtree(path.parent)


def bench_csv(rows: int, root: Path) -> None:
    path = generate_csv(root / f"csv-{rows}" / "batch.csv", rows)
    print(f"\n{rows:,} rows x 20 columns in one CSV file, {path.stat().st_size / (1 << 20):,.0f} MB on disk;"
          f" load average before: {_load()}")
    floor = measure("csv-floor", path, "")
    stream = measure("stream", path, "")
    print(row("pyarrow.csv.open_csv (floor)", floor, floor))
    print(row("streaming, in process", stream, floor))
    print(f"  rows {stream['rows']:,} (floor {floor['rows']:,}), reasons {stream['reasons']}, sample {stream['sample']:,};"
          f" load average after: {_load()}")
    shutil.rmtree(path.parent)


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def bench_s3(rows: int, part_rows: int, root: Path) -> None:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
                      AWS_ENDPOINT_URL=endpoint, AWS_EC2_METADATA_DISABLED="true")
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import boto3

        deadline = time.monotonic() + 30
        while True:
            try:
                client = boto3.client("s3", endpoint_url=endpoint)
                client.create_bucket(Bucket="bench")
                break
            except Exception:  # noqa: BLE001 - the server is still starting
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        path = generate(root / "s3" / "batch", rows, part_rows)
        for part in sorted(path.iterdir()):
            client.upload_file(str(part), "bench", f"batches/batch/{part.name}")
        floor = measure("floor", path, "")
        s3 = measure("s3", path, str(root / "s3" / "mirror"))
        print(f"\nS3 (moto on localhost), {rows:,} rows x 20 columns, {s3['objects']} objects")
        print(row("pyarrow.dataset scan (floor)", floor, floor))
        print(row("mirror + streaming", s3, floor) + f"; of which the mirror {s3['mirror_seconds']:.1f} s")
        shutil.rmtree(root / "s3")
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="10000000,50000000", help="comma-separated batch sizes")
    parser.add_argument("--part-rows", type=int, default=1_000_000)
    parser.add_argument("--s3-rows", type=int, default=1_000_000, help="0 to skip the S3 run")
    parser.add_argument("--csv", nargs="?", const="2000000", help="one CSV file of each size instead (default 2M rows)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--extra", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(run_measurement(args.measure, args.path, args.extra)))
        return
    print(f"scale_bench: {os.cpu_count()} cores; parts of {args.part_rows:,} rows; peak memory is VmHWM"
          " (MB of 2**20 bytes)")
    root = Path(tempfile.mkdtemp(prefix="driftdeck-scale-bench-"))
    try:
        if args.csv:
            for rows in (int(text) for text in args.csv.split(",") if text):
                bench_csv(rows, root)
            return
        for rows in (int(text) for text in args.rows.split(",") if text):
            bench_local(rows, min(args.part_rows, rows), root)
        if args.s3_rows:
            bench_s3(args.s3_rows, min(args.part_rows, args.s3_rows) // 4 or 1, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
