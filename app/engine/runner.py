"""What one model does when a batch lands: the static or the dynamic policy.

For every batch a :class:`ModelRunner` has the batch assessed
(:mod:`app.engine.assess`: drift, scores, flags), and then applies the
model's policy:

- static: nothing more; its shadow (a per-batch retrain) is refreshed.
- dynamic: undo a promotion that turned out worse (automatic rollback), or
  train a candidate on the newest batches and let the gate decide
  (:mod:`app.engine.train`).

A runner computes; it does not commit. It returns a :class:`BatchOutcome`
whose ``writes`` the committer (:mod:`app.engine.commit`) applies in one
transaction together with the ledger entry, so a crash at any point leaves
either all of a batch or none.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Callable

import numpy as np
import pandas as pd

from app.config import ModelConfig
from app.engine.assess import NOISE_SIGMAS, Assessor, judges_a_model, rows_of
from app.engine.context import Stage, StageContext
from app.engine.records import BatchOutcome, BatchResult, Pending
from app.engine.train import CandidateTrainer
from app.events import Event, EventKind
from app.metrics import get_metric
from app.models import Prediction, predict
from app.serving import predictions_frame, predictions_path, write_predictions
from app.snapshots import SnapshotError
from app.stats.noise import paired_standard_error
from app.stats.profile import Profile
from app.store import FOLDER_KEY, FolderState, SnapshotRecord
from app.training import TrainingFailed, Trainer
from app.validation import Batch
from app.verdict import VERDICT_LOOKBACK


def label_coverage(frame: pd.DataFrame, target: str | None) -> float:
    """Share of ``frame``'s rows that carry a label."""
    if not target or target not in frame or not len(frame):
        return 0.0
    return float(frame[target].notna().mean())


