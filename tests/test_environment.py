from __future__ import annotations

import hashlib
import json
import platform

import numpy
import sklearn
import skops

import app
from app.environment import environment_diff, environment_record, model_config_hash

MODEL_FIELDS = {
    "task": "classification",
    "estimator": "random_forest",
    "params": {"n_estimators": 50, "max_depth": 4},
    "window": 5000,
    "incremental": False,
    "features": {"amount": "numeric", "region": "categorical"},
    "target": "churned",
}


def test_record_has_the_running_versions():
    record = environment_record()
    assert set(record) == {
        "python", "driftdeck", "scikit-learn", "numpy", "pandas", "scipy", "pyarrow", "skops",
    }
    assert record["python"] == platform.python_version()
    assert record["driftdeck"] == app.__version__
    assert record["scikit-learn"] == sklearn.__version__
    assert record["numpy"] == numpy.__version__
    assert record["skops"] == skops.__version__
    assert all(isinstance(value, str) and value for value in record.values())


def test_config_hash_is_sha256_of_canonical_json():
    expected = hashlib.sha256(
        json.dumps(MODEL_FIELDS, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()[:16]
    assert model_config_hash(MODEL_FIELDS) == expected


def test_config_hash_ignores_key_order_but_not_values():
    reordered = dict(reversed(list(MODEL_FIELDS.items())))
    reordered["params"] = {"max_depth": 4, "n_estimators": 50}
    assert model_config_hash(reordered) == model_config_hash(MODEL_FIELDS)

    changed = {**MODEL_FIELDS, "params": {"n_estimators": 50, "max_depth": 5}}
    assert model_config_hash(changed) != model_config_hash(MODEL_FIELDS)


def test_diff_lists_changed_versions_and_config_hash():
    recorded = {"python": "3.11.9", "scikit-learn": "1.5.0", "numpy": "2.0", "config_hash": "a1b2"}
    current = {"python": "3.11.9", "scikit-learn": "1.6.1", "numpy": "2.0", "config_hash": "c3d4"}
    assert environment_diff(recorded, current) == [
        "scikit-learn 1.5.0 -> 1.6.1",
        "config hash a1b2 -> c3d4",
    ]


def test_diff_of_identical_records_is_empty():
    record = environment_record()
    assert environment_diff(record, dict(record)) == []


def test_diff_shows_keys_present_on_one_side_only():
    recorded = {"skops": "0.10.0"}
    current = {"skops": "0.10.0", "pyarrow": "17.0.0"}
    assert environment_diff(recorded, current) == ["pyarrow (none) -> 17.0.0"]
    assert environment_diff(current, recorded) == ["pyarrow 17.0.0 -> (none)"]
