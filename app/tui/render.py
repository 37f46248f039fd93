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
from app.report import STATE_STYLES, STATUS_STYLES
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


def sparkline(values: Sequence[float | None], width: int, threshold: float, watch: float) -> Text:
    """The last ``width`` PSI values as block characters, coloured by the drift status each reached.

    The scale tops out at 1.5 x ``threshold`` (or the largest value if higher),
    so a bar's height keeps its meaning from row to row. None shows as a gap.
    """
    shown = list(values)[-width:] if width > 0 else []
    ceiling = max([threshold * 1.5] + [v for v in shown if v is not None])
    line = Text()
    for value in shown:
        if value is None:
            line.append(" ")
            continue
        level = max(1, min(8, round(value / ceiling * 8)))
        style = DRIFT_STYLES["drifted"] if value >= threshold else DRIFT_STYLES["watch"] if value >= watch else DRIFT_STYLES["stable"]
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
    """What the header line says; ``now`` and ``last_seen_at`` are seconds since the epoch."""

    folder: str
    paused: bool
    ingested: int = 0
    quarantined: int = 0
    last_seen_at: float | None = None
    now: float = 0.0
    training: dict[str, Any] | None = None
    retrain_queued: str | None = None
    engine_stopped: bool = False


def header_text(state: HeaderState) -> Text:
    """One line: folder, watching/paused, batch counts, time since the last file, training progress."""
    line = Text()
    line.append("driftdeck ", style="bold")
    line.append(state.folder)
    line.append("  ")
    if state.engine_stopped:
        line.append("✖ engine stopped: R restarts it", style="bold red")
    elif state.paused:
        line.append("⏸ paused", style="bold yellow")
    else:
        line.append("● watching", style="bold green")
    line.append(f"  {state.ingested:,} batches ingested  ")
    line.append(f"{state.quarantined:,} quarantined", style="bold red" if state.quarantined else "")
    since = state.now - state.last_seen_at if state.last_seen_at is not None else None
    line.append(f"  last file {time_ago(since)}" if since is not None else "  no files yet")
    if state.retrain_queued:
        line.append(f"  retrain of {state.retrain_queued} queued", style="cyan")
    if state.training:
        progress = float(state.training.get("progress") or 0.0)
        line.append("  ")
        line.append(f"⚙ training {state.training.get('model')} ", style="bold cyan")
        line.append(bar(progress, 1.0, 10, "cyan"))
        line.append(f" {progress:.0%} ", style="cyan")
        line.append(_without_model(state.training.get("text", ""), state.training.get("model")), style="dim")
    return line


def _without_model(text: str, model: str | None) -> str:
    prefix = f"{model}: "
    return text[len(prefix):] if model and text.startswith(prefix) else text


# --- table rows ------------------------------------------------------------------------------


def verdict_short(verdict: dict[str, Any]) -> Text:
    """The verdict in a few words for the models table (the full sentence goes below it)."""
    needs, gain = verdict.get("needs"), verdict.get("gain")
    if needs == "dynamic":
        return Text(f"needs dynamic ({gain * 100:+.1f})" if gain is not None else "needs dynamic", style="bold magenta")
    if needs == "static":
        return Text("static is enough", style="blue")
    return Text("not enough labels yet", style="dim")


def model_cells(summary: dict[str, Any]) -> tuple[Text, ...]:
    """name, policy badge, serving version, state, top flag in words, short verdict."""
    flag = summary["flags"][0] if summary["flags"] else None
    mode = summary["mode"]
    return (
        Text(summary["name"], style="bold"),
        Text(f" {mode.upper()} ", style="bold reverse magenta" if mode == "dynamic" else "bold reverse blue"),
        Text(f"v{summary['serving_version']}" if summary["serving_version"] else NO_VALUE),
        Text(summary["state"], style=STATE_STYLES.get(summary["state"], "")),
        Text(f"{flag['kind'].replace('_', ' ')}: {flag['detail']}" if flag else NO_VALUE,
             style="yellow" if flag else "dim"),
        verdict_short(summary.get("verdict_detail") or {}),
    )


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
        sparkline(row["psi_history"], trend_width, threshold, watch),
    )


