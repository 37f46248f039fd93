from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io
import sklearn
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from app.fsutil import sha256_bytes, sha256_file
from app.models import (
    CLASSIFICATION,
    ESTIMATORS,
    REGRESSION,
    build_pipeline,
    fit_pipeline,
    predict,
)
from app.snapshots import TRUSTED_TYPES, SnapshotError, load_trusted, read_model, write_model

SCHEMA = {"amount": "numeric", "age": "numeric", "region": "categorical"}


def make_frame(rows: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "amount": rng.normal(100, 20, rows),
            "age": rng.integers(18, 80, rows).astype(float),
            "region": rng.choice(["north", "south", "east"], rows).astype(object),
        }
    )
    frame.loc[frame.index[::6], "amount"] = np.nan
    frame.loc[frame.index[::8], "region"] = None
    return frame


def targets(frame: pd.DataFrame, task: str) -> list[np.ndarray]:
    """Every label kind a pipeline might be trained on (they can store different types)."""
    score = frame["amount"].fillna(100).to_numpy() / 20 + (frame["region"] == "north").to_numpy()
    if task == REGRESSION:
        return [score]
    binary = (score > np.median(score)).astype(int)
    tertile = np.digitize(score, np.quantile(score, [1 / 3, 2 / 3]))
    three_names = np.array(["low", "mid", "high"])[tertile]
    return [binary, binary.astype(bool), three_names, pd.Series(three_names, dtype="str")]


def fitted_variants(task: str, name: str, frame: pd.DataFrame):
    """A fitted pipeline per target kind, plus a partial_fit continuation where supported."""
    params = {"n_estimators": 5} if name == "random_forest" else {}
    for y in targets(frame, task):
        pipeline = fit_pipeline(build_pipeline(task, name, params, SCHEMA), frame, y)
        yield pipeline
        if ESTIMATORS[task][name].incremental:
            classes = np.unique(y) if task == CLASSIFICATION else None
            fresh = build_pipeline(task, name, params, SCHEMA)
            yield fit_pipeline(fresh, frame, y, incremental_from=pipeline, classes=classes)


REGISTRY = [(task, name) for task, choices in ESTIMATORS.items() for name in choices]


def test_trusted_types_cover_every_registry_pipeline_and_nothing_more():
    frame = make_frame()
    needed: set[str] = set()
    for task, name in REGISTRY:
        for pipeline in fitted_variants(task, name, frame):
            untrusted = set(skops.io.get_untrusted_types(data=skops.io.dumps(pipeline)))
            missing = untrusted - set(TRUSTED_TYPES)
            assert not missing, f"{task}/{name} needs {sorted(missing)}"
            needed |= untrusted
    assert needed == set(TRUSTED_TYPES)
    assert list(TRUSTED_TYPES) == sorted(TRUSTED_TYPES)


@pytest.mark.parametrize(("task", "name"), REGISTRY)
def test_round_trip_gives_identical_predictions(task, name, tmp_path):
    frame = make_frame()
    model = next(fitted_variants(task, name, frame))
    path = tmp_path / "snapshots" / f"{name}.skops"

    digest = write_model(model, path)
    warnings_seen: list[str] = []
    loaded = read_model(path, digest, warnings_out=warnings_seen)

    assert digest == sha256_file(path)
    assert warnings_seen == []
    fresh = make_frame(25, seed=3)
    before, after = predict(model, fresh, task), predict(loaded, fresh, task)
    np.testing.assert_array_equal(before.labels, after.labels)
    if task == CLASSIFICATION:
        np.testing.assert_array_equal(before.proba, after.proba)
        assert before.classes == after.classes


@pytest.fixture
def ridge_file(tmp_path) -> tuple[Path, str]:
    frame = make_frame()
    pipeline = build_pipeline(REGRESSION, "ridge", {}, SCHEMA)
    model = fit_pipeline(pipeline, frame, targets(frame, REGRESSION)[0])
    path = tmp_path / "ridge.skops"
    return path, write_model(model, path)


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(SnapshotError, match="snapshot file missing: .*gone.skops"):
        read_model(tmp_path / "gone.skops", "0" * 64)


