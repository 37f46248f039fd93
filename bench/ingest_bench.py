"""How long driftdeck takes to read and validate one batch, beside pandas reading the same file.

A 100,000-row batch of 20 columns (16 numeric, 4 categorical) is written as
CSV and as Parquet. For each, driftdeck's own path (``read_batch`` with a
matching config: read, SHA-256, parse, validate) is timed beside
``pandas.read_csv`` / ``pandas.read_parquet`` alone, the floor. Each is called
once untimed (the first call pays one-time costs: thread pools, memory pools
growing), then the two alternate for 7 timed runs each; the table shows the
best of each and the median of the 7 paired ratios. The target is driftdeck
within 2x of the floor (best against best). A second table times
each step of driftdeck's path alone, one after another; ``read_batch``
hashes the bytes while the parser works on them, so the whole is less than the
sum.

Run: ``.venv/bin/python bench/ingest_bench.py [--rows N]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from app.columns import CATEGORICAL, columns_of_kind
from app.config import CONFIG_NAME, Config, parse_config
from app.fsutil import sha256_file
from app.ingest import read_batch
from app.readers import read_table
from app.validation import validate_table

NUMERIC_COLUMNS = 16
CATEGORICAL_COLUMNS = 4
RUNS = 7
TARGET_RATIO = 2.0


def make_frame(rows: int, seed: int = 0) -> pd.DataFrame:
    """``rows`` x 20: ``num_00..num_15`` normal floats, ``cat_0..cat_3`` drawn from 12 words each."""
    rng = np.random.default_rng(seed)
    columns = {f"num_{i:02d}": rng.normal(i, 1 + i / 4, rows) for i in range(NUMERIC_COLUMNS)}
    for i in range(CATEGORICAL_COLUMNS):
        words = np.array([f"level-{i}-{k}" for k in range(12)])
        columns[f"cat_{i}"] = words[rng.integers(0, len(words), rows)]
    return pd.DataFrame(columns)


def matching_config(frame: pd.DataFrame, folder: Path) -> Config:
    schema = {column: "categorical" if column.startswith("cat_") else "numeric" for column in frame.columns}
    return parse_config({"schema": schema, "models": [], "watch": {"max_file_mb": 1024}}, folder / CONFIG_NAME)


def seconds(action: Callable[[], object]) -> float:
    """Wall-clock seconds of one call of ``action()``."""
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def best_seconds(action: Callable[[], object], runs: int = RUNS) -> float:
    """The fastest of ``runs`` wall-clock timings of ``action()``, in seconds."""
    return min(seconds(action) for _ in range(runs))


def paired_seconds(ours: Callable[[], object], theirs: Callable[[], object], runs: int = RUNS
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Seconds of ``runs`` alternating calls of ``ours`` and ``theirs``, after one untimed call of each."""
    ours(), theirs()
    pairs = [(seconds(ours), seconds(theirs)) for _ in range(runs)]
    return np.array([a for a, _ in pairs]), np.array([b for _, b in pairs])


def parse_file(path: Path, config: Config):
    """The parse alone: ``read_table`` on the file as the parser reads it, without hashing."""
    categorical = columns_of_kind(config.schema, CATEGORICAL)
    with open(path, "rb", buffering=0) as handle:
        return read_table(path.name, handle, int(config.watch.max_file_mb * (1 << 20)), categorical)


def step_seconds(path: Path, config: Config) -> dict[str, float]:
    """Best-of-RUNS seconds of each step of driftdeck's path, each run alone."""
    table = parse_file(path, config)
    return {
        "read+sha256": best_seconds(lambda: sha256_file(path)),
        "read+parse": best_seconds(lambda: parse_file(path, config)),
        "validate_table": best_seconds(lambda: validate_table(table, config)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    rows = parser.parse_args().rows

    frame = make_frame(rows)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        config = matching_config(frame, folder)
        csv_path, parquet_path = folder / "batch.csv", folder / "batch.parquet"
        frame.to_csv(csv_path, index=False)
        frame.to_parquet(parquet_path)
        cases = [
            ("CSV", csv_path, lambda: pd.read_csv(csv_path)),
            ("Parquet", parquet_path, lambda: pd.read_parquet(parquet_path)),
        ]
        print(f"{rows:,} rows x {frame.shape[1]} columns ({NUMERIC_COLUMNS} numeric, {CATEGORICAL_COLUMNS} categorical);"
              f" best of {RUNS} alternating runs, after one untimed run each")
        print(f"{'format':<8} {'size MB':>8} {'driftdeck s':>12} {'pandas s':>9} {'ratio':>6} {'median':>7}"
              f"  target <= {TARGET_RATIO:g}x")
        for label, path, floor in cases:
            ours, theirs = paired_seconds(lambda: read_batch(path, config), floor)
            ratio = ours.min() / theirs.min()
            verdict = "ok" if ratio <= TARGET_RATIO else "SLOW"
            print(f"{label:<8} {path.stat().st_size / (1 << 20):>8.1f} {ours.min():>12.3f} {theirs.min():>9.3f}"
                  f" {ratio:>5.2f}x {np.median(ours / theirs):>6.2f}x  {verdict}")
        print(f"\n{'each step alone, s':<19} {'read+sha256':>11} {'read+parse':>10} {'validate_table':>14}"
              "  (read_batch hashes while the parser works)")
        for label, path, _ in cases:
            steps = step_seconds(path, config)
            print(f"{label:<19} {steps['read+sha256']:>11.3f} {steps['read+parse']:>10.3f} {steps['validate_table']:>14.3f}")


if __name__ == "__main__":
    main()
