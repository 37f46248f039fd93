"""Where a streamed batch's parts are read: in this process, or on a Dask cluster (``[scale] engine = "dask"``).

Both engines run the same per-part work (:func:`app.bigbatch.scan_part`,
:func:`app.bigbatch.predict_part`) and merge it in part order in this process,
so their results are identical. ``scheduler = "local"`` starts a LocalCluster
in this process (one worker, a thread per core) the first time a batch needs
it; ``"tcp://host:8786"`` joins a running cluster,
whose workers must have driftdeck installed and see the data folder at the
same path. A scheduler that cannot be reached (within dask's
``distributed.comm.timeouts.connect``) is a :class:`ClusterUnreachable`, an
``OSError``: a fault of the machine, not of the batch, which is read again later.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from app.bigbatch import (PredictionWriter, ScannedBatch, batch_parts, batch_sha256, merge_scans, predict_batch,
                          predict_part, sample_threshold, scan_batch, scan_part)
from app.config import Config, ScaleConfig
from app.stats.profile import Profile


class ClusterUnreachable(OSError):
    """The Dask scheduler could not be reached; the message says which and why, in one line."""


class StreamEngine(Protocol):
    """Reads a streamed batch's parts and merges what they hold."""

    def scan(self, path: Path, config: Config, references: dict[str, Profile]) -> ScannedBatch: ...
    def predict(self, path: Path, pipeline: Any, config: Config, version: int, out: Path) -> int: ...
    def close(self) -> None: ...


class LocalEngine:
    """The parts streamed one after another in this process."""

    def scan(self, path: Path, config: Config, references: dict[str, Profile]) -> ScannedBatch:
        release_pooled_memory()
        return scan_batch(path, config, references)

    def predict(self, path: Path, pipeline: Any, config: Config, version: int, out: Path) -> int:
        return predict_batch(path, pipeline, config, version, out)

    def close(self) -> None:
        pass


class DaskEngine:
    """The parts scanned on a Dask cluster, one task per part, merged here in part order."""

    def __init__(self, scheduler: str) -> None:
        self.scheduler = scheduler
        self._client: Any = None
        self._cluster: Any = None

    def client(self) -> Any:
        """The cluster's client, connected (or the LocalCluster started) on first use."""
        if self._client is None:
            import dask
            from distributed import Client, LocalCluster  # installed: the config checks (app.config)

            if self.scheduler == "local":
                # The workers' sampling profiler holds the GIL every 10 ms: a part's scan, much of it pandas
                # in Python, took two to three times as long with it.
                dask.config.set({"distributed.worker.profile.enabled": False})
                # Threads in this process, not a worker process per core: each process would hold its own
                # interpreter and libraries (about 0.18 GB: a scan loads pandas and pyarrow, never scikit-learn)
                # and its own part's memory; the price is the GIL over each part's pandas work.
                # The scheduler always serves HTTP (its dashboard and health routes): on this machine only, on a
                # free port, never on every interface at 8787.
                self._cluster = LocalCluster(n_workers=1, threads_per_worker=os.cpu_count() or 1, processes=False,
                                             dashboard_address="127.0.0.1:0")
                self._client = Client(self._cluster)
            else:
                try:
                    self._client = Client(self.scheduler)  # waits distributed.comm.timeouts.connect at most
                except (OSError, TimeoutError) as error:
                    reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
                    raise ClusterUnreachable(f"the Dask scheduler {self.scheduler} cannot be reached ({reason});"
                                             " the batch is read again later") from None
        return self._client

    def scan(self, path: Path, config: Config, references: dict[str, Profile]) -> ScannedBatch:
        release_pooled_memory()
        parts = batch_parts(path)
        client = self.client()
        with ThreadPoolExecutor(max_workers=1) as hasher:
            sha256 = hasher.submit(batch_sha256, path)  # first, so that the threshold's key draws overlap it too
            threshold = sample_threshold(parts, config)
            futures = client.map(scan_part, parts, range(len(parts)), config=config, references=references,
                                 threshold=threshold, pure=False)
            return merge_scans(Path(path).name, sha256, _in_order(futures), config)

    def predict(self, path: Path, pipeline: Any, config: Config, version: int, out: Path) -> int:
        client = self.client()
        model = client.scatter(pipeline, broadcast=True)
        futures = client.map(predict_part, batch_parts(path), pipeline=model, config=config, version=version, pure=False)
        writer = PredictionWriter(out)
        try:
            for predictions in _in_order(futures):
                writer.add(predictions)
        except BaseException:
            writer.abort()
            raise
        writer.close()
        return writer.rows

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()
        self._client = self._cluster = None


def release_pooled_memory() -> None:
    """Give back what Arrow's memory pool keeps of this process's earlier work, before a streamed batch's scan.

    Arrow's default pool (mimalloc) keeps freed memory for reuse: after a 256,000-row row group was read
    into a frame and profiled, the engine's process held 130 MB more than before it through the whole of
    a Dask scan that followed (the workers read the parts, so the engine's pool had no use for it).
    """
    pa.default_memory_pool().release_unused()


def _in_order(futures: list) -> Iterator[Any]:
    """Each task's result in part order, let go on the cluster once taken: one part's result is held at a time."""
    for future in futures:
        yield future.result()
        future.release()


def stream_engine(scale: ScaleConfig) -> StreamEngine:
    return DaskEngine(scale.scheduler) if scale.engine == "dask" else LocalEngine()
