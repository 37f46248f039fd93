"""Benchmark: drift alarms when nothing changed and when something did, beside NannyML and Evidently.

Usage (from the repository root):

    make bench-peers                          # once: NannyML, Evidently and river in bench/.peers-venv
    .venv/bin/python bench/alarm_bench.py --seeds 10 --evidently-seeds 3   # both tables, over an hour
    .venv/bin/python bench/alarm_bench.py --sizes 50 200 --seeds 10 --skip-real
    .venv/bin/python bench/alarm_bench.py --peers-venv none                # driftdeck alone, minutes

The peers are not driftdeck dependencies (Evidently 0.7 needs pandas < 3,
NannyML brings about 60 packages), so they run in their own virtualenv, in a
subprocess of this script (``--peers-venv``, default ``bench/.peers-venv``);
without it only driftdeck's figures are printed. Every process runs with one
thread (OMP/MKL/OpenBLAS limits set to 1) and the peers' usage reporting off.

Table (a), synthetic data as in ``bench/drift_bench.py``: a 100,000-row
reference of 16 numeric and 4 categorical columns; per batch size, ``--seeds``
unshifted batches and as many shifted ones (5 columns moved: mean, spread,
range, category shares, new categories). False alarms: the share of
column-batches flagged on unshifted batches. Power: the share of the 5 shifted
columns flagged on shifted batches. Each tool at its defaults except that
NannyML's ``chunk_size`` is the batch size (its thresholds come from reference
chunks of that size). Time, the median over the seeds of one batch:
driftdeck ``stored`` is ``Profile.project`` + ``feature_drift`` against the
profile kept since training; ``+ref`` adds ``Profile.build`` of the reference;
NannyML's is ``fit`` on the reference + ``calculate``; Evidently's is
``Report.run``, which reads the reference on every run.

Table (b), real data: river's Shuttle data set (bundled in its wheel; 9 numeric
columns), in file order: the first 5,000 rows are the reference and the next
batches of 500 rows are checked one by one; per batch, the columns each tool
flags (NannyML with ``chunk_size`` 500).
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")
os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]
from drift_bench import CATEGORICAL, NUMERIC, REFERENCE_ROWS, SCHEMA, SHIFTED, make_frame  # noqa: E402

SIZES = [50, 200, 1_000, 10_000, 100_000, 1_000_000]
PEERS = ["nannyml", "evidently"]
TOOLS = ["driftdeck", *PEERS]
REAL_REFERENCE_ROWS = 5_000
REAL_BATCH_ROWS = 500
REAL_BATCHES = 12
DEFAULT_PEERS_VENV = BENCH / ".peers-venv"


def seeds_for(rows: int, seeds: int) -> int:
    """A million-row batch takes the peers a minute or more a run: at most 3 seeds there."""
    return min(seeds, 3) if rows >= 1_000_000 else seeds


def batches(rows: int, seeds: int) -> list[tuple[bool, int, pd.DataFrame]]:
    """(shifted, seed, frame) for every seed, unshifted and shifted: the same frames for every tool."""
    return [(shifted, seed, make_frame(rows, seed=1_000 + seed, shifted=shifted))
            for seed in range(seeds_for(rows, seeds)) for shifted in (False, True)]


# --- each tool: flagged columns of a batch, and seconds -----------------------------------


def driftdeck_runs(reference: pd.DataFrame, rows: int, seeds: int) -> list[dict[str, object]]:
    from app.stats.drift import drifted_columns, feature_drift
    from app.stats.profile import Profile

    started = time.perf_counter()
    profile = Profile.build(reference, SCHEMA)
    build_seconds = time.perf_counter() - started
    runs = []
    for shifted, seed, frame in batches(rows, seeds):
        started = time.perf_counter()
        flagged = drifted_columns(feature_drift(profile, profile.project(frame)))
        seconds = time.perf_counter() - started
        runs.append({"shifted": shifted, "flagged": flagged, "seconds": seconds, "with_reference": seconds + build_seconds})
    return runs


def nannyml_runs(reference: pd.DataFrame, rows: int, seeds: int) -> list[dict[str, object]]:
    import nannyml

    started = time.perf_counter()
    calculator = nannyml.UnivariateDriftCalculator(column_names=NUMERIC + CATEGORICAL, chunk_size=rows)
    calculator.fit(reference)
    fit_seconds = time.perf_counter() - started
    runs = []
    for shifted, seed, frame in batches(rows, seeds):
        started = time.perf_counter()
        flagged = nannyml_flags(calculator, frame, NUMERIC + CATEGORICAL)
        seconds = time.perf_counter() - started
        runs.append({"shifted": shifted, "flagged": flagged, "seconds": seconds + fit_seconds})
    return runs


def nannyml_flags(calculator, frame: pd.DataFrame, columns: list[str]) -> list[str]:
    table = calculator.calculate(frame).filter(period="analysis").to_df()
    return [column for column in columns
            if any(bool(table[key].any()) for key in table.columns if key[0] == column and key[-1] == "alert")]


def evidently_runs(reference: pd.DataFrame, rows: int, seeds: int) -> list[dict[str, object]]:
    runs = []
    for shifted, seed, frame in batches(rows, seeds):
        started = time.perf_counter()
        flagged = evidently_flags(reference, frame)
        runs.append({"shifted": shifted, "flagged": flagged, "seconds": time.perf_counter() - started})
    return runs


def evidently_flags(reference: pd.DataFrame, frame: pd.DataFrame) -> list[str]:
    """Columns whose ValueDrift passes its threshold: a p-value below it, or a distance at or above it."""
    from evidently import Report
    from evidently.presets import DataDriftPreset

    flagged = []
    for metric in Report([DataDriftPreset()]).run(current_data=frame, reference_data=reference).dict()["metrics"]:
        config = metric["config"]
        if not config.get("type", "").endswith("ValueDrift"):
            continue
        is_pvalue = "p_value" in config["method"]  # "K-S p_value", "chi-square p_value", "Z-test p_value"
        value, threshold = metric["value"], config["threshold"]
        if (value < threshold) if is_pvalue else (value >= threshold):
            flagged.append(config["column"])
    return flagged


RUNNERS = {"driftdeck": driftdeck_runs, "nannyml": nannyml_runs, "evidently": evidently_runs}


def real_flags(tool: str, data: pd.DataFrame) -> list[list[str]]:
    """Columns ``tool`` flags in each batch of river's Shuttle (see the module docstring)."""
    reference = data.iloc[:REAL_REFERENCE_ROWS]
    cuts = range(REAL_REFERENCE_ROWS, REAL_REFERENCE_ROWS + REAL_BATCHES * REAL_BATCH_ROWS, REAL_BATCH_ROWS)
    frames = [data.iloc[start : start + REAL_BATCH_ROWS].reset_index(drop=True) for start in cuts]
    columns = list(data.columns)
    if tool == "driftdeck":
        from app.stats.drift import drifted_columns, feature_drift
        from app.stats.profile import Profile

        profile = Profile.build(reference, dict.fromkeys(columns, "numeric"))
        return [drifted_columns(feature_drift(profile, profile.project(frame))) for frame in frames]
    if tool == "nannyml":
        import nannyml

        calculator = nannyml.UnivariateDriftCalculator(column_names=columns, chunk_size=REAL_BATCH_ROWS)
        calculator.fit(reference)
        return [nannyml_flags(calculator, frame, columns) for frame in frames]
    return [evidently_flags(reference, frame) for frame in frames]


