"""What driftdeck sets up on each worker of a Dask cluster it joins (``scheduler = "tcp://..."``).

Imported only where Dask is used (it needs ``distributed``), and light on
purpose: a worker that scans parts loads pandas and pyarrow, never
scikit-learn (see :mod:`app.columns`).
"""

from __future__ import annotations

from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin


class ArrowOnSystemMemory(WorkerPlugin):
    """The worker's Arrow buffers come from the C allocator rather than Arrow's own (mimalloc).

    Arrow's allocator keeps what one part's scan freed for the next; the C
    allocator hands it back to the system (a Dask nanny starts its worker with a
    low ``MALLOC_TRIM_THRESHOLD_``), and a worker process peaked about 70 MB
    lower over a batch (``bench/scale_bench.py``). Buffers allocated before stay
    valid: each keeps the pool it came from.
    """

    name = "driftdeck-arrow-on-system-memory"  # registered again by each engine: replaces, never adds up

    def setup(self, worker: Any) -> None:
        import pyarrow as pa

        pa.set_memory_pool(pa.system_memory_pool())
