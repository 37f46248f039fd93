"""The dashboard's panels: each a bordered container that shows one part of a Dashboard.

Panels hold no logic: they hand the dashboard's dicts to the plain functions
of :mod:`app.tui.tables`, :mod:`app.tui.charts` and their siblings and put the
results in tables and drawings. They never read the store or talk to the
monitor; the app does both.
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
from app.tui.charts import distribution_chart, health_chart, latest_metrics_text, multivariate_text
from app.tui.dashboard import Dashboard
from app.tui.event_text import event_text
from app.tui.formatting import clip_lines
from app.tui.frames import OnePerFrame
from app.tui.snapshot_text import serving_history_text, snapshot_note
from app.tui.tables import feature_cells, model_cells, model_cells_stacked, model_detail, snapshot_cells

MAX_TREND_WIDTH = 24
VERDICT_LINES = 2
PROMOTE_HINT = Text("⏎ serves the highlighted version")
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

    def focus_inside(self) -> None:
        """Focus the panel's first part that takes the focus."""
        target = next((widget for widget in self.query("*") if widget.focusable), None)
        if target is not None:
            target.focus()

    def titled(self, title: str, subtitle: Text | None = None) -> None:
        """Set the border's title (and subtitle), literally; a repaint only if they change."""
        if self.border_title != Text(title).markup:
            self.border_title = Text(title)
        if subtitle is not None and self.border_subtitle != subtitle.markup:
            self.border_subtitle = subtitle


def fill_table(table: DataTable, rows: Iterable[tuple[str, Cells]], height: int = 1) -> None:
    """Show ``rows`` ((key, cells) pairs, each ``height`` lines) in ``table``.

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
        table.add_row(*cells, key=key, height=height)
    if selected in keys:
        table.move_cursor(row=keys.index(selected), animate=False)


def show_text(static: Static, text: RenderableType) -> None:
    """Put ``text`` in ``static`` unless it already shows exactly that.

    Every Static this is used on has a fixed height in driftdeck.tcss, so the
    update only repaints it: no layout pass of the whole screen, which would
    hold up a key for tens of milliseconds.
    """
    if static.content != text:
        static.update(text, layout=False)


def selected_key(table: DataTable) -> str | None:
    """The key of the row under the table's cursor (None when the table is empty)."""
    if not table.row_count:
        return None
    return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value


class RowTable(DataTable):
    """A table of rows: home and end go to the first and last row (never sideways)."""

    BINDINGS = [
        Binding("home", "scroll_top", "First row", show=False),
        Binding("end", "scroll_bottom", "Last row", show=False),
    ]


def row_table(id: str, columns: Sequence[str], table_class: type[DataTable] = RowTable) -> DataTable:
    table = table_class(id=id, cursor_type="row", zebra_stripes=True)
    set_columns(table, columns)
    return table


def set_columns(table: DataTable, columns: Sequence[str]) -> None:
    """Give ``table`` exactly ``columns`` (emptying it if they change)."""
    if [key.value for key in table.columns] == list(columns):
        return
    table.clear(columns=True)
    for column in columns:
        table.add_column(column, key=column)


def spare_width(table: DataTable, widths: Iterable[int]) -> int:
    """Cells left in ``table`` for one more column, after columns of content ``widths`` and every
    column's padding (the vertical scrollbar's cell is kept free)."""
    widths = list(widths)
    padding = 2 * table.cell_padding * (len(widths) + 1)
    return table.size.width - 1 - sum(widths) - padding


class ModelsPanel(Panel):
    """One row per model; the highlighted row is the selected model.

    Wide, a model is one line (name, policy, serving, state, top flag, verdict).
    Narrow, it is two lines (name over policy; top flag over verdict), so
    nothing is cut. The top flag gives way word by word to the space there is;
    the selected model's full flag and verdict are written under the table.
    """

    COLUMNS = ("model", "policy", "serving", "state", "top flag", "verdict")
    STACKED_COLUMNS = ("model", "serving", "state", "top flag / verdict")
    STACK_BELOW = 110  # table width in cells under which a model takes two lines
    VERDICT_WIDTH = 21  # the longest short verdict, "needs dynamic (+12.3)"

    def __init__(self) -> None:
        self.table = row_table("models-table", self.COLUMNS)
        super().__init__("1 Models", self.table, Static(id="verdict"), id="models")
        self._shown: tuple[Dashboard, str | None] | None = None

    def show(self, dashboard: Dashboard, selected: str | None) -> None:
        self._shown = (dashboard, selected)
        names = max((len(m["name"]) for m in dashboard.models), default=5)
        states = max((len(m["state"]) for m in dashboard.models), default=5)
        if self.table.size.width and self.table.size.width < self.STACK_BELOW:
            set_columns(self.table, self.STACKED_COLUMNS)
            width = spare_width(self.table, (names, 7, states))
            rows = ((m["name"], model_cells_stacked(m, width)) for m in dashboard.models)
            fill_table(self.table, rows, height=2)
        else:
            set_columns(self.table, self.COLUMNS)
            width = spare_width(self.table, (names, 9, 7, states, self.VERDICT_WIDTH))
            fill_table(self.table, ((m["name"], model_cells(m, max(12, width))) for m in dashboard.models))
        summary = dashboard.summary(selected)
        verdict = self.query_one("#verdict", Static)
        detail = clip_lines(model_detail(summary), verdict.size.width, VERDICT_LINES) if summary else Text()
        show_text(verdict, detail)

    def on_resize(self) -> None:
        if self._shown is not None and self.is_mounted and self.children:  # not while closing
            self.show(*self._shown)