def shuttle() -> pd.DataFrame:
    """river's Shuttle features in file order (peers' interpreter only: river lives there)."""
    from river import datasets

    return pd.DataFrame([features for features, _ in datasets.Shuttle()]).astype("float64")


# --- the peers' subprocess -------------------------------------------------------------------


def worker(args: argparse.Namespace) -> None:
    """Run the peers (in the peers' interpreter) and print one JSON object."""
    warnings.filterwarnings("ignore")
    out: dict[str, object] = {}
    if args.worker == "shuttle":
        shuttle().to_csv(args.output, index=False)
        return
    if args.worker == "real":
        data = pd.read_csv(args.data)
        out = {tool: real_flags(tool, data) for tool in PEERS}
    else:
        reference = make_frame(REFERENCE_ROWS, seed=1, shifted=False)
        seeds = {"nannyml": args.seeds, "evidently": args.evidently_seeds or args.seeds}
        out = {tool: {str(rows): RUNNERS[tool](reference, rows, seeds[tool]) for rows in args.sizes} for tool in PEERS}
    Path(args.output).write_text(json.dumps(out))


def run_peers(python: Path, arguments: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "out.json"
        subprocess.run([str(python), __file__, *arguments, "--output", str(output)], check=True)
        return json.loads(output.read_text()) if output.exists() else {}


# --- tables ---------------------------------------------------------------------------------


def rates(runs: list[dict[str, object]]) -> tuple[float, float, float]:
    """False-alarm rate, power, and the median seconds of one batch."""
    null = [run for run in runs if not run["shifted"]]
    shifted = [run for run in runs if run["shifted"]]
    false_alarms = sum(len(run["flagged"]) for run in null) / (len(null) * len(SCHEMA))
    power = sum(len(set(run["flagged"]) & set(SHIFTED)) for run in shifted) / (len(shifted) * len(SHIFTED))
    return false_alarms, power, statistics.median(run["seconds"] for run in runs)


def print_alarm_header(tools: list[str]) -> None:
    print("\n(a) 16 numeric + 4 categorical columns against a 100,000-row reference:"
          " false alarms / power (seeds), then seconds per batch")
    print(f"{'rows':>9} | " + " | ".join(f"{tool:>24}" for tool in tools)
          + " | driftdeck stored, driftdeck +ref, " + ", ".join(tool for tool in tools if tool != "driftdeck"), flush=True)


def print_alarm_row(results: dict[str, dict[str, list]], rows: int) -> None:
    cells, times = [], []
    for tool in [tool for tool in TOOLS if tool in results]:
        runs = results[tool][str(rows)]
        false_alarms, power, seconds = rates(runs)
        cells.append(f"{false_alarms:.2%} / {power:.1%} ({len(runs) // 2})")
        times.append(f"{seconds:.3f}")
        if tool == "driftdeck":
            times.append(f"{statistics.median(run['with_reference'] for run in runs):.3f}")
    print(f"{rows:>9,} | " + " | ".join(f"{cell:>24}" for cell in cells) + " | " + ", ".join(times), flush=True)


def print_targets(results: dict[str, dict[str, list]], sizes: list[int]) -> None:
    for rows in sizes:
        false_alarms, power, _ = rates(results["driftdeck"][str(rows)])
        checks = [("false alarms <= 1%", false_alarms <= 0.01)]
        if "nannyml" in results:
            checks.append(("power >= NannyML's", power >= rates(results["nannyml"][str(rows)])[1]))
        if rows >= 10_000:
            checks.append(("power 100%", power == 1.0))
        print(f"  {rows:>9,} rows: " + ", ".join(f"{name} {'PASS' if ok else 'MISS'}" for name, ok in checks))


def print_real_table(flags: dict[str, list[list[str]]]) -> None:
    tools = [tool for tool in TOOLS if tool in flags]
    print(f"\n(b) river's Shuttle: reference = rows 1-{REAL_REFERENCE_ROWS:,}, then batches of {REAL_BATCH_ROWS} rows")
    print(f"{'batch':>5} | " + " | ".join(f"{tool:<30}" for tool in tools))
    for index in range(REAL_BATCHES):
        cells = [", ".join(flags[tool][index]) or "-" for tool in tools]
        print(f"{index + 1:>5} | " + " | ".join(f"{cell:<30}" for cell in cells))
    totals = [f"{tool} {sum(map(len, flags[tool]))}" for tool in tools]
    print("column-batches flagged: " + ", ".join(totals))


def synthetic_table(args: argparse.Namespace, python: Path) -> None:
    reference = make_frame(REFERENCE_ROWS, seed=1, shifted=False)
    results: dict[str, dict[str, list]] = {tool: {} for tool in (TOOLS if python.exists() else ["driftdeck"])}
    print_alarm_header(list(results))
    for rows in args.sizes:
        results["driftdeck"][str(rows)] = driftdeck_runs(reference, rows, args.seeds)
        if python.exists():
            seeds = ["--seeds", str(args.seeds), "--evidently-seeds", str(args.evidently_seeds or args.seeds)]
            for tool, runs in run_peers(python, ["--worker", "synthetic", *seeds, "--sizes", str(rows)]).items():
                results[tool].update(runs)
        print_alarm_row(results, rows)
    print_targets(results, args.sizes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=SIZES)
    parser.add_argument("--real-only", action="store_true", help="table (b) only")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--evidently-seeds", type=int, help="fewer seeds for Evidently, whose every run reads the reference")
    parser.add_argument("--peers-venv", type=Path, default=DEFAULT_PEERS_VENV)
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--worker", choices=["synthetic", "real", "shuttle"])
    parser.add_argument("--data", type=Path)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    python = args.peers_venv / "bin" / "python"
    if not python.exists():
        print(f"no peers' virtualenv at {args.peers_venv}: `make bench-peers` creates it; driftdeck alone below")
    if not args.real_only:
        synthetic_table(args, python)
    if args.skip_real or not python.exists():
        return
    with tempfile.TemporaryDirectory() as folder:
        data_path = Path(folder) / "shuttle.csv"
        subprocess.run([str(python), __file__, "--worker", "shuttle", "--output", str(data_path)], check=True)
        flags = {"driftdeck": real_flags("driftdeck", pd.read_csv(data_path))}
        flags.update(run_peers(python, ["--worker", "real", "--data", str(data_path)]))
    print_real_table(flags)


if __name__ == "__main__":
    main()
