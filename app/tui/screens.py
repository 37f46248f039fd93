"""The help screen (``?``) and the confirmation asked before serving a rejected snapshot."""

from __future__ import annotations

from typing import Iterable

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Static

PANELS_HELP = (
    ("1 Models", "one row per model: STATIC (trained once, only flagged) or DYNAMIC (retrained on every "
               "labeled batch, behind a gate); the serving version, the state, the most important flag and "
               "the verdict: does this data need dynamic training? The highlighted model drives the other panels. "
               "On a narrow screen a model takes two lines and one other panel shows below: 2 to 5 choose it."),
    ("2 Feature distributions", "each feature's drift in the latest batch against the serving model's training "
                              "data, worst first; drifted: a change beyond what sampling gives at this batch size, whose PSI "
                              "shows a change of at least psi_threshold (docs/drift.md). The trend shows PSI over "
                              "recent batches. Below: the highlighted feature, reference against current, "
                              "in the reference's deciles (the bins PSI compares). Under the panel: the "
                              "domain classifier's AUC (0.5: reference and batch look alike) and what moved."),
    ("3 Prediction health", "the primary metric per batch for the served model, the shadow of the other policy "
                          "and the naive baseline; ▲ promoted, ▼ rolled back, × rejected, · no labels."),
    ("4 Snapshots", "every trained version, newest first: ▶ serves; rejected ones say why. Enter serves "
                  "the highlighted one. Below: where the serving pointer has been."),
    ("5 Event log", "everything that happened, newest last; quarantined files and failures in red."),
)


def keys_table(keys: Iterable[tuple[str, Binding]]) -> Table:
    """One row per (key as shown, binding): key, what it does, and the longer tooltip."""
    table = Table(box=None, show_header=False, padding=(0, 2, 0, 0))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(no_wrap=True)
    table.add_column(style="dim")
    for key, binding in keys:
        table.add_row(key, binding.description, binding.tooltip)
    return table


class HelpScreen(ModalScreen[None]):
    """What every key does and what every panel shows."""

    BINDINGS = [
        Binding("escape,question_mark,q", "dismiss", "Close", id="close-help"),
    ]

    def __init__(self, bindings: Iterable[Binding]) -> None:
        super().__init__()
        self.bindings = list(bindings)

    def compose(self) -> ComposeResult:
        panels = Table(box=None, show_header=False, padding=(0, 2, 0, 0))
        panels.add_column(style="bold", no_wrap=True)
        panels.add_column()
        for name, text in PANELS_HELP:
            panels.add_row(name, text)
        with VerticalScroll(id="help-body"):
            yield Static(Text("driftdeck keys", style="bold"))
            yield Static(keys_table((self.app.get_key_display(binding), binding) for binding in self.bindings))
            yield Static(Text("tab / shift+tab move between panels; arrows, home, end and the mouse move within "
                              "one. Greyed keys cannot act now (nothing to roll back to, a training already runs). "
                              "ctrl+p opens the command palette: the same actions, a screenshot and the theme.",
                              style="dim"))
            yield Static(Text("\nPanels", style="bold"))
            yield Static(panels)
            yield Static(Text("\nescape or ? closes this screen", style="dim"))


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question; dismisses with True only for an explicit yes."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes", id="confirm-yes"),
        Binding("n,escape", "answer(False)", "No", id="confirm-no"),
    ]

    def __init__(self, question: Text) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-body"):
            yield Static(self.question)
            with Horizontal(id="confirm-buttons"):
                yield Button("Serve it (y)", variant="warning", id="yes")
                yield Button("Cancel (n)", id="no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)
