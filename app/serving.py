"""What the serving version predicts, and how programs outside driftdeck get it.

- :func:`predictions_frame` is what every prediction file holds: the row, the
  id column if the config names one, the prediction, class probabilities, the
  model version that made it, and when.
- :func:`predict_file` scores any batch file with the serving (or a given)
  version, after the same validation the watcher applies.
- :func:`export_model` writes a model file, its model card and its reference
  profile to a folder, for another team or another system.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from app.config import Config
from app.engine.records import BatchResult
from app.events import displayable
from app.fsutil import atomic_write_bytes, atomic_write_text
from app.models import Prediction, predict
from app.names import derived_name
from app.snapshots import TRUSTED_TYPES
from app.store import ModelState

OUTPUT_FORMATS = (".csv", ".parquet")


def predictions_frame(prediction: Prediction, frame: pd.DataFrame, version: int, id_column: str | None) -> pd.DataFrame:
    """One row per input row: ``row`` (0-based position in the batch), the id, ``prediction``,
    ``proba_<class>`` per class (classification), ``model_version`` and ``predicted_at`` (UTC)."""
    columns: dict[str, Any] = {"row": range(len(frame))}
    if id_column and id_column in frame:
        columns[id_column] = frame[id_column].to_numpy()
    columns["prediction"] = prediction.labels
    if prediction.proba is not None:
        for index, label in enumerate(prediction.classes):
            columns[f"proba_{label}"] = prediction.proba[:, index]
    columns["model_version"] = version
    columns["predicted_at"] = pd.Timestamp.now(tz="UTC")
    return pd.DataFrame(columns)


def predictions_path(root: Path, model: str, batch_name: str, sha256: str) -> Path:
    """``<root>/<model>/<first 12 hex of the batch's SHA-256>-<batch file name>.parquet``: two batches never share
    one (``x.csv`` and ``x.parquet``; a name that held other content before), and any name fits (see :mod:`app.names`)."""
    return root / model / derived_name(sha256[:12], batch_name, ".parquet")


def write_predictions(path: Path, predictions: pd.DataFrame) -> None:
    """Write atomically: a reader sees the previous file or this one, never half of it."""
    atomic_write_bytes(path, parquet_bytes(predictions))


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    """``frame`` as a Parquet file (its index left out), ready to write.

    Only text columns are dictionary-encoded: Parquet's default tries it on
    every column, and on float columns, whose values rarely repeat, that
    attempt takes three quarters of the write and saves nothing.
    """
    table = pa.Table.from_pandas(frame, preserve_index=False)
    text = [field.name for field in table.schema if pa.types.is_string(field.type) or pa.types.is_large_string(field.type)]
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer, use_dictionary=text)
    return buffer.getvalue().to_pybytes()


def write_table(predictions: pd.DataFrame, out: Path | None) -> str | None:
    """CSV or Parquet by ``out``'s extension; CSV text returned when ``out`` is None (for stdout)."""
    if out is None:
        return predictions.to_csv(index=False)
    suffix = Path(out).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise ValueError(f"{out}: the output must end in .csv or .parquet")
    if suffix == ".csv":
        atomic_write_text(Path(out), predictions.to_csv(index=False))
    else:
        write_predictions(Path(out), predictions)
    return None


def score(model: Any, frame: pd.DataFrame, version: int, config: Config) -> pd.DataFrame:
    return predictions_frame(predict(model, frame, config.task), frame, version, config.id_column)


def model_card(config: Config, model: str, record, serving_version: int | None, recent: list[BatchResult],
               state: ModelState | None) -> dict[str, Any]:
    """Everything someone needs to use or audit one snapshot, as a JSON-ready dict."""
    model_config = config.model(model)
    data = record.data
    latest = recent[-1] if recent else BatchResult()
    return {
        "model": model,
        "version": record.version,
        "serving": record.version == serving_version,
        "status": record.status,
        "sha256": record.sha256,
        "predicts": {"target": config.target, "task": config.task, "classes": data.get("classes")},
        "features": dict(config.schema),
        "estimator": data.get("estimator"),
        "policy": model_config.mode,
        "trained_on": {"files": data.get("files", []), "rows": data.get("rows")},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(record.created)),
        "holdout_metrics": data.get("holdout_metrics", {}),
        "recent_metrics": [result.metrics for result in recent if result.metrics][-5:],
        "drift_at_export": {
            "drifted_features": latest.drifted_features or [],
            "multivariate_auc": latest.multivariate_auc,
            "flags": state.flags if state is not None else [],
        },
        "verdict": (state.verdict or {}).get("text") if state is not None else None,
        "environment": data.get("environment", {}),
        "config_hash": data.get("config_hash"),
        "seed": data.get("seed"),
        "trusted_types": list(TRUSTED_TYPES),
    }


def card_markdown(card: dict[str, Any]) -> str:
    lines = [
        f"# Model card: {card['model']} v{card['version']}",
        "",
        f"- Predicts `{card['predicts']['target']}` ({card['predicts']['task']})"
        + (f", classes {', '.join(map(str, card['predicts']['classes']))}" if card["predicts"]["classes"] else ""),
        f"- Estimator: {card['estimator']}; policy: {card['policy']}; status: {card['status']}"
        + (" (serving)" if card["serving"] else ""),
        f"- Trained on {card['trained_on']['rows']} rows from: {displayable(', '.join(card['trained_on']['files']))}",
        f"- Created {card['created']}; SHA-256 `{card['sha256']}`",
        f"- Verdict: {card['verdict']}",
        "",
        "## Features",
        "",
        "| column | type |",
        "|---|---|",
        *[f"| {column} | {kind} |" for column, kind in card["features"].items()],
        "",
        "## Holdout metrics",
        "",
        *[f"- {name}: {value:.4f}" for name, value in card["holdout_metrics"].items() if value is not None],
        "",
        "## Drift at export",
        "",
        f"- Drifted features: {', '.join(card['drift_at_export']['drifted_features']) or 'none'}",
        f"- Multivariate drift (domain classifier ROC AUC): {card['drift_at_export']['multivariate_auc']}",
        *[f"- {flag['kind']}: {flag['detail']}" for flag in card["drift_at_export"]["flags"]],
        "",
        "## Loading it",
        "",
        "```python",
        "import skops.io",
        f"model = skops.io.load('{card['model']}.skops', trusted={card['trusted_types']!r})",
        "```",
        "Categorical columns must be strings (see `app.models.prepare_features`).",
        "",
    ]
    return "\n".join(lines)


def export_files(out: Path, model: str, model_bytes: bytes, card: dict[str, Any], profile: dict[str, Any]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = [out / f"{model}.skops", out / f"{model}.card.json", out / f"{model}.card.md", out / f"{model}.profile.json"]
    atomic_write_bytes(written[0], model_bytes)
    atomic_write_text(written[1], json.dumps(card, indent=2, default=str))
    atomic_write_text(written[2], card_markdown(card))
    atomic_write_text(written[3], json.dumps(profile, indent=2))
    return written
