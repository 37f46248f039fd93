"""Static vs dynamic on generated streams, and driftdeck's own per-batch overhead.

    python bench/policy_bench.py [--rows 100000] [--batches 8]

Three streams of labeled batches (binary classification, 8 features):
``flip``  — the label rule's main coefficient changes sign half-way (abrupt concept drift);
``swap``  — a third of the way in, the label starts to depend on a feature it ignored before;
``none``  — no change at all.

For each stream it runs the real monitor (static logistic regression, dynamic
gradient boosting) and prints per-batch ROC AUC of the static model, the dynamic
model and the naive baseline, total training seconds, both verdicts, and the
overhead: the time driftdeck spends per batch beyond the estimators' own fit and
predict calls (target: under 20% for 100,000-row batches).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

import app.engine.assess
import app.engine.train
import app.models
import app.training
from app.engine.monitor import Monitor

CONFIG = """
target = "label"
timestamp = "ts"
task = "classification"

[schema]
{schema}

[[models]]
name = "static"
mode = "static"
estimator = "logistic_regression"

[[models]]
name = "dynamic"
mode = "dynamic"
estimator = "hist_gradient_boosting"
window = 2

[watch]
settle_seconds = 0.0
max_file_mb = 2048
"""
FEATURES = [f"f{i}" for i in range(7)] + ["segment"]


def make_batch(stream: str, index: int, batches: int, rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(index)
    numeric = rng.normal(0, 1, (rows, 7))
    segment = rng.choice(["a", "b", "c", "d"], rows)
    weights = np.array([1.5, -1.0, 0.8, 0.0, 0.0, 0.3, 0.0])
    if stream == "flip" and index >= batches // 2:
        weights[0] = -1.5
    if stream == "swap" and index >= batches // 3:
        weights[3] = 2.0
        weights[1] = 0.0
    logit = numeric @ weights + 0.4 * (segment == "a")
    label = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    frame = pd.DataFrame(numeric, columns=FEATURES[:7])
    frame["segment"] = segment
    frame["label"] = label
    start = pd.Timestamp("2025-01-06") + pd.Timedelta(days=7 * index)
    frame["ts"] = (start + pd.to_timedelta(np.sort(rng.integers(0, 7 * 86400, rows)), unit="s")).astype(str)
    return frame


class Clock:
    """Adds up the seconds spent inside the estimators' fit and predict calls.

    Fit time is what the training child measured around the pipeline's own
    ``fit`` (:class:`app.training.FittedModel`): starting the process, sending
    it the rows and serialising the model count as driftdeck's overhead.
    Predict time is :func:`app.models.predict`, the pipeline's transform and
    ``predict_proba`` on the batch.
    """

    def __init__(self) -> None:
        self.fit = 0.0
        self.predict = 0.0

    def install(self) -> None:
        run, predict = app.training.Trainer.run, app.models.predict
        clock = self

        def timed_run(trainer, job, on_progress=None, meanwhile=None):
            fitted = run(trainer, job, on_progress, meanwhile)
            clock.fit += fitted.fit_seconds
            return fitted

        def timed_predict(pipeline, X, task):
            started = time.perf_counter()
            try:
                return predict(pipeline, X, task)
            finally:
                clock.predict += time.perf_counter() - started

        app.training.Trainer.run = timed_run
        for module in (app.engine.assess, app.engine.train, app.models):
            module.predict = timed_predict


def run_stream(stream: str, rows: int, batches: int, clock: Clock) -> None:
    folder = Path(tempfile.mkdtemp(prefix=f"driftdeck-bench-{stream}-"))
    schema = "\n".join(f'{name} = "{"categorical" if name == "segment" else "numeric"}"' for name in FEATURES)
    (folder / "driftdeck.toml").write_text(CONFIG.format(schema=schema))
    for index in range(batches):
        make_batch(stream, index, batches, rows).to_parquet(folder / f"b{index:02d}.parquet")
    monitor = Monitor(folder)
    started = time.perf_counter()
    monitor.trainer.start()  # once per monitor, not per batch: a running watcher has done it long before
    print(f"\n== stream {stream!r}: training server ready in {time.perf_counter() - started:.1f} s (once, not counted)")
    clock.fit = clock.predict = 0.0
    started = time.perf_counter()
    monitor.run_once()
    total = time.perf_counter() - started
    static = [d for _, _, d in monitor.store.results("static")]
    dynamic = [d for _, _, d in monitor.store.results("dynamic")]
    print(f"{batches} batches x {rows:,} rows")
    print(f"{'batch':>5} {'static':>8} {'dynamic':>8} {'baseline':>8}  dynamic action")
    for index, (s, d) in enumerate(zip(static, dynamic)):
        auc = lambda r, key="metrics": (r.get(key) or {}).get("roc_auc")
        cells = [auc(s), auc(d), auc(s, "baseline_metrics")]
        shown = " ".join(f"{c:8.3f}" if c is not None else f"{'—':>8}" for c in cells)
        print(f"{index:>5} {shown}  {d.get('action')}")
    seconds = sum(d.get("train_seconds") or 0 for d in dynamic)
    print(f"dynamic training: {sum(1 for d in dynamic if d.get('train_seconds'))} retrains, {seconds:.1f} s")
    for name in ("static", "dynamic"):
        print(f"verdict ({name}): {monitor.store.model_state(name).verdict['text']}")
    own = total - clock.fit - clock.predict
    print(f"time: total {total:.1f} s, estimator fit {clock.fit:.1f} s, predict {clock.predict:.1f} s, "
          f"driftdeck's own {own:.1f} s = {own / (clock.fit + clock.predict):.0%} of fit+predict "
          f"(target < 20% at 100,000 rows)")
    monitor.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--streams", default="flip,swap,none")
    args = parser.parse_args()
    clock = Clock()
    clock.install()
    for stream in args.streams.split(","):
        run_stream(stream, args.rows, args.batches, clock)


if __name__ == "__main__":
    main()
