"""Multiclass streams with small holdouts, a class missing from a batch, and a class never seen before."""

from __future__ import annotations

import numpy as np
import pytest

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


def imbalanced_three_classes(seed: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """About 85% "normal", 12% "bypass", 3% "high"; the rare classes depend on x1 and x2."""
    rng = np.random.default_rng(seed)
    features = rng.normal(0, 1, (rows, 3))
    x1, x2 = features[:, 0], features[:, 1]
    logits = np.c_[np.zeros(rows), -2.8 + 1.5 * x1, -5.0 + 1.5 * x2 + x1]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array(["normal", "bypass", "high"])[(rng.random(rows)[:, None] > proba.cumsum(axis=1)).sum(axis=1)]
    return features, labels


def test_a_model_of_imbalanced_classes_shows_its_skill_in_the_primary_metric():
    """Accuracy gated multiclass models: a logistic regression that ranks the rare classes well still predicts
    "normal" almost everywhere, its accuracy equals the naive baseline's, and every candidate of a 300-row stream
    was refused for no skill, so no model ever served."""
    from sklearn.linear_model import LogisticRegression

    from app.metrics import primary_metric
    from app.stats.health import baseline_output, classification_metrics
    from app.stats.noise import paired_standard_error

    shown = 0
    for seed in range(5):
        features, labels = imbalanced_three_classes(seed, 540)
        train, holdout = slice(0, 240), slice(240, 540)  # a first snapshot's 80/20 of a few batches
        model = LogisticRegression(max_iter=500).fit(features[train], labels[train])
        classes = [str(c) for c in model.classes_]
        proba = model.predict_proba(features[holdout])
        shares = {c: float(np.mean(labels[train] == c)) for c in classes}
        naive, _ = baseline_output(300, shares)
        scoring = primary_metric("classification")
        truth = labels[holdout].astype(object)
        gain = scoring.gain(classification_metrics(truth, naive, classes)[scoring.name],
                            classification_metrics(truth, proba, classes)[scoring.name])
        error = paired_standard_error(scoring.influence(truth, proba, classes), scoring.influence(truth, naive, classes))
        shown += gain > 2 * error
    assert shown >= 4


def test_a_class_never_seen_before_lowers_the_multiclass_roc_auc():
    """A batch where a quarter of the rows are a seventh class ('grass') the six-class model never saw: the
    one-vs-rest average left that class out, so the ROC AUC stayed at 0.96-0.99 while accuracy fell to 0.67, and
    no performance drop was flagged. The model ranks the new class no better than chance: it counts at 0.5."""
    from sklearn.metrics import roc_auc_score

    from app.stats.health import classification_metrics
    from app.stats.noise import influence

    rng = np.random.default_rng(4)
    known = ["brickface", "cement", "foliage", "path", "sky", "window"]
    truth = np.array([*rng.choice(known, 150), *["grass"] * 50], dtype=object)
    proba = rng.dirichlet(np.ones(6), len(truth)) * 0.3
    proba[np.arange(150), [known.index(label) for label in truth[:150]]] += 0.7
    proba[150:] += 0.7 * rng.dirichlet(np.ones(6), 50)  # the new class's rows go to known classes
    auc = classification_metrics(truth, proba, known)["roc_auc"]
    per_known_class = [roc_auc_score(truth == label, proba[:, k]) for k, label in enumerate(known)]
    assert auc == pytest.approx(np.mean([*per_known_class, 0.5]))
    assert classification_metrics(truth[:150], proba[:150], known)["roc_auc"] - auc > 0.05  # beyond the tolerance
    values = influence("roc_auc", truth, proba, known)
    assert values is not None and values.shape == (200,)
