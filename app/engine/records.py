"""The records the engine's stages hand each other for one batch.

The runner (:mod:`app.engine.runner`) fills a :class:`BatchOutcome` per model;
the committer (:mod:`app.engine.commit`) applies it; :class:`Pending` carries
the work that can wait for a training job.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable

from app.events import Event
from app.store.records import ModelState, known_fields

Write = Callable[[Any], None]
Flag = dict[str, str]  # {"kind": one of assess.FLAG_ORDER or "config_changed", "detail": the words shown}


@dataclass
class BatchResult:
    """What one batch showed for one model and what its policy did: one row of the store's ``results``.

    A field left None was not measured for this batch (no labels, nothing serving, the serving model
    trained for another config) and is left out of :meth:`to_dict`, as readers of the stored rows expect.
    """

    labeled: bool = False
    sampled: str | None = None  # what the models saw of a streamed batch's rows (app.bigbatch), in words
    serving_version: int | None = None  # always stored, None before any model serves
    config_changes: list[str] | None = None  # why the serving model was not scored (trained for another config)
    feature_drift: dict[str, dict[str, Any]] | None = None  # column -> FeatureDrift.to_dict()
    drifted_features: list[str] | None = None
    multivariate_auc: float | None = None  # stored (None too) once the domain classifier had its turn
    multivariate_top: dict[str, float] | None = None
    load_error: str | None = None  # the serving model would not load
    prediction_psi: float | None = None  # stored (None too) whenever the batch was scored
    prediction_drifted: bool | None = None  # the scores moved beyond sampling and by psi_threshold (calibrated rule)
    metric: str | None = None
    estimate: dict[str, Any] | None = None  # the metric expected from the probabilities (app.label_health.Estimate)
    metrics: dict[str, Any] | None = None
    estimate_error: float | None = None  # estimate minus the realised value, once labelled
    baseline_metrics: dict[str, Any] | None = None
    metric_se: float | None = None
    labeled_rows: int | None = None  # the rows the metrics were computed on
    fewest_class_rows: int | None = None  # classification: the labeled rows of the batch's rarest class
    skill_se: float | None = None  # standard error of the serving model's gain over the naive baseline
    shadow_metrics: dict[str, Any] | None = None
    shadow_metric_se: float | None = None
    paired_se: float | None = None  # standard error of the serving model's difference from its shadow
    new_classes: list[str] | None = None
    held_for_retrain: bool | None = None  # kept out of training only for a new class: an explicit retrain takes it
    quality_issues: list[str] | None = None
    label_coverage: float | None = None  # share of the batch's rows labelled (labels may come later, in label files)
    labels_from: list[str] | None = None  # the label files that gave them
    trainable: bool | None = None
    flags: list[Flag] | None = None
    action: str = "none"  # none, flagged, promoted, rejected, failed, rolled_back
    action_detail: str | None = None
    previous_metrics: dict[str, Any] | None = None  # the previous good snapshot on this batch (automatic rollback)
    train_seconds: float | None = None
    candidate_version: int | None = None
    shadow_error: str | None = None
    shadow_train_seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object stored for this result."""
        kept_when_none = {"serving_version"}
        if self.multivariate_top is not None:
            kept_when_none.add("multivariate_auc")
        if self.metric is not None:
            kept_when_none.add("prediction_psi")
        return {item.name: value for item in fields(self)
                if (value := getattr(self, item.name)) is not None or item.name in kept_when_none}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchResult:
        """A stored result; keys it does not know (a newer driftdeck's, a reader's own) are ignored."""
        return cls(**known_fields(cls, data))


@dataclass
class BatchOutcome:
    """What one batch did to one model: its result row, store writes, and events."""

    result: BatchResult
    writes: list[Write] = field(default_factory=list)
    pointer_writes: list[Write] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    state: ModelState | None = None  # None: the model's stored state stays as it was
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
