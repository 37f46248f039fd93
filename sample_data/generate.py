"""Write driftdeck's sample scenarios as folders of weekly batch files.

    python sample_data/generate.py [--out DIR] [--seed N]

``flowers/``   will a visitor of a flower shop's site buy flowers? (classification).
               The relationship changes sharply before Valentine's Day and, more
               mildly, before Mother's Day: static training is not enough here.
``sea_level/`` sea level at four tide gauges (regression). The inputs move with
               the seasons but the physics never changes: static training is enough.
``late_labels/`` the flower shop again, but a week's sales are known only a week
               later: each week's visits come without ``bought_flowers``, and a
               sales file (visitor id and the label) follows; one is lost and re-sent.

One file is one batch, named after the Monday of its week so names sort
chronologically. Most files are ``.csv.gz``; a few are ``.parquet``, ``.csv`` or
``.jsonl`` so that every reader gets exercised. The same seed writes the same
bytes: gzip without a time stamp or file name, floats with a fixed number of
decimals, parquet without pandas metadata, JSONL with sorted keys. Each folder
also gets the ``driftdeck.toml`` that tells driftdeck which column is which.
"""

from __future__ import annotations

import argparse
import gzip
import io
import sys
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # so that `python sample_data/generate.py` finds the app package

from app.fsutil import atomic_write_bytes, atomic_write_text  # noqa: E402

DEFAULT_SEED = 7
DEFAULT_OUT = Path(__file__).resolve().parent
FLOAT_DECIMALS = 2  # every float column is rounded to this, so all formats hold the same values
CONFIG_NAME = "driftdeck.toml"


# --------------------------------------------------------------------------- flowers

FLOWERS_START = date(2025, 7, 7)  # a Monday; 39 weekly batches run to the end of March 2026
FLOWERS_WEEKS = 39
FLOWERS_ROWS = (1900, 2100)  # visitors per week, drawn uniformly from this range
VALENTINES_DAY = date(2026, 2, 14)
MOTHERS_DAY_UK = date(2026, 3, 15)
NEXT_VALENTINES_DAY = date(2027, 2, 14)
HOLIDAY_HORIZON_DAYS = 28  # days_to_holiday is capped here: "no flower holiday within four weeks"
SEASON_LEAD_DAYS = 19  # holiday buying takes over in the 19 days up to a holiday (Jan 26 - Feb 14)
HOLIDAY_SEASONS = {VALENTINES_DAY: 1.0, MOTHERS_DAY_UK: 0.8}  # holiday -> how fully it takes over
MALFORMED_WEEK = date(2025, 10, 13)  # written, then cut at half its bytes
UNLABELED_WEEK = date(2025, 11, 10)  # a broken labelling job wrote 0 for every visitor
REGIONS = ("north", "midlands", "wales", "south_east", "london")
FLOWERS_FORMATS = {  # week start -> file format; all other weeks are .csv.gz
    date(2025, 7, 21): ".parquet",
    date(2025, 8, 18): ".csv",
    date(2025, 9, 22): ".parquet",
    date(2025, 11, 24): ".jsonl",
    date(2025, 12, 29): ".parquet",
    date(2026, 2, 23): ".parquet",
}

FLOWERS_CONFIG = """\
# Written by sample_data/generate.py; the story is in README.md.
target = "bought_flowers"
timestamp = "date"
id_column = "visitor_id"
task = "classification"
verdict_batches = 8  # judge static vs dynamic over the last eight weeks (both holidays)

[schema]
age = "numeric"
past_purchases = "numeric"
sessions_7d = "numeric"
basket_value = "numeric"
days_to_holiday = "numeric"
device = "categorical"
region = "categorical"

# Trained once on the nine July-August weeks, then only flagged.
[[models]]
name = "flowers-static"
mode = "static"
estimator = "logistic_regression"
bootstrap_batches = 9

# Retrained on the last four labeled weeks after every labeled week.
[[models]]
name = "flowers-dynamic"
mode = "dynamic"
estimator = "hist_gradient_boosting"
window = 4
bootstrap_batches = 9
"""


