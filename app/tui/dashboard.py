"""Everything the dashboard shows, read from the store in one pass.

:func:`load_dashboard` runs in a worker thread (it only reads) and returns a
frozen :class:`Dashboard` that the UI thread hands to the panels. All the
numbers come from :mod:`app.report`, the same views the CLI prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
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
class ModelView:
    """What the feature, health and snapshot panels show for one model."""

    features: list[dict[str, Any]] = field(default_factory=list)
    distributions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    latest: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    serving_history: list[dict[str, Any]] = field(default_factory=list)


NO_VIEW = ModelView()


@dataclass(frozen=True)
class Dashboard:
    """One consistent read of the store, showing ``model``'s panels (None: no models configured).

    ``views`` holds every model's panels, so selecting another model shows
    its panels at once (:meth:`showing`), from the same read.
    ``rollback_targets`` maps every model to the version ``b`` would serve
    (None: nothing to roll back to). ``events`` are the audit-log entries
    newer than the id the load was asked for, oldest first.
    """

    model: str | None
    counts: dict[str, Any]
    models: list[dict[str, Any]]
    rollback_targets: dict[str, int | None]
    views: dict[str, ModelView] = field(default_factory=dict)
    events: list[StoredEvent] = field(default_factory=list)

    @property
    def view(self) -> ModelView:
        return self.views.get(self.model, NO_VIEW) if self.model is not None else NO_VIEW

    def showing(self, model: str | None) -> Dashboard:
        """The same read, showing ``model``'s panels."""
        return self if model == self.model else replace(self, model=model)

    def summary(self, model: str | None) -> dict[str, Any] | None:
        return next((row for row in self.models if row["name"] == model), None)


def load_dashboard(monitor: Engine, model: str | None, after_event_id: int = 0,
                   event_limit: int = EVENT_LIMIT, history: int = HISTORY_BATCHES) -> Dashboard:
    """Read the header counts and every model's summary and panels; the dashboard shows ``model``'s.

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
    views = {summary["name"]: load_view(monitor, summary["name"], history) for summary in models}
    return Dashboard(model, counts, models, targets, views, events)


def load_view(monitor: Engine, model: str, history: int) -> ModelView:
    store = monitor.store
    recent = store.results(model, limit=history)  # read and parsed once for the three views that show them
    return ModelView(
        features=feature_rows(store, model, history=history, recent=recent),
        distributions=feature_distributions(store, model),
        latest=latest_result(store, model, monitor.config.labels.track_batches, lookback=history, recent=recent),
        history=metric_history(store, model, limit=history, recent=recent),
        snapshots=list(reversed(snapshot_rows(store, model))),
        serving_history=serving_history_rows(store, model),
    )
