"""The live terminal monitor: one dashboard over a running engine (in this process or attached to another).

How data moves:

- The monitor's callback (on the monitor's thread) only posts small
  messages that coalesce (:mod:`app.tui.messages`).
- A tick (``set_interval``) notices stale panels and starts one worker that
  reads the store (:func:`app.tui.dashboard.load_dashboard`) and posts the
  result; the panels redraw when it arrives. The UI thread never reads the
  store and never waits for the monitor.
- Commands go to the monitor as :class:`~app.commands.Command` objects;
  workers wait for their results (the monitor carries them out between
  files). One handler turns any worker failure into a notification and a
  log line.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable

from textual import work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Container, Horizontal
from textual.reactive import var
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static
from textual.worker import Worker, WorkerState, get_current_worker

from app.commands import BATCH_KINDS, Command, answer_within, asker
from app.events import ERROR_KINDS, Event, EventKind
from app.engine_link import Engine
from app.lineage import batch_rows
from app.store import StoredEvent
from app.tui.batches import BatchesScreen, ExcludeScreen
from app.tui.dashboard import Dashboard, load_dashboard
from app.tui.footer import SteadyFooter
from app.tui.formatting import display_path
from app.tui.frames import OnePerFrame
from app.tui.keys import DASHBOARD_KEYS, PANELS
from app.tui.header import HeaderState, header_text
from app.tui.messages import BatchesLoaded, CommandDone, DashboardLoaded, MonitorChanged, TrainingChanged
from app.tui.panels import (
    EventLogPanel,
    FeaturesPanel,
    HealthPanel,
    ModelsPanel,
    Panel,
    SnapshotsPanel,
    SnapshotTable,
    selected_key,
    show_text,
)
from app.tui.screens import ConfirmScreen, HelpScreen
from app.tui.snapshot_text import promote_question
from app.tui.ui_process import freeze_long_lived, prepare_ui_process

TICK_SECONDS = 0.25
LOAD_INTERVAL_SECONDS = 1.0
WIDE_FROM_COLUMNS = 120
PALETTE_HINT_FROM_COLUMNS = 90
SCREENSHOTS_FOLDER = "screenshots"  # under the state folder
TEXTUAL_COMMANDS_KEPT = ("Theme", "Quit")
PALETTE_TITLES = {"promote": "Promote", "toggle_maximize": "Maximize"}  # where the footer's label is terse
ENGINE_ACTIONS = frozenset({"retrain", "rollback", "validate", "pause", "resume", "promote", "batches"})
RETRAIN_SETTLING_KINDS = frozenset({EventKind.PROMOTED, EventKind.REJECTED, EventKind.TRAINING_FAILED})


class DriftDeckApp(App[int]):
    """The dashboard. ``clock`` gives seconds since the epoch (the header's "last file … ago")."""

    CSS_PATH = Path(__file__).with_name("driftdeck.tcss")  # absolute, so subclasses elsewhere find it
    TITLE = "driftdeck"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (WIDE_FROM_COLUMNS, "-wide")]
    ALLOW_IN_MAXIMIZED_VIEW = "#header, Footer"
    BINDINGS = DASHBOARD_KEYS

    # The app's state, as vars: a reactive on the App repaints the whole screen when it changes, a frame
    # of 30-50 ms that a key would wait for; what shows this state is redrawn by the watchers and the footer.
    selected_model: var[str | None] = var(None)
    can_rollback: var[bool] = var(False, bindings=True)
    training_active: var[bool] = var(False, bindings=True)
    retrain_queued: var[str | None] = var(None, bindings=True)
    paused: var[bool] = var(False, bindings=True)
    engine_stopped: var[bool] = var(False, bindings=True)

    def __init__(self, monitor: Engine, on_ready: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.time, tick_seconds: float = TICK_SECONDS,
                 load_interval: float = LOAD_INTERVAL_SECONDS) -> None:
        super().__init__()
        self.monitor = monitor
        self.on_ready = on_ready
        self.clock = clock
        self.tick_seconds = tick_seconds
        self.load_interval = load_interval
        self.dashboard: Dashboard | None = None
        self.training: dict[str, Any] | None = None  # the monitor's training dict, as last seen
        self.rollback_targets: dict[str, int | None] = {}  # model -> the version b would serve
        self.loads_started = 0
        self.load_applied = 0  # the number of the newest load on screen, all its panels drawn
        self._load_received = 0
        self._stale = True
        self._last_event_id = 0
        self._load_worker: Worker | None = None
        self._load_started = 0.0  # time.monotonic() of the latest load
        self._model_panels_shown: tuple | None = None  # (model, its view, its summary) on screen
        self.redraws = OnePerFrame(self)

    # --- layout ------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        # The dashboard's widgets are kept as attributes because App.query_one searches the screen
        # on top, which is the help or a confirmation while one is open.
        drift = self.monitor.config.drift
        self.header_bar = Static(id="header")
        self.models_panel = ModelsPanel()
        self.features_panel = FeaturesPanel(drift)
        self.health_panel = HealthPanel()
        self.snapshots_panel = SnapshotsPanel()
        self.events_panel = EventLogPanel(self.redraws)
        yield self.header_bar
        with Container(id="dashboard"):
            yield self.models_panel
            with Horizontal(classes="row", id="middle"):
                yield self.features_panel
                yield self.health_panel
            with Horizontal(classes="row", id="bottom"):
                yield self.snapshots_panel
                yield self.events_panel
        yield SteadyFooter(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        models = [model.name for model in self.monitor.config.models]
        self.selected_model = models[0] if models else None
        self.paused = self.monitor.paused
        self.monitor.subscribe(self._relay)
        self.monitor.start()
        self.set_interval(self.tick_seconds, self._tick)
        self._start_load()
        self.show_panel("features")
        self.models_panel.table.focus()
        self._show_header()
        if self.on_ready is not None:
            self.on_ready()

    def on_resize(self) -> None:
        """The footer names the command palette's key where every other key still fits beside it."""
        self.query_one(Footer).show_command_palette = self.size.width >= PALETTE_HINT_FROM_COLUMNS

    # --- news from the monitor (its thread) and the tick (this thread) ---------------

    def _relay(self, event: Event) -> None:
        """Runs on the monitor's thread: post a small message and touch nothing else."""
        messages = []
        if event.kind in (EventKind.TRAINING_STARTED, EventKind.TRAINING_PROGRESS):
            messages.append(TrainingChanged(self.monitor.training))
        if event.kind != EventKind.TRAINING_PROGRESS:
            messages.append(MonitorChanged(str(event.kind)))
        try:
            for message in messages:
                self.post_message(message)
        except RuntimeError:  # the app's event loop has closed; the monitor is shutting down too
            pass

    def on_monitor_changed(self, message: MonitorChanged) -> None:
        self._stale = True

    def on_training_changed(self, message: TrainingChanged) -> None:
        self._follow_training(message.training)
        self._show_header()

    def _follow_training(self, training: dict[str, Any] | None) -> None:
        """Keep the monitor's training dict for the header; only its start and end change the keys."""
        self.training = training
        self.training_active = training is not None
        if training and training.get("model") == self.retrain_queued:
            self.retrain_queued = None

    def _tick(self) -> None:
        """Follow the monitor's training and pause state, redraw the header, reload if stale."""
        self._follow_training(self.monitor.training)
        self.paused = self.monitor.paused
        self.engine_stopped = not self.monitor.alive
        self._show_header()
        due = time.monotonic() - self._load_started >= self.load_interval
        if self._stale and due and not (self._load_worker and self._load_worker.is_running):
            self._start_load()

    def _start_load(self) -> int:
        """Start reading the store; returns the load's number."""
        self._stale = False
        self._load_started = time.monotonic()
        self.loads_started += 1
        self._load_worker = self.load(self.selected_model, self._last_event_id, self.loads_started)
        return self.loads_started

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def load(self, model: str | None, after_event_id: int, number: int) -> None:
        dashboard = load_dashboard(self.monitor, model, after_event_id)
        if not get_current_worker().is_cancelled:
            self.post_message(DashboardLoaded(dashboard, number))

    def on_dashboard_loaded(self, message: DashboardLoaded) -> None:
        if not self.models_panel.is_attached:  # a load that lands while the app closes has nowhere to show
            return
        if message.load < self._load_received:  # a cancelled worker's read that still got through: older data
            return
        self._load_received = message.load
        dashboard = message.dashboard.showing(self.selected_model)
        first = self.dashboard is None
        self.dashboard = dashboard
        self.rollback_targets = dashboard.rollback_targets
        self.can_rollback = self.rollback_targets.get(self.selected_model) is not None
        new_events = [event for event in dashboard.events if event.id > self._last_event_id]
        if new_events:
            self._last_event_id = new_events[-1].id
            self.events_panel.append(new_events)
            if not first:
                self._announce(new_events)
        self.models_panel.show(dashboard, self.selected_model)
        self._show_model_panels()
        self._show_header()
        self.refresh_bindings()  # what can act may have changed (a first model serves, say)
        self.redraws.when_drawn(partial(setattr, self, "load_applied", message.load))
        if first:  # the widgets and their styles live as long as the app: out of the collector's sight too
            self.call_after_refresh(freeze_long_lived)

    def _announce(self, events: Iterable[StoredEvent]) -> None:
        """Notify errors and automatic rollbacks; settle a queued retrain once it has an outcome."""
        for event in events:
            if event.kind in ERROR_KINDS:
                self.notify(event.message, title=event.kind.replace("_", " "), severity="error", markup=False)
            elif event.kind == EventKind.ROLLED_BACK and event.data.get("automatic"):
                self.notify(event.message, title="automatic rollback", severity="warning", markup=False)
            elif event.kind == EventKind.VALIDATED:
                self.notify(event.message, title="validated", markup=False)
            if self.retrain_queued and (event.kind == EventKind.ERROR or (
                    event.model == self.retrain_queued and event.kind in RETRAIN_SETTLING_KINDS)):
                self.retrain_queued = None

    def _show_header(self) -> None:
        counts = self.dashboard.counts if self.dashboard else {}
        state = HeaderState(
            folder=self.monitor.config.source or display_path(self.monitor.data_dir),  # a bucket by its URL
            paused=self.paused,
            ingested=counts.get("ingested", 0),
            quarantined=counts.get("quarantined", 0),
            last_seen_at=counts.get("last_seen_at"),
            now=self.clock(),
            training=self.training,
            retrain_queued=self.retrain_queued,
            folder_missing=self.monitor.folder_missing,
            waiting=self.monitor.waiting_files if self.paused else 0,
            engine_stopped=self.engine_stopped,
            label_lag=counts.get("label_lag"),
        )
        show_text(self.header_bar, header_text(state, self.header_bar.content_size.width))

    # --- selection -------------------------------------------------------------------

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "models-table":
            key = selected_key(event.data_table)  # where the cursor is now, not where this event saw it
            if key is not None and key != self.selected_model:
                self.selected_model = key

    def watch_selected_model(self, model: str | None) -> None:
        """Show the model's panels from the read in hand: it holds every model's, as fresh as the rest.
        The cursor is painted first, then the panels, one a frame: the key answers at once."""
        self.can_rollback = self.rollback_targets.get(model) is not None
        if self.is_mounted and self.dashboard is not None:
            self.models_panel.show(self.dashboard, model)
            self.dashboard = self.dashboard.showing(model)
            self._show_model_panels()

    def _show_model_panels(self) -> None:
        """Redraw the selected model's panels, one a frame, unless they already show exactly this."""
        dashboard = self.dashboard
        shown = (dashboard.model, dashboard.view, dashboard.summary(dashboard.model))
        if dashboard.model is None or shown == self._model_panels_shown:
            return
        self._model_panels_shown = shown
        for panel in (self.features_panel, self.health_panel, self.snapshots_panel):
            self.redraws.ask(panel.id, partial(self._redraw, panel))

    def _redraw(self, panel: FeaturesPanel | HealthPanel | SnapshotsPanel) -> None:
        if panel.is_attached and panel.children:  # not while the app closes, its widgets going
            panel.show(self.dashboard)

    def _move_model(self, step: int) -> None:
        table = self.models_panel.table
        if table.row_count:
            table.move_cursor(row=(table.cursor_row + step) % table.row_count, animate=False)

    def action_next_model(self) -> None:
        self._move_model(+1)

    def action_previous_model(self) -> None:
        self._move_model(-1)

    # --- panels ----------------------------------------------------------------------

    def panel(self, name: str) -> Panel:
        return {"models": self.models_panel, "features": self.features_panel, "health": self.health_panel,
                "snapshots": self.snapshots_panel, "events": self.events_panel}[name]

    def show_panel(self, name: str) -> None:
        """Make ``name`` the panel a narrow screen shows under the models (a wide one shows them all)."""
        if name == "models":
            return
        for other in PANELS[1:]:
            panel = self.panel(other)
            panel.set_class(other == name, "-current")
        for row in self.query(".row"):
            row.set_class(any(panel.has_class("-current") for panel in row.query(".panel")), "-current")

    def action_show_panel(self, name: str) -> None:
        """Bring panel ``name`` on screen and focus it (keys 1 to 5)."""
        if self.screen.maximized is not None:
            self.screen.minimize()
        self.show_panel(name)
        self.panel(name).focus_inside()

    # --- commands --------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Grey out what cannot act now: None shows the key dimmed, False hides it."""
        if action == "restart_engine":
            return self.engine_stopped
        if self.engine_stopped and action in ENGINE_ACTIONS:
            return None
        if action == "rollback":
            return True if self.can_rollback else None
        if action == "retrain":
            return None if self.training_active or self.retrain_queued or self.selected_model is None else True
        if action == "validate":
            return None if self.training_active or not self._selected_serves() else True
        if action == "pause":
            return not self.paused
        if action == "resume":
            return self.paused
        if action in ("next_model", "previous_model"):
            return True if len(self.monitor.config.models) > 1 else None
        if action == "promote":
            row = self.snapshots_panel.highlighted()
            return True if row is not None and not row["serving"] else None
        return True

    def _selected_serves(self) -> bool:
        summary = self.dashboard.summary(self.selected_model) if self.dashboard else None
        return summary is not None and summary["serving_version"] is not None

    def action_retrain(self) -> None:
        self.send(Command("retrain", self.selected_model))
        self.retrain_queued = self.selected_model
        self._show_header()

    def action_validate(self) -> None:
        self.send(Command("validate", self.selected_model))
        self.notify(f"validating {self.selected_model}: retraining its serving snapshot with today's code",
                    title="validate", markup=False)

    def action_rollback(self) -> None:
        model = self.selected_model
        self.send(Command("rollback", model, serving=self._serving_shown(model)), announce=True)

    def promote(self, model: str, version: int) -> None:
        self.send(Command("promote", model, version), announce=True)

    def _serving_shown(self, model: str) -> int | None:
        """The version the dashboard shows serving: the rollback goes back from it."""
        summary = self.dashboard.summary(model) if self.dashboard else None
        return summary.get("serving_version") if summary else None

    @work(thread=True, group="command", exit_on_error=False)
    def send(self, command: Command, announce: bool = False) -> None:
        """Hand ``command`` to the monitor and wait for its result; a failure ends in on_worker_state_changed."""
        config = self.monitor.config
        result = self.monitor.submit(command).outcome(answer_within(len(config.models), config.watch.train_timeout))
        if announce:
            before, after = result.data.get("from"), result.data["to"]
            self.post_message(CommandDone(f"{command.model}: {f'v{before}' if before else 'nothing'} → v{after}"))
        elif command.kind in BATCH_KINDS:
            self.post_message(CommandDone(result.message, title=command.kind))

    def on_command_done(self, message: CommandDone) -> None:
        self.notify(message.text, title=message.title, markup=False)
        self._start_load()

    def action_batches(self) -> None:
        self.load_batches()

    @work(thread=True, exclusive=True, group="batches", exit_on_error=False)
    def load_batches(self) -> None:
        self.post_message(BatchesLoaded(batch_rows(self.monitor.store)))

    def on_batches_loaded(self, message: BatchesLoaded) -> None:
        if not message.rows:
            self.notify("no batch has reached the models yet", severity="warning", markup=False)
            return
        self.push_screen(BatchesScreen(message.rows), self._confirm_exclusion)

    def _confirm_exclusion(self, row: dict[str, Any] | None) -> None:
        """Ask before excluding (or including) the batch picked; only a yes sends the command."""
        if row is None:
            return
        kind = "include" if row["status"] == "excluded" else "exclude"

        def answered(reason: str | None) -> None:
            if reason is not None:
                self.send(Command(kind, file=row["file"], reason=reason, by=asker()))

        self.push_screen(ExcludeScreen(row), answered)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "snapshots-table":
            self.action_promote()

    def action_promote(self) -> None:
        """Serve the highlighted snapshot once the person confirms; the question names the version."""
        row = self.snapshots_panel.highlighted()
        model = self.snapshots_panel.model
        if row is None or model is None:
            return
        version = row["version"]
        if row["serving"]:
            self.notify(f"{model} v{version} already serves", severity="warning", markup=False)
            return
        serving = next((other["version"] for other in self.snapshots_panel.rows.values() if other["serving"]), None)
        self.push_screen(ConfirmScreen(promote_question(model, row, serving)),
                         lambda yes: self.promote(model, version) if yes else None)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """Every failed worker ends here: a notification and a line in the log, never a crash."""
        if event.state != WorkerState.ERROR:
            return
        error = event.worker.error
        text = str(error) or type(error).__name__
        self.notify(text, title="could not " + ("load the store" if event.worker.group == "load" else "do that"),
                    severity="error", markup=False)
        self.events_panel.note(self.clock(), text)

    def action_pause(self) -> None:
        self.send(Command("pause"))  # answered at once: it only closes the intake
        self.paused = True
        self._show_header()

    def action_resume(self) -> None:
        self.send(Command("resume"))
        self.paused = False
        self._show_header()

    def action_restart_engine(self) -> None:
        self.notify("starting the engine again…", title="engine", markup=False)
        self.restart_engine()

    @work(thread=True, exclusive=True, group="command", exit_on_error=False)
    def restart_engine(self) -> None:
        self.monitor.restart()
        self.post_message(CommandDone("the engine runs again"))

    def action_toggle_maximize(self) -> None:
        if self.screen.maximized is not None:
            self.screen.minimize()
        elif self.screen.focused is not None:
            self.screen.maximize(self.screen.focused)

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self._bindings_for_help()))

    def action_quit(self) -> None:
        self.exit(0)

    def _bindings_for_help(self) -> list[Binding]:
        """The footer's keys and ``x`` (no room for it in the footer), then the snapshot table's enter
        (keys 2 to 5 are told under "1-5")."""
        return [binding for binding in self.BINDINGS if isinstance(binding, Binding)
                and (binding.show or binding.id == "batches")] + list(SnapshotTable.BINDINGS)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """The command palette: every key's action that can act now, once each, and a screenshot.

        Textual's own entries that a key here already covers (keys, maximize)
        and its screenshot (which saves to a downloads folder) are left out.
        """
        yield from (command for command in super().get_system_commands(screen)
                    if command.title in TEXTUAL_COMMANDS_KEPT)
        for binding in self._bindings_for_help():
            action = "promote" if binding.action == "select_cursor" else binding.action
            title = PALETTE_TITLES.get(action, binding.description)
            if action not in ("quit", "show_panel('models')") and self.check_action(action, ()):
                yield SystemCommand(title, binding.tooltip, lambda action=action: self.run_action(action))
        yield SystemCommand("Screenshot", "Save an SVG picture of the screen under the state folder's screenshots/",
                            self.action_screenshot)

    def action_screenshot(self) -> None:
        folder = self.monitor.paths.root / SCREENSHOTS_FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        name = time.strftime("driftdeck-%Y%m%d-%H%M%S.svg", time.localtime(self.clock()))
        path = self.save_screenshot(name, str(folder))
        self.notify(f"screenshot saved to {display_path(Path(path))}", title="screenshot", markup=False)


def run_tui(monitor: Engine, on_ready: Callable[[], None] | None = None,
            clock: Callable[[], float] = time.time) -> int:
    """Show the dashboard until the person quits; the engine starts after mount and closes on exit.

    The engine is reached (or started) before the screen opens, so an engine
    that cannot start is an ordinary error message, not a broken screen.
    """
    prepare_ui_process()
    monitor.acquire()
    app = DriftDeckApp(monitor, on_ready=on_ready, clock=clock)
    try:
        app.run()
    finally:
        monitor.close()
    return 0