class ModelRunner(Stage):
    """Applies one model's policy to each batch; holds only caches and the static shadow."""

    def __init__(self, context: StageContext, model: ModelConfig, trainer: Trainer) -> None:
        super().__init__(context)
        self.model = model
        self.assess = Assessor(model, context.config, context.registry)
        self.train = CandidateTrainer(self.assess, trainer, context.archive.load, context.emit)
        self.static_shadow: Any | None = None
        self._counterpart: int | None = None  # see _static_counterpart

    @property
    def name(self) -> str:
        return self.model.name

    # --- one batch ---------------------------------------------------------------

    def process(self, batch: Batch, folder: FolderState, pending: Pending,
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
        outcome = BatchOutcome(BatchResult(labeled=labeled, serving_version=serving.version if serving else None))
        if serving is not None and (changes := self.assess.config_changes(serving)):
            return self._not_scored(outcome, serving, changes)
        result = outcome.result
        reference = Profile.from_dict(serving.data["profile"]) if serving else Profile.from_dict(folder.reference)
        profiled = None
        if batch.streamed is not None:
            result.sampled = batch.streamed.sampled
            profiled = batch.streamed.profiles.get(self.name if serving else FOLDER_KEY)
        current = self.assess.measure_drift(result, reference, frame, profiled)
        pending.add(lambda: self.assess.measure_multivariate_drift(result, frame, serving))
        issues = self.assess.quality_issues(reference, frame, labeled, serving)
        model = self.assess.load_serving(serving, result) if serving else None
        prediction: Prediction | None = None
        if model is not None:
            prediction = self.assess.score(result, model, serving, frame, labeled, folder.previous_labels,
                                          self._shadow_model(serving) if labeled else None)
            path = predictions_path(self.registry.paths.predictions, self.name, batch.name, batch.sha256)
            if batch.streamed is not None:  # every row, part by part, not only the sample scored here
                source = batch.streamed.path
                pending.add(lambda: self.streams.predict(source, model, self.config, serving.version, path))
            else:
                rows = predictions_frame(prediction, frame, serving.version, self.config.id_column)
                pending.add(lambda: write_predictions(path, rows))
        vocabulary, new_classes = self.assess.vocabulary_issue(frame, serving) if labeled else (None, [])
        if vocabulary:
            result.new_classes = new_classes
            result.held_for_retrain = not issues and new_classes != sorted(map(str, frame[self.config.target].dropna().unique()))
            issues.append(vocabulary)
        elif label_check is not None and not self.assess.labels_carry_signal(result) and (issue := label_check()):
            issues.append(issue)
        result.quality_issues = issues
        result.label_coverage = label_coverage(frame, self.config.target)
        result.trainable = labeled and result.label_coverage >= self.config.labels.labeled_share and not issues
        flags = self.assess.flags(result, serving, labeled)
        result.flags = flags
        result.action = "flagged" if flags and serving else "none"

        if serving is None:
            self._maybe_bootstrap(outcome, batch, pending)
        elif result.trainable:
            if self.model.is_dynamic:
                self._dynamic_step(outcome, serving, batch, pending, prediction)
            else:
                self._refresh_static_shadow(outcome, batch, pending)
        outcome.state = self.assess.state(result, current)
        return outcome

    def labels_came(self, batch: Batch, stored: BatchResult, folder: FolderState,
                    labels_from: list[str]) -> BatchOutcome:
        """A batch whose labels came later, in label files (``batch.frame`` holds them now).

        Its metrics are computed for the version that served it, with its
        shadow and the naive baseline, from ``stored`` (the batch's result so
        far). Once its coverage reaches ``[labels] labeled_share`` it becomes
        trainable, and the model takes the step it would have taken had the
        batch come labeled: its first training, a dynamic candidate, or a
        fresh static shadow.
        """
        result = replace(stored, labeled=True, labels_from=labels_from,
                         label_coverage=label_coverage(batch.frame, self.config.target))
        outcome = BatchOutcome(result=result)
        served = self.store.snapshot(self.name, stored.serving_version) if stored.serving_version else None
        if served is not None and not self.assess.config_changes(served):
            model = self.registry.load(self.name, served.version)  # SnapshotError: the batch is scored again later
            self.assess.score(result, model, served, batch.frame, True, folder.previous_labels,
                              self._shadow_model(served))
            result.flags = self.assess.flags(result, served, True)
        newly = result.label_coverage >= self.config.labels.labeled_share and not stored.trainable
        result.trainable = bool(stored.trainable) or (newly and not result.quality_issues)
        if newly and result.trainable:
            serving, pending = self.registry.serving(self.name), Pending()
            if serving is None:
                self._maybe_bootstrap(outcome, batch, pending)
            elif self.model.is_dynamic and serving.version == stored.serving_version:
                self._dynamic_step(outcome, serving, batch, pending)  # its rollback check compares on these labels
            elif self.model.is_dynamic:
                window = self.train.window(self.train.newest_trainable(self.model.window), batch)
                self.train.train_and_gate(outcome, window, serving=serving, reason="promoted", pending=pending)
            else:
                self._refresh_static_shadow(outcome, batch, pending)
            pending.run()
        return outcome

    def _not_scored(self, outcome: BatchOutcome, serving: SnapshotRecord, changes: list[str]) -> BatchOutcome:
        """A serving model trained for another config: nothing is measured against it, it trains nothing by itself."""
        detail = f"v{serving.version} was trained on another config ({'; '.join(changes)}): not scored until retrained"
        flags = [{"kind": "config_changed", "detail": detail}]
        result = outcome.result
        result.config_changes, result.flags, result.action = changes, flags, "none"
        result.feature_drift, result.drifted_features, result.quality_issues = {}, [], []
        result.trainable = result.labeled
        return outcome  # its state is left as it was: the report shows it trained for another config (app.report)

    # --- policies -------------------------------------------------------------------

    def _maybe_bootstrap(self, outcome: BatchOutcome, batch: Batch, pending: Pending) -> None:
        if not outcome.result.trainable:
            return
        needed = self.model.bootstrap_batches
        earlier = self.store.trainable_ids(self.name, newest=needed)
        if len(earlier) + 1 < needed:
            outcome.result.action_detail = f"collecting labeled batches to train version 1 ({len(earlier) + 1} of {needed})"
            return
        window = self.train.window(self.train.newest_trainable(self._bootstrap_size()), batch)
        self.train.train_and_gate(outcome, window, serving=None, reason="bootstrap", pending=pending)

    def _bootstrap_size(self) -> int | None:
        """How many of the newest labeled batches a first version learns from: a static model the
        ``bootstrap_batches`` it is configured for; a dynamic one its whole window, so that a first candidate
        the gate refused is followed by one that sees more batches, not by another on the newest alone."""
        if not self.model.is_dynamic:
            return self.model.bootstrap_batches
        return None if self.model.window is None else max(self.model.window, self.model.bootstrap_batches)

    def _dynamic_step(self, outcome: BatchOutcome, serving: SnapshotRecord, batch: Batch, pending: Pending,
                      served: Prediction | None = None) -> None:
        if self._auto_rollback(outcome, serving, batch.frame, served):
            return
        window = self.train.window(self.train.newest_trainable(self.model.window), batch)
        self.train.train_and_gate(outcome, window, serving=serving, reason="promoted", pending=pending)

    def retrain(self, reason: str = "manual") -> BatchOutcome:
        """Train a candidate on the newest trainable batches now (the ``r`` key); it still faces the gate.

        Batches held back only for a new class beside the known ones (see
        :meth:`~app.engine.assess.Assessor.vocabulary_issue`) count here: an explicit retrain is how a new class joins.
        """
        serving = self.registry.serving(self.name)
        outcome = BatchOutcome(BatchResult())
        held = [file_id for file_id, _, data in self.store.results(self.name, limit=VERDICT_LOOKBACK, counted=True)
                if BatchResult.from_dict(data).held_for_retrain]
        ids = sorted(set(self.store.trainable_ids(self.name, newest=self.model.window)) | set(held))
        ids = ids[-self.model.window:] if self.model.window else ids
        if not ids:
            outcome.events.append(Event(EventKind.REJECTED, f"{self.name}: no labeled batches to retrain on", model=self.name))
            outcome.result.action = "rejected"
            return outcome
        window = self.train.window(ids)
        self.train.train_and_gate(outcome, window, serving=serving, reason=reason)
        return outcome

    def repair(self, ids: list[int], against: SnapshotRecord | None, reason: str, note: str) -> BatchOutcome:
        """Train a candidate on the batches ``ids`` (a tainted snapshot's window less an excluded batch) and gate
        it against ``against``, the last snapshot that learned from no excluded batch (None: the naive baseline);
        ``reason`` and ``note`` go into the serving history if it passes (see :mod:`app.engine.exclusion`)."""
        outcome = BatchOutcome(BatchResult())
        self.train.train_and_gate(outcome, self.train.window(ids), serving=against, reason=reason, note=note)
        return outcome

    def _auto_rollback(self, outcome: BatchOutcome, serving: SnapshotRecord, frame: pd.DataFrame,
                       served: Prediction | None) -> bool:
        """Serve the previous good snapshot again if the newest promotion scores worse than it on this batch beyond
        ``rollback_tolerance`` and the noise; ``served``: the serving version's predictions of the batch's rows,
        when the batch was just scored with it (else it predicts them again)."""
        history = self.store.serving_history(self.name)
        if not (self.model.auto_rollback and history and history[-1].reason == "promoted"):
            return False
        previous = self.registry.previous_good(self.name)
        metrics = outcome.result.metrics
        if previous is None or not metrics or not judges_a_model(outcome.result):
            return False  # a batch decided by a handful of rows judges no promotion
        try:
            previous_model = self.registry.load(self.name, previous.version)
            serving_model = self.registry.load(self.name, serving.version) if served is None else None
        except SnapshotError:
            return False
        metric_name, scoring = outcome.result.metric, get_metric(outcome.result.metric)
        rows = frame[self.config.target].notna().to_numpy()
        labelled = frame[rows]
        truth = labelled[self.config.target]
        serving_prediction = (rows_of(served, rows) if served is not None
                              else predict(serving_model, labelled, self.config.task))
        previous_prediction = predict(previous_model, labelled, self.config.task)
        previous_metrics = self.assess.metrics(truth, previous_prediction)
        outcome.result.previous_metrics = previous_metrics
        now, before = metrics.get(metric_name), previous_metrics.get(metric_name)
        if now is None or before is None or not np.isfinite([now, before]).all():
            return False
        worse = -scoring.gain(before, now)
        allowed = scoring.allowed(self.model.rollback_tolerance, before)
        # Both versions score the same rows: the noise is that of the paired difference (a handful of
        # positives in a batch moves ROC AUC by far more than the tolerance).
        error = paired_standard_error(self.assess.influence(scoring, truth, serving_prediction),
                                      self.assess.influence(scoring, truth, previous_prediction))
        noise = NOISE_SIGMAS * (error or 0.0)
        if worse <= allowed + noise:
            return False
        detail = (f"v{serving.version} {metric_name} {now:.3f} is worse than v{previous.version} {before:.3f} by {worse:.3f}"
                  f" (tolerance {allowed:.3f} + noise {noise:.3f})")
        outcome.pointer_writes.append(
            lambda db: self.registry.switch_serving(self.name, previous.version, "auto_rollback", detail, old_status="rolled_back", db=db)
        )
        outcome.result.action = "rolled_back"
        outcome.result.action_detail = detail
        outcome.events.append(Event(
            EventKind.ROLLED_BACK, f"{self.name}: rolled back v{serving.version} → v{previous.version}: {detail}",
            model=self.name, data={"from": serving.version, "to": previous.version, "automatic": True},
        ))
        outcome.result.flags.insert(0, {"kind": "performance_drop", "detail": f"automatic rollback: {detail}"})
        return True

    def _refresh_static_shadow(self, outcome: BatchOutcome, batch: Batch, pending: Pending) -> None:
        """Retrain the static model's shadow (what dynamic training would serve next) on the newest batches."""
        window = self.train.window(self.train.newest_trainable(self.model.window), batch)
        started = time.perf_counter()
        try:
            self.static_shadow = self.train.trainer.run(self.train.training_job(window), meanwhile=pending.run).model
        except TrainingFailed as error:
            outcome.result.shadow_error = str(error)
            return
        outcome.result.shadow_train_seconds = time.perf_counter() - started

    def _shadow_model(self, serving: SnapshotRecord) -> Any | None:
        if not self.model.is_dynamic:
            return self.static_shadow
        counterpart = self._static_counterpart()
        if counterpart is None:
            return None
        try:
            return self.registry.load(self.name, counterpart)
        except SnapshotError:
            return None

    def _static_counterpart(self) -> int | None:
        """The version static training would still serve beside this dynamic model: the first that served
        having learned from a whole window. One trained while fewer batches existed would credit dynamic
        training with what more rows give rather than with what a change in the data asks for."""
        if self._counterpart is None:
            for change in self.store.serving_history(self.name):
                record = self.store.snapshot(self.name, change.version)
                files = len(record.data.get("files", [])) if record is not None else 0
                if self.model.window is None or files >= self.model.window:
                    self._counterpart = change.version
                    break
        return self._counterpart

