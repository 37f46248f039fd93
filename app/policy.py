"""What happens to one model when a batch lands.

For every batch a :class:`ModelRunner` measures drift against the model's
reference, scores the serving model (and its shadow of the other policy and a
naive baseline), raises flags, and then applies the model's policy:

- static: nothing more; its shadow (a per-batch retrain) is refreshed.
- dynamic: undo a promotion that turned out worse (automatic rollback), or
  train a candidate on the newest batches and let :func:`gate` decide.

A runner computes; it does not commit. It returns a :class:`BatchOutcome`
whose ``writes`` the monitor applies in one transaction together with the
ledger entry, so a crash at any point leaves either all of a batch or none.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from app.config import Config, ModelConfig, training_config_changes
from app.environment import environment_record, model_config_hash
from app.events import Event, EventKind
from app.labels import label_signal
from app.metrics import Metric, get_metric, primary_metric
from app.models import Prediction, predict
from app.registry import Registry
from app.serving import parquet_bytes, predictions_frame, predictions_path, write_predictions
from app.snapshots import SnapshotError
from app.stats.drift import DRIFTED, drifted_columns, feature_drift
from app.stats.health import (
    baseline_output,
    classification_metrics,
    estimated_accuracy,
    regression_metrics,
    score_drift,
)
from app.stats.noise import paired_standard_error, standard_error
from app.stats.multivariate import domain_classifier, reservoir_sample
from app.stats.profile import NumericProfile, Profile
from app.store import SnapshotRecord, Store
from app.training import TrainingFailed, Trainer, TrainJob
from app.validation import Batch
from app.verdict import VERDICT_LOOKBACK, Verdict, decide, evidence_from_results

HOLDOUT_FRACTION = 0.2
REFERENCE_SAMPLE_ROWS = 5000
SCORE_SKETCH_POINTS = 201
UNIT_CHANGE_FACTOR = 20
DOMAIN_FOLDS = 2  # per batch and model: two fits bound the cost; the AUC is still cross-validated
SHRINK_FACTOR = 50
NOISE_SIGMAS = 2.0  # "beyond the noise": more than two standard errors
SIGNAL_SIGMAS = 3.0  # a serving model this far beyond the baseline shows the labels carry signal
UNIT_CHANGE_QUANTILES = (0.1, 0.5, 0.9)
FLAG_ORDER = ("performance_drop", "no_skill", "data_quality", "feature_drift", "prediction_drift", "age", "code_regression")

Write = Callable[[Any], None]


@dataclass
class BatchOutcome:
    """What one batch did to one model: its result row, store writes, and events."""

    result: dict[str, Any]
    writes: list[Write] = field(default_factory=list)
    pointer_writes: list[Write] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)
    promoted_models: dict[int, Any] = field(default_factory=dict)  # version -> the fitted pipeline, already verified


class Pending:
    """A batch's work that no decision waits on: drift shown on screen, files written before the commit.

    It is done while a training job fits (the worker holds one core, the
    monitor's thread the other), or else just before the batch commits.
    """

    def __init__(self) -> None:
        self._work: list[Callable[[], None]] = []

    def add(self, work: Callable[[], None]) -> None:
        self._work.append(work)

    def run(self) -> None:
        """Do all the work added so far, oldest first."""
        while self._work:
            self._work.pop(0)()


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
    A first model, with nothing serving, must beat the naive baseline on the
    holdout by more than the noise instead: ``NOISE_SIGMAS`` times
    ``skill_error``, the standard error of its difference from the baseline.
    """
    scoring = get_metric(metric_name)
    if not batch_ok:
        return GateDecision(False, "the batch did not pass validation")
    if candidate is None or (isinstance(candidate, float) and np.isnan(candidate)):
        return GateDecision(False, f"{metric_name} cannot be computed on the holdout (one class only?)", labels_suspect=True)
    if serving is None and baseline is not None:
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


class ModelRunner:
    """Applies one model's policy to each batch; holds only caches and the static shadow."""

    def __init__(
        self,
        model: ModelConfig,
        config: Config,
        registry: Registry,
        trainer: Trainer,
        load_batches: Callable[[list[int]], list[tuple[str, str, pd.DataFrame]]],
        emit: Callable[[Event], None],
    ) -> None:
        self.model = model
        self.config = config
        self.registry = registry
        self.store: Store = registry.store
        self.trainer = trainer
        self.load_batches = load_batches
        self.emit = emit
        self.static_shadow: Any | None = None
        self._samples: dict[int, pd.DataFrame] = {}

    @property
    def name(self) -> str:
        return self.model.name

    # --- one batch ---------------------------------------------------------------

    def process(self, batch: Batch, folder: dict[str, Any], pending: Pending,
                label_check: Callable[[], str | None] | None = None) -> BatchOutcome:
        """Everything this model does with one validated batch.

        ``folder`` carries folder-wide facts: ``reference`` (profile dict of the
        first batch) and ``previous_labels`` (label stats of the previous labeled
        batch, for the naive baseline). ``label_check()`` says why the batch's
        labels look corrupted, if they do (see :mod:`app.labels`); it is only
        asked when the serving model does not already show that they carry signal.
        Work no decision here waits on goes to ``pending`` (see :class:`Pending`);
        the caller runs what is left of it before the commit.
        """
        frame, labeled = batch.frame, batch.labeled
        serving = self.registry.serving(self.name)
        outcome = BatchOutcome(result={"labeled": labeled, "serving_version": serving.version if serving else None})
        if serving is not None and (changes := self.config_changes(serving)):
            return self._not_scored(outcome, serving, changes)
        result = outcome.result
        reference = Profile.from_dict(serving.data["profile"]) if serving else Profile.from_dict(folder["reference"])
        current = self._measure_drift(result, reference, frame)
        pending.add(lambda: self._measure_multivariate_drift(result, frame, serving))
        issues = self._quality_issues(reference, frame, labeled, serving)
        model = self._load_serving(serving, result) if serving else None
        if model is not None:
            prediction = self._score(result, model, serving, frame, labeled, folder.get("previous_labels"))
            rows = predictions_frame(prediction, frame, serving.version, self.config.id_column)
            path = predictions_path(self.registry.paths.predictions, self.name, batch.name, batch.sha256)
            pending.add(lambda: write_predictions(path, rows))
        vocabulary, new_classes = self._vocabulary_issue(frame, serving) if labeled else (None, [])
        if vocabulary:
            result["new_classes"] = new_classes
            result["held_for_retrain"] = not issues and new_classes != sorted(map(str, frame[self.config.target].dropna().unique()))
            issues.append(vocabulary)
        elif label_check is not None and not self._labels_carry_signal(result) and (issue := label_check()):
            issues.append(issue)
        result["quality_issues"] = issues
        result["trainable"] = labeled and not issues
        flags = self._flags(result, serving, labeled)
        result["flags"] = flags
        result["action"] = "flagged" if flags and serving else "none"

        if serving is None:
            self._maybe_bootstrap(outcome, batch, pending)
        elif result["trainable"]:
            if self.model.is_dynamic:
                self._dynamic_step(outcome, serving, batch, pending)
            else:
                self._refresh_static_shadow(outcome, batch, pending)
        outcome.state = self._state(result, current)
        return outcome

    def config_changes(self, snapshot: SnapshotRecord) -> list[str]:
        """Why ``snapshot`` cannot be scored under the current config (empty when it can)."""
        return training_config_changes(snapshot.data.get("config"), self.config)

    def _not_scored(self, outcome: BatchOutcome, serving: SnapshotRecord, changes: list[str]) -> BatchOutcome:
        """A serving model trained for another config: nothing is measured against it, it trains nothing by itself."""
        detail = f"v{serving.version} was trained on another config ({'; '.join(changes)}): not scored until retrained"
        flags = [{"kind": "config_changed", "detail": detail}]
        outcome.result.update(config_changes=changes, flags=flags, action="none", feature_drift={},
                              drifted_features=[], quality_issues=[], trainable=outcome.result["labeled"])
        return outcome  # its state is left as it was: the report shows it trained for another config (app.report)

    def _measure_drift(self, result: dict, reference: Profile, frame: pd.DataFrame) -> Profile:
        """Fill ``result`` with each feature's drift; return the batch's profile on the reference's edges."""
        current = reference.project(frame)
        settings = self.config.drift
        drift = feature_drift(reference, current, settings.psi_threshold, settings.psi_watch, settings.false_alarm_rate)
        result["feature_drift"] = {column: value.to_dict() for column, value in drift.items()}
        result["drifted_features"] = drifted_columns(drift)
        return current

    def _measure_multivariate_drift(self, result: dict, frame: pd.DataFrame, serving: SnapshotRecord | None) -> None:
        """Fill ``result`` with the domain classifier's drift: shown, never a flag, so it can wait for a training job."""
        sample = self._reference_sample(serving)
        if sample is not None and len(sample) >= 20 and len(frame) >= 20:
            multi = domain_classifier(sample, frame, self.config.schema, max_rows=self.config.drift.domain_classifier_rows,
                                      seed=self.model.seed, folds=DOMAIN_FOLDS)
            result["multivariate_auc"] = multi.auc
            result["multivariate_top"] = dict(list(multi.importances.items())[:5])
        else:
            result["multivariate_auc"] = None
            result["multivariate_top"] = {}

    def _quality_issues(self, reference: Profile, frame: pd.DataFrame, labeled: bool, serving: SnapshotRecord | None) -> list[str]:
        """Problems that keep a valid batch out of training (it is still monitored)."""
        issues = [issue for column, profile in reference.columns.items()
                  if isinstance(profile, NumericProfile) and (issue := unit_change(column, profile, frame[column]))]
        if labeled and self.config.task == "classification":
            present = frame[self.config.target].dropna().unique()
            known = (serving.data.get("classes") if serving else None) or []
            if len(present) == 1 and len(frame) >= 20 and len(known) != 1:
                issues.append(f"every label is {present[0]!r}: a broken labelling job?")
        return issues

    def _vocabulary_issue(self, frame: pd.DataFrame, serving: SnapshotRecord | None) -> tuple[str | None, list[str]]:
        """Labels outside the classes the serving model knows: the reason, and the new classes.

        A batch with none of the known classes has changed its label vocabulary
        (0/1 becoming yes/no): training on it would mix the two. A new class
        beside known ones may be real; it is named, and joins the model only by
        an explicit retrain.
        """
        known = (serving.data.get("classes") if serving else None) or []
        if not known or self.config.task != "classification":
            return None, []
        present = sorted(map(str, frame[self.config.target].dropna().unique()))
        new = [label for label in present if label not in known]
        if not new:
            return None, []
        names = ", ".join(map(repr, new))
        if len(new) == len(present):
            return (f"labels {names} are none of the classes the serving model knows ({', '.join(map(repr, known))}): "
                    f"a change of label vocabulary?"), new
        return (f"new class {names} beside the known classes ({', '.join(map(repr, known))}): "
                f"it joins the model only by an explicit retrain"), new

    def _labels_carry_signal(self, result: dict) -> bool:
        """Whether the serving model beat the naive baseline on this batch by three of its standard errors.

        Labels a model already predicts that well carry signal: the check that
        fits a model on the batch alone (:mod:`app.labels`) could only agree.
        """
        scoring = get_metric(result["metric"]) if result.get("metric") else None
        served = (result.get("metrics") or {}).get(result.get("metric"))
        baseline = (result.get("baseline_metrics") or {}).get(result.get("metric"))
        error = result.get("skill_se")
        if scoring is None or served is None or baseline is None or not error:
            return False
        return scoring.gain(baseline, served) > SIGNAL_SIGMAS * error

    def _load_serving(self, serving: SnapshotRecord, result: dict) -> Any | None:
        try:
            return self.registry.load(self.name, serving.version)
        except SnapshotError as error:
            result["load_error"] = str(error)
            return None

    def _score(self, result: dict, model: Any, serving: SnapshotRecord, frame: pd.DataFrame, labeled: bool,
               previous_labels: dict | None) -> Prediction:
        prediction = predict(model, frame, self.config.task)
        scores = _scores(prediction)
        sketch = serving.data.get("score_sketch")
        drift = score_drift(sketch, scores, serving.data.get("holdout_rows"), self.config.drift.prediction_psi_threshold,
                            self.config.drift.false_alarm_rate) if sketch else None
        result["prediction_psi"], result["prediction_drifted"] = (drift.psi, drift.status == DRIFTED) if drift else (None, False)
        result["metric"] = self.metric_name(serving)
        if prediction.proba is not None:
            result["estimated_accuracy"] = estimated_accuracy(prediction.proba)
        if not labeled:
            return prediction
        rows = frame[self.config.target].notna().to_numpy()
        truth = frame[self.config.target][rows]
        served = _subset(prediction, rows)
        result["metrics"] = self._metrics(truth, served)
        scoring = get_metric(result["metric"])
        served_influence = self._influence(scoring, truth, served)
        known = previous_labels or serving.data.get("label_stats", {})
        result["baseline_metrics"] = self._baseline(truth, known)
        result["metric_se"] = standard_error(served_influence)
        result["skill_se"] = paired_standard_error(served_influence, self._influence(scoring, truth, self._naive(truth, known)))
        shadow = self._shadow_model(serving)
        if shadow is not None:
            shadow_prediction = predict(shadow, frame[rows], self.config.task)
            result["shadow_metrics"] = self._metrics(truth, shadow_prediction)
            shadow_influence = self._influence(scoring, truth, shadow_prediction)
            result["shadow_metric_se"] = standard_error(shadow_influence)
            result["paired_se"] = paired_standard_error(served_influence, shadow_influence)
        return prediction

    def _flags(self, result: dict, serving: SnapshotRecord | None, labeled: bool) -> list[dict[str, str]]:
        flags = []
        if result.get("load_error"):
            flags.append({"kind": "data_quality", "detail": f"serving model refused: {result['load_error']}"})
        if result["drifted_features"]:
            parts = [f"{c} (PSI {result['feature_drift'][c]['psi']:.2f})" for c in result["drifted_features"][:4]]
            more = len(result["drifted_features"]) - 4
            flags.append({"kind": "feature_drift", "detail": "drifted: " + ", ".join(parts) + (f" and {more} more" if more > 0 else "")})
        for issue in result["quality_issues"]:
            flags.append({"kind": "data_quality", "detail": issue})
        if result.get("prediction_drifted"):
            flags.append({"kind": "prediction_drift", "detail": f"prediction scores moved (PSI {result['prediction_psi']:.2f})"})
        if serving is not None and labeled and result.get("metrics"):
            name = result["metric"]
            scoring = get_metric(name)
            now, then = result["metrics"].get(name), serving.data.get("holdout_metrics", {}).get(name)
            if now is not None and then is not None:
                drop = -scoring.gain(then, now)
                allowed = scoring.allowed(self.model.performance_tolerance, then)
                if drop > allowed:
                    flags.append({
                        "kind": "performance_drop",
                        "detail": f"{name} {now:.3f} vs {then:.3f} at training (worse by {abs(drop):.3f}, tolerance {allowed:.3f})",
                    })
        if serving is not None and (skill := self._no_skill(result, serving)):
            flags.append({"kind": "no_skill", "detail": skill})
        if serving is not None and self.model.max_age_batches:
            age = self._batches_since(serving, cap=self.model.max_age_batches + 1)
            if age > self.model.max_age_batches:
                flags.append({"kind": "age", "detail": f"trained {age} batches ago (max_age_batches {self.model.max_age_batches})"})
        return sorted(flags, key=lambda f: FLAG_ORDER.index(f["kind"]))

    def _state(self, result: dict, current: Profile) -> dict[str, Any]:
        kinds = {flag["kind"] for flag in result["flags"]}
        if kinds & {"performance_drop", "no_skill", "age"}:
            state = "stale"
        elif kinds or any(d["status"] == "watch" for d in result["feature_drift"].values()):
            state = "watch"
        else:
            state = "healthy"
        verdict = self.verdict(pending=result)
        return {"state": state, "flags": result["flags"], "verdict": verdict.to_dict(), "current_profile": current.to_dict()}

    # --- policies -------------------------------------------------------------------

    def _maybe_bootstrap(self, outcome: BatchOutcome, batch: Batch, pending: Pending) -> None:
        if not outcome.result["trainable"]:
            return
        needed = self.model.bootstrap_batches
        earlier = self.store.trainable_ids(self.name, newest=needed)
        if len(earlier) + 1 < needed:
            outcome.result["action_detail"] = f"collecting labeled batches to train version 1 ({len(earlier) + 1} of {needed})"
            return
        window = self._window(self._newest_trainable(needed), batch)
        self._train_and_gate(outcome, window, serving=None, reason="bootstrap", pending=pending)

    def _dynamic_step(self, outcome: BatchOutcome, serving: SnapshotRecord, batch: Batch, pending: Pending) -> None:
        if self._auto_rollback(outcome, serving, batch.frame):
            return
        window = self._window(self._newest_trainable(self.model.window), batch)
        self._train_and_gate(outcome, window, serving=serving, reason="promoted", pending=pending)

    def retrain(self, reason: str = "manual") -> BatchOutcome:
        """Train a candidate on the newest trainable batches now (the ``r`` key); it still faces the gate.

        Batches held back only for a new class beside the known ones (see
        :meth:`_vocabulary_issue`) count here: an explicit retrain is how a new class joins.
        """
        serving = self.registry.serving(self.name)
        outcome = BatchOutcome(result={})
        held = [file_id for file_id, _, data in self.store.results(self.name, limit=VERDICT_LOOKBACK) if data.get("held_for_retrain")]
        ids = sorted(set(self.store.trainable_ids(self.name, newest=self.model.window)) | set(held))
        ids = ids[-self.model.window:] if self.model.window else ids
        if not ids:
            outcome.events.append(Event(EventKind.REJECTED, f"{self.name}: no labeled batches to retrain on", model=self.name))
            outcome.result["action"] = "rejected"
            return outcome
        window = self._window(ids)
        self._train_and_gate(outcome, window, serving=serving, reason=reason)
        return outcome

    def _auto_rollback(self, outcome: BatchOutcome, serving: SnapshotRecord, frame: pd.DataFrame) -> bool:
        history = self.store.serving_history(self.name)
        if not (self.model.auto_rollback and history and history[-1].reason == "promoted"):
            return False
        previous = self.registry.previous_good(self.name)
        metrics = outcome.result.get("metrics")
        if previous is None or not metrics:
            return False
        try:
            previous_model = self.registry.load(self.name, previous.version)
        except SnapshotError:
            return False
        metric_name = outcome.result["metric"]
        previous_metrics = self.evaluate(previous_model, frame)
        outcome.result["previous_metrics"] = previous_metrics
        now, before = metrics.get(metric_name), previous_metrics.get(metric_name)
        if now is None or before is None:
            return False
        worse = -get_metric(metric_name).gain(before, now)
        allowed = get_metric(metric_name).allowed(self.model.rollback_tolerance, before)
        if worse <= allowed:
            return False
        detail = f"v{serving.version} {metric_name} {now:.3f} is worse than v{previous.version} {before:.3f} by {worse:.3f}"
        outcome.pointer_writes.append(
            lambda db: self.registry.switch_serving(self.name, previous.version, "auto_rollback", detail, old_status="rolled_back", db=db)
        )
        outcome.result["action"] = "rolled_back"
        outcome.result["action_detail"] = detail
        outcome.events.append(Event(
            EventKind.ROLLED_BACK, f"{self.name}: rolled back v{serving.version} → v{previous.version}: {detail}",
            model=self.name, data={"from": serving.version, "to": previous.version, "automatic": True},
        ))
        outcome.result["flags"].insert(0, {"kind": "performance_drop", "detail": f"automatic rollback: {detail}"})
        return True

    def _train_and_gate(self, outcome: BatchOutcome, window: TrainingWindow, serving: SnapshotRecord | None, reason: str,
                        pending: Pending | None = None) -> None:
        result = outcome.result
        version = self.store.next_version(self.name)
        try:
            candidate = self._train(version, window, serving, reason, meanwhile=pending.run if pending else None)
        except TrainingFailed as error:
            self._record_failure(outcome, version, window, str(error), serving)
            return
        result["train_seconds"] = candidate.seconds
        result["candidate_version"] = version
        metric = self.metric_name(serving, candidate)
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
            decision = self._explain_no_skill(decision, window)
        record = self._snapshot_record(candidate, serving, decision, metric, serving_metrics)
        outcome.writes.append(lambda db: self.store.add_snapshot(record, db=db))
        if decision.passed:
            detail = decision.reason
            outcome.pointer_writes.append(lambda db: self.registry.switch_serving(self.name, version, reason, detail, db=db))
            outcome.promoted_models[version] = candidate.model
            result["action"] = "promoted"
            result["action_detail"] = detail
            frm = f"v{serving.version}" if serving else "nothing"
            outcome.events.append(Event(
                EventKind.PROMOTED, f"{self.name}: v{version} serves (was {frm}): {detail}", model=self.name,
                data={"version": version, "from": serving.version if serving else None, "metrics": candidate.metrics, "reason": reason},
            ))
        else:
            result["action"] = "rejected"
            result["action_detail"] = decision.reason
            if decision.labels_suspect:
                result["trainable"] = False
                result["quality_issues"].append(decision.reason)
                result["flags"].append({"kind": "data_quality", "detail": decision.reason})
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
        if self.model.incremental and serving is not None and serving.path and not self.config_changes(serving):
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
        metrics = self._metrics(holdout[self.config.target], prediction)
        known = label_stats(train[self.config.target], self.config.task)
        baseline = self._baseline(holdout[self.config.target], known)
        sketch = np.quantile(_scores(prediction), np.linspace(0, 1, SCORE_SKETCH_POINTS)).tolist()
        return Candidate(version, model, fitted.data, train, holdout, window.files, window.shas, seconds, fitted.fit_seconds,
                         metrics, baseline, sketch, prediction, known)

    def _skill_error(self, metric_name: str, candidate: Candidate) -> float | None:
        """Standard error of the candidate's gain over the naive baseline on its holdout (paired rows)."""
        scoring, truth = get_metric(metric_name), candidate.holdout[self.config.target]
        return paired_standard_error(self._influence(scoring, truth, candidate.prediction),
                                     self._influence(scoring, truth, self._naive(truth, candidate.known_labels)))

    def _explain_no_skill(self, decision: GateDecision, window: TrainingWindow) -> GateDecision:
        """A first candidate without skill: say whether the labels or the estimator are to blame.

        A flexible model (see :mod:`app.labels`) fitted on the same rows tells
        the two apart: if it learns the labels, this estimator cannot.
        """
        signal = label_signal(window.frame, self.config.schema, self.config.target, self.config.task,
                              self.config.timestamp, seed=self.model.seed)
        if signal.status == "signal":
            return GateDecision(False, f"{decision.reason}: {self.model.estimator} cannot learn this data "
                                       f"(a gradient-boosting model reaches {signal.score_text} on the same rows)", no_skill=True)
        if signal.status == "noise":
            return GateDecision(False, f"{decision.reason}; {signal.message}", labels_suspect=True, no_skill=True)
        return decision

    def _serving_holdout_metrics(self, serving: SnapshotRecord | None, candidate: Candidate) -> dict | None:
        if serving is None or self.config_changes(serving):
            return None  # a model trained for another config is no yardstick: the candidate faces the naive baseline
        try:
            model = self.registry.load(self.name, serving.version)
        except SnapshotError:
            return None
        return self.evaluate(model, candidate.holdout)

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

    def _record_failure(self, outcome: BatchOutcome, version: int, window: TrainingWindow, error: str,
                        serving: SnapshotRecord | None) -> None:
        record = SnapshotRecord(
            model=self.name, version=version, parent=serving.version if serving else None, created=time.time(),
            status="failed", reason=error, path=None, sha256=None, data={"files": window.files, "rows": len(window.frame)},
        )
        outcome.writes.append(lambda db: self.store.add_snapshot(record, db=db))
        outcome.result["action"] = "failed"
        outcome.result["action_detail"] = error
        outcome.events.append(Event(EventKind.TRAINING_FAILED, f"{self.name}: training v{version} failed: {error}",
                                    model=self.name, data={"version": version, "error": error}))

    def _refresh_static_shadow(self, outcome: BatchOutcome, batch: Batch, pending: Pending) -> None:
        """Retrain the static model's shadow (what dynamic training would serve next) on the newest batches."""
        window = self._window(self._newest_trainable(self.model.window), batch)
        started = time.perf_counter()
        try:
            self.static_shadow = self.trainer.run(self.training_job(window), meanwhile=pending.run).model
        except TrainingFailed as error:
            outcome.result["shadow_error"] = str(error)
            return
        outcome.result["shadow_train_seconds"] = time.perf_counter() - started

    # --- helpers -------------------------------------------------------------------

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

    def metric_name(self, serving: SnapshotRecord | None, candidate: Candidate | None = None) -> str:
        if self.model.metric:
            return self.model.metric
        if self.config.task == "regression":
            return "rmse"
        classes = (serving.data.get("classes") if serving else None) or []
        if candidate is not None:
            classes = candidate.train[self.config.target].dropna().unique()
        return primary_metric(self.config.task, max(2, len(classes))).name

    def config_fields(self) -> dict[str, Any]:
        return {
            "estimator": self.model.estimator, "params": self.model.params, "window": self.model.window,
            "incremental": self.model.incremental, "schema": self.config.schema, "target": self.config.target,
            "task": self.config.task, "seed": self.model.seed,
        }

    def verdict(self, pending: dict | None = None) -> Verdict:
        """This model's own comparison of static and dynamic training (``pending``: a batch not yet stored)."""
        results = [(file_id, data) for file_id, _, data in self.store.results(self.name, limit=VERDICT_LOOKBACK)]
        if pending:
            results.append((results[-1][0] + 1 if results else 0, pending))
        evidence = evidence_from_results(self.name, self.model.mode, results,
                                         self.metric_name(self.registry.serving(self.name)))
        return decide([evidence], required=self.config.verdict_batches, min_gain=self.model.tolerance)

    def _no_skill(self, result: dict, serving: SnapshotRecord) -> str | None:
        """Why the serving version predicts this labeled batch no better than the naive baseline, or None.

        Its gain over the baseline must exceed ``NOISE_SIGMAS`` standard errors
        of that gain (paired: both are scored on the batch's rows), whatever the policy.
        """
        name, error = result.get("metric"), result.get("skill_se")
        served = (result.get("metrics") or {}).get(name)
        baseline = (result.get("baseline_metrics") or {}).get(name)
        if served is None or baseline is None or error is None:
            return None
        scoring = get_metric(name)
        noise = NOISE_SIGMAS * error
        if scoring.gain(baseline, served) > noise:
            return None
        return (f"{scoring.label} {served:.3f} is not beyond the naive baseline's {baseline:.3f} by more than the noise "
                f"(± {noise:.3f}): v{serving.version} predicts these labels no better than guessing")

    def _shadow_model(self, serving: SnapshotRecord) -> Any | None:
        if not self.model.is_dynamic:
            return self.static_shadow
        first = next((c for c in self.store.serving_history(self.name)), None)
        if first is None:
            return None
        try:
            return self.registry.load(self.name, first.version)
        except SnapshotError:
            return None

    def evaluate(self, model: Any, frame: pd.DataFrame) -> dict[str, Any]:
        """The metrics of ``model`` on the labeled rows of ``frame``."""
        labelled = frame[self.config.target].notna().to_numpy()
        if not labelled.all():
            frame = frame[labelled]
        return self._metrics(frame[self.config.target], predict(model, frame, self.config.task))

    def _metrics(self, truth: pd.Series, prediction: Prediction) -> dict[str, Any]:
        if self.config.task == "regression":
            return regression_metrics(truth.to_numpy(dtype="float64"), prediction.labels)
        return classification_metrics(truth.to_numpy(dtype=object), prediction.proba, [str(c) for c in prediction.classes])

    def _baseline(self, truth: pd.Series, known: dict) -> dict[str, Any]:
        """The naive baseline's metrics on ``truth``, from ``known`` label stats (see :func:`label_stats`)."""
        return self._metrics(truth, self._naive(truth, known))

    def _naive(self, truth: pd.Series, known: dict) -> Prediction:
        """What the naive baseline predicts for ``truth``'s rows: the known mean, or the known class shares."""
        if self.config.task == "regression":
            return Prediction(np.full(len(truth), known.get("mean", float(truth.mean())), dtype="float64"))
        priors = known.get("priors") or label_stats(truth, "classification")["priors"]
        proba, classes = baseline_output(len(truth), priors)
        return Prediction(np.asarray(classes, dtype=object)[proba.argmax(axis=1)], proba, classes)

    def _influence(self, scoring: Metric, truth: pd.Series, prediction: Prediction) -> np.ndarray | None:
        """Per row, its influence on ``scoring`` (see :mod:`app.stats.noise`)."""
        if self.config.task == "regression":
            return scoring.influence(truth.to_numpy(dtype="float64"), prediction.labels)
        return scoring.influence(truth.to_numpy(dtype=object), prediction.proba, [str(c) for c in prediction.classes])

    def _classes(self, train: pd.DataFrame, serving: SnapshotRecord | None) -> list[str] | None:
        if self.config.task != "classification":
            return None
        known = set((serving.data.get("classes") if serving else None) or [])
        return sorted(known | set(map(str, train[self.config.target].dropna().unique())))

    def _newest_trainable(self, size: int | None) -> list[int]:
        """The committed trainable batches that join the current one in a window of ``size`` (None = all)."""
        if size is None:
            return self.store.trainable_ids(self.name)
        return self.store.trainable_ids(self.name, newest=size - 1) if size > 1 else []

    def _window(self, ids: list[int], current: Batch | None = None) -> TrainingWindow:
        parts = self.load_batches(ids)
        if current is not None:
            parts.append((current.name, current.sha256, current.frame))
        return training_window(parts, self.config)

    def _reference_sample(self, serving: SnapshotRecord | None) -> pd.DataFrame | None:
        if serving is None or "reference_sample" not in serving.data:
            return None
        if serving.version not in self._samples:
            try:
                sample = pd.read_parquet(self.registry.paths.root / serving.data["reference_sample"])
            except (OSError, ValueError):
                return None
            self._samples = {serving.version: sample}  # only the serving version's sample is ever needed
        return self._samples[serving.version]

    def _batches_since(self, serving: SnapshotRecord, cap: int) -> int:
        """Batches (this one included) scored by the serving version, counted up to ``cap``."""
        recent = self.store.results(self.name, limit=cap)
        served = 0
        for _, _, data in reversed(recent):
            if data.get("serving_version") != serving.version:
                break
            served += 1
        return served + 1


def _scores(prediction: Prediction) -> np.ndarray:
    """One number per row for prediction drift: P(positive) (binary), max probability (multiclass), or the value."""
    if prediction.proba is None:
        return np.asarray(prediction.labels, dtype="float64")
    if prediction.proba.shape[1] == 2:
        return prediction.proba[:, 1]
    return prediction.proba.max(axis=1)


def _subset(prediction: Prediction, rows: np.ndarray) -> Prediction:
    proba = prediction.proba[rows] if prediction.proba is not None else None
    return Prediction(prediction.labels[rows], proba, prediction.classes)


def label_stats(labels: pd.Series, task: str) -> dict[str, Any]:
    """What the naive baseline predicts from: the mean label (regression) or each class's share."""
    labels = labels.dropna()
    if task == "regression":
        return {"mean": float(labels.astype("float64").mean())}
    shares = labels.value_counts(normalize=True)  # classification labels are already text (validation)
    return {"priors": {str(k): float(v) for k, v in shares.items()}}


def unit_change(column: str, profile: NumericProfile, values: pd.Series) -> str | None:
    """Why ``values`` look like ``column`` in another unit, or None.

    Grown: the batch's median magnitude is beyond ``UNIT_CHANGE_FACTOR`` times
    the largest magnitude the reference ever saw. Shrunk (a non-negative
    column): like is compared with like, the batch's 10th, 50th and 90th
    percentiles with the reference's same percentiles; only percentiles that
    are non-zero on both sides count (a zero percentile of a rare 0/1 flag or
    a sparse count says nothing about a unit), at least two must, and every one
    must have shrunk more than ``SHRINK_FACTOR`` times. Drift within those
    bounds (a countdown reaching zero, say) is ordinary drift, not breakage.
    """
    present = values.to_numpy(dtype="float64")
    present = present[np.isfinite(present)]
    if not len(present) or profile.minimum is None:
        return None
    largest = max(abs(profile.minimum), abs(profile.maximum))
    typical = float(np.median(np.abs(present)))
    if largest and typical > UNIT_CHANGE_FACTOR * largest:
        return (f"{column!r} is about {typical / largest:,.0f} times the largest value of the reference"
                f" ({largest:.4g}): a change of unit?")
    if profile.minimum < 0 or len(profile.edges) < 2:
        return None
    ratios = [now / then for now, then in zip(np.quantile(present, UNIT_CHANGE_QUANTILES), _reference_quantiles(profile))
              if now > 0 and then > 0]
    if len(ratios) >= 2 and max(ratios) < 1 / SHRINK_FACTOR:
        return f"{column!r} is about 1/{1 / max(ratios):,.0f} of its reference percentiles: a change of unit?"
    return None


def _reference_quantiles(profile: NumericProfile) -> np.ndarray:
    """The reference's ``UNIT_CHANGE_QUANTILES`` from its bins: each the lower edge of the bin it falls in.

    A lower edge is exact for a discrete column (each value has its own bin)
    and within one percentile for a continuous one.
    """
    inside = profile.counts[1:-1].astype("float64")
    shares = np.cumsum(inside) / inside.sum()
    bins = np.minimum(np.searchsorted(shares, UNIT_CHANGE_QUANTILES), len(profile.edges) - 2)
    return profile.edges[bins]
