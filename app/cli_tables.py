"""The CLI's tables: Rich tables fitted to the terminal's width, drawn from the views in :mod:`app.report`.

Every text that comes from data (file names, columns, reasons) goes through
:func:`literal`, so markup in it is shown as it is, never interpreted. The TUI
shares the styles and the few words these tables use.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from rich.cells import cell_len
from rich.table import Table
from rich.text import Text

from app.config import OTHER_CONFIG
from app.events import printable
from app.lineage import exclusion_text, taint_words
from app.metrics import get_metric

STATUS_STYLES = {"serving": "bold green", "rejected": "red", "failed": "bold red", "rolled_back": "yellow",
                 "retired": "dim", "candidate": "cyan"}
STATE_STYLES = {"healthy": "green", "watch": "yellow", "stale": "bold red", "training": "cyan", "untrained": "dim",
                OTHER_CONFIG: "bold red"}


@dataclass(frozen=True)
class TableColumn:
    """One column of a CLI table: its header, and how readily it is dropped when the terminal is narrow
    (``keep``: higher stays longer). ``no_wrap`` columns hold names and numbers shown whole on one line."""

    header: str
    keep: int
    no_wrap: bool = False


# A rich table's frame: one border per column plus one, and a space either side of every cell.
EDGE_WIDTH = 1
CELL_FRAME_WIDTH = 3


def literal(value: object, style: str = "") -> Text:
    """Data shown as it is: no markup, and control characters as visible escapes."""
    return Text(printable(str(value)), style=style)


def fitted_table(title: str, columns: list[TableColumn], rows: list[tuple[Text, ...]], width: int) -> Table:
    """A table of ``rows`` that fits ``width`` terminal cells without cutting a word.

    Columns are dropped, least needed first, until each one can be as wide as
    its longest word (its whole text for ``no_wrap`` columns); the room left
    goes to the columns that wrap, in proportion to what their text would take.
    """
    shown = list(range(len(columns)))
    needs = [_column_needs(column, [row[index] for row in rows]) for index, column in enumerate(columns)]
    while len(shown) > 1 and sum(needs[index][0] for index in shown) + _frame_width(shown) > width:
        shown.remove(min(shown, key=lambda index: (columns[index].keep, -index)))
    widths = _share_room(shown, needs, width - _frame_width(shown))
    table = Table(title=title)
    for index in shown:
        table.add_column(columns[index].header, no_wrap=columns[index].no_wrap, overflow="ellipsis", width=widths[index])
    for row in rows:
        table.add_row(*(row[index] for index in shown))
    return table


def _frame_width(shown: list[int]) -> int:
    return CELL_FRAME_WIDTH * len(shown) + EDGE_WIDTH


def _column_needs(column: TableColumn, cells: list[Text]) -> tuple[int, int]:
    """(narrowest, widest) a column can be: its longest word (whole text if ``no_wrap``), its longest text."""
    texts = [column.header, *(cell.plain for cell in cells)]
    widest = max(cell_len(text) for text in texts)
    if column.no_wrap:
        return widest, widest
    return max((cell_len(word) for text in texts for word in text.split()), default=1), widest


def _share_room(shown: list[int], needs: list[tuple[int, int]], room: int) -> dict[int, int]:
    widths = {index: needs[index][0] for index in shown}
    spare = room - sum(widths.values())
    wants = {index: needs[index][1] - needs[index][0] for index in shown}
    wanted = sum(wants.values())
    for index in shown:
        if wanted:
            widths[index] += min(wants[index], spare * wants[index] // wanted)
    return widths


MODEL_COLUMNS = [TableColumn("model", 9, no_wrap=True), TableColumn("policy", 3, no_wrap=True),
                 TableColumn("serving", 5, no_wrap=True), TableColumn("state", 6, no_wrap=True),
                 TableColumn("top flag", 4), TableColumn("verdict", 8)]


def models_table(summaries: list[dict[str, Any]], width: int) -> Table:
    rows = []
    for model in summaries:
        flag = model["flags"][0] if model["flags"] else None
        rows.append((
            literal(model["name"]),
            literal(model["mode"].upper(), style="bold magenta" if model["mode"] == "dynamic" else "bold blue"),
            literal(f"v{model['serving_version']}" if model["serving_version"] else "—"),
            literal(model["state"], style=STATE_STYLES.get(model["state"], "")),
            literal(f"{flag['kind']}: {flag['detail']}" if flag else "—"),
            literal(comparison_words(model["comparison"])),
        ))
    table = fitted_table("Models", MODEL_COLUMNS, rows, width)
    if summaries:
        table.caption = literal(f"verdict: {summaries[0]['verdict']}")
    return table


def comparison_words(comparison: dict[str, Any]) -> str:
    """A model's own comparison in a few words: what it calls for, then how dynamic training moves the metric.

    The change is what dynamic training does to the metric, signed as the metric itself moves ("RMSE -3.0%" is
    an error cut by 3%, "ROC AUC +2.0 pts" a gain), so an error metric does not read backwards; the verdict's
    gain is signed as better or worse.
    """
    gain, noise = comparison.get("gain"), comparison.get("noise")
    if gain is None or noise is None:
        return comparison.get("reason", "not enough labels yet")
    scoring = get_metric(comparison["metric"])
    change = gain if scoring.higher_is_better else -gain
    unit = "%" if scoring.relative else " pts"
    return f"{comparison['needs']}: {scoring.label} {change * 100:+.1f} ± {noise * 100:.1f}{unit} if retrained"


BATCH_COLUMNS = [TableColumn("file", 9, no_wrap=True), TableColumn("status", 8, no_wrap=True),
                 TableColumn("rows", 5, no_wrap=True), TableColumn("labeled", 4, no_wrap=True),
                 TableColumn("actions / reason", 6)]


def batches_table(batches: list[dict[str, Any]], total: int, width: int, limit: int = 20) -> Table:
    """The newest ``limit`` of ``batches`` (themselves the newest of ``total`` in the ledger)."""
    shown = batches[-limit:] if limit else []
    rows = []
    for batch in shown:
        style = {"quarantined": "red", "duplicate": "yellow"}.get(batch["status"], "")
        actions = exclusion_text(batch["exclusion"]) if batch.get("exclusion") else ", ".join(
            f"{m}: {r.get('action', 'none')}" for m, r in batch["results"].items())
        rows.append((literal(batch["file"]), literal(batch["status"], style=style), Text(f"{batch['rows']}"),
                     Text(_labeled_word(batch)), literal(batch["reason"] or actions)))
    return fitted_table(f"Batches (last {len(shown)} of {total})", BATCH_COLUMNS, rows, width)


def _labeled_word(batch: dict[str, Any]) -> str:
    """yes / no, or the share labelled so far of a batch whose labels come in label files."""
    coverage = batch.get("label_coverage")
    return f"{coverage:.0%}" if coverage is not None and 0 < coverage < 1 else ("yes" if batch["labeled"] else "no")


SNAPSHOT_COLUMNS = [TableColumn("model", 7, no_wrap=True), TableColumn("version", 9, no_wrap=True),
                    TableColumn("created", 3, no_wrap=True), TableColumn("trained on", 4),
                    TableColumn("holdout", 6, no_wrap=True), TableColumn("status", 8, no_wrap=True),
                    TableColumn("note", 5)]


def snapshots_table(rows: list[dict[str, Any]], width: int, title: str = "Snapshots") -> Table:
    cells = []
    for row in rows:
        metric = row["metric"]
        value = row["holdout_metrics"].get(metric) if metric else None
        trained = row["trained_on"] + (f", {row['rows']:,} rows" if row["rows"] else "")
        note = row["reason"] or ("; ".join(row["environment_vs_serving"]) if row["environment_vs_serving"] else "")
        note = "; ".join(filter(None, [taint_words(row["tainted_by"]), note]))
        cells.append((
            literal(row["model"]),
            literal(f"v{row['version']}", style="bold" if row["serving"] else ""),
            Text(time.strftime("%Y-%m-%d %H:%M", time.localtime(row["created"]))),
            literal(trained),
            Text(f"{metric} {value:.3f}" if value is not None else "—"),
            literal(row["status"], style=STATUS_STYLES.get(row["status"], "")),
            literal(note),
        ))
    return fitted_table(title, SNAPSHOT_COLUMNS, cells, width)


# --- views for the live monitor (plain data; the TUI draws them) ----------------------
