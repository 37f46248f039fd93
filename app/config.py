"""`driftdeck.toml`: the data folder's schema, its models and their policies.

The file is data, never code: it is parsed with ``tomllib`` and every key is
checked here, with messages that name the file and the key, for example
``driftdeck.toml: models[1].mode must be "static" or "dynamic", got "online"``.
"""

from __future__ import annotations

import importlib.util
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from app.objectstore import is_store_url

CONFIG_NAME = "driftdeck.toml"
COLUMN_KINDS = ("numeric", "categorical")
TASKS = ("classification", "regression")
MODES = ("static", "dynamic")
OTHER_CONFIG = "other config"  # the state of a model whose serving snapshot was trained for another config
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # used in file names: no paths, no dot-files


class ConfigError(Exception):
    """The config is missing or wrong; the message names the file and the key."""


@dataclass(frozen=True)
class ModelConfig:
    """One model and its training policy.

    ``window`` is how many of the newest labeled batches a retrain uses
    (``None`` means all of them). Tolerances are in metric points for bounded
    metrics (ROC AUC, accuracy, F1, R²) and a fraction of the reference value
    for error metrics (RMSE, MAE, log loss).
    """

    name: str
    mode: str
    estimator: str
    params: dict[str, Any] = field(default_factory=dict)
    window: int | None = 4
    incremental: bool = False
    bootstrap_batches: int = 1
    metric: str | None = None
    tolerance: float = 0.01
    min_metric: float | None = None
    performance_tolerance: float = 0.05
    auto_rollback: bool = True
    rollback_tolerance: float = 0.05
    max_age_batches: int | None = None
    seed: int = 0

    @property
    def is_dynamic(self) -> bool:
        return self.mode == "dynamic"


@dataclass(frozen=True)
class DriftConfig:
    psi_threshold: float = 0.2
    psi_watch: float = 0.1
    false_alarm_rate: float = 0.01
    domain_classifier_rows: int = 5000
    prediction_psi_threshold: float = 0.2


@dataclass(frozen=True)
class WatchConfig:
    settle_seconds: float = 1.0
    max_missing_share: float = 0.5
    max_file_mb: float = 512.0
    train_timeout: float = 600.0
    max_memory_mb: float | None = None  # a file's read may take this much; default: half the memory available
    list_seconds: float = 10.0  # how often an object store's listing is polled (a config with `source`)
    read_attempts: int = 4  # reads of an object, with backoff, before an event says it failed


SCALE_ENGINES = ("local", "dask")


@dataclass(frozen=True)
class ScaleConfig:
    """How a batch larger than memory is read: streamed in chunks here, or per part on a Dask cluster."""

    engine: str = "local"  # "local": streamed in this process; "dask": each part on a Dask cluster
    scheduler: str = "local"  # "local": a LocalCluster of this machine's cores; or "tcp://host:8786"
    sample_rows: int = 200_000  # the uniform sample the domain classifier and training take of a streamed batch
    chunk_rows: int = 65_536  # rows per record batch while streaming
    stream_above_mb: float = 256.0  # a single file larger than this is streamed rather than read whole


@dataclass(frozen=True)
class LabelsConfig:
    """Label files that arrive after their batches (see :mod:`app.label_files`).

    ``pattern`` is a glob on the file name; ``wait_seconds`` how long labels
    for ids no batch has carried yet wait before they are reported unmatched;
    ``labeled_share`` the share of a batch's rows that must be labelled before
    it counts as labeled for training; ``max_lag_batches`` how many batches may
    arrive after the oldest one still waiting for labels before the
    ``label_lag`` flag; ``track_batches`` how many realised batches the
    estimate's track record (its mean absolute error) covers.
    """

    pattern: str = "labels_*"
    wait_seconds: float = 86400.0
    labeled_share: float = 0.9
    max_lag_batches: int = 4
    track_batches: int = 10


