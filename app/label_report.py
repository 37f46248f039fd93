"""Read-only views of the labels that come later, for ``status --json`` and the dashboard.

Each batch's coverage and the label files it came from, the lag (the oldest
batch still short of ``[labels] labeled_share``), labels waiting for their ids,
and the newest conflicts: plain dicts, as :mod:`app.report` gives everything else.
"""

from __future__ import annotations

from typing import Any

from app.config import Config, LabelsConfig
from app.label_ledger import BatchLabels, conflicts, label_lag, waiting_count
from app.store import FileRecord, Store


def batch_label_view(record: FileRecord, late: BatchLabels | None, labeled_share: float) -> dict[str, Any]:
    """``label_coverage`` (share of the batch's rows labelled, None for a file that is not a scored batch)
    and ``labels_from`` (the label files that gave them); ``labeled`` once the coverage reaches ``labeled_share``."""
    if late is not None:
        return {"labeled": late.coverage >= labeled_share, "label_coverage": late.coverage, "labels_from": late.labels_from}
    if record.status != "ingested" or not record.rows:
        return {"label_coverage": None, "labels_from": []}
    return {"label_coverage": 1.0 if record.labeled else 0.0, "labels_from": []}


def label_summary(store: Store, config: Config) -> dict[str, Any]:
    """Labels that come later: the lag (see :func:`lag_view`), labels waiting for their ids, the newest conflicts."""
    return {
        "lag": lag_view(store, config.labels),
        "waiting": waiting_count(store.read),
        "conflicts": [{"id": c.id, "file": c.batch, "kept": c.kept, "refused": c.refused} for c in conflicts(store.read, 20)],
    }


def lag_view(store: Store, labels: LabelsConfig) -> dict[str, Any] | None:
    """The oldest batch still waiting for labels, for the header: ``over`` when beyond ``max_lag_batches``."""
    lag = label_lag(store.read, labels.labeled_share)
    if lag is None:
        return None
    return {"file": lag.name, "seen_at": lag.seen_at, "batches_since": lag.batches_since,
            "over": lag.batches_since > labels.max_lag_batches}
