"""Read-only views of the store, shared by ``status``/``snapshots`` and the TUI.

Plain dicts for ``--json``, the CLI's tables (:mod:`app.cli_tables`) and the
TUI, so every surface shows the same numbers.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from app.config import OTHER_CONFIG, Config, LabelsConfig, training_config_changes
from app.engine.records import BatchResult
from app.environment import environment_diff, environment_record
from app.lineage import excluded_batches, taint_view, taints
from app.label_health import track_record
from app.label_ledger import batch_labels
from app.label_report import batch_label_view, label_summary, lag_view
from app.store import ModelState, Store
from app.verdict import stream_verdict

FEATURE_DRIFT_KEYS = ("psi", "ks", "ks_pvalue", "js", "wasserstein", "chi2_pvalue", "missing_change",
                      "out_of_range_share", "unseen_share", "status")
RESULT_KEYS = ("serving_version", "labeled", "metric", "metrics", "baseline_metrics", "shadow_metrics",
               "estimate", "estimate_error", "prediction_psi", "drifted_features", "multivariate_auc", "multivariate_top",
               "flags", "action", "action_detail", "candidate_version", "train_seconds", "quality_issues", "trainable")
Results = list[tuple[int, str, dict[str, Any]]]  # (file_id, model, result) as Store.results gives them, oldest first


def model_summaries(store: Store, config: Config, training: dict | None = None,
                    verdict: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One dict per configured model: name, mode, serving version, state, flags, its own comparison
    of the two policies (``comparison``) and the stream's one verdict (``verdict``, ``verdict_detail``)."""
    summaries = []
    verdict = verdict or stream_verdict(store, config).to_dict()
    for model in config.models:
        state = store.model_state(model.name) or ModelState()
        serving = store.serving_version(model.name)
        current_state = state.state or ("untrained" if serving is None else "healthy")
        if (note := _config_note(store, config, model.name, serving)) is not None:
            current_state = OTHER_CONFIG
            state = replace(state, flags=[note] + [f for f in state.flags if f["kind"] != "config_changed"])
        if training and training.get("model") == model.name:
            current_state = "training"
        summaries.append({
            "name": model.name,
            "mode": model.mode,
            "estimator": model.estimator,
            "serving_version": serving,
            "state": current_state if serving is not None or current_state == "training" else "untrained",
            "flags": state.flags,
            "comparison": (state.verdict or {}) if serving is not None else {
                "needs": "undecided", "reason": "no model serves yet", "text": "no model serves yet: nothing to compare"},
            "verdict": verdict["text"],
            "verdict_detail": verdict,
            "snapshots": store.snapshot_count(model.name),
        })
    return summaries


def _config_note(store: Store, config: Config, model: str, serving: int | None) -> dict[str, str] | None:
    """A ``config_changed`` flag when the serving snapshot was trained for another config, else None."""
    record = store.snapshot(model, serving) if serving is not None else None
    changes = training_config_changes(record.data.get("config"), config) if record is not None else []
    if not changes:
        return None
    return {"kind": "config_changed", "detail": f"v{serving} was trained on another config ({'; '.join(changes)}):"
                                                f" not scored; retrain it (r, or driftdeck retrain --model {model})"}


def status_report(store: Store, config: Config, training: dict | None = None, batch_limit: int | None = None) -> dict[str, Any]:
    """The object ``status --json`` prints: the stream's ``verdict``, ``models`` and ``batches`` (stable keys)."""
    results: dict[int, dict[str, Any]] = {}
    for file_id, model, data in store.results():
        results.setdefault(file_id, {})[model] = _result_view(BatchResult.from_dict(data))
    late, exclusions = batch_labels(store.read), store.exclusions()
    batches = [
        {
            "file": record.name,
            "sha256": record.sha256,
            "status": record.status,
            "reason": record.reason,
            "rows": record.rows,
            "labeled": record.labeled,
            **batch_label_view(record, late.get(record.id), config.labels.labeled_share),
            "seen_at": record.seen_at,
            "exclusion": exclusions.get(record.id),
            "results": results.get(record.id, {}),
        }
        for record in store.files(limit=batch_limit)
    ]
    counts = store.counts()
    verdict = stream_verdict(store, config).to_dict()
    return {
        "data_dir": str(config.data_dir),
        "counts": {status: counts.get(status, 0) for status in ("ingested", "excluded", "quarantined", "duplicate", "skipped")},
        "verdict": verdict,
        "models": model_summaries(store, config, training, verdict),
        "labels": label_summary(store, config),
        "batches": batches,
    }


