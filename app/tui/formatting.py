"""Small pieces of text every part of the dashboard uses: numbers, times, bars, sparklines, fitted words.

Plain functions from data to ``rich.text.Text`` or ``str``; nothing here knows
about Textual. Colours are ANSI names, which Textual maps through the theme,
so they read on light and dark backgrounds.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Sequence

from rich.console import Console
from rich.text import Text

BLOCKS = " ▁▂▃▄▅▆▇█"
EIGHTHS = " ▏▎▍▌▋▊▉█"
DRIFT_STYLES = {"drifted": "bold red", "watch": "yellow", "stable": "green"}
WRAP_CONSOLE = Console(width=200, color_system=None)  # only measures text for wrapping
NO_VALUE = "—"


def number(value: float | None, digits: int = 3) -> str:
    """``value`` with ``digits`` decimals, or an em dash for None/NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NO_VALUE
    return f"{value:.{digits}f}"


def time_ago(seconds: float | None) -> str:
    """A duration in seconds as people say it: "12 s ago", "3 min ago", "5 h ago", "2 d ago"."""
    if seconds is None:
        return "no files yet"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s ago"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min ago"
    if seconds < 86400:
        return f"{seconds // 3600:.0f} h ago"
    return f"{seconds // 86400:.0f} d ago"


def clock_time(epoch: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch))


def date_time(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(epoch))


def sparkline(values: Sequence[float | None], width: int, threshold: float, watch: float,
              statuses: Sequence[str | None] | None = None) -> Text:
    """The last ``width`` PSI values as block characters, coloured by the drift status each reached.

    The scale tops out at 1.5 x ``threshold`` (or the largest value if higher),
    so a bar's height keeps its meaning from row to row. None shows as a gap.
    ``statuses`` (one per value) are the recorded decisions, which account for
    the batch size; without them the colour comes from ``threshold`` and ``watch``.
    """
    shown = list(values)[-width:] if width > 0 else []
    recorded = list(statuses)[-width:] if statuses is not None and width > 0 else [None] * len(shown)
    ceiling = max([threshold * 1.5] + [v for v in shown if v is not None])
    line = Text()
    for value, status in zip(shown, recorded):
        if value is None:
            line.append(" ")
            continue
        level = max(1, min(8, round(value / ceiling * 8)))
        if status is None:
            status = "drifted" if value >= threshold else "watch" if value >= watch else "stable"
        style = DRIFT_STYLES.get(status, DRIFT_STYLES["stable"])
        line.append(BLOCKS[level], style=style)
    return line


def bar(share: float, scale: float, width: int, style: str) -> Text:
    """A horizontal bar of ``share / scale`` of ``width`` cells, in eighths of a cell."""
    eighths = round(max(0.0, min(1.0, share / scale if scale else 0.0)) * width * 8)
    full, part = divmod(eighths, 8)
    text = Text("█" * full + (EIGHTHS[part] if part else ""), style=style)
    text.pad_right(width - text.cell_len)
    return text


def fit_words(text: str, width: int) -> str:
    """``text`` if it fits in ``width`` cells, else as many whole words as fit, then "…"."""
    if len(text) <= width:
        return text
    cut = text[:max(0, width - 1)]
    boundary = max(cut.rfind(" "), cut.rfind(","))
    kept = cut[:boundary].rstrip(" ,:;·") if boundary > 0 else ""
    return kept + "…" if kept else "…"



def clip_lines(text: Text, width: int, lines: int) -> Text:
    """``text`` wrapped to ``width`` cells; past ``lines`` lines, the last one kept ends in "…"."""
    if width <= 0:
        return text
    wrapped = text.wrap(WRAP_CONSOLE, width)
    if len(wrapped) <= lines:
        return text
    kept = list(wrapped)[:lines]
    for line in kept:
        line.rstrip()
    last = kept[-1]
    shortened = fit_words(last.plain + " " + "x" * width, width)  # as many of its words as fit beside "…"
    last.truncate(len(shortened) - 1)
    last.append("…")
    return Text("\n").join(kept)


def display_path(path: Path, cwd: Path | None = None) -> str:
    """``path`` relative to ``cwd`` when it lies inside it (as people type it), else absolute."""
    cwd = cwd or Path.cwd()
    try:
        return str(path.relative_to(cwd)) or "."
    except ValueError:
        return str(path)
