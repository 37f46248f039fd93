"""Which policy does this data need? One answer per data stream, from every model's evidence.

Every model is scored beside a shadow of the other policy on the same labeled
batches, so each model gives, per batch, a "static" number and a "dynamic"
number and the standard error of their difference (paired: both are scored
on the same rows, see :mod:`app.stats.noise`). Each model keeps its own
comparison; the stream's verdict pools them all. It is three-way:

- ``dynamic``: dynamic training gains more than the noise (two standard
  errors of the mean gain) and at least ``min_gain``;
- ``static``: even the gain's upper bound (gain plus noise) stays below
  ``min_gain``, so retraining is shown not to be worth its cost;
- ``undecided``: anything in between (a gain within the noise, or beyond
  it but not shown to reach ``min_gain``), or fewer labeled batches than
  ``verdict_batches``.

A model whose state says otherwise (a stale static model beside a verdict
that does not call for dynamic training) is named in the verdict's text, with
why the two do not contradict each other.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field

from typing import TYPE_CHECKING

from app.engine.records import BatchResult
from app.metrics import Metric, get_metric, primary_metric

if TYPE_CHECKING:
    from app.config import Config
    from app.store import ModelState, Store

VERDICT_LOOKBACK = 50


@dataclass(frozen=True)
class BatchEvidence:
    """One labeled batch: both policies' scores and the standard error of their difference."""

    batch: int
    static: float
    dynamic: float
    error: float | None
    train_seconds: float | None = None  # what dynamic training cost on this batch


@dataclass(frozen=True)
class Evidence:
    """One model's comparison of the two policies, oldest batch first."""

    model: str
    mode: str
    metric: str
    batches: list[BatchEvidence]


@dataclass(frozen=True)
class Verdict:
    """``needs`` is "static", "dynamic" or "undecided"; ``gain`` is dynamic over static.

    ``gain`` and ``noise`` are in the units of the metric's scale (see
    :class:`app.metrics.Metric`): fractions of the static error for error
    metrics (0.12 = dynamic cuts the error by 12%), metric units otherwise
    (0.05 = five points of ROC AUC). ``comparisons`` names the evidence used.
    """

    needs: str
    text: str
    metric: str
    gain: float | None
    noise: float | None
    batches: int
    retrains: int
    train_seconds: float
    comparisons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def evidence_from_results(model: str, mode: str, results: list[tuple[int, BatchResult]], metric_name: str) -> Evidence:
    """A model's evidence from its batch results ``(file_id, result)``, oldest first."""
    rows = []
    for batch, result in results[-VERDICT_LOOKBACK:]:
        name = result.metric or metric_name
        served = (result.metrics or {}).get(name)
        shadow = (result.shadow_metrics or {}).get(name)
        if served is None or shadow is None:
            continue
        metric_name = name
        static, dynamic = (shadow, served) if mode == "dynamic" else (served, shadow)
        cost = result.train_seconds if mode == "dynamic" else result.shadow_train_seconds
        rows.append(BatchEvidence(batch, static, dynamic, _difference_error(result), cost))
    return Evidence(model, mode, metric_name, rows)


def decide(evidence: list[Evidence], *, required: int, min_gain: float = 0.01,
           states: dict[str, ModelState] | None = None) -> Verdict:
    """The verdict from ``evidence`` over the last ``required`` labeled batches.

    Comparisons on the same batch are averaged (their errors too, as if fully
    correlated: they share the rows); batches are independent of each other.
    ``states`` (model name -> its stored state) lets the text say why a
    stale model does not contradict the verdict.
    """
    used = [e for e in evidence if e.batches]
    name = used[0].metric if used else (evidence[0].metric if evidence else "roc_auc")
    used = [e for e in used if e.metric == name]
    scoring = get_metric(name)
    per_batch = _pooled(used, scoring)[-required:]
    first = per_batch[0][0] if per_batch else None
    costs = [row.train_seconds for e in ([e for e in used if e.mode == "dynamic"] or used) for row in e.batches
             if row.train_seconds and first is not None and row.batch >= first]
    retrains, seconds = len(costs), float(sum(costs))
    labels = [f"{e.model} ({'served' if e.mode == 'dynamic' else 'shadow'} dynamic vs "
              f"{'shadow' if e.mode == 'dynamic' else 'served'} static)" for e in used]
    n = len(per_batch)
    if n < required or n < 2:
        text = (f"undecided: not enough labeled batches yet to compare static and dynamic training "
                f"({n} of {max(required, 2)})")
        return Verdict("undecided", _with_states(text, "undecided", states, evidence), name, None, None, n, retrains, seconds, labels)
    gain, noise = _gain_and_noise(per_batch)
    cost = f"cost: {retrains} retrain{'s' if retrains != 1 else ''}, {seconds:.1f} s of training"
    change = f"{_change(scoring, gain)} ± {scoring.amount(noise)} over the last {n} batches"
    if gain > noise and gain >= min_gain:
        needs, head = "dynamic", f"dynamic training {_change(scoring, gain)} over the last {n} batches ({cost})"
    elif gain + noise < min_gain:
        needs, head = "static", f"static is enough for this data: dynamic training {change}, below the {scoring.amount(min_gain)} worth retraining for ({cost})"
    elif gain > noise:
        # a gain just short of the minimum shows one more digit, so it does not read as the minimum itself
        digits = 1 if scoring.amount(gain) != scoring.amount(min_gain) else 2
        change = f"{_change(scoring, gain, digits)} ± {scoring.amount(noise, digits=digits)} over the last {n} batches"
        needs, head = "undecided", (f"undecided: dynamic training {change}, beyond the noise but not shown to reach "
                                    f"the {scoring.amount(min_gain, digits=digits)} worth retraining for ({cost})")
    else:
        needs, head = "undecided", f"undecided: dynamic training {change}, within the noise ({cost})"
    return Verdict(needs, _with_states(head, needs, states, evidence), name, gain, noise, n, retrains, seconds, labels)


