"""Redraws spread over frames, one piece a frame, so that a key never waits for a whole dashboard's repaint.

A frame repaints every widget changed since the last one, in one go, and a
key that arrives meanwhile waits for it to finish. The selected model's three
panels changed at once made a frame of 30-100 ms (re-rendering two tables and
two charts, and a layout pass); drawn one a frame, each frame holds one panel,
and a key lands between two of them.
"""

from __future__ import annotations

from typing import Callable

from textual import constants
from textual.message_pump import MessagePump

FRAME_SECONDS = 1 / constants.MAX_FPS  # Textual paints at most this often


class OnePerFrame:
    """Pieces of drawing done a frame's time apart, in the order they were first asked for.

    Timers of the app pace them, not the screen's after-refresh callbacks:
    those belong to the screen on top, and a dialog closed before its next
    refresh (the command palette, say) would take them with it.

    Asking again for a piece still waiting keeps its place and does the
    latest drawing only; :attr:`pending` says whether anything is still to
    be drawn, and :meth:`when_drawn` waits for that to be nothing.
    """

    def __init__(self, owner: MessagePump) -> None:
        self._owner = owner
        self._waiting: dict[str, Callable[[], None]] = {}
        self._scheduled = False
        self._when_drawn: list[Callable[[], None]] = []

    @property
    def pending(self) -> bool:
        return bool(self._waiting)

    def ask(self, name: str, draw: Callable[[], None]) -> None:
        """Do ``draw`` a frame's time from now, or a frame's time after the pieces asked for before it."""
        self._waiting[name] = draw
        if not self._scheduled:
            self._scheduled = True
            self._owner.set_timer(FRAME_SECONDS, self._draw_next)

    def when_drawn(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once every piece asked for so far, and any asked for meanwhile, is drawn."""
        if self._waiting:
            self._when_drawn.append(callback)
        else:
            callback()

    def _draw_next(self) -> None:
        self._scheduled = False
        if not self._owner.is_attached:
            self._waiting.clear()
            return
        if self._waiting:
            name = next(iter(self._waiting))
            self._waiting.pop(name)()
        if self._waiting:
            self._scheduled = True
            self._owner.set_timer(FRAME_SECONDS, self._draw_next)
        else:
            callbacks, self._when_drawn = self._when_drawn, []
            for callback in callbacks:
                callback()
