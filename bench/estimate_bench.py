"""Benchmark: the ROC AUC estimated before labels come, against the value the labels then show, beside NannyML.

Usage (from the repository root):

    .venv/bin/python bench/estimate_bench.py                               # peers from bench/.peers-venv
    .venv/bin/python bench/estimate_bench.py --peers-venv /path/to/venv
    .venv/bin/python bench/estimate_bench.py --peers-venv none             # driftdeck alone

Two streams, each scored by one fitted model, the same probabilities for both tools:

- ``late_labels``: the sample scenario. A logistic regression (driftdeck's
  pipeline) is fitted on the six labelled weeks of history, the newest 20% of
  their rows held out; the holdout is the reference both tools calibrate on.
  Each later week's visits are scored and its sales (the labels) give the
  realised ROC AUC. Holiday buying changes the rules from 2026-01-26: no
  estimate from probabilities can see that coming.
- ``synthetic``: a logistic stream of ``--weeks`` batches of ``--rows`` rows
  whose features drift (mean shift growing batch by batch) while the relation
  to the label holds, then, for the last quarter, the relation changes.

driftdeck's estimate is :func:`app.stats.cbpe.estimate_metrics` with the
isotonic calibration fitted on the reference; NannyML's is ``nannyml.CBPE``
(binary, ``roc_auc``, one chunk per batch) fitted on the same reference, run in
the peers' virtualenv as a subprocess (NannyML brings about 60 packages, not
driftdeck dependencies). Printed per batch: realised, each estimate and its
error; then each tool's mean absolute error, before and after the change of
rules. Every process runs with one thread.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")
os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DEFAULT_PEERS_VENV = BENCH / ".peers-venv"
HOLDOUT_SHARE = 0.2


# --- the streams (driftdeck's interpreter) ----------------------------------------------------


def late_labels_stream() -> tuple[pd.DataFrame, list[tuple[str, pd.DataFrame]], str]:
    """(reference rows, [(week, rows)], first week of new rules): ``y``, ``proba``, ``pred`` columns."""
    sys.path.insert(0, str(ROOT))
    from app.config import load_config
    from app.label_files import is_label_file
    from app.models import build_pipeline, predict
    from app.replay import batch_files

    folder = ROOT / "sample_data" / "late_labels"
    config = load_config(folder)
    files = batch_files(folder)
    visits = [path for path in files if not is_label_file(path.name, config)]
    sales = pd.concat([_read(path) for path in files if is_label_file(path.name, config)])
    labels = dict(zip(sales["visitor_id"], sales["bought_flowers"]))
    history = pd.concat([_read(path) for path in visits if "bought_flowers" in _read(path).columns])
    history = history.sort_values("date", kind="stable")
    cut = int(len(history) * (1 - HOLDOUT_SHARE))
    model = build_pipeline("classification", "logistic_regression", {}, config.schema)
    model.fit(history.iloc[:cut][config.features], history.iloc[:cut]["bought_flowers"].astype(str))

    def scored(frame: pd.DataFrame, truth) -> pd.DataFrame:
        prediction = predict(model, frame[config.features], "classification")
        positive = list(map(str, prediction.classes)).index("1")
        proba = prediction.proba[:, positive]
        return pd.DataFrame({"y": np.asarray(truth).astype(int), "proba": proba, "pred": (proba >= 0.5).astype(int)})

    reference = scored(history.iloc[cut:], history.iloc[cut:]["bought_flowers"])
    weeks = []
    for path in visits:
        frame = _read(path)
        if "bought_flowers" not in frame.columns:
            weeks.append((path.name[:10], scored(frame, frame["visitor_id"].map(labels))))
    return reference, weeks, "2026-01-26"


def synthetic_stream(weeks: int, rows: int, seed: int = 3) -> tuple[pd.DataFrame, list[tuple[str, pd.DataFrame]], str]:
    """A logistic stream: covariate drift that grows week by week, then new rules for the last quarter."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    weights = np.array([1.2, -0.8, 0.5, 0.0])
    changed = np.array([-0.4, -0.8, 0.5, 1.0])
    change_week = weeks - weeks // 4

    def batch(shift: float, rule: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        features = rng.normal(0, 1, (n, 4)) + shift * np.array([1.0, 0.5, 0.0, -0.5])
        return features, (rng.random(n) < 1 / (1 + np.exp(-(features @ rule - 0.2)))).astype(int)

    train, train_y = batch(0.0, weights, 4 * rows)
    model = LogisticRegression().fit(train, train_y)

    def scored(features: np.ndarray, truth: np.ndarray) -> pd.DataFrame:
        proba = model.predict_proba(features)[:, 1]
        return pd.DataFrame({"y": truth, "proba": proba, "pred": (proba >= 0.5).astype(int)})

    reference = scored(*batch(0.0, weights, rows))
    stream = [(f"week {week + 1:02d}", scored(*batch(0.08 * week, changed if week >= change_week else weights, rows)))
              for week in range(weeks)]
    return reference, stream, f"week {change_week + 1:02d}"


def _read(path: Path) -> pd.DataFrame:
    name = path.name
    if name.endswith(".parquet"):
        return pd.read_parquet(path)
    if name.endswith(".jsonl"):
        return pd.read_json(path, lines=True, dtype=False)
    return pd.read_csv(path)


def driftdeck_estimates(reference: pd.DataFrame, weeks: list[tuple[str, pd.DataFrame]]) -> list[float | None]:
    from app.stats.cbpe import estimate_metrics, fit_calibration

    def two_columns(proba: pd.Series) -> np.ndarray:
        return np.column_stack([1 - proba.to_numpy(), proba.to_numpy()])

    calibration = fit_calibration(reference["y"].astype(str), two_columns(reference["proba"]), ["0", "1"])
    return [estimate_metrics(two_columns(frame["proba"]), calibration)["roc_auc"] for _, frame in weeks]


def realised(weeks: list[tuple[str, pd.DataFrame]]) -> list[float]:
    from app.stats.health import binary_roc_auc

    return [binary_roc_auc(frame["y"].to_numpy() == 1, frame["proba"].to_numpy()) for _, frame in weeks]


# --- the peers' subprocess -------------------------------------------------------------------


def nannyml_worker(data: Path, output: Path) -> None:
    """NannyML's CBPE on the reference and each week (peers' interpreter); writes a JSON list."""
    warnings.filterwarnings("ignore")
    import nannyml

    frames = pd.read_parquet(data)
    reference = frames[frames["week"] == "reference"]
    estimator = nannyml.CBPE(y_pred_proba="proba", y_pred="pred", y_true="y", problem_type="classification_binary",
                             metrics=["roc_auc"], chunk_number=1)
    estimator.fit(reference)
    estimates = []
    for week in [name for name in dict.fromkeys(frames["week"]) if name != "reference"]:
        rows = frames[frames["week"] == week].drop(columns="y")
        result = estimator.estimate(rows).filter(period="analysis").to_df()
        estimates.append(float(result[("roc_auc", "value")].iloc[0]))
    output.write_text(json.dumps(estimates))


def nannyml_estimates(python: Path, reference: pd.DataFrame, weeks: list[tuple[str, pd.DataFrame]]) -> list[float] | None:
    if not python.exists():
        return None
    with tempfile.TemporaryDirectory() as folder:
        data, output = Path(folder) / "stream.parquet", Path(folder) / "out.json"
        parts = [reference.assign(week="reference")] + [frame.assign(week=name) for name, frame in weeks]
        pd.concat(parts, ignore_index=True).to_parquet(data)
        subprocess.run([str(python), __file__, "--worker", str(data), "--output", str(output)], check=True)
        return json.loads(output.read_text())


# --- the table ---------------------------------------------------------------------------------


def print_stream(title: str, weeks: list[tuple[str, pd.DataFrame]], change: str, truth: list[float],
                 ours: list[float | None], theirs: list[float] | None) -> None:
    print(f"\n{title}: ROC AUC per batch, estimated before its labels came, and realised once they did")
    print(f"{'batch':<12}{'rows':>6}{'realised':>10}{'driftdeck':>11}{'error':>8}" + (f"{'NannyML':>10}{'error':>8}" if theirs else ""))
    for index, (name, frame) in enumerate(weeks):
        mark = " *" if name >= change else ""
        line = f"{name + mark:<12}{len(frame):>6}{truth[index]:>10.3f}{_number(ours[index])}{_error(ours[index], truth[index])}"
        if theirs:
            line += f"{_number(theirs[index], 10)}{_error(theirs[index], truth[index])}"
        print(line)
    for label, selected in (("before the change", [i for i, (n, _) in enumerate(weeks) if n < change]),
                            ("after (*)", [i for i, (n, _) in enumerate(weeks) if n >= change])):
        summary = f"mean absolute error {label}: driftdeck {_mae(ours, truth, selected):.3f}"
        if theirs:
            summary += f", NannyML {_mae(theirs, truth, selected):.3f}"
        print(summary)


def _number(value: float | None, width: int = 11) -> str:
    return f"{value:>{width}.3f}" if value is not None else f"{'-':>{width}}"


def _error(value: float | None, truth: float) -> str:
    return f"{value - truth:>+8.3f}" if value is not None else f"{'-':>8}"


def _mae(values: list[float | None], truth: list[float], selected: list[int]) -> float:
    errors = [abs(values[i] - truth[i]) for i in selected if values[i] is not None]
    return float(np.mean(errors)) if errors else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers-venv", default=str(DEFAULT_PEERS_VENV), help="a virtualenv with nannyml, or 'none'")
    parser.add_argument("--weeks", type=int, default=20, help="synthetic batches")
    parser.add_argument("--rows", type=int, default=2000, help="rows per synthetic batch")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        nannyml_worker(args.worker, args.output)
        return
    sys.path.insert(0, str(ROOT))
    python = Path(args.peers_venv) / "bin" / "python"
    if args.peers_venv == "none" or not python.exists():
        print(f"no peers' virtualenv at {args.peers_venv}: driftdeck alone below")
    for title, (reference, weeks, change) in (("late_labels", late_labels_stream()),
                                              ("synthetic drift stream", synthetic_stream(args.weeks, args.rows))):
        theirs = None if args.peers_venv == "none" else nannyml_estimates(python, reference, weeks)
        print_stream(title, weeks, change, realised(weeks), driftdeck_estimates(reference, weeks), theirs)


if __name__ == "__main__":
    main()