def days_to_holiday(dates: pd.Series) -> np.ndarray:
    """Days from each date to the next flower holiday, capped at HOLIDAY_HORIZON_DAYS.

    The flower holidays are Valentine's Day and UK Mother's Day (on the day
    itself: 0). Everything further away than four weeks reads as 28, so the
    column is flat from spring to Christmas and counts down before each holiday.
    """
    holidays = np.array([VALENTINES_DAY, MOTHERS_DAY_UK, NEXT_VALENTINES_DAY], dtype="datetime64[D]")
    days = dates.to_numpy(dtype="datetime64[D]")
    upcoming = holidays[np.searchsorted(holidays, days, side="left")]
    return np.minimum((upcoming - days).astype(int), HOLIDAY_HORIZON_DAYS)


def holiday_takeover(dates: pd.Series) -> np.ndarray:
    """How much holiday buying replaces everyday buying on each date, 0..1.

    In the SEASON_LEAD_DAYS up to a holiday: 1 for Valentine's Day, 0.8 for
    Mother's Day (the milder one: some everyday buying goes on); 0 otherwise.
    """
    days = dates.to_numpy(dtype="datetime64[D]")
    takeover = np.zeros(len(days))
    for holiday, weight in HOLIDAY_SEASONS.items():
        lead = (np.datetime64(holiday, "D") - days).astype(int)
        takeover[(lead >= 0) & (lead <= SEASON_LEAD_DAYS)] = weight
    return takeover


def flowers_week(rng: np.random.Generator, week_start: date, first_visitor_id: int) -> pd.DataFrame:
    """One week of visitors, sorted by date, with ``bought_flowers`` drawn from the story."""
    rows = int(rng.integers(*FLOWERS_ROWS, endpoint=True))
    dates = pd.Series(pd.to_datetime(week_start) + pd.to_timedelta(np.sort(rng.integers(0, 7, rows)), unit="D"))

    # Autumn brings more browsing: the mean of sessions_7d climbs from 2 at the
    # start of September to 2.6 at the end of November and stays there (a PSI
    # of about 0.15: "watch"). This is covariate drift only; the buying rules
    # below do not change with it.
    autumn = np.clip((week_start - date(2025, 9, 1)).days / 90, 0.0, 1.0)
    age = np.clip(rng.normal(41, 13, rows), 18, 80).round()
    past_purchases = rng.poisson(0.8, rows)
    sessions_7d = rng.poisson(2.0 + 0.6 * autumn, rows)
    basket_value = rng.gamma(4.0, 9.0, rows)  # pounds; mean 36
    device = rng.choice(["mobile", "desktop", "tablet"], rows, p=[0.6, 0.3, 0.1])
    region = rng.choice(REGIONS, rows, p=[0.25, 0.2, 0.1, 0.25, 0.2])
    countdown = days_to_holiday(dates)

    # Everyday buying: past buyers, frequent visitors and big baskets buy; a
    # desktop and London help a little. About 4 in 10 visitors buy.
    everyday = (
        -3.7
        + 1.0 * past_purchases
        + 0.45 * sessions_7d
        + 0.035 * basket_value
        + 0.01 * (age - 41)
        + 0.4 * (device == "desktop")
        + 0.3 * (region == "london")
    )
    # Holiday buying: past purchases stop mattering (people who never bought
    # flowers buy them now), the young and mobile users buy, and more so as
    # the holiday gets closer. About 7 in 10 visitors buy.
    holiday = (
        0.0
        - 0.1 * (age - 41)
        + 1.0 * (device == "mobile")
        + 0.1 * sessions_7d
        + 0.6 * (1 - countdown / SEASON_LEAD_DAYS)
    )
    takeover = holiday_takeover(dates)
    logit = (1 - takeover) * everyday + takeover * holiday
    bought = rng.random(rows) < 1 / (1 + np.exp(-logit))

    # A few percent of ages and basket values are not recorded.
    age[rng.random(rows) < 0.03] = np.nan
    basket_value[rng.random(rows) < 0.02] = np.nan

    return pd.DataFrame(
        {
            "date": dates.dt.strftime("%Y-%m-%d"),
            "visitor_id": np.arange(first_visitor_id, first_visitor_id + rows),
            "age": pd.array(age, dtype="Int64"),
            "past_purchases": past_purchases,
            "sessions_7d": sessions_7d,
            "basket_value": basket_value.round(FLOAT_DECIMALS),
            "days_to_holiday": countdown,
            "device": device,
            "region": region,
            "bought_flowers": bought.astype(int),
        }
    )


