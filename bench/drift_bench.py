"""Benchmark: driftdeck's drift check against the parquet read floor and against peers.

Usage (from the repository root):

    .venv/bin/python bench/drift_bench.py --rows 100000 1000000
    .venv/bin/python bench/drift_bench.py --rows 100000 --peers-venv /path/to/venv

``--peers-venv`` names a virtualenv that has ``evidently`` and/or ``nannyml``
(they are not driftdeck dependencies, and Evidently 0.7 needs pandas < 3);
without it the peers run in this interpreter if they import here, and are
reported as not installed otherwise. ``--repeat N`` (default 3) runs each
timed step N times and keeps the fastest.

What is measured, per batch size: a reference of 100,000 rows and a batch of
``--rows`` rows with 16 numeric and 4 categorical columns, 5 of them shifted
(mean, variance, scale, category frequencies, new categories), written to
parquet in a temporary folder. Then, each tool in its own fresh process, every
run is ``pandas.read_parquet`` of the batch followed by the tool's drift work on
the frame it read, timed apart:

* floor      the read alone (no drift work).
* driftdeck  ``Profile.project`` + ``feature_drift`` against the stored
             reference profile (building that profile is timed too, counted
             in accounting (c) only: it happens once per model, not per batch).
* evidently  ``Report([DataDriftPreset()]).run`` with defaults.
* nannyml    ``UnivariateDriftCalculator.calculate`` with defaults (``fit`` on
             the reference is timed apart, like driftdeck's profile);
             a column counts as flagged if any chunk alerts.

Two accountings are printed, each with its own targets:

(a) drift work: the tool's work on a batch already in memory, which is what
    driftdeck's monitor does (it receives a validated frame from ingest). Time,
    and peak memory growth over the resident set the read left behind. The
    memory target, <= 2x the batch's own in-memory size, is judged here, and so
    are the speed ratios to the peers on the same work and the floor target:
    the drift work costs at most three reads of the file.
(b) end to end: read + drift work, for every tool alike, a stricter reading.
    Targets: driftdeck <= 3x the read floor, and the same speed ratios to the
    peers.
(c) with each tool's reference work, like for like: driftdeck's drift work
    plus ``Profile.build`` of the reference frame (as if it kept no profile),
    NannyML's ``calculate`` plus ``fit`` on the reference frame, Evidently's
    ``Report.run`` (which works through the reference on every run). The
    reference frame is in memory for every tool (its read is not counted); the
    build and the fit are the fastest of ``--repeat`` runs in the tool's worker.
    The same speed ratios to the peers are the targets. Peak memory here includes ``read_parquet``'s own peak (over 2x the
    batch at every size we tried, so no drift tool could meet 2x on this
    measure); it is printed for information beside the read's.

Each worker first makes one untimed run on a 1,000-row file, so first-use
set-up is not counted. Peak memory is taken from ``VmHWM``, reset before the
read and again before the drift work (``ru_maxrss`` over the whole run where
resetting is not possible), on the first run over the batch; it includes
Arrow's and NumPy's allocations. The batch's in-memory size is
``DataFrame.memory_usage(deep=True)`` of the frame ``read_parquet`` returns.
Every target figure is printed with PASS or MISS, and exactly the five shifted
columns must be flagged. On a shared machine the times move with the load:
compare ratios from one run, not absolute seconds across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
REFERENCE_ROWS = 100_000
NUMERIC = [f"num_{index:02d}" for index in range(16)]
CATEGORICAL = [f"cat_{index}" for index in range(4)]
SCHEMA = {**dict.fromkeys(NUMERIC, "numeric"), **dict.fromkeys(CATEGORICAL, "categorical")}
SHIFTED = ["num_00", "num_01", "num_02", "cat_0", "cat_1"]
TOOLS = ["floor", "driftdeck", "evidently", "nannyml"]


# --- data -----------------------------------------------------------------------------


def make_frame(rows: int, seed: int, shifted: bool) -> pd.DataFrame:
    """16 numeric + 4 categorical columns; with ``shifted``, the SHIFTED five move."""
    rng = np.random.default_rng(seed)
    columns: dict[str, np.ndarray] = {}
    for index, name in enumerate(NUMERIC):
        family = index % 4
        if family == 0:
            values = rng.normal(10.0, 2.0, rows)
        elif family == 1:
            values = rng.lognormal(1.0, 0.5, rows)
        elif family == 2:
            values = rng.uniform(-5.0, 5.0, rows)
        else:
            values = rng.gamma(2.0, 3.0, rows)
        columns[name] = values
    if shifted:
        columns["num_00"] = rng.normal(11.5, 2.0, rows)        # mean shift of 0.75 std
        columns["num_01"] = rng.lognormal(1.0, 1.0, rows)      # spread doubles
        columns["num_02"] = rng.uniform(-5.0, 8.0, rows)       # range widens
    levels = np.array(["north", "south", "east", "west"])
    columns["cat_0"] = rng.choice(levels, rows, p=[0.1, 0.2, 0.3, 0.4] if shifted else [0.4, 0.3, 0.2, 0.1])
    tiers = np.array(["gold", "silver", "bronze", "new_a", "new_b"])
    columns["cat_1"] = rng.choice(tiers, rows, p=[0.3, 0.2, 0.2, 0.15, 0.15] if shifted else [0.4, 0.3, 0.3, 0, 0])
    columns["cat_2"] = rng.choice(np.array(["web", "app"]), rows, p=[0.6, 0.4])
    columns["cat_3"] = rng.choice(np.array([f"sku_{index:03d}" for index in range(200)]), rows)
    return pd.DataFrame(columns)


def write_data(folder: Path, sizes: list[int]) -> dict[str, Path]:
    paths = {"reference": folder / "reference.parquet", "warmup": folder / "warmup.parquet"}
    make_frame(REFERENCE_ROWS, seed=1, shifted=False).to_parquet(paths["reference"])
    make_frame(1_000, seed=3, shifted=True).to_parquet(paths["warmup"])
    for rows in sizes:
        paths[str(rows)] = folder / f"batch_{rows}.parquet"
        make_frame(rows, seed=2, shifted=True).to_parquet(paths[str(rows)])
    return paths


# --- workers (each runs in a fresh process) --------------------------------------------


def resident_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak_memory() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def timed_runs(work, batch: Path, warmup: Path, repeat: int) -> dict[str, object]:
    """Figures of ``read_parquet(batch)`` followed by ``work(frame)``, the read and the work timed apart.

    Seconds: the fastest of ``repeat`` runs for the read, the work, and the two
    together (one run's sum). Memory in MiB, from the first run over the batch
    (before any batch-sized block freed by an earlier run could be reused):
    ``work_peak_mib``, the work's peak over the resident set after the read;
    ``total_peak_mib``, the larger peak of the two over the resident set before
    the read. ``work(warmup)`` on a 1,000-row file comes first, so lazy imports
    and thread pools a library sets up on first use count as neither time nor
    memory.
    """
    work(pd.read_parquet(warmup))
    can_reset = reset_peak_memory()  # reset again before each measured step
    read_seconds, work_seconds, total_seconds = [], [], []
    flagged: list[str] = []
    memory: dict[str, float] = {}
    for attempt in range(repeat):
        before_read = resident_kib("VmRSS")
        reset_peak_memory()
        start = time.perf_counter()
        frame = pd.read_parquet(batch)
        read_seconds.append(time.perf_counter() - start)
        read_peak = peak_kib(can_reset)
        after_read = resident_kib("VmRSS")
        reset_peak_memory()
        start = time.perf_counter()
        flagged = work(frame)
        work_seconds.append(time.perf_counter() - start)
        work_peak = peak_kib(can_reset)
        total_seconds.append(read_seconds[-1] + work_seconds[-1])
        if attempt == 0:
            memory = {
                # Without a reset, the peak so far may be the read's: then the work added nothing measurable.
                "work_peak_mib": max(work_peak - after_read, 0) / 1024,
                "total_peak_mib": (max(read_peak, work_peak) - before_read) / 1024,
            }
        del frame
    return {
        "read_seconds": min(read_seconds),
        "work_seconds": min(work_seconds),
        "total_seconds": min(total_seconds),
        **memory,
        "flagged": sorted(flagged),
    }


def peak_kib(can_reset: bool) -> int:
    """Peak resident set since the last reset (since the start without resets), KiB."""
    return resident_kib("VmHWM") if can_reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def floor_worker(batch: Path, warmup: Path, repeat: int) -> dict[str, object]:
    return timed_runs(lambda frame: [], batch, warmup, repeat)


def driftdeck_worker(profile_path: Path, reference: Path, batch: Path, warmup: Path, repeat: int) -> dict[str, object]:
    from app.stats.drift import drifted_columns, feature_drift
    from app.stats.profile import Profile

    profile = Profile.from_json(profile_path.read_text())

    def work(frame: pd.DataFrame) -> list[str]:
        return drifted_columns(feature_drift(profile, profile.project(frame)))

    result = timed_runs(work, batch, warmup, repeat)
    result["build_seconds"] = fastest(lambda: Profile.build(pd.read_parquet(reference), SCHEMA), repeat, read=reference)
    return result


def fastest(step, repeat: int, read: Path) -> float:
    """Fastest of ``repeat`` runs of ``step``, less the fastest read of ``read`` it starts with.

    The reference's frame is read inside ``step`` (a frame kept alive would skew
    the batch's memory figures); its read is timed apart and taken off, as a
    batch's read is in accounting (a).
    """
    seconds, reads = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        pd.read_parquet(read)
        reads.append(time.perf_counter() - start)
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    return max(min(seconds) - min(reads), 0.0)


def build_profile(reference: Path, profile_path: Path) -> float:
    """Build and store the reference profile; returns the seconds it took (not counted)."""
    from app.stats.profile import Profile

    start = time.perf_counter()
    profile = Profile.build(pd.read_parquet(reference), SCHEMA)
    seconds = time.perf_counter() - start
    profile_path.write_text(profile.to_json())
    return seconds


def evidently_worker(reference: Path, batch: Path, warmup: Path, repeat: int) -> dict[str, object]:
    from evidently import Report
    from evidently.presets import DataDriftPreset

    reference_frame = pd.read_parquet(reference)

    def work(frame: pd.DataFrame) -> list[str]:
        snapshot = Report([DataDriftPreset()]).run(current_data=frame, reference_data=reference_frame)
        flagged = []
        for metric in snapshot.dict()["metrics"]:
            config = metric["config"]
            if not config["type"].endswith("ValueDrift"):
                continue
            # p-value methods flag below the threshold, distance methods at or above it.
            if "p_value" in config["method"]:
                drifted = metric["value"] < config["threshold"]
            else:
                drifted = metric["value"] >= config["threshold"]
            if drifted:
                flagged.append(config["column"])
        return flagged

    return timed_runs(work, batch, warmup, repeat)


def nannyml_worker(reference: Path, batch: Path, warmup: Path, repeat: int) -> dict[str, object]:
    import nannyml

    calculator = nannyml.UnivariateDriftCalculator(column_names=NUMERIC + CATEGORICAL)
    reference_frame = pd.read_parquet(reference)  # kept alive: its freed pages would hide batch memory
    calculator.fit(reference_frame)
    fit_seconds = fastest(lambda: nannyml.UnivariateDriftCalculator(column_names=NUMERIC + CATEGORICAL).fit(
        pd.read_parquet(reference)), repeat, read=reference)

    def work(frame: pd.DataFrame) -> list[str]:
        table = calculator.calculate(frame).filter(period="analysis").to_df()
        return [name for name in NUMERIC + CATEGORICAL
                if table[(name, "jensen_shannon", "alert")].astype(bool).any()]

    result = timed_runs(work, batch, warmup, repeat)
    result["build_seconds"] = fit_seconds
    return result


def run_worker(args: argparse.Namespace) -> None:
    if args.worker == "floor":
        result = floor_worker(args.batch, args.warmup, args.repeat)
    elif args.worker == "driftdeck":
        result = driftdeck_worker(args.profile, args.reference, args.batch, args.warmup, args.repeat)
    elif args.worker == "evidently":
        result = evidently_worker(args.reference, args.batch, args.warmup, args.repeat)
    else:
        result = nannyml_worker(args.reference, args.batch, args.warmup, args.repeat)
    print(json.dumps(result))


# --- driver ---------------------------------------------------------------------------


def peer_interpreter(tool: str, peers_venv: Path | None) -> str | None:
    """Interpreter that can import the peer ``tool``, or None."""
    candidates = [str(peers_venv / "bin" / "python")] if peers_venv else [sys.executable]
    for python in candidates:
        probe = subprocess.run([python, "-c", f"import {tool}"], capture_output=True)
        if probe.returncode == 0:
            return python
    return None


def spawn(python: str, tool: str, paths: dict[str, Path], rows: int, repeat: int) -> dict[str, object]:
    command = [python, __file__, "--worker", tool, "--reference", str(paths["reference"]),
               "--profile", str(paths["profile"]), "--batch", str(paths[str(rows)]),
               "--warmup", str(paths["warmup"]), "--repeat", str(repeat)]
    environment = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, capture_output=True, text=True, env=environment)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(rows: int, batch_mib: float, build_seconds: float, results: dict[str, dict[str, object]]) -> None:
    ran = {tool: result for tool, result in results.items() if "total_seconds" in result}
    print(f"\n=== batch of {rows:,} rows ({batch_mib:.1f} MiB in memory), reference {REFERENCE_ROWS:,} rows ===")
    print(f"driftdeck reference profile built in {build_seconds:.3f} s by the driver (once per model)")
    for tool, step in (("driftdeck", "reference profile built"), ("nannyml", "fitted on the reference")):
        if "build_seconds" in results[tool]:
            print(f"{tool} {step} in {results[tool]['build_seconds']:.3f} s in its worker (fastest run; counted in (c) only)")
    for tool, result in results.items():
        if tool not in ran:
            print(f"{tool}: {result.get('error', 'not run')}")

    print("(a) drift work on the batch in memory (read before the clock)")
    print(f"{'tool':<12}{'time s':>10}{'peak MiB':>10}{'x batch':>9}  flagged")
    for tool in TOOLS[1:]:
        if tool in ran:
            result = ran[tool]
            print(f"{tool:<12}{result['work_seconds']:>10.4f}{result['work_peak_mib']:>10.1f}"
                  f"{result['work_peak_mib'] / batch_mib:>8.2f}x  {' '.join(result['flagged'])}")
    print("(b) end to end: read_parquet + drift work")
    print(f"{'tool':<12}{'time s':>10}{'peak MiB':>10}{'x batch':>9}{'x floor':>9}")
    for tool in TOOLS:
        if tool in ran:
            result = ran[tool]
            print(f"{tool:<12}{result['total_seconds']:>10.4f}{result['total_peak_mib']:>10.1f}"
                  f"{result['total_peak_mib'] / batch_mib:>8.2f}x"
                  f"{result['total_seconds'] / ran['floor']['total_seconds']:>8.2f}x")

    if "driftdeck" not in ran or "floor" not in ran:
        print("targets: not judged, driftdeck or the floor did not run")
        return
    ours, floor = ran["driftdeck"], ran["floor"]
    print("targets:")
    memory_ratio = ours["work_peak_mib"] / batch_mib
    print(f"  (a) peak memory growth <= 2x batch   {memory_ratio:7.2f}x   {verdict(memory_ratio <= 2)}")
    for tool, goal in (("evidently", 50), ("nannyml", 5)):
        if tool in ran:
            speedup = ran[tool]["work_seconds"] / ours["work_seconds"]
            print(f"  (a) >= {goal}x faster than {tool:<10}    {speedup:7.1f}x   {verdict(speedup >= goal)}")
    work_ratio = ours["work_seconds"] / floor["total_seconds"]
    print(f"  (a) <= 3x the read floor             {work_ratio:7.2f}x   {verdict(work_ratio <= 3)}"
          "   (the drift work against one read of the file)")
    floor_ratio = ours["total_seconds"] / floor["total_seconds"]
    print(f"  (b) <= 3x the read floor             {floor_ratio:7.2f}x   {verdict(floor_ratio <= 3)}")
    for tool, goal in (("evidently", 50), ("nannyml", 5)):
        if tool in ran:
            speedup = ran[tool]["total_seconds"] / ours["total_seconds"]
            print(f"  (b) >= {goal}x faster than {tool:<10}    {speedup:7.1f}x   {verdict(speedup >= goal)}")
    with_reference = {tool: result["work_seconds"] + result.get("build_seconds", 0.0) for tool, result in ran.items()}
    for tool, goal in (("evidently", 50), ("nannyml", 5)):
        if tool in ran:
            speedup = with_reference[tool] / with_reference["driftdeck"]
            print(f"  (c) >= {goal}x faster than {tool:<10}    {speedup:7.1f}x   {verdict(speedup >= goal)}"
                  f"   (each tool's reference work included: {with_reference['driftdeck']:.4f} s"
                  f" against {with_reference[tool]:.4f} s)")
    print(f"  flags exactly the 5 shifted          {' '.join(ours['flagged']) or '-'}   "
          f"{verdict(ours['flagged'] == sorted(SHIFTED))}")
    print(f"  (b) peak memory, for information     {ours['total_peak_mib'] / batch_mib:7.2f}x batch"
          f"   (read_parquet alone {floor['total_peak_mib'] / batch_mib:.2f}x; not the target's measure, see (a))")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--peers-venv", type=Path, default=None)
    parser.add_argument("--worker", choices=TOOLS, help=argparse.SUPPRESS)
    parser.add_argument("--reference", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--profile", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args)
        return

    interpreters = {"floor": sys.executable, "driftdeck": sys.executable}
    for tool in ("evidently", "nannyml"):
        interpreters[tool] = peer_interpreter(tool, args.peers_venv)
    with tempfile.TemporaryDirectory(prefix="drift_bench_") as folder:
        paths = write_data(Path(folder), args.rows)
        paths["profile"] = Path(folder) / "reference_profile.json"
        build_seconds = build_profile(paths["reference"], paths["profile"])
        for rows in args.rows:
            batch_mib = pd.read_parquet(paths[str(rows)]).memory_usage(deep=True).sum() / 2**20
            results = {}
            for tool in TOOLS:
                python = interpreters[tool]
                if python is None:
                    results[tool] = {"error": "not installed, run with a venv that has them (--peers-venv PATH)"}
                    continue
                results[tool] = spawn(python, tool, paths, rows, args.repeat)
            report(rows, float(batch_mib), build_seconds, results)


if __name__ == "__main__":
    main()
