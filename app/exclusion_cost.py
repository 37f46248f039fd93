"""What an excluded batch cost: the batches after it replayed with it and without it.

``driftdeck exclude … --replay`` runs the folder's archived batches, in the
order they were ingested, through a fresh engine twice, each time in a
temporary folder of its own: once as they came, and once without the
excluded batch. For every later batch it reports which version would have
scored it and that version's primary metric on it, in both replays, and how
much better the metric is without the batch. The real state is only read
(its config and archive); both replays are deleted afterwards.

Only labeled batches are archived; unlabeled ones are left out of both
replays (they train nothing, so the versions that serve do not depend on
them) and are named in the report.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from app.config import CONFIG_NAME
from app.engine.archive import BatchArchive
from app.engine.monitor import Monitor
from app.metrics import get_metric
from app.cli_tables import TableColumn, fitted_table, literal
from app.workspace import Workspace

SETTLED_AGO_SECONDS = 3600  # replay files are dated back this far, so the engine reads them at once


@dataclass(frozen=True)
class ArchivedBatch:
    """An ingested batch as the archive keeps it: its file name, its SHA-256 and its rows' Parquet file."""

    name: str
    sha256: str
    path: Path


@dataclass(frozen=True)
class BatchCost:
    """One later batch and one model, in both replays.

    ``*_version``: the version that scored the batch in that replay (numbers
    are each replay's own); ``*_trained_on``: the files that version learned
    from, which tell whether the two are the same model. ``gain``: how much
    better ``metric`` is without the excluded batch (in the metric's own
    direction; positive: the batch cost this much), or None when either
    replay has no value.
    """

    file: str
    model: str
    metric: str | None
    with_version: int | None
    with_trained_on: list[str]
    with_value: float | None
    without_version: int | None
    without_trained_on: list[str]
    without_value: float | None
    gain: float | None

    @property
    def same_model(self) -> bool:
        return self.with_trained_on == self.without_trained_on


@dataclass(frozen=True)
class ReplayCost:
    """The replay of everything after ``file``, with it and without it."""

    file: str
    rows: list[BatchCost]
    not_archived: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "batches": [asdict(row) for row in self.rows], "not_archived": self.not_archived,
                "summary": self.summary()}

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per model: the later labeled batches compared, their mean gain, and how many another model scored."""
        models: dict[str, dict[str, Any]] = {}
        for row in self.rows:
            entry = models.setdefault(row.model, {"metric": row.metric, "batches": 0, "mean_gain": None,
                                                  "other_model": 0})
            entry["other_model"] += not row.same_model
            if row.gain is not None:
                total = (entry["mean_gain"] or 0.0) * entry["batches"] + row.gain
                entry["batches"] += 1
                entry["mean_gain"] = total / entry["batches"]
        return models


def replay_excluded(workspace: Workspace, file: str) -> ReplayCost | None:
    """The replay of the excluded batch ``file`` in ``workspace`` (opened read-only): every batch that
    reached the models, in ledger order, less those excluded before; None when ``file``'s rows were never
    archived (it was unlabeled and trained nothing)."""
    archive = BatchArchive(workspace.paths.batches, workspace.store, workspace.config)
    ledger = [record for record in workspace.store.files() if record.status in ("ingested", "excluded")]
    target = next(record for record in reversed(ledger) if record.name == file and record.status == "excluded")
    batches, not_archived = [], []
    for record in ledger:
        if record.status == "excluded" and record.id != target.id:
            continue  # excluded before: in neither replay
        if archive.path(record.sha256).is_file():
            batches.append(ArchivedBatch(record.name, record.sha256, archive.path(record.sha256)))
        elif record.id != target.id:
            not_archived.append(record.name)
    left_out = next((batch for batch in batches if batch.sha256 == target.sha256), None)
    return replay_cost(workspace.data_dir, batches, left_out, not_archived) if left_out else None


def replay_cost(data_dir: Path, batches: list[ArchivedBatch], left_out: ArchivedBatch,
                not_archived: list[str] = ()) -> ReplayCost:
    """Replay ``batches`` (ingestion order, ``left_out`` among them) with and without ``left_out``.

    The config is read from ``data_dir``; nothing under it is written.
    """
    config_text = (Path(data_dir) / CONFIG_NAME).read_text(encoding="utf-8")
    later = [batch.name for batch in batches[batches.index(left_out) + 1:]]
    with tempfile.TemporaryDirectory(prefix="driftdeck-replay-") as scratch:
        with_it = _replay(config_text, batches, Path(scratch) / "with")
        without = _replay(config_text, [batch for batch in batches if batch != left_out], Path(scratch) / "without")
    rows = []
    for name in later:
        for model, before in with_it.get(name, {}).items():
            after = without.get(name, {}).get(model, {})
            metric = before.get("metric") or after.get("metric")
            rows.append(BatchCost(
                name, model, metric, before.get("serving_version"), before.get("trained_on", []), _value(before, metric),
                after.get("serving_version"), after.get("trained_on", []), _value(after, metric),
                _gain(metric, _value(before, metric), _value(after, metric))))
    return ReplayCost(left_out.name, rows, list(not_archived))


def _replay(config_text: str, batches: list[ArchivedBatch], folder: Path) -> dict[str, dict[str, dict]]:
    """Run ``batches`` through a fresh engine in ``folder``; each batch's result per model, by original name."""
    data = folder / "data"
    data.mkdir(parents=True)
    (data / CONFIG_NAME).write_text(config_text, encoding="utf-8")
    original = {}
    settled = time.time() - SETTLED_AGO_SECONDS
    for index, batch in enumerate(batches):
        copy = data / f"{index:06d}.parquet"  # names in ingestion order: the engine reads them in name order
        shutil.copyfile(batch.path, copy)
        os.utime(copy, (settled, settled))
        original[copy.name] = batch.name
    monitor = Monitor(data, folder / "state")
    try:
        monitor.run_once()
        names = {record.id: original.get(record.name) for record in monitor.store.files("ingested")}
        results: dict[str, dict[str, dict]] = {}
        trained_on = {(record.model, record.version): [original.get(name, name) for name in record.data.get("files", [])]
                      for record in monitor.store.snapshots()}
        for file_id, model, result in monitor.store.results():
            if names.get(file_id) is not None:
                result["trained_on"] = trained_on.get((model, result.get("serving_version")), [])
                results.setdefault(names[file_id], {})[model] = result
    finally:
        monitor.close()
    return results


