"""Imbalanced binary streams (1% positives): ROC AUC on large batches, and what the verdict says of a small gain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from app.engine.monitor import Monitor
from app.stats.health import binary_roc_auc
from app.stats.noise import influence, paired_standard_error
from app.verdict import BatchEvidence, Evidence, decide
from tests.conftest import STATIC_ONLY_CONFIG, make_batch, write_batch, write_config


def scored_batch(seed: int, rows: int = 20_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels with 1% positives, a static model's scores and a dynamic model's slightly sharper ones."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(0, 1, rows)
    labels = (rng.random(rows) < 1 / (1 + np.exp(-(-6.8 + 2.0 * signal)))).astype(int)
    static = signal + rng.normal(0, 0.45, rows)
    dynamic = signal + rng.normal(0, 0.38, rows)
    return labels, static, dynamic


def test_a_gain_beyond_the_noise_but_below_the_minimum_is_not_called_within_the_noise():
    """Ten 20,000-row batches: dynamic training gains about 0.75 points of ROC AUC ± 0.55, short of the 1 point
    worth retraining for; the verdict said the gain was "within the noise", the opposite of its own figures."""
    rows = []
    for batch in range(10):
        labels, static, dynamic = scored_batch(batch)
        truth = labels.astype(str).astype(object)
        static_influence, dynamic_influence = (influence("roc_auc", truth, np.c_[1 - p, p], ["0", "1"])
                                               for p in (1 / (1 + np.exp(-s)) for s in (static, dynamic)))
        rows.append(BatchEvidence(batch, binary_roc_auc(labels == 1, static), binary_roc_auc(labels == 1, dynamic),
                                  paired_standard_error(dynamic_influence, static_influence)))
    verdict = decide([Evidence("static-lr", "static", "roc_auc", rows)], required=10, min_gain=0.01)
    assert verdict.noise < verdict.gain < 0.01 <= verdict.gain + verdict.noise  # the case under test
    assert verdict.needs == "undecided"
    assert "within the noise" not in verdict.text
    assert "beyond the noise but not shown to reach the 1.0 points worth retraining for" in verdict.text


def test_a_gain_just_short_of_the_minimum_does_not_read_as_the_minimum():
    """+0.98 ± 0.40 points of ROC AUC read "gains 1.0 points ..., not shown to reach the 1.0 points"."""
    rows = [BatchEvidence(batch, 0.900, 0.9098, 0.002) for batch in range(5)]
    verdict = decide([Evidence("static-lr", "static", "roc_auc", rows)], required=5, min_gain=0.01)
    assert verdict.needs == "undecided"
    assert "gains 0.98 points of ROC AUC ± 0.18 points" in verdict.text
    assert "not shown to reach the 1.00 points worth retraining for" in verdict.text


def rare_positive_batch(index: int, rows: int) -> pd.DataFrame:
    """make_batch's features with about 1% positives: half the 50-row batches have none."""
    frame = make_batch(index, rows=rows)
    rng = np.random.default_rng(700 + index)
    frame["label"] = (rng.random(rows) < 1 / (1 + np.exp(-(-5.0 + 1.0 * frame["x1"])))).astype(int)
    return frame


def test_a_batch_of_one_class_is_suspect_only_when_the_known_shares_make_it_unlikely(data_dir: Path):
    """"Every label is '0': a broken labelling job?" kept most 50-row batches of a rare-positive stream out of training."""
    write_config(data_dir, STATIC_ONLY_CONFIG)
    batches = [rare_positive_batch(0, 3_000)] + [rare_positive_batch(index, 50) for index in range(1, 13)]
    for index, frame in enumerate(batches):
        write_batch(data_dir, f"b{index:02d}.csv", frame)
    monitor = Monitor(data_dir)
    messages: list[str] = []
    monitor.subscribe(lambda event: messages.append(event.message))
    try:
        monitor.run_once()
        one_class = [data for _, _, data in monitor.store.results("static-lr")[1:]]
        assert sum(data["labeled"] and not data["trainable"] for data in one_class) == 0
        assert sum(frame["label"].nunique() == 1 for frame in batches[1:]) >= 3  # the case under test happened
        # ROC AUC has no value on a batch of one class: said in words, where "roc_auc nan" was printed.
        assert not any("nan" in message for message in messages)
        assert any("roc_auc not defined on this batch" in message for message in messages)
    finally:
        monitor.close()


def test_a_balanced_stream_batch_of_one_class_is_still_suspect(data_dir: Path):
    write_batch(data_dir, "b00.csv", make_batch(0, rows=400))
    write_batch(data_dir, "b01.csv", make_batch(1, rows=50).assign(label=0))
    monitor = Monitor(data_dir)
    try:
        monitor.run_once()
        newest = monitor.store.results("static-lr")[-1][2]
        assert any("every label is '0'" in issue for issue in newest["quality_issues"])
    finally:
        monitor.close()
