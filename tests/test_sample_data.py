"""The sample scenarios: reproducible files, and the stories they are meant to tell.

The story checks train plain scikit-learn pipelines shaped like driftdeck's
(median imputer, a scaler for linear models, one-hot categories) and measure
them the way the monitor will: the first training holds out the newest 20% of
its rows, static models are scored on every later batch, dynamic ones are
retrained on the last four good batches before scoring the next.
"""

from __future__ import annotations

import importlib.util
import tomllib
import zlib
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import mean_squared_error, roc_auc_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from threadpoolctl import threadpool_limits

SAMPLE_DATA = Path(__file__).resolve().parents[1] / "sample_data"
SCENARIOS = ("flowers", "sea_level")  # the weekly-batch stories checked below
GENERATED = (*SCENARIOS, "late_labels")
HAND_WRITTEN = {"README.md"}
MAX_COMMITTED_BYTES = 3 * 1024 * 1024
FLOWERS_BOOTSTRAP = 9  # first training: the nine July-August weeks
SEA_BOOTSTRAP = 4
WINDOW = 4  # a dynamic retrain uses the last four good weeks


def load_generator():
    """sample_data/generate.py as a module (sample_data/ is not a package)."""
    spec = importlib.util.spec_from_file_location("sample_data_generate", SAMPLE_DATA / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate = load_generator()


@dataclass(frozen=True)
class Batch:
    """One batch file; ``frame`` is None when the file cannot be read."""

    path: Path
    frame: pd.DataFrame | None

    @property
    def week_start(self) -> date:
        return date.fromisoformat(self.path.name[:10])


def read_batch(path: Path) -> pd.DataFrame:
    """Read a batch with pandas; dates stay ISO strings in every format."""
    if path.name.endswith(".parquet"):
        return pd.read_parquet(path)
    if path.name.endswith(".jsonl"):
        return pd.read_json(path, lines=True, dtype=False)
    return pd.read_csv(path)


def scenario_files(folder: Path) -> list[Path]:
    """The files a scenario folder holds, without hidden ones (a ``.driftdeck/`` state folder)."""
    return sorted(path for path in folder.iterdir() if not path.name.startswith("."))


def batch_paths(folder: Path) -> list[Path]:
    return [path for path in scenario_files(folder) if path.name not in HAND_WRITTEN | {generate.CONFIG_NAME}]


def load_batches(folder: Path) -> list[Batch]:
    batches = []
    for path in batch_paths(folder):
        try:
            batches.append(Batch(path, read_batch(path)))
        except (EOFError, OSError, ValueError):
            batches.append(Batch(path, None))
    return batches


def pipeline(numeric: list[str], categorical: list[str], estimator, scale: bool) -> Pipeline:
    numeric_steps = [SimpleImputer(strategy="median")] + ([StandardScaler()] if scale else [])
    preprocess = ColumnTransformer(
        [
            ("numeric", make_pipeline(*numeric_steps), numeric),
            ("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical),
        ]
    )
    return make_pipeline(preprocess, estimator)


def split_holdout(frame: pd.DataFrame, share: float = 0.2) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(older rows, newest ``share`` of rows by date)."""
    ordered = frame.sort_values("date", kind="stable")
    cut = int(round(len(ordered) * (1 - share)))
    return ordered.iloc[:cut], ordered.iloc[cut:]


def gunzip_prefix(data: bytes) -> bytes:
    """As much of a gzip stream as can be decompressed (all of it when intact)."""
    return zlib.decompressobj(wbits=31).decompress(data)


# --------------------------------------------------------------------------- files


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[Path, Path]:
    """The scenarios written twice with the default seed, into two folders."""
    first, second = tmp_path_factory.mktemp("first"), tmp_path_factory.mktemp("second")
    for out in (first, second):
        generate.write_flowers(out)
        generate.write_sea_level(out)
        generate.write_late_labels(out)
    return first, second


def relative_files(root: Path) -> list[Path]:
    return sorted(path.relative_to(root) for path in root.rglob("*") if path.is_file())


def test_the_same_seed_writes_the_same_bytes(generated):
    first, second = generated
    files = relative_files(first)
    assert files == relative_files(second)
    late_files = 2 * generate.LATE_WEEKS - generate.LATE_LABELLED_WEEKS  # visits, and sales for the unlabelled weeks
    assert len(files) == generate.FLOWERS_WEEKS + generate.SEA_WEEKS + late_files + 3
    for name in files:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_another_seed_writes_other_data(tmp_path):
    generate.write_sea_level(tmp_path, seed=generate.DEFAULT_SEED + 1)
    other = tmp_path / "sea_level" / "2025-09-01.csv.gz"
    committed = SAMPLE_DATA / "sea_level" / "2025-09-01.csv.gz"
    assert gunzip_prefix(other.read_bytes()) != gunzip_prefix(committed.read_bytes())


@pytest.mark.parametrize("scenario", GENERATED)
def test_committed_files_are_what_the_generator_writes(generated, scenario):
    """Text formats compare exactly; gzip by content (zlib builds may pack it
    differently); parquet as frames (the writer records its version)."""
    fresh_folder, committed_folder = generated[0] / scenario, SAMPLE_DATA / scenario
    committed_names = {path.name for path in scenario_files(committed_folder)} - HAND_WRITTEN
    assert committed_names == {path.name for path in fresh_folder.iterdir()}
    for name in sorted(committed_names):
        fresh, committed = fresh_folder / name, committed_folder / name
        if name.endswith(".parquet"):
            pd.testing.assert_frame_equal(pd.read_parquet(fresh), pd.read_parquet(committed))
        elif name.endswith(".gz") and fresh.read_bytes() != committed.read_bytes():
            fresh_text, committed_text = gunzip_prefix(fresh.read_bytes()), gunzip_prefix(committed.read_bytes())
            if name.startswith(generate.MALFORMED_WEEK.isoformat()):
                shorter, longer = sorted((fresh_text, committed_text), key=len)
                assert longer.startswith(shorter), name
            else:
                assert fresh_text == committed_text, name
        else:
            assert fresh.read_bytes() == committed.read_bytes(), name


def test_committed_scenarios_are_small_and_documented():
    total = sum(path.stat().st_size for scenario in GENERATED for path in scenario_files(SAMPLE_DATA / scenario))
    assert total < MAX_COMMITTED_BYTES
    for scenario in GENERATED:
        assert (SAMPLE_DATA / scenario / "README.md").is_file()


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_configs_load(scenario):
    from app.config import load_config

    config = load_config(SAMPLE_DATA / scenario)
    frame = next(batch.frame for batch in load_batches(SAMPLE_DATA / scenario) if batch.frame is not None)
    named = [*config.schema, config.target, config.timestamp] + ([config.id_column] if config.id_column else [])
    assert sorted(named) == sorted(frame.columns)


def test_configs_match_what_the_story_checks_assume():
    """The checks below train the estimators, windows and first trainings the configs name."""
    models = {}
    for scenario in SCENARIOS:
        config = tomllib.loads((SAMPLE_DATA / scenario / generate.CONFIG_NAME).read_text(encoding="utf-8"))
        models.update({model["name"]: model for model in config["models"]})
    assert models["flowers-static"]["estimator"] == "logistic_regression"
    assert models["flowers-dynamic"]["estimator"] == "hist_gradient_boosting"
    assert {models[name]["bootstrap_batches"] for name in ("flowers-static", "flowers-dynamic")} == {FLOWERS_BOOTSTRAP}
    # Both sea-level models are linear, so neither can go wrong by extrapolating
    # the winter inputs that lie beyond the September training range.
    assert {models[name]["estimator"] for name in ("sea-static", "sea-dynamic")} == {"ridge"}
    assert {models[name]["bootstrap_batches"] for name in ("sea-static", "sea-dynamic")} == {SEA_BOOTSTRAP}
    assert {models[name]["window"] for name in ("flowers-dynamic", "sea-dynamic")} == {WINDOW}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_batches_are_weekly_in_every_format(scenario):
    batches = load_batches(SAMPLE_DATA / scenario)
    week_starts = [batch.week_start for batch in batches]
    assert week_starts == [week_starts[0] + timedelta(weeks=index) for index in range(len(batches))]
    assert all(week_start.weekday() == 0 for week_start in week_starts)
    suffixes = {batch.path.name[10:] for batch in batches}
    assert suffixes == {".csv.gz", ".csv", ".parquet", ".jsonl"}
    for batch in batches:
        if batch.frame is None:
            continue
        dates = pd.to_datetime(batch.frame["date"], format="%Y-%m-%d").dt.date
        assert dates.min() >= batch.week_start
        assert dates.max() <= batch.week_start + timedelta(days=6)


# --------------------------------------------------------------------------- flowers

FLOWER_NUMERIC = ["age", "past_purchases", "sessions_7d", "basket_value", "days_to_holiday"]
FLOWER_CATEGORICAL = ["device", "region"]
FLOWER_FEATURES = FLOWER_NUMERIC + FLOWER_CATEGORICAL
BOUGHT = "bought_flowers"


def valentine_weeks() -> list[date]:
    """The weeks in which holiday buying has fully taken over."""
    season_start = generate.VALENTINES_DAY - timedelta(days=generate.SEASON_LEAD_DAYS)
    return [season_start + timedelta(weeks=week) for week in range(3)]


@pytest.fixture(scope="module")
def flowers() -> list[Batch]:
    return load_batches(SAMPLE_DATA / "flowers")


def test_flowers_has_one_unreadable_and_one_unlabelable_week(flowers):
    unreadable = [batch.week_start for batch in flowers if batch.frame is None]
    assert unreadable == [generate.MALFORMED_WEEK]
    one_class = [batch.week_start for batch in flowers if batch.frame is not None and batch.frame[BOUGHT].nunique() < 2]
    assert one_class == [generate.UNLABELED_WEEK]
    assert (next(b for b in flowers if b.week_start == generate.UNLABELED_WEEK).frame[BOUGHT] == 0).all()


def test_flowers_rows_ids_and_missing_values(flowers):
    frames = [batch.frame for batch in flowers if batch.frame is not None]
    assert all(1800 <= len(frame) <= 2200 for frame in frames)
    ids = pd.concat(frame["visitor_id"] for frame in frames)
    assert ids.is_unique
    everything = pd.concat(frames)
    for column in ("age", "basket_value"):
        assert 0.01 < everything[column].isna().mean() < 0.06, column
    assert everything[FLOWER_FEATURES].drop(columns=["age", "basket_value"]).notna().all().all()


@dataclass(frozen=True)
class FlowerScores:
    """ROC AUC per good week (week start -> AUC) for both policies."""

    static_holdout_auc: float
    static: dict[date, float]
    rolling: dict[date, float]


def auc(model: Pipeline, frame: pd.DataFrame) -> float:
    return roc_auc_score(frame[BOUGHT], model.predict_proba(frame[FLOWER_FEATURES])[:, 1])


def rolling_auc(window: list[pd.DataFrame], batch: pd.DataFrame) -> float:
    """AUC on ``batch`` of a gradient-boosting model trained on the ``window`` batches."""
    training = pd.concat(window)
    model = pipeline(FLOWER_NUMERIC, FLOWER_CATEGORICAL, HistGradientBoostingClassifier(random_state=0), scale=False)
    return auc(model.fit(training[FLOWER_FEATURES], training[BOUGHT]), batch)


@pytest.fixture(scope="module")
def flower_scores(flowers) -> FlowerScores:
    """Static logistic regression vs. a gradient-boosting model retrained every week.

    Only good weeks count (the unreadable and the unlabelable week are skipped).
    Rolling scores start four weeks before the Valentine's change: that is all
    the checks need, and it keeps the test fast. One thread: OpenMP threads
    that wait on each other crawl on a busy shared machine.
    """
    good = [batch for batch in flowers if batch.frame is not None and batch.frame[BOUGHT].nunique() == 2]
    change = [batch.week_start for batch in good].index(valentine_weeks()[0])
    first_training, holdout = split_holdout(pd.concat(batch.frame for batch in good[:FLOWERS_BOOTSTRAP]))
    static = pipeline(FLOWER_NUMERIC, FLOWER_CATEGORICAL, LogisticRegression(max_iter=1000), scale=True)
    with threadpool_limits(limits=1):
        static.fit(first_training[FLOWER_FEATURES], first_training[BOUGHT])
        rolling = {
            good[index].week_start: rolling_auc([b.frame for b in good[index - WINDOW : index]], good[index].frame)
            for index in range(change - WINDOW, len(good))
        }
    static_scores = {batch.week_start: auc(static, batch.frame) for batch in good[FLOWERS_BOOTSTRAP:]}
    return FlowerScores(auc(static, holdout), static_scores, rolling)


def test_static_model_holds_until_the_holiday_season(flower_scores):
    """Autumn's covariate drift alone must not cost the static model its accuracy."""
    season_start = valentine_weeks()[0]
    before = {week: score for week, score in flower_scores.static.items() if week < season_start}
    assert len(before) >= 15
    assert all(abs(score - flower_scores.static_holdout_auc) <= 0.05 for score in before.values()), before


def test_static_model_fails_at_valentines(flower_scores):
    for week in valentine_weeks():
        assert flower_scores.static[week] <= flower_scores.static_holdout_auc - 0.08, week


def test_rolling_model_recovers_within_two_weeks(flower_scores):
    weeks = list(flower_scores.rolling)
    change = weeks.index(valentine_weeks()[0])
    before_change = np.mean([flower_scores.rolling[week] for week in weeks[change - WINDOW : change]])
    assert flower_scores.rolling[weeks[change]] < before_change - 0.03  # the change hits it too
    assert flower_scores.rolling[weeks[change + 2]] >= before_change - 0.03


def test_rolling_model_beats_static_over_the_last_eight_weeks(flower_scores):
    last_weeks = list(flower_scores.rolling)[-8:]
    rolling = np.mean([flower_scores.rolling[week] for week in last_weeks])
    static = np.mean([flower_scores.static[week] for week in last_weeks])
    assert rolling - static > 0.03


# --------------------------------------------------------------------------- sea level

SEA_NUMERIC = ["air_pressure_hpa", "wind_speed_ms", "wind_dir_onshore", "water_temp_c", "predicted_tide_mm"]
SEA_CATEGORICAL = ["station"]
SEA_FEATURES = SEA_NUMERIC + SEA_CATEGORICAL
SEA_LEVEL = "sea_level_mm"


@pytest.fixture(scope="module")
def sea_frames() -> list[pd.DataFrame]:
    return [batch.frame for batch in load_batches(SAMPLE_DATA / "sea_level")]


def ridge() -> Pipeline:
    return pipeline(SEA_NUMERIC, SEA_CATEGORICAL, Ridge(alpha=1.0), scale=True)


def rmse(model: Pipeline, frame: pd.DataFrame) -> float:
    return float(np.sqrt(mean_squared_error(frame[SEA_LEVEL], model.predict(frame[SEA_FEATURES]))))


def test_sea_level_inputs_drift_with_the_season(sea_frames):
    first, last = pd.concat(sea_frames[:SEA_BOOTSTRAP]), pd.concat(sea_frames[-SEA_BOOTSTRAP:])
    assert first["water_temp_c"].mean() - last["water_temp_c"].mean() > 2.5
    assert last["wind_speed_ms"].mean() > first["wind_speed_ms"].mean() * 1.2
    assert all(len(frame) >= 950 for frame in sea_frames)


def test_static_ridge_is_enough_for_sea_level(sea_frames):
    training, holdout = split_holdout(pd.concat(sea_frames[:SEA_BOOTSTRAP]))
    static = ridge().fit(training[SEA_FEATURES], training[SEA_LEVEL])
    holdout_rmse = rmse(static, holdout)

    static_rmse, rolling_rmse = [], []
    for index in range(SEA_BOOTSTRAP, len(sea_frames)):
        window = pd.concat(sea_frames[index - WINDOW : index])
        rolling = ridge().fit(window[SEA_FEATURES], window[SEA_LEVEL])
        static_rmse.append(rmse(static, sea_frames[index]))
        rolling_rmse.append(rmse(rolling, sea_frames[index]))

    assert max(static_rmse) <= 1.05 * holdout_rmse
    assert abs(np.mean(rolling_rmse) / np.mean(static_rmse) - 1) <= 0.02


# --------------------------------------------------------------------------- late labels


def test_late_labels_every_unlabelled_visit_gets_its_sales_once_and_one_file_comes_late():
    from app.config import load_config
    from app.label_files import is_label_file

    folder = SAMPLE_DATA / "late_labels"
    config = load_config(folder)
    files = [path for path in scenario_files(folder) if path.name not in HAND_WRITTEN | {generate.CONFIG_NAME}]
    visits = [path for path in files if not is_label_file(path.name, config)]
    sales = [path for path in files if is_label_file(path.name, config)]
    assert len(visits) == generate.LATE_WEEKS and all(path.name.endswith("-visits.csv.gz") for path in visits)
    unlabelled = [path for path in visits if "bought_flowers" not in read_batch(path).columns]
    assert len(unlabelled) == generate.LATE_WEEKS - generate.LATE_LABELLED_WEEKS
    sold_ids = pd.concat([read_batch(path)["visitor_id"] for path in sales])
    visit_ids = pd.concat([read_batch(path)["visitor_id"] for path in unlabelled])
    assert sold_ids.is_unique and set(sold_ids) == set(visit_ids)
    resent = [path.name for path in sales if "resent" in path.name]
    assert resent == [f"2026-02-02-sales-{generate.LOST_SALES_WEEK.isoformat()}-resent.csv.gz"]
    assert {path.name.split(".", 1)[1] for path in sales} == {"csv", "csv.gz", "parquet", "jsonl"}