@dataclass(frozen=True)
class Config:
    """The whole of ``driftdeck.toml`` for one data folder."""

    path: Path
    schema: dict[str, str]
    models: tuple[ModelConfig, ...]
    task: str = "classification"
    target: str | None = None
    timestamp: str | None = None
    id_column: str | None = None
    drift: DriftConfig = field(default_factory=DriftConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)
    verdict_batches: int = 5
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    source: str | None = None  # the object store URL this folder stands for (see app/objectstore.py)
    scale: ScaleConfig = field(default_factory=ScaleConfig)

    @property
    def data_dir(self) -> Path:
        return self.path.parent

    @property
    def features(self) -> list[str]:
        return list(self.schema)

    def model(self, name: str) -> ModelConfig:
        for model in self.models:
            if model.name == name:
                return model
        known = ", ".join(m.name for m in self.models) or "none"
        raise ConfigError(f"{self.path.name}: no model named {name!r} (models: {known})")


def load_config(data_dir: Path) -> Config:
    """Read and check ``DATA_DIR/driftdeck.toml``; raise ConfigError on any problem."""
    path = Path(data_dir) / CONFIG_NAME
    if not path.is_file():
        raise ConfigError(
            f"{path}: no config found; run `driftdeck init {data_dir} --target COLUMN` first"
        )
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path.name}: not valid TOML: {error}") from None
    return parse_config(raw, path)


def parse_config(raw: dict[str, Any], path: Path) -> Config:
    check = _Checker(path.name)
    check.known_keys(
        raw,
        "",
        {"target", "timestamp", "id_column", "task", "schema", "models", "drift", "watch", "verdict_batches", "labels",
         "source", "scale"},
    )
    schema = check.schema(raw.get("schema"))
    task = check.choice(raw, "task", TASKS, "classification")
    target = check.optional_str(raw, "target")
    timestamp = check.optional_str(raw, "timestamp")
    id_column = check.optional_str(raw, "id_column")
    for key, column in (("target", target), ("timestamp", timestamp), ("id_column", id_column)):
        if column is not None and column in schema:
            raise ConfigError(f"{check.file}: {key} {column!r} must not also be a feature in [schema]")
    models = check.models(raw.get("models", []), task, schema, target)
    drift = check.section(raw, "drift", DriftConfig)
    watch = check.section(raw, "watch", WatchConfig)
    if not 0 < drift.psi_watch <= drift.psi_threshold:
        raise ConfigError(f"{check.file}: drift.psi_watch must be > 0 and <= drift.psi_threshold")
    if not 0 < drift.false_alarm_rate < 1:
        raise ConfigError(f"{check.file}: drift.false_alarm_rate must be a share in (0, 1), got {drift.false_alarm_rate}")
    if not 0 < watch.max_missing_share <= 1:
        raise ConfigError(f"{check.file}: watch.max_missing_share must be a share in (0, 1], got {watch.max_missing_share}")
    for key in ("max_file_mb", "train_timeout", "max_memory_mb", "list_seconds"):
        if getattr(watch, key) is not None and getattr(watch, key) <= 0:
            raise ConfigError(f"{check.file}: watch.{key} must be > 0, got {getattr(watch, key)}")
    verdict_batches = check.positive_int(raw, "verdict_batches", 5, "")
    labels = check.labels(raw)
    if "labels" in raw and id_column is None:
        raise ConfigError(f"{check.file}: [labels] needs id_column: label files are joined to batches by id")
    source = check.optional_str(raw, "source")
    if source is not None and not is_store_url(source):
        raise ConfigError(f"{check.file}: source must be an object store URL such as \"s3://bucket/prefix\", got {source!r}")
    return Config(
        path=path,
        schema=schema,
        models=models,
        task=task,
        target=target,
        timestamp=timestamp,
        id_column=id_column,
        drift=drift,
        watch=watch,
        verdict_batches=verdict_batches,
        labels=labels,
        source=source,
        scale=check.scale(raw.get("scale", {})),
    )


