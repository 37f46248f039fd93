"""How quickly the live monitor answers a key, and how quickly it opens on a big store.

Usage (from the repository root):

    .venv/bin/python bench/ui_latency.py
    .venv/bin/python bench/ui_latency.py --big-rows 500000 --files 300 --presses 60

The dashboard attaches to the folder's engine, as ``driftdeck watch`` does:
the engine (ingest, drift, scoring, training, the store's writes) runs in its
own process, started here, and the dashboard only reads the store and draws.

1. Key latency under load. The app runs headless (Textual's Pilot, 160x48)
   over a folder whose two models already serve. A ``--big-rows`` labeled
   batch is dropped in, so the engine scores it and trains on it (the
   dynamic model and the static model's shadow both fit on it), and while
   that runs ``--files`` small batch files land, one every ``--interval``
   seconds, written by a producer process of its own. Meanwhile ``]`` is pressed ``--presses`` times; each press is
   timed from the key going in to the models table's cursor having moved to
   the next model and the screen having refreshed (polled every millisecond),
   and to the other panels showing that model. Prints the median and the 95th
   percentile, overall, while the fit runs and while the engine processes
   files.
2. First frame on a big store. A store with ``--batches`` batches (results
   for two models each) and ``--snapshots`` snapshots is written directly
   through ``app.store.Store`` and an engine started on it; the time from
   creating the app to the dashboard drawn with the store's data is printed
   (and the time to the first paint, before the data arrives), and apart from
   it the time the engine took to start.

Targets: p95 key latency < 50 ms; first frame < 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import tempfile
import multiprocessing
import multiprocessing.synchronize
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from textual import events  # noqa: E402

from app.engine_link import EngineClient  # noqa: E402
from app.engine.monitor import Monitor  # noqa: E402
from app.store import ModelState, SnapshotRecord, Store  # noqa: E402
from app.tui.app import DriftDeckApp  # noqa: E402
from app.tui.ui_process import prepare_ui_process  # noqa: E402

SIZE = (160, 48)
POLL_SECONDS = 0.001
CONFIG = """
target = "label"
timestamp = "ts"
task = "classification"

[schema]
x1 = "numeric"
x2 = "numeric"
x3 = "numeric"
color = "categorical"

[[models]]
name = "static-lr"
mode = "static"
estimator = "logistic_regression"

[[models]]
name = "dynamic-lr"
mode = "dynamic"
estimator = "logistic_regression"
window = 2

[drift]
domain_classifier_rows = 2000

[watch]
settle_seconds = 0.2
"""
FEATURES = ("x1", "x2", "x3", "color")


def batch(index: int, rows: int, labeled: bool = True) -> pd.DataFrame:
    """A seeded batch of the two-feature binary stream (x3 and color are noise)."""
    rng = np.random.default_rng(index)
    x1, x2, x3 = rng.normal(0, 1, (3, rows))
    color = rng.choice(["red", "green", "blue"], rows)
    frame = pd.DataFrame({"x1": x1, "x2": x2, "x3": x3, "color": color,
                          "ts": (pd.Timestamp("2025-01-06") + pd.to_timedelta(np.arange(rows), unit="s")).astype(str)})
    if labeled:
        frame["label"] = (rng.random(rows) < 1 / (1 + np.exp(-(2 * x1 + x2)))).astype(int)
    return frame


def deliver(frame: pd.DataFrame, folder: Path, name: str) -> None:
    """Write ``frame`` under a hidden name and rename it into place, as a careful producer does."""
    temporary = folder / f".{name}.tmp"
    if name.endswith(".parquet"):
        frame.to_parquet(temporary)
    else:
        frame.to_csv(temporary, index=False)
    os.replace(temporary, folder / name)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


# --- 1. key latency while training and files land ----------------------------------------


def bootstrapped_folder(root: Path) -> Path:
    folder = root / "live"
    folder.mkdir()
    (folder / "driftdeck.toml").write_text(CONFIG)
    deliver(batch(0, 2000), folder, "0000-bootstrap.csv")
    monitor = Monitor(folder)
    try:
        monitor.run_once()
    finally:
        monitor.close()
    return folder


def feed(folder: Path, files: int, interval: float, stop: multiprocessing.synchronize.Event) -> None:
    """The producer: a process of its own, as in life, so that its writing does not hold the app's GIL."""
    for index in range(files):
        if stop.is_set():
            return
        deliver(batch(1000 + index, 200, labeled=index % 10 == 0), folder, f"small-{index:04d}.csv")
        time.sleep(interval)


async def painted(app: DriftDeckApp) -> None:
    """Return once the screen has refreshed after everything posted so far."""
    refreshed = asyncio.Event()
    app.screen.call_after_refresh(refreshed.set)
    await refreshed.wait()


