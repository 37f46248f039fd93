"""Everything the dashboard shows, read from the store in one pass.

:func:`load_dashboard` runs in a worker thread (it only reads) and returns a
frozen :class:`Dashboard` that the UI thread hands to the panels. All the
numbers come from :mod:`app.report`, the same views the CLI prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.engine_link import Engine
from app.report import (
    dashboard_counts,
    feature_distributions,
    feature_rows,
    latest_result,
    metric_history,
    model_summaries,
    serving_history_rows,
    snapshot_rows,
)
from app.store import StoredEvent

EVENT_LIMIT = 500
HISTORY_BATCHES = 60


@dataclass(frozen=True)
class Dashboard:
    """One consistent read of the store for the selected ``model`` (None: no models configured).

    ``rollback_targets`` maps every model to the version ``b`` would serve
    (None: nothing to roll back to). ``events`` are the audit-log entries
    newer than the id the load was asked for, oldest first.
    """

    model: str | None
    counts: dict[str, Any]
    models: list[dict[str, Any]]
    rollback_targets: dict[str, int | None]
    features: list[dict[str, Any]] = field(default_factory=list)
    distributions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    latest: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    serving_history: list[dict[str, Any]] = field(default_factory=list)
    events: list[StoredEvent] = field(default_factory=list)

    def summary(self, model: str | None) -> dict[str, Any] | None:
        return next((row for row in self.models if row["name"] == model), None)


def load_dashboard(monitor: Engine, model: str | None, after_event_id: int = 0,
                   event_limit: int = EVENT_LIMIT, history: int = HISTORY_BATCHES) -> Dashboard:
    """Read the header counts, every model's summary and the selected ``model``'s panels.

    ``history`` is how many recent batches the trend and health views cover.
    """
    store = monitor.store
    models = model_summaries(store, monitor.config, monitor.training)
    targets = {}
    for summary in models:
        previous = monitor.registry.previous_good(summary["name"])
        targets[summary["name"]] = previous.version if previous else None
    events = store.events(limit=event_limit, after_id=after_event_id)
    counts = dashboard_counts(store, monitor.config.labels)
    if model is None:
        return Dashboard(None, counts, models, targets, events=events)
    return Dashboard(
        model=model,
        counts=counts,
        models=models,
        rollback_targets=targets,
        features=feature_rows(store, model, history=history),
        distributions=feature_distributions(store, model),
        latest=latest_result(store, model, monitor.config.labels.track_batches),
        history=metric_history(store, model, limit=history),
        snapshots=list(reversed(snapshot_rows(store, model))),
        serving_history=serving_history_rows(store, model),
        events=events,
    )
