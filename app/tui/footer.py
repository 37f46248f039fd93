"""The footer of keys, redrawn in place when only which keys can act changes.

Textual's footer rebuilds every key widget whenever the bindings may have
changed, which lays the whole screen out again: 50-100 ms of the UI thread on
a busy machine, while a key waits. The dashboard refreshes its bindings after
every load and whenever the selected model changes what can act (``b`` dims
for a model with nothing to roll back to), so here the keys stay and only
their dimming changes, unless the keys shown themselves change.
"""

from __future__ import annotations

from textual.screen import Screen
from textual.widgets import Footer
from textual.widgets._footer import FooterKey


class SteadyFooter(Footer):
    """A :class:`~textual.widgets.Footer` that rebuilds its keys only when other keys are shown."""

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self._composed: tuple | None = None  # the keys shown, as last composed

    def _shown(self, screen: Screen) -> tuple[tuple, dict[tuple[str, str], bool]]:
        """The keys the footer shows (what a rebuild depends on), and whether each can act now."""
        shown = [(binding, enabled) for _, binding, enabled, _ in screen.active_bindings.values() if binding.show]
        layout = (self.show_command_palette, self.compact,
                  tuple((binding.key, binding.action, binding.description) for binding, _ in shown))
        return layout, {(binding.key, binding.action): enabled for binding, enabled in shown}

    def compose(self):
        if self.is_attached:
            self._composed = self._shown(self.screen)[0]
        return super().compose()

    def bindings_changed(self, screen: Screen) -> None:
        layout, enabled = self._shown(screen)
        if layout != self._composed or not self._bindings_ready or not self.is_attached:
            super().bindings_changed(screen)
            return
        for key in self.query(FooterKey):
            can_act = enabled.get((key.key, key.action))
            if can_act is not None and can_act == key.has_class("-disabled"):
                key.set_class(not can_act, "-disabled")
                key._disabled = not can_act  # what a click on the key checks (it rings the bell)