class FeaturesPanel(Panel):
    """Drift of each feature of the selected model, worst first, and one feature's distribution.

    The distribution follows the news: it shows the most drifted feature (the
    top row) until the person moves the cursor; from then on the feature under
    the cursor, until another model is selected.
    """

    COLUMNS = ("feature", "type", "PSI", "KS", "JS", "missing Δ", "status", "PSI trend")
    FIXED_WIDTHS = (4, 5, 5, 5, 9, 7)  # type, PSI, KS, JS, missing Δ, status

    def __init__(self, drift: DriftConfig) -> None:
        super().__init__("2 Feature distributions", row_table("features-table", self.COLUMNS),
                         Drawing(id="distribution"), id="features")
        self.drift = drift
        self.following = True
        self._dashboard: Dashboard | None = None

    @property
    def table(self) -> DataTable:
        return self.query_one("#features-table", DataTable)

    def show(self, dashboard: Dashboard) -> None:
        if self._dashboard is None or self._dashboard.model != dashboard.model:
            self.following = True
        self._dashboard = dashboard
        view = dashboard.view
        self.titled(f"2 Feature distributions — {dashboard.model}", multivariate_text(view.latest))
        table = self.table
        names = max((len(row["feature"]) for row in view.features), default=7)
        trend = max(4, min(MAX_TREND_WIDTH, spare_width(table, (names, *self.FIXED_WIDTHS))))
        cells = partial(feature_cells, trend_width=trend, threshold=self.drift.psi_threshold,
                        watch=self.drift.psi_watch)
        fill_table(table, ((row["feature"], cells(row)) for row in view.features))
        if self.following and table.row_count:
            table.move_cursor(row=0, animate=False)
        self.show_feature(selected_key(table))

    def show_feature(self, feature: str | None) -> None:
        """Draw the reference-vs-current distribution of ``feature``."""
        if self._dashboard is None:
            return
        drawing = self.query_one("#distribution", Drawing)
        view = self._dashboard.view
        row = next((r for r in view.features if r["feature"] == feature), None)
        rows = view.distributions.get(feature, []) if row is not None else []
        drawing.styles.height = 1 + max(1, len(rows))  # the title line, then a line per bin
        if row is None:
            drawing.show(distribution_chart, None, [], None)
        else:
            drawing.show(distribution_chart, feature, rows, row["kind"])

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        key = selected_key(event.data_table)
        if self.following and event.data_table.cursor_row != 0:
            self.following = False  # the person moved the cursor: stay on their feature
        self.show_feature(key)

    def on_resize(self) -> None:
        if self._dashboard is not None and self.is_mounted and self.children:  # not while closing
            self.show(self._dashboard)


class HealthPanel(Panel):
    """The primary metric per batch (served, shadow, baseline) and the latest batch's numbers."""

    def __init__(self) -> None:
        super().__init__("3 Prediction health", Drawing(id="health-chart", focusable=True),
                         Static(id="latest-metrics"), id="health")

    def show(self, dashboard: Dashboard) -> None:
        summary, view = dashboard.summary(dashboard.model) or {}, dashboard.view
        metric = next((row["metric"] for row in reversed(view.history) if row["metric"]), None)
        self.titled(f"3 Prediction health — {dashboard.model}" + (f" ({metric})" if metric else ""))
        shadow = "shadow: static (first snapshot)" if summary.get("mode") == "dynamic" else "shadow: dynamic retrain"
        self.query_one("#health-chart", Drawing).show(health_chart, view.history, shadow)
        show_text(self.query_one("#latest-metrics", Static), latest_metrics_text(view.latest))