def write_flowers(out: Path, seed: int = DEFAULT_SEED) -> list[Path]:
    """Write flowers/ under ``out``: 39 weekly batches and driftdeck.toml; return the batch paths."""
    folder = out / "flowers"
    rng = np.random.default_rng(seed)
    paths = []
    next_visitor_id = 100_001
    for week in range(FLOWERS_WEEKS):
        week_start = FLOWERS_START + timedelta(weeks=week)
        frame = flowers_week(rng, week_start, next_visitor_id)
        next_visitor_id += len(frame)
        if week_start == UNLABELED_WEEK:
            frame["bought_flowers"] = 0
        suffix = FLOWERS_FORMATS.get(week_start, ".csv.gz")
        data = batch_bytes(frame, suffix)
        if week_start == MALFORMED_WEEK:
            data = data[: len(data) // 2]
        path = folder / f"{week_start.isoformat()}{suffix}"
        atomic_write_bytes(path, data)  # whole files only, should a driftdeck watch the folder
        paths.append(path)
    atomic_write_text(folder / CONFIG_NAME, FLOWERS_CONFIG)
    return paths


# --------------------------------------------------------------------------- sea level

SEA_START = date(2025, 9, 1)  # a Monday; 30 weekly batches run to late March 2026
SEA_WEEKS = 30
READING_MINUTES = 40  # each gauge reports every 40 minutes: 252 readings a week
DROPPED_READINGS = 0.01  # share of readings lost in telemetry
SEICHE_MINUTES = 47.0  # period of the harbour seiche, a wave the features cannot see
SEICHE_MM = 50.0
SENSOR_NOISE_MM = 10.0
STATIONS = {  # name: (mean level above chart datum mm, tide amplitude mm, mean water temperature C)
    "aberdeen": (2600.0, 1300.0, 10.0),
    "liverpool": (5200.0, 3100.0, 11.5),
    "dover": (3700.0, 2200.0, 12.5),
    "newlyn": (3100.0, 1700.0, 14.0),
}
M2_TIDE_HOURS = 12.42
WARMEST_DAY = date(2025, 9, 1)  # the sea is warmest around the start of September
SEA_FORMATS = {  # week start -> file format; all other weeks are .csv.gz
    date(2025, 9, 15): ".parquet",
    date(2025, 10, 6): ".jsonl",
    date(2025, 11, 3): ".parquet",
    date(2025, 12, 8): ".csv",
    date(2026, 1, 19): ".parquet",
}

SEA_LEVEL_CONFIG = """\
# Written by sample_data/generate.py; the story is in README.md.
target = "sea_level_mm"
timestamp = "date"
task = "regression"

[schema]
air_pressure_hpa = "numeric"
wind_speed_ms = "numeric"
wind_dir_onshore = "numeric"
water_temp_c = "numeric"
predicted_tide_mm = "numeric"
station = "categorical"

# Trained once on the first four weeks, then only flagged.
[[models]]
name = "sea-static"
mode = "static"
estimator = "ridge"
bootstrap_batches = 4

# Retrained on the last four weeks after every week.
[[models]]
name = "sea-dynamic"
mode = "dynamic"
estimator = "ridge"
window = 4
bootstrap_batches = 4
"""


def sea_level_week(rng: np.random.Generator, week_start: date) -> pd.DataFrame:
    """One week of gauge readings from all stations, sorted by time."""
    minutes_since_start = (week_start - SEA_START).days * 24 * 60
    readings = np.arange(7 * 24 * 60 // READING_MINUTES) * READING_MINUTES + minutes_since_start
    frames = []
    for offset, (station, (mean_level, tide_amplitude, mean_temp)) in enumerate(STATIONS.items()):
        minutes = readings[rng.random(len(readings)) >= DROPPED_READINGS]
        rows = len(minutes)
        when = pd.to_datetime(SEA_START) + pd.to_timedelta(minutes, unit="min")

        # The weather follows the season: from September to March the sea cools
        # by up to 4 C and the air brings lower, more variable pressure and
        # stronger wind. Stations differ in temperature, so most March readings
        # are still inside the range the September weeks cover; only the
        # coldest station goes a few degrees below it.
        season = np.cos(2 * np.pi * (when - pd.to_datetime(WARMEST_DAY)).days.to_numpy() / 365.25)
        winter = (1 - season) / 2  # 0 at the warmest day, 1 six months later
        air_pressure = rng.normal(1016 - 8 * winter, 8 + 5 * winter)
        wind_speed = rng.gamma(2.0, 3.0 + 1.5 * winter)
        wind_dir_onshore = rng.random(rows)
        water_temp = mean_temp + 2.0 * season + rng.normal(0, 1.2, rows)
        predicted_tide = tide_amplitude * np.cos(2 * np.pi * minutes / (M2_TIDE_HOURS * 60) + offset)

        # The physics, the same all year: the astronomical tide, 10 mm higher
        # for every hPa of lower pressure (inverse barometer), wind setup
        # (linearised: stronger and more onshore wind piles water up), and
        # thermal expansion. What the features cannot explain is a harbour
        # seiche plus sensor noise. The 40-minute readings sample the 47-minute
        # seiche at evenly spread phases, so every week carries the same
        # unexplained variance and a correct model's RMSE is steady week to week.
        seiche = SEICHE_MM * np.sin(2 * np.pi * minutes / SEICHE_MINUTES + offset)
        sea_level = (
            mean_level
            + predicted_tide
            - 10.0 * (air_pressure - 1013)
            + 6.0 * wind_speed
            + 80.0 * wind_dir_onshore
            + 5.0 * water_temp
            + seiche
            + rng.normal(0, SENSOR_NOISE_MM, rows)
        )
        frames.append(
            pd.DataFrame(
                {
                    "date": when.strftime("%Y-%m-%d"),
                    "minute": minutes,
                    "station": station,
                    "air_pressure_hpa": air_pressure,
                    "wind_speed_ms": wind_speed,
                    "wind_dir_onshore": wind_dir_onshore,
                    "water_temp_c": water_temp,
                    "predicted_tide_mm": predicted_tide,
                    "sea_level_mm": sea_level,
                }
            )
        )
    week = pd.concat(frames).sort_values(["minute", "station"], kind="stable")
    return week.drop(columns="minute").reset_index(drop=True).round(FLOAT_DECIMALS)


def write_sea_level(out: Path, seed: int = DEFAULT_SEED) -> list[Path]:
    """Write sea_level/ under ``out``: 30 weekly batches and driftdeck.toml; return the batch paths."""
    folder = out / "sea_level"
    rng = np.random.default_rng(seed)
    paths = []
    for week in range(SEA_WEEKS):
        week_start = SEA_START + timedelta(weeks=week)
        suffix = SEA_FORMATS.get(week_start, ".csv.gz")
        path = folder / f"{week_start.isoformat()}{suffix}"
        atomic_write_bytes(path, batch_bytes(sea_level_week(rng, week_start), suffix))
        paths.append(path)
    atomic_write_text(folder / CONFIG_NAME, SEA_LEVEL_CONFIG)
    return paths


# --------------------------------------------------------------------------- late labels

LATE_START = date(2025, 11, 3)  # a Monday; 22 weekly batches run to the end of March 2026
LATE_WEEKS = 22
LATE_ROWS = (900, 1100)
LATE_LABELLED_WEEKS = 6  # the history the models first train on comes with its sales
LOST_SALES_WEEK = date(2026, 1, 5)  # its sales file is lost, then re-sent three weeks late
RESENT_AFTER_WEEKS = 3
SALES_FORMATS = (".csv", ".csv.gz", ".parquet", ".jsonl")  # taken in turn, so every reader reads a sales file

LATE_LABELS_CONFIG = """\
# Written by sample_data/generate.py; the story is in README.md.
target = "bought_flowers"
timestamp = "date"
id_column = "visitor_id"
task = "classification"
verdict_batches = 8

[schema]
age = "numeric"
past_purchases = "numeric"
sessions_7d = "numeric"
basket_value = "numeric"
days_to_holiday = "numeric"
device = "categorical"
region = "categorical"

# A week's sales arrive the next week, in files named like 2025-12-15-sales-2025-12-08.csv.
[labels]
pattern = "*-sales-*"
max_lag_batches = 2

[[models]]
name = "late-static"
mode = "static"
estimator = "logistic_regression"
bootstrap_batches = 6

[[models]]
name = "late-dynamic"
mode = "dynamic"
estimator = "hist_gradient_boosting"
window = 4
bootstrap_batches = 6
"""


def write_late_labels(out: Path, seed: int = DEFAULT_SEED) -> list[Path]:
    """Write late_labels/ under ``out``: weekly visits, the sales files that follow them, and driftdeck.toml.

    Visits are named ``<monday>-visits.csv.gz``; the sales of week W arrive with
    week W+1 as ``<monday of W+1>-sales-<W>.<format>``, so name order is
    arrival order. Returns every path written, in name order.
    """
    folder = out / "late_labels"
    rng = np.random.default_rng(seed)
    paths = []
    next_visitor_id = 500_001
    for week in range(LATE_WEEKS + 1):
        week_start = LATE_START + timedelta(weeks=week)
        if week < LATE_WEEKS:
            frame = flowers_week(rng, week_start, next_visitor_id)
            frame = frame.iloc[: int(rng.integers(*LATE_ROWS, endpoint=True))]
            next_visitor_id += len(frame)
            sales = frame[["visitor_id", "bought_flowers"]]
            if week >= LATE_LABELLED_WEEKS:
                frame = frame.drop(columns="bought_flowers")
            path = folder / f"{week_start.isoformat()}-visits.csv.gz"
            atomic_write_bytes(path, batch_bytes(frame, ".csv.gz"))
            paths.append(path)
            if week >= LATE_LABELLED_WEEKS:
                delay = RESENT_AFTER_WEEKS + 1 if week_start == LOST_SALES_WEEK else 1
                sent = week_start + timedelta(weeks=delay)
                suffix = SALES_FORMATS[week % len(SALES_FORMATS)]
                resent = "-resent" if week_start == LOST_SALES_WEEK else ""
                path = folder / f"{sent.isoformat()}-sales-{week_start.isoformat()}{resent}{suffix}"
                atomic_write_bytes(path, batch_bytes(sales.sample(frac=1.0, random_state=week), suffix))
                paths.append(path)
    atomic_write_text(folder / CONFIG_NAME, LATE_LABELS_CONFIG)
    return sorted(paths)


# --------------------------------------------------------------------------- file formats


def batch_bytes(frame: pd.DataFrame, suffix: str) -> bytes:
    """The bytes of ``frame`` in the format named by ``suffix`` (.csv.gz, .csv, .parquet, .jsonl)."""
    if suffix == ".csv.gz":
        return gzip.compress(csv_bytes(frame), compresslevel=9, mtime=0)
    if suffix == ".csv":
        return csv_bytes(frame)
    if suffix == ".parquet":
        return parquet_bytes(frame)
    if suffix == ".jsonl":
        return jsonl_bytes(frame)
    raise ValueError(f"unknown batch format {suffix!r}")


def csv_bytes(frame: pd.DataFrame) -> bytes:
    """CSV with a header, "\\n" line ends, floats with FLOAT_DECIMALS decimals, missing as empty."""
    text = frame.to_csv(index=False, lineterminator="\n", float_format=f"%.{FLOAT_DECIMALS}f")
    return text.encode("utf-8")


def jsonl_bytes(frame: pd.DataFrame) -> bytes:
    """One JSON object per row, keys sorted, missing values as null."""
    text = frame[sorted(frame.columns)].to_json(orient="records", lines=True)
    return text.encode("utf-8")


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    """Parquet (zstd) without the pandas metadata, which records the pandas version."""
    table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the flowers/, sea_level/ and late_labels/ sample scenarios.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder to write into (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed (default: %(default)s)")
    args = parser.parse_args(argv)
    for write in (write_flowers, write_sea_level, write_late_labels):
        paths = write(args.out, args.seed)
        print(f"{paths[0].parent}: {len(paths)} batches")


if __name__ == "__main__":
    main()