def test_tampered_byte_is_caught_by_sha256(ridge_file):
    path, digest = ridge_file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))

    with pytest.raises(SnapshotError, match="modified after it was written") as caught:
        read_model(path, digest)
    message = str(caught.value)
    assert "sha256" in message and digest in message and sha256_bytes(bytes(data)) in message


def test_truncated_file_is_not_a_skops_file(ridge_file):
    path, _ = ridge_file
    truncated = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(truncated)
    with pytest.raises(SnapshotError, match="is not a skops file"):
        read_model(path, sha256_bytes(truncated))


def test_random_bytes_are_not_a_skops_file():
    noise = np.random.default_rng(0).bytes(512)
    with pytest.raises(SnapshotError, match="model bytes is not a skops file"):
        load_trusted(noise, source="model bytes")


class CreatesFile:
    """Unpickling this opens ``path`` for writing: the classic pickle payload."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_pickle_is_refused_without_running_its_payload(tmp_path):
    # The payload really does run code when unpickled...
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(CreatesFile(proof))).close()
    assert proof.exists()

    # ...but read_model never unpickles, even with the correct sha256.
    marker = tmp_path / "marker"
    path = tmp_path / "model.skops"
    payload = pickle.dumps(CreatesFile(marker))
    path.write_bytes(payload)
    with pytest.raises(SnapshotError, match="is not a skops file"):
        read_model(path, sha256_bytes(payload))
    assert not marker.exists()


class Doubler(BaseEstimator, TransformerMixin):
    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return np.asarray(X) * 2


def test_function_transformer_calling_os_system_is_refused(tmp_path):
    marker = tmp_path / "marker"
    hostile = Pipeline(
        [("run", FunctionTransformer(func=os.system, kw_args={"command": f"touch {marker}"}))]
    )
    path = tmp_path / "hostile.skops"
    digest = write_model(hostile, path)

    with pytest.raises(SnapshotError, match="untrusted types") as caught:
        read_model(path, digest)
    assert f"{os.system.__module__}.system" in str(caught.value)
    assert not marker.exists()


def test_custom_class_is_refused_and_listed(tmp_path):
    path = tmp_path / "custom.skops"
    digest = write_model(Pipeline([("double", Doubler())]), path)
    with pytest.raises(SnapshotError, match="untrusted types") as caught:
        read_model(path, digest)
    assert f"{__name__}.Doubler" in str(caught.value)
    for trusted in TRUSTED_TYPES:
        assert trusted not in str(caught.value)


def rewrite_schema(data: bytes, old: str, new: str) -> bytes:
    """Copy a skops archive with ``old`` replaced by ``new`` in its schema.json."""
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for name in source.namelist():
            content = source.read(name)
            if name == "schema.json":
                content = content.decode().replace(old, new).encode()
            target.writestr(name, content)
    return out.getvalue()


def test_version_warning_is_captured(ridge_file):
    path, _ = ridge_file
    current = f'\\"{sklearn.__version__}\\"'
    assert current in zipfile.ZipFile(path).read("schema.json").decode()
    older = rewrite_schema(path.read_bytes(), current, '\\"0.24.0\\"')
    path.write_bytes(older)

    warnings_seen: list[str] = []
    model = read_model(path, sha256_bytes(older), warnings_out=warnings_seen)

    assert model.named_steps["model"].coef_.shape == (6,)
    assert any("Ridge from version 0.24.0" in message for message in warnings_seen)
    assert len(warnings_seen) == len(set(warnings_seen))


def test_archive_without_schema_is_not_a_skops_file(tmp_path):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("model.pkl", b"not a schema")
    with pytest.raises(SnapshotError, match="is not a skops file"):
        load_trusted(out.getvalue())