class SnapshotTable(RowTable):
    """The snapshot list; enter serves the highlighted snapshot (after a confirmation naming it).

    Its key is written under the panel rather than in the footer, which has
    no room left for it at 80 columns.
    """

    BINDINGS = [
        Binding("enter", "select_cursor", "Promote", id="promote", show=False,
                tooltip="Serve the highlighted snapshot (asks first, naming the version)"),
    ]


class SnapshotsPanel(Panel):
    """The selected model's snapshots, newest first, the highlighted one's note, and where the serving pointer has been.

    The version column stays in place when the table is wider than the panel;
    the note column gets the width that is left, in whole words.
    """

    COLUMNS = ("version", "status", "holdout", "trained on", "created", "note")

    def __init__(self) -> None:
        table = row_table("snapshots-table", self.COLUMNS, SnapshotTable)
        table.fixed_columns = 1
        super().__init__("4 Snapshots", table, Static(id="snapshot-note"), Drawing(id="serving-history"), id="snapshots")
        self.rows: dict[str, dict[str, Any]] = {}
        self.model: str | None = None
        self._dashboard: Dashboard | None = None

    @property
    def table(self) -> DataTable:
        return self.query_one("#snapshots-table", DataTable)

    def show(self, dashboard: Dashboard) -> None:
        self._dashboard = dashboard
        self.titled(f"4 Snapshots — {dashboard.model}", PROMOTE_HINT)
        self.rows = {str(row["version"]): row for row in dashboard.view.snapshots}
        table = self.table
        if dashboard.model != self.model:  # another model's versions: start from its newest
            self.model = dashboard.model
            table.clear()
        note_width = self._note_width()
        fill_table(table, ((key, snapshot_cells(row, note_width)) for key, row in self.rows.items()))
        self.show_note(selected_key(table))
        self.query_one("#serving-history", Drawing).show(serving_history_text, dashboard.view.serving_history)

    def _note_width(self) -> int:
        """What the note column has left once the other columns show their widest cell."""
        cells = [snapshot_cells(row, 0)[:-1] for row in self.rows.values()]
        widths = [max([len(label)] + [row[index].cell_len for row in cells]) for index, label in enumerate(self.COLUMNS[:-1])]
        return max(12, spare_width(self.table, widths))

    def highlighted(self) -> dict[str, Any] | None:
        """The snapshot row under the cursor (None when the table is empty)."""
        key = selected_key(self.table)
        return self.rows.get(key) if key is not None else None

    def show_note(self, key: str | None) -> None:
        row = self.rows.get(key) if key is not None else None
        moves = self._dashboard.view.serving_history if self._dashboard else []
        latest_move = moves[-1] if moves else None
        show_text(self.query_one("#snapshot-note", Static), snapshot_note(row, latest_move) if row else Text())

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.show_note(selected_key(event.data_table))

    def on_resize(self) -> None:
        if self._dashboard is not None and self.is_mounted and self.children:  # not while closing
            self.show(self._dashboard)


class EventLogPanel(Panel):
    """Every event, newest last; errors and warnings in their colours.

    The panel keeps its entries (up to ``EVENT_LOG_LINES``) and lays them out
    again when its width changes (a maximized panel, a resized terminal).
    New entries are written after the next refresh, once the layout they
    arrived with has settled: the first load's hundreds of entries change the
    panels' sizes, and writing them before would mean writing them twice.
    """

    def __init__(self, redraws: OnePerFrame) -> None:
        log = RichLog(id="event-log", max_lines=EVENT_LOG_LINES, min_width=1, wrap=False, markup=False,
                      highlight=False)
        super().__init__("5 Event log", log, id="events")
        self.entries: deque[StoredEvent] = deque(maxlen=EVENT_LOG_LINES)
        self._unwritten: list[StoredEvent] = []
        self._laid_out_width = 0
        self._redraws = redraws

    def append(self, events: Iterable[StoredEvent]) -> None:
        events = list(events)
        self.entries.extend(events)
        self._unwritten.extend(events)
        self._redraws.ask("events", self._sync)

    def note(self, epoch: float, message: str) -> None:
        """An entry that is not an audit event (a failed command, a worker error)."""
        self.append([StoredEvent(0, epoch, "error", None, None, message, {})])

    def _sync(self) -> None:
        """Show every entry at the log's current width: the new ones, or all again after a width change."""
        if not self.is_attached:
            return
        log = self.query_one(RichLog)
        width = log.scrollable_content_region.width
        if not width:
            return  # not laid out yet: on_resize writes every entry
        if width != self._laid_out_width:
            self._laid_out_width = width
            log.clear()
            events = list(self.entries)
        else:
            events = self._unwritten
        self._unwritten = []
        if events:  # one write: the log's own work per write is most of the cost of a short entry
            log.write(Text("\n").join(event_text(event, width) for event in events))

    def on_resize(self) -> None:
        self._sync()
