"""Training a candidate and deciding whether it may serve.

The training window (the newest labeled batches), the holdout split, the fit
in the training worker (:mod:`app.training`), the candidate's scores against
the serving model and the naive baseline, :func:`gate`, and the snapshot
record that goes into the store with the batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

from app.config import Config, ModelConfig
from app.engine.assess import NOISE_SIGMAS, Assessor, label_stats, prediction_scores
from app.engine.records import BatchOutcome, Pending
from app.environment import environment_record, model_config_hash
from app.events import Event, EventKind
from app.labels import label_signal
from app.metrics import get_metric
from app.models import Prediction, predict
from app.registry import Registry
from app.serving import parquet_bytes
from app.snapshots import SnapshotError
from app.stats.cbpe import fit_calibration
from app.stats.multivariate import reservoir_sample
from app.stats.noise import paired_standard_error, standard_error
from app.stats.profile import Profile
from app.store import SnapshotRecord, Store
from app.training import TrainingFailed, Trainer, TrainJob
from app.validation import Batch

HOLDOUT_FRACTION = 0.2
REFERENCE_SAMPLE_ROWS = 5000
SCORE_SKETCH_POINTS = 201

@dataclass
class TrainingWindow:
    """Labeled rows a candidate learns from, oldest first, and the files they came from.

    ``frame`` stacks ``parts`` (each file's labeled rows) with a fresh 0..n-1 index.
    """

    frame: pd.DataFrame
    files: list[str]
    shas: list[str]
    parts: list[pd.DataFrame]


def training_window(parts: list[tuple[str, str, pd.DataFrame]], config: Config) -> TrainingWindow:
    """The labeled rows of ``parts`` (name, sha256, frame), oldest batch first."""
    columns = config.features + [config.target] + ([config.timestamp] if config.timestamp else [])
    labeled = [frame[columns][frame[config.target].notna()] for _, _, frame in parts]
    return TrainingWindow(pd.concat(labeled, ignore_index=True), [name for name, _, _ in parts],
                          [sha for _, sha, _ in parts], labeled)


@dataclass
class Candidate:
    """A fitted candidate, scored on a holdout neither it nor the serving model trained on."""

    version: int
    model: Any
    data: bytes
    train: pd.DataFrame
    holdout: pd.DataFrame
    files: list[str]
    shas: list[str]
    seconds: float  # the whole training job, wall clock
    fit_seconds: float  # the estimator pipeline's own fit within it
    metrics: dict[str, Any]
    baseline: dict[str, Any]
    score_sketch: list[float]  # quantiles of its holdout scores: the reference for prediction drift
    prediction: Prediction  # on the holdout
    known_labels: dict[str, Any]  # label stats of the training rows: what the naive baseline predicts from


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reason: str
    labels_suspect: bool = False
    no_skill: bool = False


def gate(
    metric_name: str,
    candidate: float | None,
    serving: float | None,
    baseline: float | None,
    *,
    tolerance: float,
    min_metric: float | None,
    batch_ok: bool = True,
    skill_error: float | None = None,
) -> GateDecision:
    """Decide whether a candidate may serve.

    It must come from a batch that passed validation, clear ``min_metric`` if
    set, and be no worse than the serving model by more than ``tolerance`` (a
    fraction of the serving value for error metrics, see :mod:`app.metrics`).
    Every candidate, the first one or one that would replace a serving model,
    must also beat the naive baseline on the holdout by more than the noise:
    ``NOISE_SIGMAS`` times ``skill_error``, the standard error of its
    difference from the baseline. A serving model with no skill is no yardstick.
    """
    scoring = get_metric(metric_name)
    if not batch_ok:
        return GateDecision(False, "the batch did not pass validation")
    if candidate is None or (isinstance(candidate, float) and np.isnan(candidate)):
        # A holdout of one class says the window is short of the rare class (1% positives), not that labels are bad.
        return GateDecision(False, f"{metric_name} cannot be computed on the holdout: its rows hold a single class"
                                   " (the window needs more labeled rows of each class)")
    if baseline is not None:
        noise = NOISE_SIGMAS * (skill_error or 0.0)
        if scoring.gain(baseline, candidate) <= noise:
            return GateDecision(False, f"no skill: candidate {metric_name} {candidate:.4f} does not beat the naive "
                                       f"baseline's {baseline:.4f} beyond the noise (± {noise:.4f})", no_skill=True)
    if min_metric is not None and scoring.gain(min_metric, candidate) < 0:
        return GateDecision(False, f"candidate {metric_name} {candidate:.4f} misses min_metric {min_metric}")
    if serving is not None:
        allowed = scoring.allowed(tolerance, serving)
        if -scoring.gain(serving, candidate) > allowed:
            return GateDecision(
                False, f"candidate {metric_name} {candidate:.4f} is worse than serving {serving:.4f} by more than {allowed:.4f}"
            )
        return GateDecision(True, f"candidate {metric_name} {candidate:.4f} vs serving {serving:.4f}")
    if baseline is None:
        return GateDecision(True, f"candidate {metric_name} {candidate:.4f}")
    return GateDecision(True, f"candidate {metric_name} {candidate:.4f} vs naive baseline {baseline:.4f}")


def split_holdout(frame: pd.DataFrame, timestamp: str | None, fraction: float = HOLDOUT_FRACTION) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train and holdout parts: the holdout is the newest ``fraction`` of rows.

    Rows are ordered by ``timestamp`` when there is one, otherwise by file order
    (the frame arrives oldest batch first); ties keep file order.
    """
    ordered = frame.sort_values(timestamp, kind="stable") if timestamp and timestamp in frame else frame
    cut = len(ordered) - max(1, int(round(len(ordered) * fraction)))
    return ordered.iloc[:cut], ordered.iloc[cut:]




class CandidateTrainer:
    """Trains one model's candidates and gates them; its results go into a :class:`BatchOutcome`."""

    def __init__(
        self,
        assess: Assessor,
        trainer: Trainer,
        load_batches: Callable[[list[int]], list[tuple[str, str, pd.DataFrame]]],
        emit: Callable[[Event], None],
    ) -> None:
        self.assess = assess
        self.model: ModelConfig = assess.model
        self.config: Config = assess.config
        self.registry: Registry = assess.registry
        self.store: Store = assess.store
        self.trainer = trainer
        self.load_batches = load_batches
        self.emit = emit

    @property
    def name(self) -> str:
        return self.model.name

    def train_and_gate(self, outcome: BatchOutcome, window: TrainingWindow, serving: SnapshotRecord | None, reason: str,
                        pending: Pending | None = None, note: str = "") -> None:
        """Train a candidate on ``window``, gate it against ``serving`` and the naive baseline, and put the
        snapshot record, the pointer change and the events into ``outcome``.

        ``serving`` is the serving snapshot, or for a repair after an exclusion the last untainted one
        (see :mod:`app.engine.exclusion`); ``note`` then goes into the serving history before the gate's
        reason. ``pending`` is the work of the batch that brought this training, done while the candidate
        fits; it is None for a retrain by hand, which has no batch of its own: labels found suspect then
        mark no batch.
        """
        result = outcome.result
        version = self.store.next_version(self.name)
        try:
            candidate = self._train(version, window, serving, reason, meanwhile=pending.run if pending else None)
        except TrainingFailed as error:
            self._record_failure(outcome, version, window, str(error), serving)
            return
        result.train_seconds = candidate.seconds
        result.candidate_version = version
        metric = self.assess.metric_name()
        serving_metrics = self._serving_holdout_metrics(serving, candidate)
        decision = gate(
            metric,
            candidate.metrics.get(metric),
            serving_metrics.get(metric) if serving_metrics else None,
            candidate.baseline.get(metric),
            tolerance=self.model.tolerance,
            min_metric=self.model.min_metric,
            batch_ok=True,
            skill_error=self._skill_error(metric, candidate),
        )
        if decision.no_skill:
            decision = self._explain_no_skill(decision, window, candidate, metric)
        record = self._snapshot_record(candidate, serving, decision, metric, serving_metrics)
        outcome.writes.append(lambda db: self.store.add_snapshot(record, db=db))
        if decision.passed:
            detail = f"{note}; {decision.reason}" if note else decision.reason
            outcome.pointer_writes.append(lambda db: self.registry.switch_serving(self.name, version, reason, detail, db=db))
            outcome.promoted_models[version] = candidate.model
            result.action = "promoted"
            result.action_detail = detail
            before = self.store.serving_version(self.name)
            frm = f"v{before}" if before else "nothing"
            outcome.events.append(Event(
                EventKind.PROMOTED, f"{self.name}: v{version} serves (was {frm}): {detail}", model=self.name,
                data={"version": version, "from": before, "metrics": candidate.metrics, "reason": reason},
            ))
        else:
            result.action = "rejected"
            result.action_detail = decision.reason
            if decision.labels_suspect and pending is not None:
                result.trainable = False
                result.quality_issues.append(decision.reason)
                result.flags.append({"kind": "data_quality", "detail": decision.reason})
            outcome.events.append(Event(
                EventKind.REJECTED, f"{self.name}: candidate v{version} rejected: {decision.reason}", model=self.name,
                data={"version": version, "metrics": candidate.metrics, "serving_metrics": serving_metrics},
            ))

    def _train(self, version: int, window: TrainingWindow, serving: SnapshotRecord | None, reason: str,
               meanwhile: Callable[[], None] | None = None) -> Candidate:
        train, holdout = split_holdout(window.frame, self.config.timestamp)
        if train[self.config.target].nunique() < 2 and self.config.task == "classification":
            raise TrainingFailed("the training rows hold a single class")
        incremental = None
        if self.model.incremental and serving is not None and serving.path and not self.assess.config_changes(serving):
            incremental = (self.registry.paths.root / serving.path).read_bytes()
        job = self.training_job(window, train, incremental_from=incremental, classes=self._classes(train, serving))
        self.emit(Event(EventKind.TRAINING_STARTED, f"{self.name}: training v{version} on {len(train):,} rows from "
                        f"{len(window.files)} file(s) ({reason})", model=self.name,
                        data={"version": version, "rows": len(train), "files": window.files, "reason": reason}))
        started = time.perf_counter()

        def progress(fraction: float, text: str) -> None:
            self.emit(Event(EventKind.TRAINING_PROGRESS, f"{self.name}: {text}", model=self.name,
                            data={"version": version, "progress": fraction}))

        fitted = self.trainer.run(job, progress, meanwhile)
        seconds = time.perf_counter() - started
        model = fitted.model
        prediction = predict(model, holdout, self.config.task)  # every holdout row is labeled (training_window)
        metrics = self.assess.metrics(holdout[self.config.target], prediction)
        known = label_stats(train[self.config.target], self.config.task)
        baseline = self.assess.baseline(holdout[self.config.target], known)
        sketch = np.quantile(prediction_scores(prediction), np.linspace(0, 1, SCORE_SKETCH_POINTS)).tolist()
        return Candidate(version, model, fitted.data, train, holdout, window.files, window.shas, seconds, fitted.fit_seconds,
                         metrics, baseline, sketch, prediction, known)

    def _metric_error(self, metric_name: str, candidate: Candidate) -> float | None:
        """Standard error of the candidate's ``metric_name`` on its holdout: the yardstick's own noise."""
        scoring, truth = get_metric(metric_name), candidate.holdout[self.config.target]
        return standard_error(self.assess.influence(scoring, truth, candidate.prediction))

    def _skill_error(self, metric_name: str, candidate: Candidate) -> float | None:
        """Standard error of the candidate's gain over the naive baseline on its holdout (paired rows)."""
        scoring, truth = get_metric(metric_name), candidate.holdout[self.config.target]
        return paired_standard_error(self.assess.influence(scoring, truth, candidate.prediction),
                                     self.assess.influence(scoring, truth, self.assess.naive(truth, candidate.known_labels)))

    def _explain_no_skill(self, decision: GateDecision, window: TrainingWindow, candidate: Candidate,
                          metric: str) -> GateDecision:
        """A candidate without skill shown: say whether the labels, the estimator or the holdout's size is to blame.

        A flexible model (see :mod:`app.labels`) fitted on the same rows tells
        the labels from the rest: if it learns them, this estimator either cannot
        (it scores no better than the naive baseline) or did but on too few rows to show it.
        """
        signal = label_signal(window.frame, self.config.schema, self.config.target, self.config.task,
                              self.config.timestamp, seed=self.model.seed)
        if signal.status == "signal":
            score, baseline = candidate.metrics.get(metric), candidate.baseline.get(metric)
            learned = score is not None and baseline is not None and get_metric(metric).gain(baseline, score) > 0
            why = (f"its holdout's {len(candidate.holdout):,} rows are too few to tell its skill from chance" if learned
                   else f"{self.model.estimator} cannot learn this data")
            return GateDecision(False, f"{decision.reason}: {why} "
                                       f"(a gradient-boosting model reaches {signal.score_text} on the same rows)", no_skill=True)
        if signal.status == "noise":
            return GateDecision(False, f"{decision.reason}; {signal.message}", labels_suspect=True, no_skill=True)
        return decision

    def _serving_holdout_metrics(self, serving: SnapshotRecord | None, candidate: Candidate) -> dict | None:
        if serving is None or self.assess.config_changes(serving):
            return None  # a model trained for another config is no yardstick: the candidate faces the naive baseline
        try:
            model = self.registry.load(self.name, serving.version)
        except SnapshotError:
            return None
        return self.assess.evaluate(model, candidate.holdout)

    def _snapshot_record(self, candidate: Candidate, serving: SnapshotRecord | None, decision: GateDecision,
                         metric: str, serving_metrics: dict | None) -> SnapshotRecord:
        path, sha = self.registry.write_snapshot_file(self.name, candidate.version, candidate.data)
        sample = reservoir_sample(candidate.train[self.config.features], REFERENCE_SAMPLE_ROWS, self.model.seed)
        sample_path = path.with_suffix(".reference.parquet")
        sample_path.write_bytes(parquet_bytes(sample))
        data = {
            "files": candidate.files,
            "batch_shas": candidate.shas,
            "rows": len(candidate.train),
            "holdout_rows": len(candidate.holdout),
            "holdout_metrics": candidate.metrics,
            "holdout_metric_se": self._metric_error(metric, candidate),
            "holdout_baseline": candidate.baseline,
            "serving_holdout_metrics": serving_metrics,
            "metric": metric,
            "gate": decision.reason,
            "train_seconds": candidate.seconds,
            "fit_seconds": candidate.fit_seconds,
            "profile": Profile.build(candidate.train, self.config.schema).to_dict(),
            "reference_sample": str(sample_path.relative_to(self.registry.paths.root)),
            "score_sketch": candidate.score_sketch,
            "classes": sorted(map(str, candidate.train[self.config.target].dropna().unique())) if self.config.task == "classification" else None,
            "label_stats": label_stats(candidate.train[self.config.target], self.config.task),
            "calibration": self._calibration(candidate),
            "holdout_files": candidate.files[-1:],
            "environment": environment_record(),
            "config_hash": model_config_hash(self.config_fields()),
            "config": self.config_fields(),
            "seed": self.model.seed,
            "estimator": self.model.estimator,
            "mode": self.model.mode,
        }
        return SnapshotRecord(
            model=self.name, version=candidate.version, parent=serving.version if serving else None,
            created=time.time(), status="candidate" if decision.passed else "rejected",
            reason="" if decision.passed else decision.reason,
            path=str(path.relative_to(self.registry.paths.root)), sha256=sha, data=data,
        )

    def _calibration(self, candidate: Candidate) -> dict | None:
        """Isotonic maps from its holdout probabilities to the holdout's frequencies, for the estimates (CBPE)."""
        if candidate.prediction.proba is None:
            return None
        calibration = fit_calibration(candidate.holdout[self.config.target], candidate.prediction.proba,
                                      candidate.prediction.classes)
        return calibration.to_dict() if calibration is not None else None

    def _record_failure(self, outcome: BatchOutcome, version: int, window: TrainingWindow, error: str,
                        serving: SnapshotRecord | None) -> None:
        record = SnapshotRecord(
            model=self.name, version=version, parent=serving.version if serving else None, created=time.time(),
            status="failed", reason=error, path=None, sha256=None, data={"files": window.files, "rows": len(window.frame)},
        )
        outcome.writes.append(lambda db: self.store.add_snapshot(record, db=db))
        outcome.result.action = "failed"
        outcome.result.action_detail = error
        outcome.events.append(Event(EventKind.TRAINING_FAILED, f"{self.name}: training v{version} failed: {error}",
                                    model=self.name, data={"version": version, "error": error}))

    def training_job(self, window: TrainingWindow, rows: pd.DataFrame | None = None, *, seed: int | None = None,
                     incremental_from: bytes | None = None, classes: list[str] | None = None) -> TrainJob:
        """A job that fits this model on ``rows`` of ``window.frame``, in their order (all of it when None).

        ``seed`` defaults to the model's; see :class:`TrainJob` for the rest.
        """
        return TrainJob(
            task=self.config.task, estimator=self.model.estimator, params=self.model.params, schema=self.config.schema,
            target=self.config.target, parts=list(zip(window.shas, window.parts)),
            positions=None if rows is None else rows.index.to_numpy(), seed=self.model.seed if seed is None else seed,
            incremental_from=incremental_from, classes=classes,
        )

    def config_fields(self) -> dict[str, Any]:
        return {
            "estimator": self.model.estimator, "params": self.model.params, "window": self.model.window,
            "incremental": self.model.incremental, "schema": self.config.schema, "target": self.config.target,
            "task": self.config.task, "seed": self.model.seed,
        }

    def _classes(self, train: pd.DataFrame, serving: SnapshotRecord | None) -> list[str] | None:
        if self.config.task != "classification":
            return None
        known = set((serving.data.get("classes") if serving else None) or [])
        return sorted(known | set(map(str, train[self.config.target].dropna().unique())))

    def newest_trainable(self, size: int | None) -> list[int]:
        """The committed trainable batches that join the current one in a window of ``size`` (None = all)."""
        if size is None:
            return self.store.trainable_ids(self.name)
        return self.store.trainable_ids(self.name, newest=size - 1) if size > 1 else []

    def window(self, ids: list[int], current: Batch | None = None) -> TrainingWindow:
        parts = self.load_batches(ids)
        if current is not None:
            parts.append((current.name, current.sha256, current.frame))
        return training_window(parts, self.config)