class _Checker:
    """Turns a raw TOML dict into typed values, raising ConfigError with the key path."""

    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.file}: {key} {message}")

    def known_keys(self, raw: dict, prefix: str, allowed: set[str]) -> None:
        for key in raw:
            if key not in allowed:
                valid = ", ".join(sorted(allowed))
                raise self.fail(f"{prefix}{key}", f"is not a known key (known: {valid})")

    def schema(self, raw: Any) -> dict[str, str]:
        if not isinstance(raw, dict) or not raw:
            raise self.fail("[schema]", "must list the feature columns, e.g. age = \"numeric\"")
        for column, kind in raw.items():
            if kind not in COLUMN_KINDS:
                raise self.fail(f"schema.{column}", f'must be "numeric" or "categorical", got {kind!r}')
        return dict(raw)

    def choice(self, raw: dict, key: str, allowed: tuple[str, ...], default: str, prefix: str = "") -> str:
        value = raw.get(key, default)
        if value not in allowed:
            options = " or ".join(f'"{option}"' for option in allowed)
            shown = f'"{value}"' if isinstance(value, str) else repr(value)
            raise self.fail(f"{prefix}{key}", f"must be {options}, got {shown}")
        return value

    def optional_str(self, raw: dict, key: str, prefix: str = "") -> str | None:
        value = raw.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            raise self.fail(f"{prefix}{key}", f"must be a non-empty string, got {value!r}")
        return value

    def positive_int(self, raw: dict, key: str, default: int | None, prefix: str) -> int | None:
        value = raw.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.fail(f"{prefix}{key}", f"must be a whole number >= 1, got {value!r}")
        return value

    def seed(self, raw: dict, prefix: str) -> int:
        value = raw.get("seed", 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.fail(f"{prefix}seed", f"must be a whole number >= 0, got {value!r}")
        return value

    def number(self, raw: dict, key: str, default: float | None, prefix: str) -> float | None:
        value = raw.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise self.fail(f"{prefix}{key}", f"must be a number >= 0, got {value!r}")
        return float(value)

    def boolean(self, raw: dict, key: str, default: bool, prefix: str) -> bool:
        value = raw.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(f"{prefix}{key}", f"must be true or false, got {value!r}")
        return value

    def labels(self, raw: dict) -> LabelsConfig:
        values = raw.get("labels", {})
        if not isinstance(values, dict):
            raise self.fail("[labels]", "must be a table")
        pattern = self.optional_str(values, "pattern", "labels.") or LabelsConfig.pattern
        if "/" in pattern or pattern.startswith((".", "_")):
            raise self.fail("labels.pattern", f"must match file names in the data folder (no '/', no leading '.' or '_'), got {pattern!r}")
        section = self.section({"labels": {k: v for k, v in values.items() if k != "pattern"}}, "labels", LabelsConfig)
        if not 0 < section.labeled_share <= 1:
            raise self.fail("labels.labeled_share", f"must be a share in (0, 1], got {section.labeled_share}")
        return replace(section, pattern=pattern)

    def section(self, raw: dict, name: str, kind: type):
        values = raw.get(name, {})
        if not isinstance(values, dict):
            raise self.fail(f"[{name}]", "must be a table")
        defaults = kind()
        self.known_keys(values, f"{name}.", set(defaults.__dataclass_fields__))
        checked = {}
        for key in values:
            default = getattr(defaults, key)
            if isinstance(default, int) and not isinstance(default, float):
                checked[key] = self.positive_int(values, key, default, f"{name}.")
            else:
                checked[key] = self.number(values, key, default, f"{name}.")
        return kind(**checked)

    def scale(self, raw: Any) -> ScaleConfig:
        if not isinstance(raw, dict):
            raise self.fail("[scale]", "must be a table")
        self.known_keys(raw, "scale.", set(ScaleConfig.__dataclass_fields__))
        engine = self.choice(raw, "engine", SCALE_ENGINES, "local", "scale.")
        if engine == "dask" and importlib.util.find_spec("distributed") is None:
            raise self.fail("scale.engine", "\"dask\" needs dask and distributed: pip install 'driftdeck[dask]'")
        scheduler = self.optional_str(raw, "scheduler", "scale.") or "local"
        if scheduler != "local" and not re.fullmatch(r"(tcp|tls|inproc|ucx)://\S+", scheduler):
            raise self.fail("scale.scheduler", f'must be "local" or a scheduler address such as "tcp://host:8786", got {scheduler!r}')
        stream_above_mb = self.number(raw, "stream_above_mb", 256.0, "scale.")
        if stream_above_mb <= 0:
            raise self.fail("scale.stream_above_mb", f"must be > 0, got {stream_above_mb}")
        return ScaleConfig(engine=engine, scheduler=scheduler,
                           sample_rows=self.positive_int(raw, "sample_rows", 200_000, "scale."),
                           chunk_rows=self.positive_int(raw, "chunk_rows", 65_536, "scale."),
                           stream_above_mb=stream_above_mb)

    def models(self, raw: Any, task: str, schema: dict[str, str], target: str | None) -> tuple[ModelConfig, ...]:
        from app.metrics import metrics_for
        from app.models import EstimatorConfigError, check_estimator

        if not isinstance(raw, list):
            raise self.fail("[[models]]", "must be a list of tables")
        models = []
        for index, entry in enumerate(raw):
            prefix = f"models[{index}]."
            if not isinstance(entry, dict):
                raise self.fail(f"models[{index}]", "must be a table")
            self.known_keys(entry, prefix, set(ModelConfig.__dataclass_fields__))
            name = self.optional_str(entry, "name", prefix)
            if name is None:
                raise self.fail(f"{prefix}name", "is required")
            if not MODEL_NAME.fullmatch(name):
                raise self.fail(f"{prefix}name", f"must be letters, digits, '-', '_' or '.', starting with a letter or digit; got {name!r}")
            if any(model.name == name for model in models):
                raise self.fail(f"{prefix}name", f"{name!r} is used by another model")
            mode = self.choice(entry, "mode", MODES, "", prefix)
            estimator = self.optional_str(entry, "estimator", prefix)
            if estimator is None:
                raise self.fail(f"{prefix}estimator", "is required")
            params = entry.get("params", {})
            if not isinstance(params, dict):
                raise self.fail(f"{prefix}params", "must be a table, e.g. params = {max_depth = 6}")
            try:
                check_estimator(task, estimator, params)
            except EstimatorConfigError as error:
                raise self.fail(f"{prefix}{error.key}", str(error)) from None
            window_raw = entry.get("window", 4)
            window = None if window_raw == "all" else self.positive_int(entry, "window", 4, prefix)
            metric = self.optional_str(entry, "metric", prefix)
            if metric is not None:
                allowed = metrics_for(task)
                if metric not in allowed:
                    raise self.fail(f"{prefix}metric", f"must be one of {', '.join(allowed)}, got {metric!r}")
            models.append(
                ModelConfig(
                    name=name,
                    mode=mode,
                    estimator=estimator,
                    params=dict(params),
                    window=window,
                    incremental=self.boolean(entry, "incremental", False, prefix),
                    bootstrap_batches=self.positive_int(entry, "bootstrap_batches", 1, prefix),
                    metric=metric,
                    tolerance=self.number(entry, "tolerance", 0.01, prefix),
                    min_metric=self.number(entry, "min_metric", None, prefix),
                    performance_tolerance=self.number(entry, "performance_tolerance", 0.05, prefix),
                    auto_rollback=self.boolean(entry, "auto_rollback", mode == "dynamic", prefix),
                    rollback_tolerance=self.number(entry, "rollback_tolerance", 0.05, prefix),
                    max_age_batches=self.positive_int(entry, "max_age_batches", None, prefix),
                    seed=self.seed(entry, prefix),
                )
            )
        return tuple(models)



def training_config_changes(recorded: dict[str, Any] | None, config: Config) -> list[str]:
    """Why a model trained under ``recorded`` (a snapshot's ``config``) cannot be scored under ``config``.

    A model learned one task, one target and one set of feature columns of
    given kinds; any change there makes its predictions meaningless (or
    impossible) here, so it is shown as trained for another config and not
    scored until retrained. Empty when it still fits, or when the snapshot
    predates the record.
    """
    if not recorded:
        return []
    changes = []
    if recorded.get("task", config.task) != config.task:
        changes.append(f"trained for {recorded['task']}, the config now says {config.task}")
    if recorded.get("target", config.target) != config.target:
        changes.append(f"trained to predict {recorded['target']!r}, the target is now {config.target!r}")
    schema = recorded.get("schema", config.schema)
    for column, kind in schema.items():
        if column not in config.schema:
            changes.append(f"{column!r} is no longer a feature")
        elif config.schema[column] != kind:
            changes.append(f"{column!r} was {kind}, now {config.schema[column]}")
    changes += [f"{column!r} is a new feature" for column in config.schema if column not in schema]
    return changes
