"""How much memory reading one batch takes at its peak, per decoded byte, for each format.

driftdeck estimates a file's memory need before reading it (``READ_MEMORY_FACTORS``
in ``app/readers.py`` times the file's decoded size) and refuses a file whose
need is above the budget. This measures the factors: a batch of the test
stream's columns (three numeric, a category, a label and a timestamp as text)
is written in each format, and each is read with ``read_batch`` in a fresh
interpreter (the budget lifted), which reports its peak resident memory (VmHWM)
growth. The factor is that growth over the decoded size: the file's size for
CSV and JSONL, the gzip's stated length, the Parquet footer's declared size.

Run: ``.venv/bin/python bench/read_memory_bench.py [--rows N]``
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from app.readers import READ_MEMORY_FACTORS, read_memory_estimate

CONFIG = """
target = "label"
timestamp = "ts"
models = []
[schema]
x1 = "numeric"
x2 = "numeric"
x3 = "numeric"
color = "categorical"
[watch]
max_file_mb = 4000
max_memory_mb = 100000
"""

PROBE = """
import sys
from pathlib import Path
from app.config import load_config
from app.ingest import read_batch

def resident_kb(key):
    return int(next(line for line in open("/proc/self/status") if line.startswith(key)).split()[1])

path = Path(sys.argv[1])
config = load_config(path.parent)
before = resident_kb("VmRSS")
read_batch(path, config)
print(resident_kb("VmHWM") - before)
"""


def stream(rows: int) -> pd.DataFrame:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.conftest import make_batch

    return pd.concat([make_batch(index, rows=min(rows, 100_000)) for index in range(max(rows // 100_000, 1))],
                     ignore_index=True)


def write(frame: pd.DataFrame, path: Path) -> None:
    if path.name.endswith(".csv.gz"):
        frame.to_csv(path, index=False, compression="gzip")
    elif path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_json(path, orient="records", lines=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300_000)
    args = parser.parse_args()
    frame = stream(args.rows)
    print(f"{len(frame):,} rows; peak resident memory of read_batch in a fresh interpreter")
    print(f"{'format':<10}{'file MB':>9}{'decoded MB':>12}{'peak MB':>9}{'factor':>8}{'used':>6}")
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "driftdeck.toml").write_text(CONFIG)
        for suffix, used in READ_MEMORY_FACTORS.items():
            path = Path(folder) / f"batch{suffix}"
            write(frame, path)
            fd = os.open(path, os.O_RDONLY)
            try:
                decoded = read_memory_estimate(path.name, fd, path.stat().st_size, 1 << 40) / used
            finally:
                os.close(fd)
            growth_kb = int(subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True,
                                           check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout)
            peak = growth_kb * 1024
            print(f"{suffix:<10}{path.stat().st_size / 2**20:>9.1f}{decoded / 2**20:>12.1f}{peak / 2**20:>9.1f}"
                  f"{peak / decoded:>8.2f}{used:>6}")


if __name__ == "__main__":
    main()
