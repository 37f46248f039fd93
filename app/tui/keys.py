"""The dashboard's keys: what each does, its footer label and the help's words for it.

Whether a key can act now is the app's ``check_action``; this is only the list.
"""

from __future__ import annotations

from textual.binding import Binding

PANELS = ("models", "features", "health", "snapshots", "events")  # keys 1 to 5, in this order
MODEL_KEYS = Binding.Group("Model", compact=True)

DASHBOARD_KEYS: list[Binding] = [
    Binding("r", "retrain", "Retrain", id="retrain",
            tooltip="Train a candidate for the selected model now (static ones too); it still faces the gate"),
    Binding("b", "rollback", "Rollback", id="rollback",
            tooltip="Serve the selected model's previous good snapshot"),
    Binding("v", "validate", "Validate", id="validate",
            tooltip="Retrain the selected model's serving snapshot with today's code and config, and compare"),
    Binding("p", "pause", "Pause", id="pause", tooltip="Stop taking new files; they wait until you resume"),
    Binding("p", "resume", "Resume", id="resume", tooltip="Take the files that arrived while paused"),
    Binding("left_square_bracket", "previous_model", "Prev model", id="previous-model",
            tooltip="Select the model above", group=MODEL_KEYS),
    Binding("right_square_bracket", "next_model", "Next model", id="next-model",
            tooltip="Select the model below", group=MODEL_KEYS),
    Binding("1", "show_panel('models')", "Panel", id="panel", key_display="1-5",
            tooltip="Go to a panel: 1 models, 2 features, 3 health, 4 snapshots, 5 events"),
    *(Binding(str(number), f"show_panel('{name}')", f"{name.capitalize()} panel", show=False)
      for number, name in enumerate(PANELS, start=1) if number > 1),
    Binding("z", "toggle_maximize", "Max", id="maximize",
            tooltip="Fill the screen with the focused panel; z again restores"),
    Binding("question_mark", "help", "Help", id="help", tooltip="Keys and what each panel shows"),
    Binding("x", "batches", "Batches", id="batches", show=False,
            tooltip="List the batches: exclude one after the fact (asks first), or include it again"),
    Binding("R", "restart_engine", "Restart engine", id="restart-engine",
            tooltip="Start the folder's engine again after it stopped; the ledger says what is left to do"),
    Binding("q", "quit", "Quit", id="quit", tooltip="Leave (an engine this window started stops too)"),
]