def snapshot_cells(row: dict[str, Any]) -> tuple[Text, ...]:
    """version (▶ when serving), status, holdout metric, trained on, created, note."""
    files = len(row["files"])
    trained = f"{files} file{'s' if files != 1 else ''}" + (f", {row['rows']:,} rows" if row["rows"] else "")
    holdout = f"{row['metric']} {row['holdout']:.3f}" if row["holdout"] is not None else NO_VALUE
    return (
        Text(("▶ " if row["serving"] else "  ") + f"v{row['version']}", style="bold green" if row["serving"] else ""),
        Text(row["status"].replace("_", " "), style=STATUS_STYLES.get(row["status"], "")),
        Text(holdout),
        Text(trained),
        Text(date_time(row["created"]), style="dim"),
        Text(row["reason"] or ("env differs: " + "; ".join(row["environment_vs_serving"]) if row.get("environment_vs_serving") else "")
             or row["gate"] or "",
             style="red" if row["status"] in ("rejected", "failed") else "yellow" if row.get("environment_vs_serving") else "dim"),
    )


def snapshot_note(row: dict[str, Any]) -> Text:
    """The highlighted snapshot in a sentence: why it was rejected, or what its gate said."""
    text = Text()
    text.append(f"v{row['version']} {row['status'].replace('_', ' ')}", style=STATUS_STYLES.get(row["status"], "bold"))
    if row["reason"]:
        text.append(": ")
        text.append(Text(row["reason"], style="red" if row["status"] in ("rejected", "failed") else ""))
    elif row["gate"]:
        text.append(" · gate: ", style="dim")
        text.append(Text(row["gate"]))
    if row["files"]:
        text.append(" · trained on ", style="dim")
        text.append(Text(", ".join(row["files"][-3:]) + (" …" if len(row["files"]) > 3 else "")))
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
    label_width = min(16, max(len(row["label"]) for row in rows))
    bar_width = max(4, (width - label_width - 2 * 7 - 3) // 2)
    scale = max(max(row["reference"], row["current"]) for row in rows) or 1.0
    for row in rows:
        moved = abs(row["current"] - row["reference"]) >= 0.05
        text.append("\n")
        text.append(Text(row["label"][:label_width].rjust(label_width)))
        text.append(" ")
        text.append(bar(row["reference"], scale, bar_width, "blue"))
        text.append(f"{row['reference']:>6.1%} ", style="dim")
        text.append(bar(row["current"], scale, bar_width, "bold yellow" if moved else "cyan"))
        text.append(f"{row['current']:>6.1%}", style="bold yellow" if moved else "")
    return text


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
    low, high = _value_range(values)

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


def _value_range(values: list[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    pad = max((high - low) * 0.05, 0.01)
    return low - pad, high + pad


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
        text.append(f" (labeled, served v{latest.get('serving_version')})\n", style="dim")
        text.append("  ".join(f"{name} {number(value)}" for name, value in metrics.items()))
        shadow = (latest.get("shadow_metrics") or {}).get(metric)
        baseline = (latest.get("baseline_metrics") or {}).get(metric)
        text.append(f"\nshadow {metric} {number(shadow)}   naive baseline {number(baseline)}", style="dim")
    elif latest.get("estimated_accuracy") is not None:
        text.append(" (no labels)\n", style="dim")
        text.append(f"accuracy ≈ {latest['estimated_accuracy']:.3f} ")
        text.append("estimate", style="reverse yellow")
        text.append(" from the model's own confidence", style="dim")
    else:
        text.append(" (no labels, no serving model yet)", style="dim")
    psi = latest.get("prediction_psi")
    if psi is not None:
        text.append(f"\nprediction drift: PSI of scores {psi:.3f}", style="bold red" if psi >= psi_threshold else "dim")
    return text
