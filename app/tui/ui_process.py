"""The dashboard's process, set up to answer keys promptly.

The dashboard's UI thread shares its process with the thread that reads the
store, and with everything the process imported; what this module changes is
process-wide, so it is done once, by whoever runs the app (``run_tui``, the
latency bench), after the imports and before the app runs.
"""

from __future__ import annotations

import gc
import sys

UI_SWITCH_INTERVAL_SECONDS = 0.001
FULL_COLLECTION_AFTER = 100  # younger collections (10 by default): a full one every few seconds became every minute or so
_prepared = False


def prepare_ui_process() -> None:
    """Make this process answer keys promptly; call once its modules are imported, before the app runs.

    - Its GIL switch interval is shortened (5 ms by default): the dashboard's
      loads run on a worker thread here, and switching more often lets the UI
      thread in soon enough to answer a key while a load runs, at a small cost
      in the load's own time.
    - Every object alive now (the imported libraries': pandas, scikit-learn and
      Textual leave nearly 200,000) is frozen out of the garbage collector's
      sight. Otherwise each full collection walks them all, 200-300 ms of the
      UI thread at a moment no one chooses; frozen, it walks only what the app
      made since.
    - Full collections come ten times less often. Even over what is not
      frozen, each took 20-50 ms, and with the loads' garbage coming every
      second they came every few seconds; the young generations, collected as
      often as ever, still free the loads' cycles.
    """
    global _prepared
    sys.setswitchinterval(UI_SWITCH_INTERVAL_SECONDS)
    gc.freeze()
    youngest, younger, _ = gc.get_threshold()
    gc.set_threshold(youngest, younger, FULL_COLLECTION_AFTER)
    _prepared = True


def freeze_long_lived() -> None:
    """In a prepared process, freeze what is alive now (the app's widgets, once drawn) too.

    Elsewhere (tests running many apps in one process) nothing is frozen: what
    is frozen is never collected, and every app there is short-lived."""
    if _prepared:
        gc.freeze()