def _result_view(result: BatchResult) -> dict[str, Any]:
    stored = result.to_dict()
    view = {key: stored[key] for key in RESULT_KEYS if key in stored}
    view["feature_drift"] = {
        column: {key: value.get(key) for key in FEATURE_DRIFT_KEYS if key in value}
        for column, value in (result.feature_drift or {}).items()
    }
    return view


def trained_on_text(files: list[str]) -> str:
    """The batch files a snapshot was trained on, in a few words: the first … the last, and how many."""
    if len(files) <= 2:
        return ", ".join(files) or "no files"
    return f"{files[0]} … {files[-1]} ({len(files)} files)"


def snapshot_rows(store: Store, model: str) -> list[dict[str, Any]]:
    """Every snapshot of ``model``, oldest first, with its environment difference from the serving one.

    ``trained_on`` names the training files in a few words (:func:`trained_on_text`).
    """
    serving = store.serving_version(model)
    records = store.snapshots(model, whole=False)
    serving_env = next((r.data.get("environment", {}) for r in records if r.version == serving), {})
    tainted = taints(records, excluded_batches(store))
    rows = []
    for record in records:
        environment = record.data.get("environment", {})
        rows.append({
            "model": model,
            "version": record.version,
            "parent": record.parent,
            "created": record.created,
            "status": record.status,
            # A re-promoted snapshot keeps the reason it once lost its place for; it is no reason now.
            "reason": None if record.version == serving else record.reason,
            "serving": record.version == serving,
            "files": record.data.get("files", []),
            "trained_on": trained_on_text(record.data.get("files", [])),
            "rows": record.data.get("rows"),
            "metric": record.data.get("metric"),
            "holdout_metrics": record.data.get("holdout_metrics", {}),
            "holdout": record.data.get("holdout_metrics", {}).get(record.data.get("metric")),
            "gate": record.data.get("gate", ""),
            **taint_view(tainted.get(record.version)),
            "usable": bool(record.path),
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


DRIFT_STATUS_ORDER = {"drifted": 0, "watch": 1, "stable": 2}
DISPLAY_GROUPS = 10
TOP_CATEGORIES = 6
UNSEEN_LABEL = "(unseen)"
OTHER_LABEL = "(other)"


def dashboard_counts(store: Store, labels: LabelsConfig = LabelsConfig()) -> dict[str, Any]:
    """Ledger totals for the header: counts by status, when the newest file was seen (epoch s or None), and
    ``label_lag``: the oldest batch still waiting for labels (None when none waits; see :func:`label_summary`)."""
    counts = store.counts()
    newest = store.files(limit=1)
    return {
        "ingested": counts.get("ingested", 0),
        "excluded": counts.get("excluded", 0),
        "quarantined": counts.get("quarantined", 0),
        "duplicate": counts.get("duplicate", 0),
        "last_seen_at": newest[0].seen_at if newest else None,
        "label_lag": lag_view(store, labels),
    }


def feature_rows(store: Store, model: str, history: int = 24, recent: Results | None = None) -> list[dict[str, Any]]:
    """The latest batch's drift of each feature of ``model``, worst first.

    Each row: feature, kind, psi, ks, js, missing_change, status, and
    ``psi_history`` and ``status_history`` (PSI and drift status in each of the
    last ``history`` batches, oldest first, None where the batch lacked the
    column). Empty before the first batch. ``recent``: ``model``'s newest results, when already read.
    """
    recent = store.results(model, limit=history) if recent is None else recent[-history:]
    results = [BatchResult.from_dict(data).feature_drift or {} for _, _, data in recent]
    if not results:
        return []
    rows = []
    for column, drift in results[-1].items():
        rows.append({
            "feature": column,
            "kind": drift.get("kind"),
            "psi": drift.get("psi"),
            "ks": drift.get("ks"),
            "js": drift.get("js"),
            "missing_change": drift.get("missing_change"),
            "out_of_range_share": drift.get("out_of_range_share"),
            "unseen_share": drift.get("unseen_share"),
            "status": drift.get("status", "stable"),
            "psi_history": [drift_of.get(column, {}).get("psi") for drift_of in results],
            "status_history": [drift_of.get(column, {}).get("status") for drift_of in results],
        })
    return sorted(rows, key=lambda row: (DRIFT_STATUS_ORDER.get(row["status"], 3), -(row["psi"] or 0.0)))


def reference_profile(store: Store, model: str, version: int | None) -> dict[str, Any] | None:
    """The profile drift is measured against: snapshot ``version``'s training data, or,
    while no version serves, the folder's first batch (as the monitor does)."""
    if version is not None:
        record = store.snapshot(model, version)
        return record.data.get("profile") if record else None
    return store.folder_state().reference


def feature_distributions(store: Store, model: str,
                          reference: dict[str, Any] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Reference vs latest batch, per feature of ``model`` (see :func:`distribution_rows`).

    ``reference`` is the profile the latest batch was measured against (read
    from the store when not given). Empty before the first batch.
    """
    current = (store.model_state(model) or ModelState()).current_profile
    latest = store.results(model, limit=1)
    if not current or not latest:
        return {}
    if reference is None:
        reference = reference_profile(store, model, BatchResult.from_dict(latest[0][2]).serving_version)
    if reference is None:
        return {}
    return {
        column: distribution_rows(reference["columns"][column], current["columns"][column])
        for column in current["columns"]
        if column in reference["columns"]
    }


def distribution_rows(reference: dict[str, Any], current: dict[str, Any],
                      groups: int = DISPLAY_GROUPS) -> list[dict[str, Any]]:
    """Shares of the reference and the current batch side by side, one dict per display bin.

    ``reference`` and ``current`` are one column's profile dicts on the same
    edges. Numeric: the reference's deciles, the very groups PSI compares
    (about 10% of the reference each; the outer two also hold values beyond the
    reference's range); each row has ``label`` and ``low``/``high`` (None at the
    open ends). Categorical: the reference's most common categories, then
    "(other)" and "(unseen)" (categories the reference never had). Shares are
    fractions of the non-missing rows.
    """
    if reference["kind"] == "numeric":
        return _numeric_distribution(reference, current, groups)
    return _categorical_distribution(reference, current)


def _numeric_distribution(reference: dict[str, Any], current: dict[str, Any], groups: int) -> list[dict[str, Any]]:
    import numpy as np

    from app.stats.calibration import quantile_groups

    edges = reference["edges"]
    reference_counts = np.asarray(reference["counts"], dtype=np.float64)
    current_counts = np.asarray(current["counts"], dtype=np.float64)
    if not edges or len(current_counts) != len(reference_counts):
        return []
    cuts = quantile_groups(reference_counts, groups)
    starts = np.concatenate(([0], cuts)).astype(np.intp)
    grouped = [np.add.reduceat(counts, starts) for counts in (reference_counts, current_counts)]
    shares = [counts / counts.sum() if counts.sum() else counts for counts in grouped]
    # A group starting at slot s begins at edge s - 1 (slot 0 lies below the first edge).
    bounds = [None] + [float(edges[cut - 1]) for cut in cuts] + [None]
    last_slot = len(reference_counts) - 1
    rows = []
    for index, start in enumerate(starts):
        low, high = bounds[index], bounds[index + 1]
        label = _range_label(low, high)
        if index == len(starts) - 1 and start == last_slot:  # only the values above the reference's range
            label = f"> {short_number(float(edges[-1]))}"
        rows.append({
            "label": label,
            "low": low,
            "high": high,
            "reference": float(shares[0][index]),
            "current": float(shares[1][index]),
        })
    return rows


def _range_label(low: float | None, high: float | None) -> str:
    if low is None and high is None:
        return "all"
    if low is None:
        return f"< {short_number(high)}"
    if high is None:
        return f"≥ {short_number(low)}"
    if short_number(low) == short_number(high):
        return short_number(low)
    return f"{short_number(low)}–{short_number(high)}"


SI_SUFFIXES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def short_number(value: float) -> str:
    """``value`` in at most 9 characters: 4 significant digits (1234, 32.86k, 8.212M, 0.001234), or 3 in
    scientific notation for the very small and the very large (-1.23e-07)."""
    plain = f"{value:.4g}"
    if "e" not in plain:
        return plain
    magnitude = abs(value)
    scale, suffix = next(((scale, suffix) for scale, suffix in SI_SUFFIXES if magnitude >= scale), (0.0, ""))
    if scale and magnitude < 1e15:
        return f"{value / scale:.4g}{suffix}"
    return f"{value:.3g}"


def _categorical_distribution(reference: dict[str, Any], current: dict[str, Any],
                              top: int = TOP_CATEGORIES) -> list[dict[str, Any]]:
    reference_counts, current_counts = reference["counts"], current["counts"]
    reference_total = sum(reference_counts.values()) or 1
    current_total = sum(current_counts.values()) or 1
    ranked = sorted(reference_counts, key=lambda name: (-reference_counts[name], name))
    shown, rest = ranked[:top], ranked[top:]
    rows = [
        {"label": name, "reference": reference_counts[name] / reference_total,
         "current": current_counts.get(name, 0) / current_total}
        for name in shown
    ]
    if rest:
        rows.append({"label": OTHER_LABEL, "reference": sum(reference_counts[n] for n in rest) / reference_total,
                     "current": sum(current_counts.get(n, 0) for n in rest) / current_total})
    unseen = sum(count for name, count in current_counts.items() if name not in reference_counts)
    if unseen:
        rows.append({"label": UNSEEN_LABEL, "reference": 0.0, "current": unseen / current_total})
    return rows


def metric_history(store: Store, model: str, limit: int = 60, recent: Results | None = None) -> list[dict[str, Any]]:
    """The primary metric of ``model`` per batch, oldest first: what the health chart plots.

    Each row: file, seen_at, labeled, metric (its name), served / shadow /
    baseline (that metric for the serving model, the other policy's shadow and
    the naive baseline; None without labels), estimate (that metric expected
    from the probabilities, see :mod:`app.label_health`) and estimate_error
    (estimate minus served, once labelled), serving_version, action,
    candidate_version, and ``pointer``:
    "rollback"/"manual" when someone moved the serving pointer by hand after
    this batch and before the next one (else None). ``recent``: ``model``'s newest results, when already read.
    """
    rows = []
    for file_id, _, data in store.results(model, limit=limit) if recent is None else recent[-limit:]:
        record, result = store.file(file_id), BatchResult.from_dict(data)
        metric = result.metric
        rows.append({
            "file": record.name,
            "seen_at": record.seen_at,
            "labeled": result.labeled,
            "metric": metric,
            "served": (result.metrics or {}).get(metric) if metric else None,
            "shadow": (result.shadow_metrics or {}).get(metric) if metric else None,
            "baseline": (result.baseline_metrics or {}).get(metric) if metric else None,
            "estimate": (result.estimate or {}).get("value"),
            "estimate_error": result.estimate_error,
            "prediction_psi": result.prediction_psi,
            "serving_version": result.serving_version,
            "action": result.action,
            "candidate_version": result.candidate_version,
            "pointer": None,
        })
    for change in store.serving_history(model):
        if change.reason not in ("rollback", "manual"):
            continue
        before = [row for row in rows if row["seen_at"] <= change.time]
        if before:
            before[-1]["pointer"] = change.reason
    return rows


def latest_result(store: Store, model: str, track_batches: int = 10, lookback: int = 60,
                  recent: Results | None = None) -> dict[str, Any] | None:
    """The newest batch's result for ``model`` with its file name under ``file`` (None before any), and
    ``track_record``: the mean absolute error of the estimates of the last ``track_batches`` labelled batches
    among the newest ``lookback`` (``recent``: ``model``'s newest results, when already read)."""
    recent = store.results(model, limit=lookback) if recent is None else recent[-lookback:]
    if not recent:
        return None
    file_id, _, data = recent[-1]
    return {**data, "file": store.file(file_id).name,
            "track_record": track_record([result for _, _, result in recent], track_batches)}
