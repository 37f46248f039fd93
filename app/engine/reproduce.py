"""``driftdeck validate``: has a change of code, dependencies or config hurt a model?

For the serving snapshot of a model: load it under the current environment,
retrain with the current code and config on exactly the batches it was
trained on (same seed), and score both on its own holdout. A drop beyond the
model's ``tolerance`` against the metrics recorded at training time is a
``code_regression``, reported with the numbers and with what changed in the
environment and the config since. A check that cannot be completed (nothing
serving, training batches not archived, retraining raised, an incremental
model that cannot be retrained from files alone, a snapshot that learned from
a batch excluded since) is never reported as validated: its outcome says it could not validate, and why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from app.engine.archive import BatchArchive
from app.engine.runner import ModelRunner
from app.engine.train import split_holdout, training_window
from app.environment import environment_diff, environment_record
from app.lineage import taint_of
from app.snapshots import SnapshotError, read_model
from app.metrics import get_metric
from app.training import TrainingFailed, TrainJob

VALIDATED, CODE_REGRESSION, NOT_VALIDATED = "validated", "code_regression", "not_validated"
EXIT_CODES = {VALIDATED: 0, CODE_REGRESSION: 1, NOT_VALIDATED: 2}


@dataclass
class Reproduction:
    """The outcome of re-checking one model's serving snapshot.

    ``recorded``: holdout metrics stored at training time; ``reloaded``: the
    stored model loaded now, on the same holdout; ``retrained``: a model fitted
    now, with the current code and config, on the same rows.
    """

    model: str
    version: int | None
    metric: str | None = None
    recorded: dict[str, Any] = field(default_factory=dict)
    reloaded: dict[str, Any] | None = None
    retrained: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)
    load_warnings: list[str] = field(default_factory=list)
    environment_changes: list[str] = field(default_factory=list)
    config_changes: list[str] = field(default_factory=list)
    regression: bool = False
    other_config: list[str] = field(default_factory=list)  # why it was trained for another config: not validated

    @property
    def outcome(self) -> str:
        """``validated``, ``code_regression``, or ``not_validated`` (the check could not be completed)."""
        if self.regression:
            return CODE_REGRESSION
        if self.version is None or self.problems or self.other_config or self.reloaded is None or self.retrained is None:
            return NOT_VALIDATED
        return VALIDATED

    @property
    def summary(self) -> str:
        if self.version is None:
            return f"{self.model}: could not validate: nothing serving yet"
        if self.other_config:
            return (f"{self.model} v{self.version}: could not validate: trained on another config"
                    f" ({'; '.join(self.other_config)}); retrain it first")
        metric = self.metric
        numbers = f"{metric} recorded {_fmt(self.recorded.get(metric))}"
        if self.reloaded is not None:
            numbers += f", reloaded {_fmt(self.reloaded.get(metric))}"
        if self.retrained is not None:
            numbers += f", retrained {_fmt(self.retrained.get(metric))}"
        changes = "; ".join(self.environment_changes + self.config_changes) or "no change in environment or config"
        head = {CODE_REGRESSION: "code regression", NOT_VALIDATED: "could not validate", VALIDATED: "validated"}[self.outcome]
        problems = f" — {'; '.join(self.problems)}" if self.problems else ""
        return f"{self.model} v{self.version}: {head}: {numbers} ({changes}){problems}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "outcome": self.outcome, "summary": self.summary}


def reproduce(runner: ModelRunner, archive: BatchArchive) -> Reproduction:
    """Re-check the serving snapshot of ``runner``'s model under the current environment and config."""
    model, assess = runner.name, runner.assess
    serving = runner.registry.serving(model)
    if serving is None:
        return Reproduction(model, None)
    if other_config := assess.config_changes(serving):
        return Reproduction(model, serving.version, other_config=other_config)
    data = serving.data
    metric = data.get("metric") or assess.metric_name()
    result = Reproduction(model, serving.version, metric, recorded=data.get("holdout_metrics", {}))
    result.environment_changes = environment_diff(data.get("environment", {}), environment_record())
    result.config_changes = _config_changes(data.get("config", {}), runner.train.config_fields())
    if (taint := taint_of(runner.store, serving)) is not None:
        result.problems.append(f"it learned from excluded {', '.join(taint.batches)}, which validate never retrains"
                               " on; retrain it first")
        return result

    try:
        loaded = read_model(runner.registry.paths.root / serving.path, serving.sha256, warnings_out=result.load_warnings)
    except SnapshotError as error:
        loaded = None
        result.problems.append(f"the serving model does not load: {error}")
    try:
        parts = [(name, sha, archive.read(sha)) for name, sha in zip(data["files"], data["batch_shas"])]
    except (KeyError, OSError) as error:
        result.problems.append(f"its training batches are not all archived ({error}); cannot retrain")
        parts = None
    if parts is not None:
        window = training_window(parts, runner.config)
        train, holdout = split_holdout(window.frame, runner.config.timestamp)
        if loaded is not None:
            result.reloaded = assess.evaluate(loaded, holdout)
        if runner.model.incremental:
            result.problems.append("incremental snapshots continue from their parent: retraining from files alone is skipped")
        else:
            job = runner.train.training_job(window, train, seed=data.get("seed", runner.model.seed))
            result.retrained = _retrain(runner, job, holdout, result)
    result.regression = loaded is None or any(
        _worse_beyond_tolerance(metric, result.recorded.get(metric), found.get(metric), runner.model.tolerance)
        for found in (result.reloaded, result.retrained) if found
    )
    return result


def exit_code(outcomes: list[str]) -> int:
    """0 when every model validated, 1 on any code regression, else 2 (some check could not be completed)."""
    outcomes = set(outcomes)
    for outcome in (CODE_REGRESSION, NOT_VALIDATED):
        if outcome in outcomes:
            return EXIT_CODES[outcome]
    return EXIT_CODES[VALIDATED]


def _retrain(runner: ModelRunner, job: TrainJob, holdout, result: Reproduction) -> dict[str, Any] | None:
    """Fit ``job`` with today's code and config; the model's metrics on ``holdout``."""
    try:
        model = runner.train.trainer.run(job).model
    except TrainingFailed as error:
        result.problems.append(f"retraining failed: {error}")
        return None
    return runner.assess.evaluate(model, holdout)


def _worse_beyond_tolerance(metric: str, before: float | None, now: float | None, tolerance: float) -> bool:
    if before is None or now is None:
        return False
    scoring = get_metric(metric)
    return -scoring.gain(before, now) > scoring.allowed(tolerance, before)


def _config_changes(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    return [
        f"config {key}: {recorded.get(key)!r} -> {current.get(key)!r}"
        for key in sorted(set(recorded) | set(current))
        if recorded.get(key) != current.get(key)
    ]


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"