def _pooled(evidence: list[Evidence], scoring: Metric) -> list[tuple[int, float, float | None]]:
    """Per batch (oldest first): its id, the mean scaled gain over the models, and its error."""
    by_batch: dict[int, list[tuple[float, float | None]]] = defaultdict(list)
    for model in evidence:
        for row in model.batches:
            scale = scoring.scale(row.static)
            error = None if row.error is None else row.error / scale
            by_batch[row.batch].append((scoring.gain(row.static, row.dynamic) / scale, error))
    pooled = []
    for batch in sorted(by_batch):
        rows = by_batch[batch]
        errors = [e for _, e in rows]
        error = None if None in errors else sum(errors) / len(errors)
        pooled.append((batch, sum(g for g, _ in rows) / len(rows), error))
    return pooled


def _gain_and_noise(per_batch: list[tuple[int, float, float | None]]) -> tuple[float, float]:
    """Mean gain and two standard errors of it (from the batches' own errors, else their spread)."""
    n = len(per_batch)
    gains = [g for _, g, _ in per_batch]
    gain = sum(gains) / n
    if all(e is not None for _, _, e in per_batch):
        return gain, 2 * math.sqrt(sum(e * e for _, _, e in per_batch)) / n
    spread = math.sqrt(sum((g - gain) ** 2 for g in gains) / (n - 1))
    return gain, 2 * spread / math.sqrt(n)


def _change(scoring: Metric, gain: float, digits: int = 1) -> str:
    """"gains 2.0 points of ROC AUC", "loses ...", "cuts RMSE by 3.0%", "raises RMSE by ..."."""
    amount = scoring.amount(abs(gain), digits=digits)
    if scoring.relative or not scoring.higher_is_better:
        return f"{'cuts' if gain >= 0 else 'raises'} {scoring.label} by {amount}"
    return f"{'gains' if gain >= 0 else 'loses'} {amount} of {scoring.label}"


def _with_states(text: str, needs: str, states: dict[str, ModelState] | None, evidence: list[Evidence]) -> str:
    """``text`` plus, for each stale model, why its state and the verdict can both hold."""
    notes = []
    modes = {e.model: e.mode for e in evidence}
    for model, state in (states or {}).items():
        if state.state != "stale":
            continue
        kinds = [flag["kind"] for flag in state.flags]
        why = kinds[0].replace("_", " ") if kinds else "stale"
        if needs != "dynamic" and modes.get(model) != "dynamic":
            notes.append(f"{model} is stale now ({why}), but retraining has not beaten it beyond the noise")
        elif needs != "dynamic":
            notes.append(f"{model} is stale now ({why}), and its own retrains have not recovered it")
        elif modes.get(model) == "dynamic":
            notes.append(f"{model} is stale now ({why}) although dynamic training gains overall")
    return text if not notes else f"{text}; {'; '.join(notes)}"


def _difference_error(result: BatchResult) -> float | None:
    """The stored paired standard error of served minus shadow; else both errors taken as independent."""
    if result.paired_se is not None:
        return result.paired_se
    first, second = result.metric_se, result.shadow_metric_se
    if first is None or second is None:
        return None
    return math.hypot(first, second)


def stream_verdict(store: Store, config: Config) -> Verdict:
    """The one verdict for the data stream: every model's evidence, read from ``store``."""
    evidence, states = [], {}
    default = primary_metric(config.task).name
    for model in config.models:
        results = [(file_id, BatchResult.from_dict(data))
                   for file_id, _, data in store.results(model.name, limit=VERDICT_LOOKBACK, counted=True)]
        evidence.append(evidence_from_results(model.name, model.mode, results, model.metric or default))
        if (state := store.model_state(model.name)) is not None:
            states[model.name] = state
    min_gain = min((model.tolerance for model in config.models), default=0.01)
    return decide(evidence, required=config.verdict_batches, min_gain=min_gain, states=states)
