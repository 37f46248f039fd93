"""Regression on a heavy-tailed (lognormal) target: RMSE-based judgments read in the right direction and units."""

from __future__ import annotations

import numpy as np

from app.cli_tables import comparison_words
from app.verdict import BatchEvidence, Evidence, decide


def lognormal_evidence(dynamic_error_factor: float, batches: int = 6) -> Evidence:
    """A static model's RMSE on lognormal batches, and its dynamic shadow's RMSE ``dynamic_error_factor`` times it."""
    rng = np.random.default_rng(3)
    rows = []
    for batch in range(batches):
        static = float(np.sqrt(np.mean(rng.lognormal(3.0, 1.0, 1_000) ** 2)))
        rows.append(BatchEvidence(batch, static, static * dynamic_error_factor, error=0.01 * static))
    return Evidence("static", "static", "rmse", rows)


def test_models_table_signs_an_error_metric_as_the_error_moves():
    """Dynamic training that cuts RMSE by 20% read "dynamic +20.0 ± ...%" beside an RMSE: an error up by 20%;
    a verdict of static read "dynamic ..." too."""
    cut = decide([lognormal_evidence(0.8)], required=5).to_dict()
    assert cut["needs"] == "dynamic" and cut["gain"] > 0
    assert comparison_words(cut).startswith("dynamic: RMSE -20.0 ± ")
    raised = decide([lognormal_evidence(1.2)], required=5).to_dict()
    assert raised["needs"] == "static" and comparison_words(raised).startswith("static: RMSE +20.0 ± ")
