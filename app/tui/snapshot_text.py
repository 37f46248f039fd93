"""The sentences about snapshots: the highlighted one's note, the promote question, the serving pointer's moves.

Plain functions from the store's views (dicts from :mod:`app.report`) to
``rich.text.Text``; text from data goes in as ``Text`` content, never as
markup. Nothing here knows about Textual.
"""

from __future__ import annotations

from typing import Any, Sequence

from rich.text import Text

from app.cli_tables import STATUS_STYLES
from app.tui.formatting import date_time


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
