"""The dashboard's panels: each a bordered container that shows one part of a Dashboard.

Panels hold no logic: they hand the dashboard's dicts to the plain functions
of :mod:`app.tui.render` and put the results in tables and drawings. They
never read the store or talk to the monitor; the app does both.
"""

from __future__ import annotations

from collections import deque
from functools import partial
from typing import Any, Callable, Iterable, Sequence

from rich.console import RenderableType
from rich.text import Text
from textual.binding import Binding
from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import DataTable, RichLog, Static

from app.config import DriftConfig
from app.store import StoredEvent
from app.tui import render
from app.tui.dashboard import Dashboard

TREND_WIDTH = 12
EVENT_LOG_LINES = 2000

Cells = Sequence[RenderableType]


class Drawing(Widget):
    """Shows what a plain function of data draws for the widget's current size.

    ``show(draw, *data)`` draws ``draw(size, *data)``; the drawing is redone
    when the widget is resized, or shown different data, and not otherwise.
    """

    def __init__(self, *, id: str, focusable: bool = False) -> None:
        super().__init__(id=id)
        self.can_focus = focusable
        self._draw: Callable[..., RenderableType] | None = None
        self._data: tuple = ()

    def show(self, draw: Callable[..., RenderableType], *data: Any) -> None:
        if (draw, data) != (self._draw, self._data):
            self._draw, self._data = draw, data
            self.refresh()

    def render(self) -> RenderableType:
        return self._draw(self.size, *self._data) if self._draw else ""


class Panel(Vertical):
    """A bordered, titled part of the dashboard; ``z`` fills the screen with it."""

    ALLOW_MAXIMIZE = True

    def __init__(self, title: str, *children: Widget, id: str) -> None:
        super().__init__(*children, id=id, classes="panel")
        self.border_title = Text(title)

    def titled(self, title: str, subtitle: Text | None = None) -> None:
        """Set the border's title (and subtitle), literally; a repaint only if they change."""
        if self.border_title != Text(title).markup:
            self.border_title = Text(title)
        if subtitle is not None and self.border_subtitle != subtitle.markup:
            self.border_subtitle = subtitle


def fill_table(table: DataTable, rows: Iterable[tuple[str, Cells]]) -> None:
    """Show ``rows`` ((key, cells) pairs) in ``table``.

    Same keys in the same order: the cells are updated in place. Otherwise the
    table is refilled and the cursor stays on the row it was on, if that row is
    still there.
    """
    rows = list(rows)
    keys = [key for key, _ in rows]
    if keys == [row_key.value for row_key in table.rows]:
        for key, cells in rows:
            for column_key, value in zip(table.columns, cells):
                if table.get_cell(key, column_key) != value:
                    table.update_cell(key, column_key, value, update_width=True)
        return
    selected = selected_key(table)
    table.clear()
    for key, cells in rows:
        table.add_row(*cells, key=key)
    if selected in keys:
        table.move_cursor(row=keys.index(selected), animate=False)


def show_text(static: Static, text: RenderableType) -> None:
    """Put ``text`` in ``static`` unless it already shows exactly that.

    Every Static this is used on has a fixed height in driftdeck.tcss, so the
    update repaints it without a layout pass of the whole screen.
    """
    if static.content != text:
        static.update(text)


def selected_key(table: DataTable) -> str | None:
    """The key of the row under the table's cursor (None when the table is empty)."""
    if not table.row_count:
        return None
    return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value


def row_table(id: str, columns: Sequence[str], table_class: type[DataTable] = DataTable) -> DataTable:
    table = table_class(id=id, cursor_type="row", zebra_stripes=True)
    for column in columns:
        table.add_column(column, key=column)
    return table


class ModelsPanel(Panel):
    """One row per model; the highlighted row is the selected model."""

    COLUMNS = ("model", "policy", "serving", "state", "top flag", "verdict")

    def __init__(self) -> None:
        self.table = row_table("models-table", self.COLUMNS)
        super().__init__("Models", self.table, Static(id="verdict"), id="models")

    def show(self, dashboard: Dashboard, selected: str | None) -> None:
        fill_table(self.table, ((m["name"], render.model_cells(m)) for m in dashboard.models))
        summary = dashboard.summary(selected)
        verdict = Text()
        if summary:
            verdict.append(Text("verdict: ", style="bold"))
            verdict.append(Text(summary["verdict"]))
        show_text(self.query_one("#verdict", Static), verdict)


