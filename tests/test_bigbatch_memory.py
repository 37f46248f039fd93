"""A streamed scan starts by giving back what Arrow's memory pool keeps of the process's earlier work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import make_batch
from tests.test_bigbatch import write_parts

# In a fresh interpreter on Arrow's default pool (mimalloc): a table of 200 MB made and dropped, whose memory
# the pool keeps, then a small batch scanned; the process's resident memory at each step, in MB.
SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path

    import numpy as np
    import pyarrow as pa

    from app.cluster import LocalEngine
    from tests.test_bigbatch import config_for

    def resident_mb():
        status = Path("/proc/self/status").read_text().splitlines()
        return int(next(line for line in status if line.startswith("VmRSS:")).split()[1]) / 1024

    folder = Path(sys.argv[1])
    config = config_for(folder.parent)
    LocalEngine().scan(folder, config, {})  # every library and cache a scan needs, loaded
    before = resident_mb()
    half = pa.array(np.ones(1_000_000))
    table = pa.table({f"c{i}": pa.concat_arrays([half, half]) for i in range(13)})  # 13 x 16 MB from the pool
    del table, half
    kept = resident_mb()
    LocalEngine().scan(folder, config, {})
    print(json.dumps({"pool": pa.default_memory_pool().backend_name, "before": before, "kept": kept,
                      "after": resident_mb()}))
""")


def test_a_scan_gives_back_what_the_pool_kept_of_earlier_work(tmp_path):
    folder = write_parts(tmp_path / "data" / "2026-02-09", [make_batch(index, rows=600) for index in range(2)])
    environment = {**os.environ, "ARROW_DEFAULT_MEMORY_POOL": "mimalloc"}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(folder)], capture_output=True, text=True, check=True,
                          env=environment, cwd=Path(__file__).parent.parent)
    resident = json.loads(done.stdout.strip().splitlines()[-1])
    assert resident["pool"] == "mimalloc"
    assert resident["kept"] - resident["before"] > 150  # the pool kept the dropped table's memory
    assert resident["after"] - resident["before"] < 50  # and the scan began by giving it back
