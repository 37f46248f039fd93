"""The charts: a feature's distribution, a model's health over the batches, and the numbers shown beside them.

Each function takes data (dicts from :mod:`app.report`) and a size as
(width, height) in terminal cells, and returns ``rich.text.Text``; nothing
here knows about Textual.
"""

from __future__ import annotations

from typing import Any, Sequence

from rich.text import Text

from app.tui.formatting import bar, number

ACTION_MARKS = {"promoted": ("▲", "bold green"), "rolled_back": ("▼", "bold yellow"),
                "rejected": ("×", "red"), "failed": ("✕", "bold red")}
POINTER_MARKS = {"rollback": ("▼", "bold yellow"), "manual": ("▲", "bold cyan")}
SERIES = (  # (key, glyph, style, legend); earlier entries win where two series share a cell
    ("served", "●", "bold green", "served"),
    ("shadow", "◆", "magenta", "shadow"),
    ("baseline", "─", "dim", "naive baseline"),
)
Y_LABEL_WIDTH = 6
LABEL_WIDTH = 19  # a bin label: the widest range of two short numbers ("-1.23e-09–-1.21e-09")
# What each metric can take: the health chart's y-axis stays inside it (Brier reaches 2 for multiclass).
METRIC_LIMITS: dict[str, tuple[float | None, float | None]] = {
    "roc_auc": (0.0, 1.0), "accuracy": (0.0, 1.0), "balanced_accuracy": (0.0, 1.0), "f1": (0.0, 1.0),
    "brier": (0.0, 2.0), "log_loss": (0.0, None), "mae": (0.0, None), "rmse": (0.0, None), "r2": (None, 1.0),
}


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


def latest_metrics_text(latest: dict[str, Any] | None) -> Text:
    """The newest batch's metrics; without labels, the label-free estimate, marked as one.

    The score PSI shows in red when the batch's prediction drift was decided drifted.
    """
    if latest is None:
        return Text("no batch scored yet", style="dim")
    text = Text("latest ")
    text.append(Text(latest["file"], style="bold"))
    metric = latest.get("metric")
    metrics = latest.get("metrics") or {}
    if latest.get("labeled") and metrics:
        sources = latest.get("labels_from") or []
        labelled_by = f"labels from {', '.join(sources[:2])}{' …' if len(sources) > 2 else ''}, " if sources else ""
        text.append(f" (labeled, {labelled_by}scored by v{latest.get('serving_version')})\n", style="dim")
        text.append("  ".join(f"{name} {number(value)}" for name, value in metrics.items()))
        shadow = (latest.get("shadow_metrics") or {}).get(metric)
        baseline = (latest.get("baseline_metrics") or {}).get(metric)
        text.append(f"\nshadow {metric} {number(shadow)}   naive baseline {number(baseline)}", style="dim")
        _estimate_after(text, latest)
    elif latest.get("estimate") is not None:
        _estimate_before(text, latest)
    elif latest.get("labeled"):
        text.append(" (labeled; no model serves yet to score it)", style="dim")
    else:
        text.append(" (no labels; no model serves yet)", style="dim")
    psi = latest.get("prediction_psi")
    if psi is not None:
        text.append(f"\nprediction drift: PSI of scores {psi:.3f}", style="bold red" if latest.get("prediction_drifted") else "dim")
    return text


def _estimate_before(text: Text, latest: dict[str, Any]) -> None:
    """A batch still waiting for its labels: the estimate, marked as one, how it was made, and its track record."""
    estimate = latest["estimate"]
    coverage = latest.get("label_coverage")
    text.append(f" (no labels yet{f'; {coverage:.0%} labelled' if coverage else ''})\n", style="dim")
    if estimate.get("value") is None:
        text.append(f"{estimate['metric']}: no estimate, {estimate.get('why', '')}", style="dim")
        return
    text.append(f"{estimate['metric']} ≈ {estimate['value']:.3f} ")
    text.append("estimate", style="reverse yellow")
    text.append(" (CBPE)" if estimate.get("calibrated") else " (uncalibrated probabilities)", style="dim")
    _track_record(text, latest)


def _estimate_after(text: Text, latest: dict[str, Any]) -> None:
    """A labelled batch: what was estimated before its labels, the estimate's error, and its track record."""
    estimate, error = latest.get("estimate") or {}, latest.get("estimate_error")
    if estimate.get("value") is None or error is None:
        return
    text.append(f"\nestimated {estimate['value']:.3f} before the labels (error {error:+.3f})", style="dim")
    _track_record(text, latest)


def _track_record(text: Text, latest: dict[str, Any]) -> None:
    record = latest.get("track_record") or {}
    if record.get("mae") is not None:
        text.append(f" · track record ±{record['mae']:.3f} over {record['batches']}", style="dim")
