"""Plain functions that turn the store's views (dicts from :mod:`app.report`) into Rich text.

Nothing here knows about Textual: each function takes data (and, for the
charts, a size as (width, height) in terminal cells) and returns a
``rich.text.Text`` (or a tuple of them for a table row). Text from data (file names, columns, categories, reasons) goes in
as ``Text`` content, never as markup. Colours are ANSI names, which Textual
maps through the theme, so they read on light and dark backgrounds.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Sequence

from rich.console import Console
from rich.text import Text

from app.events import ERROR_KINDS, WARNING_KINDS, printable
from app.report import STATE_STYLES, STATUS_STYLES, comparison_words
from app.store import StoredEvent

BLOCKS = " ▁▂▃▄▅▆▇█"
EIGHTHS = " ▏▎▍▌▋▊▉█"
DRIFT_STYLES = {"drifted": "bold red", "watch": "yellow", "stable": "green"}
ACTION_MARKS = {"promoted": ("▲", "bold green"), "rolled_back": ("▼", "bold yellow"),
                "rejected": ("×", "red"), "failed": ("✕", "bold red")}
POINTER_MARKS = {"rollback": ("▼", "bold yellow"), "manual": ("▲", "bold cyan")}
SERIES = (  # (key, glyph, style, legend); earlier entries win where two series share a cell
    ("served", "●", "bold green", "served"),
    ("shadow", "◆", "magenta", "shadow"),
    ("baseline", "─", "dim", "naive baseline"),
)
EVENT_STYLES = {"promoted": "green", "serving_changed": "green", "training_started": "cyan",
                "paused": "yellow", "resumed": "cyan", "batch_ingested": ""}
KIND_LABELS = {"batch_ingested": "ingested", "batch_quarantined": "quarantined", "batch_result": "result",
               "training_started": "training", "training_failed": "train failed", "rolled_back": "rolled back",
               "file_seen": "file", "file_skipped": "skipped", "file_error": "file error",
               "serving_changed": "serving", "code_regression": "regression"}
KIND_WIDTH = 12
_WRAP_CONSOLE = Console(width=200, color_system=None)  # only measures text for wrapping
Y_LABEL_WIDTH = 6
LABEL_WIDTH = 19  # a bin label: the widest range of two short numbers ("-1.23e-09–-1.21e-09")
# What each metric can take: the health chart's y-axis stays inside it (Brier reaches 2 for multiclass).
METRIC_LIMITS: dict[str, tuple[float | None, float | None]] = {
    "roc_auc": (0.0, 1.0), "accuracy": (0.0, 1.0), "balanced_accuracy": (0.0, 1.0), "f1": (0.0, 1.0),
    "brier": (0.0, 2.0), "log_loss": (0.0, None), "mae": (0.0, None), "rmse": (0.0, None), "r2": (None, 1.0),
}
NO_VALUE = "—"


# --- small pieces -----------------------------------------------------------------------


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


# --- the header ----------------------------------------------------------------------------


@dataclass(frozen=True)
class HeaderState:
    """What the header line says; ``now`` and ``last_seen_at`` are seconds since the epoch.

    ``waiting`` is how many files wait while paused.
    """

    folder: str
    paused: bool
    ingested: int = 0
    quarantined: int = 0
    last_seen_at: float | None = None
    now: float = 0.0
    training: dict[str, Any] | None = None
    retrain_queued: str | None = None
    folder_missing: bool = False
    waiting: int = 0
    engine_stopped: bool = False


HEADER_SEPARATOR = " │ "


@dataclass(frozen=True)
class HeaderStyle:
    """How much the header says: each narrower style drops words, never a count."""

    brand: bool = True
    folder: bool = True
    wordy: bool = True  # "batches ingested", "training <model> <bar> <detail>"
    training_model: bool = True


HEADER_STYLES = (  # widest first; the first that fits is shown
    HeaderStyle(),
    HeaderStyle(wordy=False),
    HeaderStyle(wordy=False, folder=False),
    HeaderStyle(wordy=False, folder=False, brand=False),
    HeaderStyle(wordy=False, folder=False, brand=False, training_model=False),
)


def header_text(state: HeaderState, width: int = 0) -> Text:
    """One line of parts set apart by a bar: folder, watching/paused, counts, last file, training.

    Given a ``width`` (cells), words give way in turn ("ingested", the
    folder's path, shortened from its start, then left out, the name, the
    training's details), so the counts, the time since the last file and the
    training progress stay on screen.
    """
    for style in HEADER_STYLES:
        line = _joined(header_parts(state, style))
        if not width or line.cell_len <= width:
            return line
        if style.folder and not style.wordy:
            room = width - (line.cell_len - len(state.folder))
            if room >= min(len(state.folder), 8):
                return _joined(header_parts(state, style, _tail(state.folder, room)))
    return line


def header_parts(state: HeaderState, style: HeaderStyle = HeaderStyle(), folder: str | None = None) -> list[Text]:
    """The header's parts in order, as much as ``style`` says; a new part is one more entry here."""
    parts = [Text("driftdeck", style="bold")] if style.brand else []
    if style.folder:
        parts.append(Text(state.folder if folder is None else folder))
    if state.engine_stopped:
        parts.append(Text("✖ engine stopped: R restarts it", style="bold red"))
    elif state.folder_missing:
        parts.append(Text("⚠ folder missing (renamed or deleted)", style="bold red"))
    elif state.paused:
        waiting = f" · {state.waiting:,} file{'s' if state.waiting != 1 else ''} waiting" if state.waiting else ""
        parts.append(Text(f"⏸ paused{waiting}", style="bold yellow"))
    else:
        parts.append(Text("● watching", style="bold green"))
    parts.append(Text(f"{state.ingested:,} batches" + (" ingested" if style.wordy else "")))
    parts.append(Text(f"{state.quarantined:,} quarantined", style="bold red" if state.quarantined else ""))
    since = state.now - state.last_seen_at if state.last_seen_at is not None else None
    parts.append(Text(f"last file {time_ago(since)}" if since is not None else "no files yet"))
    if state.retrain_queued:
        parts.append(Text(f"retrain of {state.retrain_queued} queued" if style.training_model else "retrain queued",
                          style="cyan"))
    if state.training:
        parts.append(_training_text(state.training, style))
    return parts


def _training_text(training: dict[str, Any], style: HeaderStyle) -> Text:
    progress = float(training.get("progress") or 0.0)
    text = Text("⚙ training " + (f"{training.get('model')} " if style.training_model else ""), style="bold cyan")
    if style.training_model:
        text.append(bar(progress, 1.0, 10 if style.wordy else 5, "cyan"))
        text.append(" ")
    text.append(f"{progress:.0%}", style="cyan")
    if style.wordy:
        text.append(" ")
        text.append(_without_model(training.get("text", ""), training.get("model")), style="dim")
    return text


def _joined(parts: Sequence[Text]) -> Text:
    return Text(HEADER_SEPARATOR, style="dim").join(parts)


def _tail(path: str, width: int) -> str:
    """``path`` whole if it fits in ``width`` cells, else "…" and its last characters."""
    return path if len(path) <= width else "…" + path[-(width - 1):]


def _without_model(text: str, model: str | None) -> str:
    prefix = f"{model}: "
    return text[len(prefix):] if model and text.startswith(prefix) else text


# --- table rows ------------------------------------------------------------------------------


def verdict_short(comparison: dict[str, Any]) -> Text:
    """A model's own comparison of the two policies in a few words (the stream's verdict goes below the table)."""
    style = {"dynamic": "bold magenta", "static": "blue"}.get(comparison.get("needs"), "dim")
    return Text(comparison_words(comparison), style=style)


def fit_words(text: str, width: int) -> str:
    """``text`` if it fits in ``width`` cells, else as many whole words as fit, then "…"."""
    if len(text) <= width:
        return text
    cut = text[:max(0, width - 1)]
    boundary = max(cut.rfind(" "), cut.rfind(","))
    kept = cut[:boundary].rstrip(" ,:;·") if boundary > 0 else ""
    return kept + "…" if kept else "…"


def flag_text(summary: dict[str, Any]) -> str:
    """The model's most important flag in words ("" without one)."""
    flag = summary["flags"][0] if summary["flags"] else None
    return f"{flag['kind'].replace('_', ' ')}: {flag['detail']}" if flag else ""


def policy_badge(mode: str) -> Text:
    return Text(f" {mode.upper()} ", style="bold reverse magenta" if mode == "dynamic" else "bold reverse blue")


def model_cells(summary: dict[str, Any], flag_width: int = 60) -> tuple[Text, ...]:
    """name, policy badge, serving version, state, top flag in whole words, short verdict."""
    flag = flag_text(summary)
    return (
        Text(summary["name"], style="bold"),
        policy_badge(summary["mode"]),
        _serving_cell(summary),
        Text(summary["state"], style=STATE_STYLES.get(summary["state"], "")),
        Text(fit_words(flag, flag_width), style="yellow") if flag else Text(NO_VALUE, style="dim"),
        verdict_short(summary.get("comparison") or {}),
    )


def model_cells_stacked(summary: dict[str, Any], flag_width: int) -> tuple[Text, ...]:
    """For narrow screens, two lines a model: name over policy badge; serving; state; top flag over verdict."""
    flag = flag_text(summary)
    name = Text(summary["name"], style="bold")
    name.append("\n")
    name.append(policy_badge(summary["mode"]))
    outlook = Text(fit_words(flag, flag_width), style="yellow") if flag else Text("no flag", style="dim")
    outlook.append("\n")
    outlook.append(verdict_short(summary.get("comparison") or {}))
    return name, _serving_cell(summary), Text(summary["state"], style=STATE_STYLES.get(summary["state"], "")), outlook


def _serving_cell(summary: dict[str, Any]) -> Text:
    return Text(f"v{summary['serving_version']}" if summary["serving_version"] else NO_VALUE)


def clip_lines(text: Text, width: int, lines: int) -> Text:
    """``text`` wrapped to ``width`` cells; past ``lines`` lines, the last one kept ends in "…"."""
    if width <= 0:
        return text
    wrapped = text.wrap(_WRAP_CONSOLE, width)
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


def model_detail(summary: dict[str, Any]) -> Text:
    """The selected model in full: its top flag, then the verdict's sentence."""
    text = Text(summary["name"], style="bold")
    flag = flag_text(summary)
    if flag:
        text.append(" ⚑ ", style="yellow")
        text.append(Text(flag, style="yellow"))
    text.append(" · " if flag else ": ", style="dim")
    text.append(Text(summary["verdict"]))
    return text


def feature_cells(row: dict[str, Any], trend_width: int, threshold: float, watch: float) -> tuple[Text, ...]:
    """feature, type, PSI, KS, JS, missing change, status, PSI trend sparkline."""
    style = DRIFT_STYLES.get(row["status"], "")
    change = row.get("missing_change")
    return (
        Text(row["feature"]),
        Text("num" if row["kind"] == "numeric" else "cat", style="dim"),
        Text(number(row["psi"]), style=style),
        Text(number(row.get("ks"))),
        Text(number(row.get("js"))),
        Text(f"{change:+.1%}" if change is not None else NO_VALUE, style="yellow" if change and abs(change) >= 0.05 else ""),
        Text(row["status"], style=style),
        sparkline(row["psi_history"], trend_width, threshold, watch, row.get("status_history")),
    )


def snapshot_cells(row: dict[str, Any], note_width: int = 40) -> tuple[Text, ...]:
    """version (▶ when serving), status, holdout metric, files trained on, created, note in whole words."""
    files = len(row["files"])
    holdout = number(row["holdout"]) if row["holdout"] is not None else NO_VALUE
    return (
        Text(("▶ " if row["serving"] else "  ") + f"v{row['version']}", style="bold green" if row["serving"] else ""),
        Text("tainted", style="bold magenta") if row.get("tainted") else
        Text(row["status"].replace("_", " "), style=STATUS_STYLES.get(row["status"], "")),
        Text(holdout),
        Text(f"{files} file{'s' if files != 1 else ''}"),
        Text(time.strftime("%m-%d %H:%M", time.localtime(row["created"])), style="dim"),
        Text(fit_words(_snapshot_short_note(row), note_width),
             style="red" if row["status"] in ("rejected", "failed") else "yellow" if row.get("environment_vs_serving") else "dim"),
    )


def _snapshot_short_note(row: dict[str, Any]) -> str:
    if row.get("tainted"):
        return f"learned from excluded {', '.join(row['tainted_by'])}"
    if row["reason"]:
        return row["reason"]
    if row.get("environment_vs_serving"):
        return "env differs: " + "; ".join(row["environment_vs_serving"])
    return row["gate"] or ""


def files_span(files: Sequence[str]) -> str:
    """The files a snapshot was trained on: "a.csv" or "3 files: first … last"."""
    if len(files) == 1:
        return files[0]
    return f"{len(files)} files: {files[0]} … {files[-1]}" if len(files) > 2 else f"2 files: {files[0]}, {files[1]}"


def snapshot_note(row: dict[str, Any], serving_since: dict[str, Any] | None = None) -> Text:
    """The highlighted snapshot in a sentence: why it serves, was rejected, or what its gate said.

    ``serving_since`` is the serving pointer's latest move, for the serving snapshot.
    """
    text = Text()
    text.append(f"v{row['version']} {row['status'].replace('_', ' ')}", style=STATUS_STYLES.get(row["status"], "bold"))
    if row["serving"] and serving_since is not None and serving_since["version"] == row["version"]:
        text.append(f" since {date_time(serving_since['time'])}", style="dim")
        if serving_since["detail"]:
            text.append(": ")
            text.append(Text(serving_since["detail"]))
    elif row["reason"]:
        text.append(": ")
        text.append(Text(row["reason"], style="red" if row["status"] in ("rejected", "failed") else ""))
    elif row["gate"]:
        text.append(" · gate: ", style="dim")
        text.append(Text(row["gate"]))
    if row.get("tainted"):
        text.append(" · tainted: learned from excluded ", style="bold magenta")
        text.append(Text(", ".join(row["tainted_by"]), style="magenta"))
    if row["files"]:
        text.append(" · trained on ", style="dim")
        text.append(Text(files_span(row["files"])))
        if row["rows"]:
            text.append(f", {row['rows']:,} rows", style="dim")
    if row["holdout"] is not None:
        text.append(f" · holdout {row['metric']} {row['holdout']:.3f}", style="dim")
    if row.get("config_hash"):
        text.append(" · ", style="dim")
        text.append(Text(f"seed {row.get('seed')}, config {row['config_hash']}"))
    if row.get("environment_vs_now"):
        text.append(" · trained under another environment: ", style="yellow")
        text.append(Text("; ".join(row["environment_vs_now"]), style="yellow"))
    if row.get("environment_vs_serving"):
        text.append(" · differs from serving: ", style="bold yellow")
        text.append(Text("; ".join(row["environment_vs_serving"]), style="yellow"))
    return text


def promote_question(model: str, row: dict[str, Any], serving: int | None) -> Text:
    """What enter on a snapshot asks: which version of which model would serve, and in place of what."""
    text = Text(f"Serve {model} v{row['version']}", style="bold")
    text.append(f" in place of v{serving}?" if serving is not None else "?", style="bold")
    text.append(f"\n\nv{row['version']}: {row['status'].replace('_', ' ')}")
    if row["holdout"] is not None:
        text.append(f", holdout {row['metric']} {row['holdout']:.3f}")
    if row["status"] == "rejected":
        text.append("\nIt was rejected: ", style="bold red")
        text.append(Text(row["reason"] or "no reason recorded", style="red"))
    if row.get("tainted"):
        text.append("\nIt learned from excluded ", style="bold magenta")
        text.append(Text(", ".join(row["tainted_by"]), style="magenta"))
    return text


def serving_history_text(size: tuple[int, int], changes: Sequence[dict[str, Any]]) -> Text:
    """The newest moves of the serving pointer that fit in ``size`` (width, height), newest first."""
    _, height = size
    text = Text()
    for change in list(reversed(changes))[:max(0, height)]:
        if text:
            text.append("\n")
        text.append(f"{date_time(change['time'])} ", style="dim")
        text.append(f"v{change['version']} ", style="bold")
        reason = change["reason"].replace("_", " ")
        text.append(reason, style="yellow" if "rollback" in reason else "cyan" if reason == "manual" else "green")
        if change["detail"]:
            text.append(f"  {change['detail']}", style="dim")
    return text or Text("the serving pointer has not moved yet", style="dim")


def event_text(event: StoredEvent, width: int) -> Text:
    """One event-log entry for a log ``width`` cells wide: time, kind, then the message, which
    wraps under itself rather than under the time. Errors are red, warnings yellow."""
    if event.kind in ERROR_KINDS:
        style = "bold red"
    elif event.kind in WARNING_KINDS:
        style = "yellow"
    else:
        style = EVENT_STYLES.get(event.kind, "dim")
    text = Text()
    text.append(clock_time(event.time) + " ", style="dim")
    text.append(f"{KIND_LABELS.get(event.kind, event.kind.replace('_', ' ')):<{KIND_WIDTH}} ", style=style)
    indent = text.cell_len
    message = Text(printable(event.message), style="red" if event.kind in ERROR_KINDS else "")
    lines = message.wrap(_WRAP_CONSOLE, max(10, width - indent), overflow="fold")
    for number, line in enumerate(lines):
        if number:
            text.append("\n" + " " * indent)
        text.append(line)
    return text


# --- charts -----------------------------------------------------------------------------------


def distribution_chart(size: tuple[int, int], feature: str | None, rows: Sequence[dict[str, Any]],
                       kind: str | None) -> Text:
    """Reference and current shares of one feature, one line per bin, bars side by side, as wide as ``size``.

    ``rows`` come from :func:`app.report.distribution_rows`; ``kind`` is the
    feature's kind ("numeric" or "categorical"). Both bars of a line share one
    scale (the largest share shown), so their lengths compare.
    """
    if feature is None:
        return Text("no batch measured yet", style="dim")
    width, _ = size
    text = Text()
    text.append(Text(feature, style="bold"))
    text.append("  reference ", style="dim")
    text.append("█", style="blue")
    text.append("  current ", style="dim")
    text.append("█", style="cyan")
    text.append("  (shares of rows per reference decile)" if kind == "numeric" else "  (shares of rows per category)",
                style="dim")
    if not rows:
        text.append("\nno batch measured yet", style="dim")
        return text
    label_width = min(LABEL_WIDTH, max(len(row["label"]) for row in rows))
    bar_width = max(4, (width - label_width - 2 * 7 - 3) // 2)
    scale = max(max(row["reference"], row["current"]) for row in rows) or 1.0
    for row in rows:
        moved = abs(row["current"] - row["reference"]) >= 0.05
        text.append("\n")
        text.append(Text(_fit_label(row["label"], label_width).rjust(label_width)))
        text.append(" ")
        text.append(bar(row["reference"], scale, bar_width, "blue"))
        text.append(f"{row['reference']:>6.1%} ", style="dim")
        text.append(bar(row["current"], scale, bar_width, "bold yellow" if moved else "cyan"))
        text.append(f"{row['current']:>6.1%}", style="bold yellow" if moved else "")
    return text


def _fit_label(label: str, width: int) -> str:
    """A bin's label in ``width`` cells: number ranges always fit (see report.short_number); a long
    category name ends in "…"."""
    return label if len(label) <= width else label[:width - 1] + "…"


def multivariate_text(latest: dict[str, Any] | None) -> Text:
    """The domain classifier's ROC AUC (0.5: reference and batch look alike) and the features it leaned on."""
    if not latest or latest.get("multivariate_auc") is None:
        return Text("multivariate drift: not measured yet", style="dim")
    auc = latest["multivariate_auc"]
    style = "bold red" if auc >= 0.75 else "yellow" if auc >= 0.6 else "green"
    text = Text("multivariate drift AUC ")
    text.append(f"{auc:.3f}", style=style)
    moved = [name for name, weight in (latest.get("multivariate_top") or {}).items() if weight > 0]
    if moved:
        text.append(" · moved: ")
        text.append(Text(", ".join(moved[:3])))
    return text


def health_chart(size: tuple[int, int], rows: Sequence[dict[str, Any]], shadow_label: str) -> Text:
    """The primary metric per batch as a dot chart filling ``size`` (width, height), newest batch on the right.

    Series: served model (●), the shadow of the other policy (◆), the naive
    baseline (─). Under the plot, marks for what the batch did: ▲ promoted,
    ▼ rolled back, × candidate rejected, ✕ training failed; · = no labels.
    The legend takes one line, or two when ``width`` is narrow; then come the
    plot, the marks and the first and last file names.
    """
    width, height = size
    legend = _legend(shadow_label, width)
    plot_height = height - legend.plain.count("\n") - 3
    plot_width = width - Y_LABEL_WIDTH - 1
    if plot_height < 1 or plot_width < 4:
        return legend
    shown = list(rows)[-plot_width:]
    columns = _spread(len(shown), plot_width)
    values = [row[key] for row in shown for key, *_ in SERIES if row.get(key) is not None]
    if not values:
        legend.append("\nno labeled batch scored yet", style="dim")
        return legend
    low, high = _value_range(values, metric_limits(next((row.get("metric") for row in shown if row.get("metric")), None)))

    def line_of(value: float) -> int:
        return round((high - value) / (high - low) * (plot_height - 1))

    grid = [[(" ", "")] * plot_width for _ in range(plot_height)]
    marks = [("─", "dim")] * plot_width
    for row, column in zip(shown, columns):
        for key, glyph, style, _ in reversed(SERIES):
            if row.get(key) is not None:
                grid[line_of(row[key])][column] = (glyph, style)
        mark = POINTER_MARKS.get(row.get("pointer") or "") or ACTION_MARKS.get(row["action"])
        marks[column] = mark or (("─", "dim") if row["labeled"] else ("·", "dim"))
    text = legend
    for number_of_line, cells in enumerate(grid):
        text.append("\n")
        text.append(_y_label(number_of_line, plot_height, low, high), style="dim")
        text.append("┤" if number_of_line in (0, plot_height - 1) else "│", style="dim")
        for glyph, style in cells:
            text.append(glyph, style=style)
    text.append("\n" + " " * Y_LABEL_WIDTH + "└", style="dim")
    for glyph, style in marks:
        text.append(glyph, style=style)
    text.append("\n")
    text.append(_file_axis(shown[0]["file"], shown[-1]["file"], Y_LABEL_WIDTH + 1 + columns[-1] + 1))
    return text


def _spread(count: int, width: int) -> list[int]:
    """Columns for ``count`` batches across ``width`` cells, evenly spaced, the last in the last cell."""
    if count == 1:
        return [width - 1]
    return [round(index * (width - 1) / (count - 1)) for index in range(count)]


def _legend(shadow_label: str, width: int) -> Text:
    """The series, then the marks: on one line if ``width`` allows, else on two."""
    series = Text()
    for key, glyph, style, name in SERIES:
        series.append(glyph, style=style)
        series.append(f" {shadow_label if key == 'shadow' else name}   ")
    marks = Text()
    for glyph, style, name in (("▲", "bold green", "promoted"), ("▼", "bold yellow", "rolled back"),
                               ("×", "red", "rejected"), ("·", "dim", "no labels")):
        marks.append(glyph, style=style)
        marks.append(f" {name}  ")
    series.rstrip()
    marks.rstrip()
    separator = "   " if series.cell_len + marks.cell_len + 3 <= width else "\n"
    return Text.assemble(series, separator, marks)


def metric_limits(metric: str | None) -> tuple[float | None, float | None]:
    """The values ``metric`` can take (None: unbounded on that side)."""
    return METRIC_LIMITS.get(metric or "", (None, None))


def _value_range(values: list[float], limits: tuple[float | None, float | None] = (None, None)) -> tuple[float, float]:
    """The y-axis: the values with a little room around them, never past what the metric can take."""
    low, high = min(values), max(values)
    pad = max((high - low) * 0.05, 0.01)
    floor, ceiling = limits
    low, high = low - pad, high + pad
    if floor is not None:
        low = max(low, floor)
    if ceiling is not None:
        high = min(high, ceiling)
    return low, high


def _y_label(line: int, lines: int, low: float, high: float) -> str:
    if line == 0:
        return f"{high:>{Y_LABEL_WIDTH}.3f}"
    if line == lines - 1:
        return f"{low:>{Y_LABEL_WIDTH}.3f}"
    return " " * Y_LABEL_WIDTH


def _file_axis(first: str, last: str, end: int) -> Text:
    """The first file's name under the plot's start and the last one's ending at column ``end``."""
    left = " " * (Y_LABEL_WIDTH + 1) + first
    if first == last:
        return Text(left, style="dim")
    return Text(left + " " * max(2, end - len(left) - len(last)) + last, style="dim")


def latest_metrics_text(latest: dict[str, Any] | None, psi_threshold: float = 0.2) -> Text:
    """The newest batch's metrics; without labels, the label-free estimate, marked as one.

    ``psi_threshold`` is the prediction-drift PSI from which the score PSI shows in red.
    """
    if latest is None:
        return Text("no batch scored yet", style="dim")
    text = Text("latest ")
    text.append(Text(latest["file"], style="bold"))
    metric = latest.get("metric")
    metrics = latest.get("metrics") or {}
    if latest.get("labeled") and metrics:
        text.append(f" (labeled, scored by v{latest.get('serving_version')})\n", style="dim")
        text.append("  ".join(f"{name} {number(value)}" for name, value in metrics.items()))
        shadow = (latest.get("shadow_metrics") or {}).get(metric)
        baseline = (latest.get("baseline_metrics") or {}).get(metric)
        text.append(f"\nshadow {metric} {number(shadow)}   naive baseline {number(baseline)}", style="dim")
    elif latest.get("estimated_accuracy") is not None:
        text.append(" (no labels)\n", style="dim")
        text.append(f"accuracy ≈ {latest['estimated_accuracy']:.3f} ")
        text.append("estimate", style="reverse yellow")
        text.append(" from the model's own confidence", style="dim")
    elif latest.get("labeled"):
        text.append(" (labeled; no model serves yet to score it)", style="dim")
    else:
        text.append(" (no labels; no model serves yet)", style="dim")
    psi = latest.get("prediction_psi")
    if psi is not None:
        text.append(f"\nprediction drift: PSI of scores {psi:.3f}", style="bold red" if psi >= psi_threshold else "dim")
    return text
