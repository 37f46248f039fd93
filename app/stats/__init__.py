"""Statistics for driftdeck: profiles, univariate and multivariate drift, prediction health.

A pure library (numpy, pandas, scipy, scikit-learn); its only I/O is JSON
(de)serialisation of profiles.
"""

from __future__ import annotations

from app.stats.drift import FeatureDrift, drifted_columns, feature_drift, psi
from app.stats.health import (
    classification_baseline,
    classification_metrics,
    regression_baseline,
    regression_metrics,
    score_drift,
)
from app.stats.multivariate import MultivariateDrift, domain_classifier, reservoir_sample
from app.stats.profile import CategoricalProfile, NumericProfile, Profile

__all__ = [
    "CategoricalProfile",
    "FeatureDrift",
    "MultivariateDrift",
    "NumericProfile",
    "Profile",
    "classification_baseline",
    "classification_metrics",
    "domain_classifier",
    "drifted_columns",
    "feature_drift",
    "psi",
    "regression_baseline",
    "regression_metrics",
    "reservoir_sample",
    "score_drift",
]
