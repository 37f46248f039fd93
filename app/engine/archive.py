"""The labeled batches kept in the state folder, so retraining and validation never depend on the producer's files.

A labeled batch's rows (or a batch's whose labels are to come in label files)
are written to ``batches/`` in Parquet before its commit; retrains read them
back through a small cache, under the config as it is now, with the labels
that came later filled in.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import pandas as pd

from app.columns import NUMERIC
from app.config import Config
from app.label_ledger import labels_of, with_labels
from app.models import prepare_features
from app.serving import parquet_bytes
from app.store import Store
from app.validation import Batch

BATCH_CACHE_SIZE = 16


class BatchArchive:
    """Archived labeled batches: written once per content, read back by file id or SHA-256."""

    def __init__(self, folder: Path, store: Store, config: Config) -> None:
        self.folder = folder
        self.store = store
        self.config = config
        self._cache: OrderedDict[int, pd.DataFrame] = OrderedDict()

    def path(self, sha256: str) -> Path:
        """Where the rows of the batch with this content are kept."""
        return self.folder / f"{sha256[:16]}.parquet"

    def archive(self, batch: Batch) -> None:
        """Keep a labeled batch's rows: retrains and validation read them even if the source file goes."""
        path = self.path(batch.sha256)
        if not path.exists():
            temporary = path.with_suffix(".tmp")
            temporary.write_bytes(parquet_bytes(batch.frame))
            os.replace(temporary, path)

    def load(self, file_ids: list[int]) -> list[tuple[str, str, pd.DataFrame]]:
        """(name, sha256, rows) of archived labeled batches, through a small cache."""
        loaded = []
        for file_id in file_ids:
            record = self.store.file(file_id)
            if file_id not in self._cache:
                self.remember(file_id, self.read(record.sha256))
            self._cache.move_to_end(file_id)
            loaded.append((record.name, record.sha256, self._cache[file_id]))
        return loaded

    def remember(self, file_id: int, frame: pd.DataFrame) -> None:
        """Keep ``frame`` at hand for the next retrain (the batch just committed starts its window)."""
        self._cache[file_id] = frame
        while len(self._cache) > BATCH_CACHE_SIZE:
            self._cache.popitem(last=False)

    def read(self, sha256: str) -> pd.DataFrame:
        """An archived batch's rows under the config as it is now (it may have changed since the batch came):
        each feature column of the kind the config gives it, a column the batch did not have (a new
        feature, a new target) missing throughout, and the labels that came later in label files."""
        frame = pd.read_parquet(self.path(sha256))
        for column in (*self.config.schema, *([self.config.target] if self.config.target else [])):
            if column not in frame:
                frame[column] = None
        for column, kind in self.config.schema.items():
            if (kind == NUMERIC) != pd.api.types.is_numeric_dtype(frame[column]):
                frame[column] = prepare_features(frame[[column]], {column: kind})[column]
        return self._with_late_labels(sha256, frame)

    def _with_late_labels(self, sha256: str, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame`` with the labels label files gave its rows since it came (see :mod:`app.label_ledger`)."""
        record = self.store.file_by_sha(sha256)
        if not self.config.target or record is None:
            return frame
        return with_labels(frame, labels_of(self.store.read, record.id), self.config.target, self.config.task)