class FeaturesPanel(Panel):
    """Drift of each feature of the selected model, and the highlighted feature's distribution."""

    COLUMNS = ("feature", "type", "PSI", "KS", "JS", "missing Δ", "status", "PSI trend")

    def __init__(self, drift: DriftConfig) -> None:
        super().__init__("Feature distributions", row_table("features-table", self.COLUMNS),
                         Drawing(id="distribution"), id="features")
        self.drift = drift
        self._dashboard: Dashboard | None = None

    def show(self, dashboard: Dashboard) -> None:
        self._dashboard = dashboard
        self.titled(f"Feature distributions — {dashboard.model}", render.multivariate_text(dashboard.latest))
        cells = partial(render.feature_cells, trend_width=TREND_WIDTH, threshold=self.drift.psi_threshold,
                        watch=self.drift.psi_watch)
        table = self.query_one(DataTable)
        fill_table(table, ((row["feature"], cells(row)) for row in dashboard.features))
        self.show_feature(selected_key(table))

    def show_feature(self, feature: str | None) -> None:
        """Draw the reference-vs-current distribution of ``feature``."""
        if self._dashboard is None:
            return
        row = next((r for r in self._dashboard.features if r["feature"] == feature), None)
        if row is None:
            self.query_one("#distribution", Drawing).show(render.distribution_chart, None, [], None)
            return
        rows = self._dashboard.distributions.get(feature, [])
        self.query_one("#distribution", Drawing).show(render.distribution_chart, feature, rows, row["kind"])

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.show_feature(selected_key(event.data_table))


class HealthPanel(Panel):
    """The primary metric per batch (served, shadow, baseline) and the latest batch's numbers."""

    def __init__(self, drift: DriftConfig) -> None:
        super().__init__("Prediction health", Drawing(id="health-chart", focusable=True),
                         Static(id="latest-metrics"), id="health")
        self.drift = drift

    def show(self, dashboard: Dashboard) -> None:
        summary = dashboard.summary(dashboard.model) or {}
        metric = next((row["metric"] for row in reversed(dashboard.history) if row["metric"]), None)
        self.titled(f"Prediction health — {dashboard.model}" + (f" ({metric})" if metric else ""))
        shadow = "shadow: static (first snapshot)" if summary.get("mode") == "dynamic" else "shadow: dynamic retrain"
        self.query_one("#health-chart", Drawing).show(render.health_chart, dashboard.history, shadow)
        show_text(self.query_one("#latest-metrics", Static),
                  render.latest_metrics_text(dashboard.latest, self.drift.prediction_psi_threshold))


class SnapshotTable(DataTable):
    """The snapshot list; enter serves the highlighted snapshot."""

    BINDINGS = [
        Binding("enter", "select_cursor", "Promote", id="promote",
                tooltip="Serve the highlighted snapshot (asks first if it was rejected)"),
    ]


class SnapshotsPanel(Panel):
    """The selected model's snapshots, newest first, the highlighted one's note, and where the serving pointer has been."""

    COLUMNS = ("version", "status", "holdout", "trained on", "created", "note")

    def __init__(self) -> None:
        super().__init__("Snapshots", row_table("snapshots-table", self.COLUMNS, SnapshotTable),
                         Static(id="snapshot-note"), Drawing(id="serving-history"), id="snapshots")
        self.rows: dict[str, dict[str, Any]] = {}
        self.model: str | None = None

    def show(self, dashboard: Dashboard) -> None:
        self.titled(f"Snapshots — {dashboard.model}")
        self.rows = {str(row["version"]): row for row in dashboard.snapshots}
        table = self.query_one(DataTable)
        if dashboard.model != self.model:  # another model's versions: start from its newest
            self.model = dashboard.model
            table.clear()
        fill_table(table, ((key, render.snapshot_cells(row)) for key, row in self.rows.items()))
        self.show_note(selected_key(table))
        self.query_one("#serving-history", Drawing).show(render.serving_history_text, dashboard.serving_history)

    def show_note(self, key: str | None) -> None:
        row = self.rows.get(key) if key is not None else None
        show_text(self.query_one("#snapshot-note", Static), render.snapshot_note(row) if row else Text())

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.show_note(selected_key(event.data_table))


class EventLogPanel(Panel):
    """Every event, newest last; errors and warnings in their colours.

    The panel keeps its entries (up to ``EVENT_LOG_LINES``) and lays them out
    again when its width changes (a maximized panel, a resized terminal).
    """

    def __init__(self) -> None:
        log = RichLog(id="event-log", max_lines=EVENT_LOG_LINES, min_width=1, wrap=False, markup=False,
                      highlight=False)
        super().__init__("Event log", log, id="events")
        self.entries: deque[StoredEvent] = deque(maxlen=EVENT_LOG_LINES)
        self._laid_out_width = 0

    def append(self, events: Iterable[StoredEvent]) -> None:
        events = list(events)
        self.entries.extend(events)
        self._write(events)

    def note(self, epoch: float, message: str) -> None:
        """An entry that is not an audit event (a failed command, a worker error)."""
        self.append([StoredEvent(0, epoch, "error", None, None, message, {})])

    def _write(self, events: Iterable[StoredEvent]) -> None:
        log = self.query_one(RichLog)
        width = log.scrollable_content_region.width
        if not width:
            return  # not laid out yet: on_resize writes every entry
        for event in events:
            log.write(render.event_text(event, width))

    def on_resize(self) -> None:
        log = self.query_one(RichLog)
        width = log.scrollable_content_region.width
        if width != self._laid_out_width:
            self._laid_out_width = width
            log.clear()
            self._write(self.entries)
