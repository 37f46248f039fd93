"""Read-only views of the store, shared by ``status``/``snapshots`` and the TUI.

Plain dicts for ``--json`` and plain functions that build Rich tables from
them, so the CLI and the TUI show the same numbers the same way. Every text
that comes from data (file names, columns, categories, reasons) is wrapped in
``rich.text.Text`` so markup in it is shown literally, never interpreted.
"""

from __future__ import annotations

import time
from typing import Any

from rich.table import Table
from rich.text import Text

from app.config import Config
from app.environment import environment_diff, environment_record
from app.store import Store

FEATURE_DRIFT_KEYS = ("psi", "ks", "ks_pvalue", "js", "wasserstein", "chi2_pvalue", "missing_change",
                      "out_of_range_share", "unseen_share", "status")
RESULT_KEYS = ("serving_version", "labeled", "metric", "metrics", "baseline_metrics", "shadow_metrics",
               "estimated_accuracy", "prediction_psi", "drifted_features", "multivariate_auc", "multivariate_top",
               "flags", "action", "action_detail", "candidate_version", "train_seconds", "quality_issues", "trainable")
STATUS_STYLES = {"serving": "bold green", "rejected": "red", "failed": "bold red", "rolled_back": "yellow",
                 "retired": "dim", "candidate": "cyan"}
STATE_STYLES = {"healthy": "green", "watch": "yellow", "stale": "bold red", "training": "cyan", "untrained": "dim"}


def model_summaries(store: Store, config: Config, training: dict | None = None) -> list[dict[str, Any]]:
    """One dict per configured model: name, mode, serving version, state, flags and verdict."""
    summaries = []
    for model in config.models:
        state = store.model_state(model.name)
        serving = store.serving_version(model.name)
        verdict = state.get("verdict") or {}
        current_state = state.get("state", "untrained" if serving is None else "healthy")
        if training and training.get("model") == model.name:
            current_state = "training"
        summaries.append({
            "name": model.name,
            "mode": model.mode,
            "estimator": model.estimator,
            "serving_version": serving,
            "state": current_state if serving is not None or current_state == "training" else "untrained",
            "flags": state.get("flags", []),
            "verdict": verdict.get("text", "no labeled batches compared yet"),
            "verdict_detail": verdict,
            "snapshots": len(store.snapshots(model.name)),
        })
    return summaries


def status_report(store: Store, config: Config, training: dict | None = None, batch_limit: int | None = None) -> dict[str, Any]:
    """The object ``status --json`` prints: ``models`` and ``batches`` (stable keys)."""
    results: dict[int, dict[str, Any]] = {}
    for file_id, model, data in store.results():
        results.setdefault(file_id, {})[model] = _result_view(data)
    batches = [
        {
            "file": record.name,
            "sha256": record.sha256,
            "status": record.status,
            "reason": record.reason,
            "rows": record.rows,
            "labeled": record.labeled,
            "seen_at": record.seen_at,
            "results": results.get(record.id, {}),
        }
        for record in store.files(limit=batch_limit)
    ]
    counts = store.counts()
    return {
        "data_dir": str(config.data_dir),
        "counts": {status: counts.get(status, 0) for status in ("ingested", "quarantined", "duplicate")},
        "models": model_summaries(store, config, training),
        "batches": batches,
    }


def _result_view(data: dict[str, Any]) -> dict[str, Any]:
    view = {key: data.get(key) for key in RESULT_KEYS if key in data}
    view.setdefault("action", "none")
    view["feature_drift"] = {
        column: {key: value.get(key) for key in FEATURE_DRIFT_KEYS if key in value}
        for column, value in data.get("feature_drift", {}).items()
    }
    return view


def snapshot_rows(store: Store, model: str) -> list[dict[str, Any]]:
    """Every snapshot of ``model``, oldest first, with its environment difference from the serving one."""
    serving = store.serving_version(model)
    records = store.snapshots(model)
    serving_env = next((r.data.get("environment", {}) for r in records if r.version == serving), {})
    rows = []
    for record in records:
        environment = record.data.get("environment", {})
        rows.append({
            "model": model,
            "version": record.version,
            "parent": record.parent,
            "created": record.created,
            "status": record.status,
            "reason": record.reason,
            "serving": record.version == serving,
            "files": record.data.get("files", []),
            "rows": record.data.get("rows"),
            "metric": record.data.get("metric"),
            "holdout_metrics": record.data.get("holdout_metrics", {}),
            "sha256": record.sha256,
            "environment": environment,
            "config_hash": record.data.get("config_hash"),
            "seed": record.data.get("seed"),
            "environment_vs_serving": environment_diff(serving_env, environment) if environment and serving_env else [],
            "environment_vs_now": environment_diff(environment, environment_record()) if environment else [],
        })
    return rows


def serving_history_rows(store: Store, model: str) -> list[dict[str, Any]]:
    return [
        {"version": c.version, "time": c.time, "reason": c.reason, "detail": c.detail}
        for c in store.serving_history(model)
    ]


# --- Rich tables ----------------------------------------------------------------------


def models_table(summaries: list[dict[str, Any]]) -> Table:
    table = Table(title="Models", expand=True)
    for column in ("model", "policy", "serving", "state", "top flag", "verdict"):
        table.add_column(column, overflow="fold")
    for model in summaries:
        flag = model["flags"][0] if model["flags"] else None
        table.add_row(
            Text(model["name"]),
            Text(model["mode"].upper(), style="bold magenta" if model["mode"] == "dynamic" else "bold blue"),
            Text(f"v{model['serving_version']}" if model["serving_version"] else "—"),
            Text(model["state"], style=STATE_STYLES.get(model["state"], "")),
            Text(f"{flag['kind']}: {flag['detail']}" if flag else "—"),
            Text(model["verdict"]),
        )
    return table


def batches_table(batches: list[dict[str, Any]], limit: int = 20) -> Table:
    table = Table(title=f"Batches (last {min(limit, len(batches))} of {len(batches)})", expand=True)
    for column in ("file", "status", "rows", "labeled", "actions / reason"):
        table.add_column(column, overflow="fold")
    for batch in batches[-limit:]:
        style = {"quarantined": "red", "duplicate": "yellow"}.get(batch["status"], "")
        actions = ", ".join(f"{m}: {r.get('action', 'none')}" for m, r in batch["results"].items())
        table.add_row(Text(batch["file"]), Text(batch["status"], style=style), str(batch["rows"]),
                      "yes" if batch["labeled"] else "no", Text(batch["reason"] or actions))
    return table


def snapshots_table(rows: list[dict[str, Any]], title: str = "Snapshots") -> Table:
    table = Table(title=title, expand=True)
    for column in ("model", "version", "created", "trained on", "holdout", "status", "note"):
        table.add_column(column, overflow="fold")
    for row in rows:
        metric = row["metric"]
        value = row["holdout_metrics"].get(metric) if metric else None
        files = row["files"]
        trained = f"{len(files)} file(s), {row['rows']:,} rows" if row["rows"] else f"{len(files)} file(s)"
        note = row["reason"] or ("; ".join(row["environment_vs_serving"]) if row["environment_vs_serving"] else "")
        table.add_row(
            Text(row["model"]),
            Text(f"v{row['version']}", style="bold" if row["serving"] else ""),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["created"])),
            Text(trained),
            f"{metric} {value:.3f}" if value is not None else "—",
            Text(row["status"], style=STATUS_STYLES.get(row["status"], "")),
            Text(note),
        )
    return table
