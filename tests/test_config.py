"""driftdeck.toml: checked on load, with messages that name the file and the key; and `driftdeck init`."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

from app.config import ConfigError, load_config
from app.scaffold import infer_config_text, write_config as init_config
from tests.conftest import BASE_CONFIG, make_batch, write_batch, write_config


def config_error(folder: Path, text: str = BASE_CONFIG, **replacements: str) -> str:
    """Write a config into ``folder`` and return the message of the ConfigError loading it raises."""
    write_config(folder, text, **replacements)
    with pytest.raises(ConfigError) as caught:
        load_config(folder)
    return str(caught.value)


def replaced(old: str, new: str) -> str:
    """BASE_CONFIG with one exact piece of text replaced (and proof that it was there)."""
    assert old in BASE_CONFIG
    return BASE_CONFIG.replace(old, new)


# --- loading ----------------------------------------------------------------------------


def test_base_config_loads_into_typed_values(data_dir: Path) -> None:
    config = load_config(data_dir)
    assert config.path == data_dir / "driftdeck.toml"
    assert config.schema == {"x1": "numeric", "x2": "numeric", "x3": "numeric", "color": "categorical"}
    assert (config.target, config.timestamp, config.task) == ("label", "ts", "classification")
    assert [(m.name, m.mode, m.estimator) for m in config.models] == [
        ("static-lr", "static", "logistic_regression"),
        ("dynamic-lr", "dynamic", "logistic_regression"),
    ]
    assert config.model("dynamic-lr").window == 2
    assert config.model("dynamic-lr").is_dynamic and not config.model("static-lr").is_dynamic
    assert config.watch.settle_seconds == 0.3
    assert config.drift.domain_classifier_rows == 500
    assert config.drift.psi_threshold == 0.2  # a default, not in the file


def test_wrong_mode_names_the_file_the_model_and_the_value(data_dir: Path) -> None:
    message = config_error(data_dir, replaced('mode = "dynamic"', 'mode = "online"'))
    assert message == 'driftdeck.toml: models[1].mode must be "static" or "dynamic", got "online"'


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ('task = "classification"', 'task = "classification"\ncolour_scheme = "dark"', "colour_scheme"),
        ("settle_seconds = 0.3", "settle_seconds = 0.3\nsettle = 2", "watch.settle"),
        ("domain_classifier_rows = 500", "domain_classifier_rows = 500\npsi = 0.3", "drift.psi"),
        ("window = 2", "window = 2\nwindows = 3", "models[1].windows"),
    ],
)
def test_unknown_key_is_named_with_its_section(data_dir: Path, old: str, new: str, key: str) -> None:
    message = config_error(data_dir, replaced(old, new))
    assert message.startswith(f"driftdeck.toml: {key} is not a known key (known: ")


def test_missing_schema_is_refused(data_dir: Path) -> None:
    without_schema = replaced('[schema]\nx1 = "numeric"\nx2 = "numeric"\nx3 = "numeric"\ncolor = "categorical"\n', "")
    message = config_error(data_dir, without_schema)
    assert message.startswith("driftdeck.toml: [schema] must list the feature columns")


def test_bad_column_kind_names_the_column_and_the_kind(data_dir: Path) -> None:
    message = config_error(data_dir, replaced('color = "categorical"', 'color = "text"'))
    assert message == "driftdeck.toml: schema.color must be \"numeric\" or \"categorical\", got 'text'"


def test_unknown_estimator_names_the_model_and_the_valid_choices(data_dir: Path) -> None:
    text = replaced('estimator = "logistic_regression"\n\n[[models]]', 'estimator = "xgboost"\n\n[[models]]')
    message = config_error(data_dir, text)
    assert message.startswith("driftdeck.toml: models[0].estimator unknown estimator 'xgboost' for classification")
    assert "logistic_regression" in message  # the valid choices are listed


def test_unknown_param_names_the_model_and_the_param(data_dir: Path) -> None:
    message = config_error(data_dir, replaced("window = 2", "window = 2\nparams = {max_dept = 3}"))
    assert message.startswith("driftdeck.toml: models[1].params.max_dept unknown parameter 'max_dept'")
    assert "max_iter" in message  # the valid names are listed


def test_invalid_param_value_names_the_param(data_dir: Path) -> None:
    message = config_error(data_dir, replaced("window = 2", "window = 2\nparams = {C = -1.0}"))
    assert message.startswith("driftdeck.toml: models[1].params.C invalid value -1.0 for parameter 'C'")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('task = "classification"', 'task = "ranking"', 'task must be "classification" or "regression", got "ranking"'),
        ("window = 2", "window = 0", "models[1].window must be a whole number >= 1, got 0"),
        ("settle_seconds = 0.3", 'settle_seconds = "fast"', "watch.settle_seconds must be a number >= 0, got 'fast'"),
        ('x1 = "numeric"', 'label = "numeric"', "target 'label' must not also be a feature in [schema]"),
        ('name = "dynamic-lr"', 'name = "static-lr"', "models[1].name 'static-lr' is used by another model"),
    ],
)
def test_bad_values_are_named(data_dir: Path, old: str, new: str, expected: str) -> None:
    assert config_error(data_dir, replaced(old, new)) == f"driftdeck.toml: {expected}"


def test_invalid_toml_and_missing_file_are_config_errors(tmp_path: Path) -> None:
    assert config_error(tmp_path, "target = \n").startswith("driftdeck.toml: not valid TOML")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="no config found; run `driftdeck init"):
        load_config(empty)


def test_a_config_without_models_is_allowed(ingest_dir: Path) -> None:
    config = load_config(ingest_dir)
    assert config.models == ()
    assert config.features == ["x1", "x2", "x3", "color"]


def test_window_all_means_every_batch(data_dir: Path) -> None:
    write_config(data_dir, replaced("window = 2", 'window = "all"'))
    assert load_config(data_dir).model("dynamic-lr").window is None


# --- driftdeck init ------------------------------------------------------------------------


def test_init_infers_schema_and_classification_and_writes_a_loadable_config(tmp_path: Path) -> None:
    write_batch(tmp_path, "week-01.csv", make_batch(0, rows=80))
    write_batch(tmp_path, "week-02.parquet", make_batch(1, rows=80))
    path = init_config(tmp_path, "label", "ts", None, force=False)
    config = load_config(tmp_path)
    assert path == tmp_path / "driftdeck.toml"
    assert config.schema == {"x1": "numeric", "x2": "numeric", "x3": "numeric", "color": "categorical"}
    assert (config.target, config.timestamp, config.task) == ("label", "ts", "classification")
    assert {m.mode for m in config.models} == {"static", "dynamic"}


def test_init_infers_regression_for_a_continuous_target(tmp_path: Path) -> None:
    frame = make_batch(0, rows=80)
    frame["label"] = frame["x1"] * 2.5 + 1.0
    write_batch(tmp_path, "prices.csv", frame)
    raw = tomllib.loads(infer_config_text(tmp_path, "label", "ts"))
    assert raw["task"] == "regression"


@pytest.mark.parametrize(
    ("labels", "task"),
    [
        (np.arange(80) % 3, "classification"),                 # three whole-number classes
        (np.arange(80) * 7, "regression"),                     # 80 distinct integers: a count, not classes
        (np.where(np.arange(80) % 2, "yes", "no"), "classification"),
        ((np.arange(80) % 2).astype(float), "classification"),  # 0.0/1.0 floats are still classes
    ],
)
def test_init_task_follows_the_target_values(tmp_path: Path, labels: np.ndarray, task: str) -> None:
    frame = make_batch(0, rows=80)
    frame["label"] = labels
    write_batch(tmp_path, "batch.parquet", frame)
    assert tomllib.loads(infer_config_text(tmp_path, "label", "ts"))["task"] == task


def test_init_without_timestamp_proposes_the_time_column_as_the_timestamp(tmp_path: Path) -> None:
    write_batch(tmp_path, "batch.csv", make_batch(0, rows=40))
    raw = tomllib.loads(infer_config_text(tmp_path, "label"))
    assert raw["timestamp"] == "ts"
    assert "ts" not in raw["schema"]


def test_init_takes_a_unique_column_named_like_an_id_as_the_id_column(tmp_path: Path) -> None:
    for week in range(2):
        frame = make_batch(week, rows=40)
        frame["visitor_id"] = np.arange(40) + 40 * week  # distinct across files too
        frame["store_id"] = np.arange(40) % 3             # named like an id, but repeats: a feature
        write_batch(tmp_path, f"week-{week}.csv", frame)
    raw = tomllib.loads(infer_config_text(tmp_path, "label", "ts"))
    assert raw["id_column"] == "visitor_id"
    assert "visitor_id" not in raw["schema"] and raw["schema"]["store_id"] == "numeric"
    named = tomllib.loads(infer_config_text(tmp_path, "label", "ts", id_column="store_id"))
    assert named["id_column"] == "store_id" and named["schema"]["visitor_id"] == "numeric"  # the user's choice stands


def test_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    write_batch(tmp_path, "batch.csv", make_batch(0, rows=40))
    existing = tmp_path / "driftdeck.toml"
    existing.write_text("# hand-edited\n")
    with pytest.raises(ConfigError, match="already exists; pass --force"):
        init_config(tmp_path, "label", "ts", None, force=False)
    assert existing.read_text() == "# hand-edited\n"
    init_config(tmp_path, "label", "ts", None, force=True)
    assert load_config(tmp_path).target == "label"


def test_init_names_a_target_that_is_not_a_column(tmp_path: Path) -> None:
    write_batch(tmp_path, "batch.csv", make_batch(0, rows=40))
    with pytest.raises(ConfigError, match="target 'churned' is not a column"):
        init_config(tmp_path, "churned", None, None, force=False)
    assert not (tmp_path / "driftdeck.toml").exists()


def test_init_without_batch_files_says_so(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a batch")
    (tmp_path / ".hidden.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ConfigError, match="no readable batch files"):
        init_config(tmp_path, "label", None, None, force=False)


@pytest.mark.parametrize("rate", ["0", "1", "1.5"])
def test_false_alarm_rate_must_be_a_share(data_dir: Path, rate: str) -> None:
    message = config_error(data_dir, replaced("domain_classifier_rows = 500", f"domain_classifier_rows = 500\nfalse_alarm_rate = {rate}"))
    assert message.startswith("driftdeck.toml: drift.false_alarm_rate must be a share in (0, 1)")


# --- a bucket, and batches larger than memory ----------------------------------------------------


def test_source_and_scale_keys_load_and_default(data_dir: Path) -> None:
    config = load_config(data_dir)
    assert config.source is None and config.scale.engine == "local" and config.scale.sample_rows == 200_000
    write_config(data_dir, 'source = "s3://bkt/in"\n' + BASE_CONFIG + '\n[scale]\nengine = "dask"\n'
                 'scheduler = "tcp://10.0.0.5:8786"\nsample_rows = 1000\n')
    config = load_config(data_dir)
    assert config.source == "s3://bkt/in"
    assert (config.scale.engine, config.scale.scheduler, config.scale.sample_rows) == ("dask", "tcp://10.0.0.5:8786", 1000)


@pytest.mark.parametrize("text, message", [
    ('source = "/data/in"\n' + BASE_CONFIG, 'source must be an object store URL such as "s3://bucket/prefix", got \'/data/in\''),
    (BASE_CONFIG + '\n[scale]\nengine = "spark"\n', 'scale.engine must be "local" or "dask", got "spark"'),
    (BASE_CONFIG + '\n[scale]\nscheduler = "host:8786"\n', "scale.scheduler must be \"local\" or a scheduler address"),
    (BASE_CONFIG + '\n[scale]\nsample_rows = 0\n', "scale.sample_rows must be a whole number >= 1, got 0"),
    (BASE_CONFIG + '\n[scale]\nwidth = 3\n', "scale.width is not a known key"),
])
def test_bad_source_and_scale_keys_are_named(data_dir: Path, text: str, message: str) -> None:
    assert message in config_error(data_dir, text)

# --- label files ------------------------------------------------------------------------


def test_the_labels_section_loads_with_defaults_and_names_each_bad_key(tmp_path: Path) -> None:
    with_id = BASE_CONFIG.replace('task = "classification"', 'task = "classification"\nid_column = "row_id"')
    write_config(tmp_path, with_id + '\n[labels]\npattern = "sales_*"\nwait_seconds = 30\n')
    labels = load_config(tmp_path).labels
    assert (labels.pattern, labels.wait_seconds, labels.labeled_share, labels.max_lag_batches) == ("sales_*", 30.0, 0.9, 4)
    assert "labels.labeled_share must be a share in (0, 1]" in config_error(tmp_path, with_id + "\n[labels]\nlabeled_share = 1.5\n")
    assert "labels.pattern must match file names" in config_error(tmp_path, with_id + '\n[labels]\npattern = "a/b*"\n')
    assert "labels.wait_days is not a known key" in config_error(tmp_path, with_id + "\n[labels]\nwait_days = 1\n")
    assert "[labels] needs id_column" in config_error(tmp_path, BASE_CONFIG + "\n[labels]\n")