async def timed_press(app: DriftDeckApp) -> tuple[float, float]:
    """Press ``]``; seconds until the models table's cursor moved and was painted, and until the
    other panels show the newly selected model."""
    table = app.query_one("#models-table")
    before = table.cursor_row
    started = time.perf_counter()
    # What the terminal driver does with a key. (Pilot.press would add its own wait for the whole
    # process to go idle, which measures the monitor's threads, not the app.)
    app.post_message(events.Key("right_square_bracket", "]"))
    while table.cursor_row == before:
        await asyncio.sleep(POLL_SECONDS)
    await painted(app)
    moved = time.perf_counter() - started
    while app.dashboard is None or app.dashboard.model != app.selected_model or app.redraws.pending:
        await asyncio.sleep(POLL_SECONDS)
    await painted(app)
    return moved, time.perf_counter() - started


async def measure_keys(folder: Path, big_rows: int, files: int, interval: float, presses: int,
                       pause: float) -> dict:
    monitor = EngineClient(folder)
    monitor.acquire()
    app = DriftDeckApp(monitor)
    spawn = multiprocessing.get_context("spawn")
    stop = spawn.Event()
    feeder = spawn.Process(target=feed, args=(folder, files, interval, stop), daemon=True)
    moved, panels, fitting = [], [], []
    try:
        async with app.run_test(size=SIZE) as pilot:
            while app.load_applied < 1:
                await pilot.pause(0.05)
            deliver(batch(1, big_rows), folder, "0001-big.parquet")
            while monitor.training is None:  # the big batch is read, measured, then fitted
                await asyncio.sleep(0.05)
            feeder.start()
            for _ in range(presses):
                fitting.append(monitor.training is not None)
                cursor, followed = await timed_press(app)
                moved.append(cursor)
                panels.append(followed)
                await asyncio.sleep(pause)
            stop.set()
            ingested = app.dashboard.counts["ingested"]
    finally:
        stop.set()
        if feeder.is_alive():
            feeder.join(10)
        monitor.close()
    return {"moved": moved, "panels": panels, "fitting": fitting, "ingested": ingested}


# --- 2. first frame on a big store -----------------------------------------------------------


def profile_dict(rng: np.random.Generator) -> dict:
    """A reference profile of the four columns with 100 numeric bins each (the size real ones have)."""
    columns = {}
    for name in FEATURES[:3]:
        values = np.sort(rng.normal(0, 1, 5000))
        edges = np.quantile(values, np.linspace(0, 1, 101))
        counts = [0] + np.histogram(values, edges)[0].tolist() + [0]
        columns[name] = {"kind": "numeric", "edges": edges.tolist(), "counts": counts, "missing": 0,
                         "count": 5000, "minimum": float(values[0]), "maximum": float(values[-1]),
                         "total": float(values.sum()), "total_sq": float(((values - edges[50]) ** 2).sum())}
    columns["color"] = {"kind": "categorical", "counts": {"red": 1700, "green": 1650, "blue": 1650}, "missing": 0}
    return {"rows": 5000, "columns": columns}


def result_dict(rng: np.random.Generator, version: int, labeled: bool) -> dict:
    drift = {}
    for name in FEATURES:
        psi = float(rng.gamma(1.0, 0.03))
        numeric = name != "color"
        drift[name] = {"column": name, "kind": "numeric" if numeric else "categorical", "psi": psi,
                       "js": psi / 2, "ks": psi / 3 if numeric else None, "ks_pvalue": 0.5 if numeric else None,
                       "wasserstein": psi / 4 if numeric else None, "chi2_pvalue": None if numeric else 0.4,
                       "unseen_share": None if numeric else 0.0, "out_of_range_share": 0.0 if numeric else None,
                       "missing_change": 0.0, "status": "drifted" if psi >= 0.2 else "watch" if psi >= 0.1 else "stable"}
    metrics = {"roc_auc": float(rng.uniform(0.75, 0.85)), "accuracy": float(rng.uniform(0.7, 0.8))}
    return {
        "labeled": labeled, "serving_version": version, "metric": "roc_auc", "feature_drift": drift,
        "drifted_features": [n for n, d in drift.items() if d["status"] == "drifted"],
        "multivariate_auc": float(rng.uniform(0.5, 0.6)), "multivariate_top": {"x1": 0.01},
        "estimate": {"metric": "roc_auc", "value": 0.75, "calibrated": True, "why": ""}, "prediction_psi": 0.01, "flags": [], "action": "none", "trainable": labeled,
        **({"metrics": metrics, "baseline_metrics": {"roc_auc": 0.5}, "shadow_metrics": metrics} if labeled else {}),
    }


