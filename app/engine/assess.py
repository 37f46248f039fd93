"""Measuring one batch for one model: drift, data quality, label vocabulary, scores, flags and state.

An :class:`Assessor` only measures and judges; it trains nothing and writes
nothing. What it finds goes into the batch's result; the runner
(:mod:`app.engine.runner`) decides what the model's policy does with it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from app.config import Config, ModelConfig, training_config_changes
from app.engine.records import BatchResult, Flag
from app.label_health import estimate, estimate_error
from app.lineage import taint_of, tainted_flag
from app.metrics import Metric, get_metric, primary_metric
from app.models import Prediction, predict
from app.registry import Registry
from app.snapshots import SnapshotError
from app.stats.drift import DRIFTED, drifted_columns, feature_drift
from app.stats.health import (
    baseline_output,
    classification_metrics,
    regression_metrics,
    score_drift,
)
from app.stats.noise import paired_standard_error, standard_error
from app.stats.multivariate import domain_classifier
from app.stats.profile import NumericProfile, Profile
from app.store import ModelState, SnapshotRecord, Store
from app.verdict import VERDICT_LOOKBACK, Verdict, decide, evidence_from_results

UNIT_CHANGE_FACTOR = 20
DOMAIN_FOLDS = 2  # per batch and model: two fits bound the cost; the AUC is still cross-validated
SHRINK_FACTOR = 50
NOISE_SIGMAS = 2.0  # "beyond the noise": more than two standard errors
SIGNAL_SIGMAS = 3.0
MIN_CLASS_ROWS = 5  # rows of each class a batch needs before its metric can judge the model
JUDGMENTS = ("performance_drop", "no_skill")  # flags only a batch with enough labels can raise
MIN_REGRESSION_ROWS = 2 * MIN_CLASS_ROWS  # labeled rows a regression batch needs: the fewest a two-class batch is judged on
SINGLE_CLASS_CHANCE = 0.001  # below this chance of a batch of one class at the known shares, it looks broken  # a serving model this far beyond the baseline shows the labels carry signal
UNIT_CHANGE_QUANTILES = (0.1, 0.5, 0.9)
FLAG_ORDER = ("tainted", "performance_drop", "no_skill", "data_quality", "feature_drift", "prediction_drift", "age",
              "code_regression")


def judges_a_model(result: BatchResult) -> bool:
    """Whether a batch's labels are enough to judge a model by (flag it, roll it back): five rows of each
    class, or ten rows for regression. Fewer decide the metric alone, and their standard error means nothing
    (one row's is zero)."""
    if result.fewest_class_rows is not None:
        return result.fewest_class_rows >= MIN_CLASS_ROWS
    return result.labeled_rows is None or result.labeled_rows >= MIN_REGRESSION_ROWS


class Assessor:
    """Measures batches for one model; holds only the serving version's reference sample."""

    def __init__(self, model: ModelConfig, config: Config, registry: Registry) -> None:
        self.model = model
        self.config = config
        self.registry = registry
        self.store: Store = registry.store
        self._samples: dict[int, pd.DataFrame] = {}

    @property
    def name(self) -> str:
        return self.model.name

    def config_changes(self, snapshot: SnapshotRecord) -> list[str]:
        """Why ``snapshot`` cannot be scored under the current config (empty when it can)."""
        return training_config_changes(snapshot.data.get("config"), self.config)

    def measure_drift(self, result: BatchResult, reference: Profile, frame: pd.DataFrame,
                      current: Profile | None = None) -> Profile:
        """Fill ``result`` with each feature's drift; return the batch's profile on the reference's edges
        (``current`` when the intake already profiled all of a streamed batch's rows on them)."""
        current = current or reference.project(frame)
        settings = self.config.drift
        drift = feature_drift(reference, current, settings.psi_threshold, settings.psi_watch, settings.false_alarm_rate)
        result.feature_drift = {column: value.to_dict() for column, value in drift.items()}
        result.drifted_features = drifted_columns(drift)
        return current

    def measure_multivariate_drift(self, result: BatchResult, frame: pd.DataFrame, serving: SnapshotRecord | None) -> None:
        """Fill ``result`` with the domain classifier's drift: shown, never a flag, so it can wait for a training job."""
        sample = self._reference_sample(serving)
        if sample is not None and len(sample) >= 20 and len(frame) >= 20:
            multi = domain_classifier(sample, frame, self.config.schema, max_rows=self.config.drift.domain_classifier_rows,
                                      seed=self.model.seed, folds=DOMAIN_FOLDS)
            result.multivariate_auc = multi.auc
            result.multivariate_top = dict(list(multi.importances.items())[:5])
        else:
            result.multivariate_auc = None
            result.multivariate_top = {}

    def quality_issues(self, reference: Profile, frame: pd.DataFrame, labeled: bool, serving: SnapshotRecord | None) -> list[str]:
        """Problems that keep a valid batch out of training (it is still monitored)."""
        issues = [issue for column, profile in reference.columns.items()
                  if isinstance(profile, NumericProfile) and (issue := unit_change(column, profile, frame[column]))]
        if labeled and self.config.task == "classification":
            labels = frame[self.config.target].dropna()
            present = labels.unique()
            known = (serving.data.get("classes") if serving else None) or []
            priors = (serving.data.get("label_stats") or {}).get("priors", {}) if serving else {}
            # A 1%-positive stream gives 50-row batches of one class two times in three: only a batch that
            # one class would fill by chance less than once in SINGLE_CLASS_CHANCE is suspect.
            chance = priors.get(str(present[0]), 0.0) ** len(labels) if len(present) == 1 else 1.0
            if len(present) == 1 and len(labels) >= 20 and len(known) != 1 and chance < SINGLE_CLASS_CHANCE:
                issues.append(f"every label is {present[0]!r}: a broken labelling job?")
        return issues

    def vocabulary_issue(self, frame: pd.DataFrame, serving: SnapshotRecord | None) -> tuple[str | None, list[str]]:
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

    def labels_carry_signal(self, result: BatchResult) -> bool:
        """Whether the serving model beat the naive baseline on this batch by three of its standard errors.

        Labels a model already predicts that well carry signal: the check that
        fits a model on the batch alone (:mod:`app.labels`) could only agree.
        """
        scoring = get_metric(result.metric) if result.metric else None
        served = (result.metrics or {}).get(result.metric)
        baseline = (result.baseline_metrics or {}).get(result.metric)
        error = result.skill_se
        if scoring is None or served is None or baseline is None or not error:
            return False
        return scoring.gain(baseline, served) > SIGNAL_SIGMAS * error

    def load_serving(self, serving: SnapshotRecord, result: BatchResult) -> Any | None:
        try:
            return self.registry.load(self.name, serving.version)
        except SnapshotError as error:
            result.load_error = str(error)
            return None

    def score(self, result: BatchResult, model: Any, serving: SnapshotRecord, frame: pd.DataFrame, labeled: bool,
              previous_labels: dict | None, shadow: Any | None) -> Prediction:
        """Score ``frame`` with the serving ``model`` (and on labeled rows its ``shadow`` and the naive baseline)."""
        prediction = predict(model, frame, self.config.task)
        scores = prediction_scores(prediction)
        sketch = serving.data.get("score_sketch")
        if sketch:
            drift = score_drift(sketch, scores, serving.data.get("holdout_rows"),
                                self.config.drift.prediction_psi_threshold, self.config.drift.false_alarm_rate)
            result.prediction_psi, result.prediction_drifted = drift.psi, drift.status == DRIFTED
        result.metric = self.metric_name()
        result.estimate = estimate(prediction.proba, serving.data.get("calibration"), result.metric,
                                   self.config.task).to_dict()
        if not labeled:
            return prediction
        rows = frame[self.config.target].notna().to_numpy()
        truth = frame[self.config.target][rows]
        served = rows_of(prediction, rows)
        result.metrics = self.metrics(truth, served)
        result.labeled_rows = len(truth)
        if self.config.task == "classification":
            result.fewest_class_rows = int(truth.value_counts().min()) if truth.nunique() > 1 else 0
        result.estimate_error = estimate_error(result.estimate, result.metrics)
        scoring = get_metric(result.metric)
        served_influence = self.influence(scoring, truth, served)
        known = previous_labels or serving.data.get("label_stats", {})
        result.baseline_metrics = self.baseline(truth, known)
        result.metric_se = standard_error(served_influence)
        result.skill_se = paired_standard_error(served_influence, self.influence(scoring, truth, self.naive(truth, known)))
        if shadow is not None:
            shadow_prediction = predict(shadow, frame[rows], self.config.task)
            result.shadow_metrics = self.metrics(truth, shadow_prediction)
            shadow_influence = self.influence(scoring, truth, shadow_prediction)
            result.shadow_metric_se = standard_error(shadow_influence)
            result.paired_se = paired_standard_error(served_influence, shadow_influence)
        return prediction

    def flags(self, result: BatchResult, serving: SnapshotRecord | None, labeled: bool) -> list[dict[str, str]]:
        flags = []
        if result.load_error:
            flags.append({"kind": "data_quality", "detail": f"serving model refused: {result.load_error}"})
        if result.drifted_features:
            parts = [f"{c} (PSI {result.feature_drift[c]['psi']:.2f})" for c in result.drifted_features[:4]]
            more = len(result.drifted_features) - 4
            flags.append({"kind": "feature_drift", "detail": "drifted: " + ", ".join(parts) + (f" and {more} more" if more > 0 else "")})
        for issue in result.quality_issues:
            flags.append({"kind": "data_quality", "detail": issue})
        if result.prediction_drifted:
            flags.append({"kind": "prediction_drift", "detail": f"prediction scores moved (PSI {result.prediction_psi:.2f})"})
        # A class with a handful of rows in the batch (1% positives in 50 rows) decides its metric alone:
        # no judgment of the model is made on such a batch, drop or no skill.
        judged = judges_a_model(result)
        if serving is not None and labeled and result.metrics and judged:
            name = result.metric
            scoring = get_metric(name)
            now, then = result.metrics.get(name), serving.data.get("holdout_metrics", {}).get(name)
            if now is not None and then is not None:
                drop = -scoring.gain(then, now)
                allowed = scoring.allowed(self.model.performance_tolerance, then)
                noise = self._drop_noise(result, serving)
                if drop > allowed + noise:
                    beyond = f"tolerance {allowed:.3f} + noise {noise:.3f}" if noise else f"tolerance {allowed:.3f}"
                    flags.append({
                        "kind": "performance_drop",
                        "detail": f"{name} {now:.3f} vs {then:.3f} at training (worse by {abs(drop):.3f}, {beyond})",
                    })
        if serving is not None and judged and (skill := self._no_skill(result, serving)):
            flags.append({"kind": "no_skill", "detail": skill})
        if serving is not None and (taint := taint_of(self.store, serving)) is not None:
            flags.append(tainted_flag(serving.version, taint.batches, self.config.data_dir, self.name))
        if serving is not None and self.model.max_age_batches:
            age = self._batches_since(serving, cap=self.model.max_age_batches + 1)
            if age > self.model.max_age_batches:
                flags.append({"kind": "age", "detail": f"trained {age} batches ago (max_age_batches {self.model.max_age_batches})"})
        return sorted(flags, key=lambda f: FLAG_ORDER.index(f["kind"]))

    def state(self, result: BatchResult, current: Profile) -> ModelState:
        verdict = self.verdict(pending=result)
        flags = sorted((result.flags or []) + self._standing_judgments(result),
                       key=lambda flag: FLAG_ORDER.index(flag["kind"]))
        return ModelState(state=state_word(flags, result.feature_drift or {}), flags=flags,
                          verdict=verdict.to_dict(), current_profile=current.to_dict())

    def _standing_judgments(self, result: BatchResult) -> list[Flag]:
        """The serving version's last judgment, when this batch cannot judge it (no labels yet, or too few):
        a model found no better than guessing stays so until a batch with labels shows otherwise."""
        if result.serving_version is None or (result.metrics and judges_a_model(result)):
            return []
        for file_id, _, data in reversed(self.store.results(self.name, limit=VERDICT_LOOKBACK, counted=True)):
            earlier = BatchResult.from_dict(data)
            if earlier.serving_version != result.serving_version:
                return []
            if earlier.metrics and judges_a_model(earlier):
                name = self.store.file(file_id).name
                return [{"kind": flag["kind"], "detail": f"{flag['detail']} (on {name}, the last batch that could tell)"}
                        for flag in earlier.flags or [] if flag["kind"] in JUDGMENTS]
        return []

    def metric_name(self) -> str:
        """The model's metric: its config's, or the task's primary one."""
        return self.model.metric or primary_metric(self.config.task).name

    def verdict(self, pending: BatchResult | None = None) -> Verdict:
        """This model's own comparison of static and dynamic training (``pending``: a batch not yet stored)."""
        results = [(file_id, BatchResult.from_dict(data))
                   for file_id, _, data in self.store.results(self.name, limit=VERDICT_LOOKBACK, counted=True)]
        if pending:
            results.append((results[-1][0] + 1 if results else 0, pending))
        evidence = evidence_from_results(self.name, self.model.mode, results,
                                         self.metric_name())
        return decide([evidence], required=self.config.verdict_batches, min_gain=self.model.tolerance)

    @staticmethod
    def _drop_noise(result: BatchResult, serving: SnapshotRecord) -> float:
        """``NOISE_SIGMAS`` standard errors of the batch's metric minus the holdout's: a drop within them is chance.

        A 50-row batch's ROC AUC alone varies by about 0.08; the holdout's by as much again when it is small.
        A snapshot stored without its holdout's error counts the batch's alone."""
        holdout_se = serving.data.get("holdout_metric_se") if serving.data.get("metric") == result.metric else None
        errors = [error for error in (result.metric_se, holdout_se) if error is not None]
        return NOISE_SIGMAS * float(np.sqrt(sum(error * error for error in errors)))

    def _no_skill(self, result: BatchResult, serving: SnapshotRecord) -> str | None:
        """Why the serving version predicts this labeled batch no better than the naive baseline, or None.

        Its gain over the baseline must exceed ``NOISE_SIGMAS`` standard errors
        of that gain (paired: both are scored on the batch's rows), whatever the policy.
        """
        name, error = result.metric, result.skill_se
        served = (result.metrics or {}).get(name)
        baseline = (result.baseline_metrics or {}).get(name)
        if served is None or baseline is None or error is None:
            return None
        scoring = get_metric(name)
        noise = NOISE_SIGMAS * error
        if scoring.gain(baseline, served) > noise:
            return None
        return (f"{scoring.label} {served:.3f} is not beyond the naive baseline's {baseline:.3f} by more than the noise "
                f"(± {noise:.3f}): v{serving.version} predicts these labels no better than guessing")

    def evaluate(self, model: Any, frame: pd.DataFrame) -> dict[str, Any]:
        """The metrics of ``model`` on the labeled rows of ``frame``."""
        labelled = frame[self.config.target].notna().to_numpy()
        if not labelled.all():
            frame = frame[labelled]
        return self.metrics(frame[self.config.target], predict(model, frame, self.config.task))

    def metrics(self, truth: pd.Series, prediction: Prediction) -> dict[str, Any]:
        if self.config.task == "regression":
            return regression_metrics(truth.to_numpy(dtype="float64"), prediction.labels)
        return classification_metrics(truth.to_numpy(dtype=object), prediction.proba, [str(c) for c in prediction.classes])

    def baseline(self, truth: pd.Series, known: dict) -> dict[str, Any]:
        """The naive baseline's metrics on ``truth``, from ``known`` label stats (see :func:`label_stats`)."""
        return self.metrics(truth, self.naive(truth, known))

    def naive(self, truth: pd.Series, known: dict) -> Prediction:
        """What the naive baseline predicts for ``truth``'s rows: the known mean, or the known class shares."""
        if self.config.task == "regression":
            return Prediction(np.full(len(truth), known.get("mean", float(truth.mean())), dtype="float64"))
        priors = known.get("priors") or label_stats(truth, "classification")["priors"]
        proba, classes = baseline_output(len(truth), priors)
        return Prediction(np.asarray(classes, dtype=object)[proba.argmax(axis=1)], proba, classes)

    def influence(self, scoring: Metric, truth: pd.Series, prediction: Prediction) -> np.ndarray | None:
        """Per row, its influence on ``scoring`` (see :mod:`app.stats.noise`)."""
        if self.config.task == "regression":
            return scoring.influence(truth.to_numpy(dtype="float64"), prediction.labels)
        return scoring.influence(truth.to_numpy(dtype=object), prediction.proba, [str(c) for c in prediction.classes])

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
        recent = self.store.results(self.name, limit=cap, counted=True)
        served = 0
        for _, _, data in reversed(recent):
            if BatchResult.from_dict(data).serving_version != serving.version:
                break
            served += 1
        return served + 1


def state_word(flags: list[dict[str, str]], feature_drift: dict[str, dict]) -> str:
    """``stale``, ``watch`` or ``healthy``, from a batch's flags and its features' drift."""
    kinds = {flag["kind"] for flag in flags}
    if kinds & {"tainted", "performance_drop", "no_skill", "age"}:
        return "stale"
    if kinds or any(d["status"] == "watch" for d in feature_drift.values()):
        return "watch"
    return "healthy"


def prediction_scores(prediction: Prediction) -> np.ndarray:
    """One number per row for prediction drift: P(positive) (binary), max probability (multiclass), or the value."""
    if prediction.proba is None:
        return np.asarray(prediction.labels, dtype="float64")
    if prediction.proba.shape[1] == 2:
        return prediction.proba[:, 1]
    return prediction.proba.max(axis=1)


def rows_of(prediction: Prediction, rows: np.ndarray) -> Prediction:
    """The predictions of the rows ``rows`` (a boolean mask) picks."""
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