def _value(result: dict, metric: str | None) -> float | None:
    return (result.get("metrics") or {}).get(metric) if metric else None


def _gain(metric: str | None, with_value: float | None, without_value: float | None) -> float | None:
    if metric is None or with_value is None or without_value is None:
        return None
    return get_metric(metric).gain(with_value, without_value)


COST_COLUMNS = [TableColumn("batch", 9, no_wrap=True), TableColumn("model", 6, no_wrap=True),
                TableColumn("with it", 8, no_wrap=True), TableColumn("without it", 8, no_wrap=True),
                TableColumn("gain without", 7, no_wrap=True)]


def cost_table(cost: ReplayCost, width: int) -> Table:
    """The replay as a table: per later batch and model, version and metric with and without the batch."""
    rows = []
    for row in cost.rows:
        rows.append((literal(row.file), literal(row.model), literal(_cell(row.with_version, row.with_value)),
                     literal(_cell(row.without_version, row.without_value)),
                     literal("—" if row.gain is None else f"{row.gain:+.4f}",
                             style="" if row.gain is None or abs(row.gain) < 1e-12 else
                             "green" if row.gain > 0 else "red")))
    table = fitted_table(f"Without {cost.file}: each later batch's primary metric, replayed with and without it",
                         COST_COLUMNS, rows, width)
    lines = []
    for model, entry in cost.summary().items():
        mean = "—" if entry["mean_gain"] is None else f"{entry['mean_gain']:+.4f}"
        lines.append(f"{model} ({entry['metric'] or 'no metric'}): {mean} on average over {entry['batches']} labeled"
                     f" batch(es) without it; another model scored {entry['other_model']} of them")
    if cost.not_archived:
        lines.append(f"not archived (unlabeled), left out of both replays: {', '.join(cost.not_archived)}")
    table.caption = Text("\n").join(literal(line) for line in lines) if lines else None
    return table


def _cell(version: int | None, value: float | None) -> str:
    """The version that scored a batch and its metric on it: "v27 0.7782"."""
    served = f"v{version}" if version is not None else "nothing"
    return served if value is None else f"{served} {value:.4f}"