def big_store(root: Path, batches: int, snapshots: int) -> Path:
    """A data folder whose store holds ``batches`` batches and ``snapshots`` snapshots (no batch files)."""
    folder = root / "big"
    folder.mkdir()
    (folder / "driftdeck.toml").write_text(CONFIG)
    state = folder / ".driftdeck"
    (state / "snapshots").mkdir(parents=True)
    store = Store(state / "state.db")
    rng = np.random.default_rng(7)
    models = ("static-lr", "dynamic-lr")
    profile = profile_dict(rng)
    per_model = snapshots // len(models)
    model_file = state / "snapshots" / "model.skops"
    model_file.write_bytes(b"placeholder: never loaded by the dashboard")
    start = time.time() - batches * 3600
    with store.transaction() as db:
        for model in models:
            for version in range(1, per_model + 1):
                store.add_snapshot(SnapshotRecord(
                    model, version, version - 1 or None, start + version * 3600,
                    "serving" if version == per_model else "retired", "", "snapshots/model.skops", "0" * 64,
                    {"files": [f"b{version}.csv"], "rows": 2000, "metric": "roc_auc",
                     "holdout_metrics": {"roc_auc": 0.8}, "profile": profile, "gate": "candidate passed"}), db=db)
                store.set_serving(model, version, "promoted", "candidate passed", db=db)
        for index in range(batches):
            file_id = store.record_file(f"batch-{index:05d}.csv", f"{index:064x}", "ingested", rows=2000,
                                        labeled=index % 2 == 0, db=db)
            for model in models:
                store.save_result(file_id, model, result_dict(rng, per_model, index % 2 == 0), db=db)
        for model in models:
            store.save_model_state(model, ModelState(state="healthy", current_profile=profile,
                                                     verdict={"needs": "static", "text": "static is enough"}), db=db)
    for index in range(batches * 3):
        store.append_event("batch_result", f"static-lr on batch-{index // 3:05d}.csv: action none",
                           model="static-lr", file=None, data={}, when=start + index)
    store.close()
    return folder


async def measure_first_frame(folder: Path) -> dict:
    started = time.perf_counter()
    monitor = EngineClient(folder)
    monitor.acquire()
    engine = time.perf_counter() - started
    started = time.perf_counter()
    app = DriftDeckApp(monitor)
    try:
        async with app.run_test(size=SIZE) as pilot:
            painted = time.perf_counter() - started
            while app.load_applied < 1:
                await asyncio.sleep(POLL_SECONDS)
            await pilot.pause()
            loaded = time.perf_counter() - started
    finally:
        monitor.close()
    return {"engine": engine, "painted": painted, "loaded": loaded}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big-rows", type=int, default=500_000)
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between small files")
    parser.add_argument("--presses", type=int, default=60)
    parser.add_argument("--pause", type=float, default=0.25, help="seconds between presses (a brisk typist)")
    parser.add_argument("--batches", type=int, default=1000)
    parser.add_argument("--snapshots", type=int, default=100)
    args = parser.parse_args()
    prepare_ui_process()  # as run_tui does
    with tempfile.TemporaryDirectory(prefix="driftdeck-ui-bench-") as temporary:
        root = Path(temporary)
        started = time.perf_counter()
        keys = asyncio.run(measure_keys(bootstrapped_folder(root), args.big_rows, args.files, args.interval,
                                        args.presses, args.pause))
        fitting = keys["fitting"]
        print("load average (1, 5, 15 min) at the end: " + ", ".join(f"{value:.2f}" for value in os.getloadavg())
              + f" on {os.cpu_count()} cores; other work on the machine shows in every figure below")
        print(f"key ], {len(fitting)} presses {args.pause} s apart ({sum(fitting)} while a fit ran on the "
              f"{args.big_rows:,}-row batch; {keys['ingested']} batches ingested by the end, "
              f"{time.perf_counter() - started:.0f} s)")
        for label, seconds in (("models table cursor moved, painted", keys["moved"]),
                               ("other panels show the new model", keys["panels"])):
            print(f"  {label}")
            for group, chosen in (("all presses", seconds),
                                  ("while the fit ran", [v for v, f in zip(seconds, fitting) if f]),
                                  ("while files were processed", [v for v, f in zip(seconds, fitting) if not f])):
                if chosen:
                    milliseconds = [value * 1000 for value in chosen]
                    print(f"    {group:<27} median {statistics.median(milliseconds):6.1f} ms   "
                          f"p95 {percentile(milliseconds, 0.95):6.1f} ms   max {max(milliseconds):6.1f} ms")
        print("  (target: p95 < 50 ms for the cursor)")
        built = time.perf_counter()
        folder = big_store(root, args.batches, args.snapshots)
        gc.collect()  # the first app's garbage, which a dashboard opening in a fresh process does not have
        frame = asyncio.run(measure_first_frame(folder))
        print(f"first frame with {args.batches:,} batches and {args.snapshots} snapshots "
              f"(store written in {time.perf_counter() - built - frame['engine'] - frame['loaded']:.1f} s)")
        print(f"  engine started       {frame['engine'] * 1000:7.0f} ms   (before the app is created; not in the two below)")
        print(f"  first paint          {frame['painted'] * 1000:7.0f} ms")
        print(f"  dashboard with data  {frame['loaded'] * 1000:7.0f} ms   (target < 1000 ms)")


if __name__ == "__main__":
    main()
