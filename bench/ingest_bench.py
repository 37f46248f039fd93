"""How long driftdeck takes to read and validate one batch, beside pandas reading the same file.

A 100,000-row batch of 20 columns (16 numeric, 4 categorical) is written as
CSV and as Parquet. For each, driftdeck's own path (``read_stable`` then
``parse_batch`` with a matching config) is timed beside ``pandas.read_csv`` /
``pandas.read_parquet`` alone, the floor. Best of 3 runs each; the target is
driftdeck within 2x of the floor. A second table times each step of
driftdeck's path alone, one after another (``parse_batch`` overlaps the
SHA-256 with the parse and validation on a second thread, so the whole is
less than the sum).

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

from app.config import CONFIG_NAME, Config, parse_config
from app.fsutil import sha256_bytes
from app.ingest import parse_batch, read_stable
from app.models import CATEGORICAL, columns_of_kind
from app.readers import read_table
from app.validation import validate_table

NUMERIC_COLUMNS = 16
CATEGORICAL_COLUMNS = 4
RUNS = 3
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


def best_seconds(action: Callable[[], object], runs: int = RUNS) -> float:
    """The fastest of ``runs`` wall-clock timings of ``action()``, in seconds."""
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        timings.append(time.perf_counter() - start)
    return min(timings)


def driftdeck_reader(path: Path, config: Config) -> Callable[[], object]:
    max_bytes = int(config.watch.max_file_mb * (1 << 20))
    return lambda: parse_batch(read_stable(path, max_bytes), config)


def step_seconds(path: Path, config: Config) -> dict[str, float]:
    """Best-of-RUNS seconds of each step of driftdeck's path, each run alone."""
    max_bytes = int(config.watch.max_file_mb * (1 << 20))
    categorical = columns_of_kind(config.schema, CATEGORICAL)
    data = read_stable(path, max_bytes).data
    table = read_table(path.name, data, max_bytes, categorical)
    return {
        "read_stable": best_seconds(lambda: read_stable(path, max_bytes)),
        "read_table": best_seconds(lambda: read_table(path.name, data, max_bytes, categorical)),
        "validate_table": best_seconds(lambda: validate_table(table, config)),
        "sha256": best_seconds(lambda: sha256_bytes(data)),
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
              f" best of {RUNS}")
        print(f"{'format':<8} {'size MB':>8} {'driftdeck s':>12} {'pandas s':>9} {'ratio':>6}  target <= {TARGET_RATIO:g}x")
        for label, path, floor in cases:
            ours = best_seconds(driftdeck_reader(path, config))
            theirs = best_seconds(floor)
            ratio = ours / theirs
            verdict = "ok" if ratio <= TARGET_RATIO else "SLOW"
            print(f"{label:<8} {path.stat().st_size / (1 << 20):>8.1f} {ours:>12.3f} {theirs:>9.3f} {ratio:>5.2f}x  {verdict}")
        print(f"\n{'each step alone, s':<19} {'read_stable':>11} {'read_table':>10} {'validate_table':>14}"
              f" {'sha256':>7}  (parse_batch hashes on a second thread)")
        for label, path, _ in cases:
            steps = step_seconds(path, config)
            print(f"{label:<19} {steps['read_stable']:>11.3f} {steps['read_table']:>10.3f}"
                  f" {steps['validate_table']:>14.3f} {steps['sha256']:>7.3f}")

if __name__ == "__main__":
    main()
