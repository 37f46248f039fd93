"""Multiclass streams with small holdouts, a class missing from a batch, and a class never seen before."""

from __future__ import annotations

import numpy as np

from app.stats.health import _sketch_profile, score_drift


def test_prediction_drift_of_a_small_holdout_is_rare_on_unchanged_scores():
    """A first multiclass snapshot holds out 40 rows: its sketch of 201 quantiles stands for 40 scores, fewer than
    the sketch's bins. Every unchanged batch of 200 max-probability scores was flagged (PSI about 9): each bin's
    share of 40 rows rounded to zero, leaving a reference with no rows."""
    rng = np.random.default_rng(11)
    runs, drifted = 60, 0
    for _ in range(runs):
        holdout = rng.beta(5, 1.2, 40)  # max probabilities of a good 7-class model: mostly near 1
        sketch = np.quantile(holdout, np.linspace(0, 1, 201))
        assert _sketch_profile(sketch, 40).count == 40
        drifted += score_drift(sketch, rng.beta(5, 1.2, 200), 40, 0.2, 0.01).status == "drifted"
    assert drifted / runs <= 0.01 + 3 * np.sqrt(0.01 * 0.99 / runs)
    sketch = np.quantile(rng.beta(5, 1.2, 40), np.linspace(0, 1, 201))
    assert score_drift(sketch, rng.beta(1.5, 3, 200), 40, 0.2, 0.01).status == "drifted"  # a model lost its nerve
