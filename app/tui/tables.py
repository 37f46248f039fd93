"""The rows of the dashboard's tables (models, features, snapshots) and the selected model's line.

Plain functions from the store's views (dicts from :mod:`app.report`) to
``rich.text.Text`` cells; text from data (file names, columns, reasons) goes
in as ``Text`` content, never as markup. Nothing here knows about Textual.
"""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text

from app.cli_tables import STATE_STYLES, STATUS_STYLES, comparison_words
from app.tui.formatting import DRIFT_STYLES, NO_VALUE, fit_words, number, sparkline


def verdict_short(comparison: dict[str, Any]) -> Text:
    """A model's own comparison of the two policies in a few words (the stream's verdict goes below the table)."""
    style = {"dynamic": "bold magenta", "static": "blue"}.get(comparison.get("needs"), "dim")
    return Text(comparison_words(comparison), style=style)



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


def model_detail(summary: dict[str, Any]) -> Text:
    """The selected model in full: its top flag, then the stream's verdict (the same for every model)."""
    text = Text(summary["name"], style="bold")
    flag = flag_text(summary)
    if flag:
        text.append(" ⚑ ", style="yellow")
        text.append(Text(flag, style="yellow"))
    text.append(" · verdict for the data: " if flag else ": no flag · verdict for the data: ", style="dim")
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
