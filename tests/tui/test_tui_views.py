"""The dashboard's data views (app.report) and drawings (app.tui.formatting, header, charts, tables, snapshot_text, event_text), without a screen.

Distributions are checked against histograms computed here with numpy and
pandas, and against the PSI the drift module reports for the same profiles.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.engine.monitor import Monitor
from app.report import distribution_rows, feature_rows, metric_history
from app.stats.drift import PSI_EPSILON, feature_drift
from app.stats.profile import Profile
from app.store import StoredEvent
from app.tui import charts, event_text, formatting, header, snapshot_text
from tests.tui.tui_support import base_folder, copy_folder


@pytest.fixture(scope="session")
def base(tmp_path_factory) -> Path:
    return base_folder(tmp_path_factory.getbasetemp())


def profiles(reference: pd.DataFrame, current: pd.DataFrame, schema: dict[str, str]) -> tuple[Profile, Profile]:
    built = Profile.build(reference, schema)
    return built, built.project(current)


def test_numeric_bins_are_the_reference_deciles_with_the_current_shares_of_a_histogram():
    rng = np.random.default_rng(3)
    reference = pd.DataFrame({"x": rng.normal(0, 1, 5000)})
    current = pd.DataFrame({"x": rng.normal(0.5, 1.3, 3000)})
    built, projected = profiles(reference, current, {"x": "numeric"})
    rows = distribution_rows(built.to_dict()["columns"]["x"], projected.to_dict()["columns"]["x"])

    assert len(rows) == 10
    assert np.allclose([row["reference"] for row in rows], 0.1, atol=0.002)
    inner = [row["high"] for row in rows[:-1]]
    assert np.allclose(inner, np.quantile(reference["x"], np.linspace(0.1, 0.9, 9)), atol=0.01)
    edges = np.concatenate(([-np.inf], inner, [np.inf]))
    expected = np.histogram(current["x"], edges)[0] / len(current)
    assert np.allclose([row["current"] for row in rows], expected, atol=1e-12)
    assert rows[0]["label"].startswith("< ") and rows[-1]["label"].startswith("≥ ")


def test_the_bins_shown_are_the_ones_psi_is_computed_on():
    rng = np.random.default_rng(4)
    reference = pd.DataFrame({"x": rng.gamma(2.0, 1.0, 4000)})
    current = pd.DataFrame({"x": rng.gamma(2.6, 1.0, 2500)})
    built, projected = profiles(reference, current, {"x": "numeric"})
    rows = distribution_rows(built.to_dict()["columns"]["x"], projected.to_dict()["columns"]["x"])

    expected = np.array([max(row["reference"], PSI_EPSILON) for row in rows])
    actual = np.array([max(row["current"], PSI_EPSILON) for row in rows])
    psi_here = float(np.sum((actual - expected) * np.log(actual / expected)))
    reported = feature_drift(built, projected, 0.2, 0.1)["x"].psi
    assert psi_here == pytest.approx(reported, rel=1e-3)
    assert reported > 0.1  # the shift is visible, so the comparison means something


def test_a_constant_reference_column_shows_below_at_and_above_its_value():
    reference = pd.DataFrame({"d": [28.0] * 500})
    current = pd.DataFrame({"d": [3.0] * 100 + [28.0] * 50 + [40.0] * 50})
    built, projected = profiles(reference, current, {"d": "numeric"})
    rows = distribution_rows(built.to_dict()["columns"]["d"], projected.to_dict()["columns"]["d"])
    assert [row["label"] for row in rows] == ["< 28", "28", "> 28"]
    assert [row["reference"] for row in rows] == [0.0, 1.0, 0.0]
    assert [row["current"] for row in rows] == [0.5, 0.25, 0.25]


def test_categories_show_reference_order_then_unseen_ones():
    reference = pd.DataFrame({"c": ["a"] * 50 + ["b"] * 30 + ["c"] * 20})
    current = pd.DataFrame({"c": ["a"] * 10 + ["b"] * 10 + ["d"] * 80})
    built, projected = profiles(reference, current, {"c": "categorical"})
    rows = distribution_rows(built.to_dict()["columns"]["c"], projected.to_dict()["columns"]["c"])

    shares_ref = reference["c"].value_counts(normalize=True)
    shares_cur = current["c"].value_counts(normalize=True)
    assert [row["label"] for row in rows] == ["a", "b", "c", "(unseen)"]
    for row in rows[:3]:
        assert row["reference"] == pytest.approx(shares_ref[row["label"]])
        assert row["current"] == pytest.approx(shares_cur.get(row["label"], 0.0))
    assert rows[-1]["current"] == pytest.approx(shares_cur["d"])


def test_feature_rows_put_the_worst_first_and_carry_each_psi_history(base: Path):
    monitor = Monitor(base)
    try:
        results = [data for _, _, data in monitor.store.results("dynamic-lr")]
        rows = feature_rows(monitor.store, "dynamic-lr", history=len(results))
    finally:
        monitor.close()
    latest = results[-1]["feature_drift"]
    assert {row["feature"] for row in rows} == set(latest)
    assert rows[0]["feature"] == "x3" and rows[0]["status"] == "drifted"
    ranks = [("drifted", "watch", "stable").index(row["status"]) for row in rows]
    assert ranks == sorted(ranks)
    for row in rows:
        assert row["psi"] == latest[row["feature"]]["psi"]
        assert row["psi_history"] == [data["feature_drift"][row["feature"]]["psi"] for data in results]


def test_metric_history_marks_a_rollback_by_hand_after_the_batch_it_followed(base: Path, tmp_path: Path):
    monitor = Monitor(copy_folder(base, tmp_path / "data"))
    try:
        before = metric_history(monitor.store, "dynamic-lr")
        monitor.dispatcher.rollback("dynamic-lr")
        after = metric_history(monitor.store, "dynamic-lr")
    finally:
        monitor.close()
    assert all(row["pointer"] is None for row in before)
    assert after[-1]["pointer"] == "rollback" and all(row["pointer"] is None for row in after[:-1])
    labeled = [row for row in after if row["labeled"] and row["served"] is not None]
    assert labeled and all(row["metric"] == "roc_auc" for row in labeled)
    assert not after[-1]["labeled"] and after[-1]["served"] is None and after[-1]["estimate"] is not None


@pytest.mark.parametrize("share", [0.0, 0.03, 0.5, 0.999, 1.0, 1.7])
def test_a_bar_always_fills_its_width_and_grows_in_eighths(share: float):
    drawn = formatting.bar(share, 1.0, 20, "cyan")
    assert drawn.cell_len == 20
    filled = drawn.plain.count("█") * 8 + sum(formatting.EIGHTHS.index(ch) for ch in drawn.plain if ch in formatting.EIGHTHS[1:-1])
    assert filled == round(min(share, 1.0) * 20 * 8)


def test_sparkline_shows_the_last_values_with_gaps_for_missing_ones():
    line = formatting.sparkline([0.0, None, 0.05, 0.3, 0.15], width=4, threshold=0.2, watch=0.1)
    assert len(line.plain) == 4 and line.plain[0] == " "
    assert line.plain[2] == formatting.BLOCKS[8]  # 0.3 is the tallest bar
    styles = [str(span.style) for span in line.spans]
    assert formatting.DRIFT_STYLES["drifted"] in styles and formatting.DRIFT_STYLES["watch"] in styles


def test_sparkline_colours_follow_the_recorded_status_not_a_fixed_psi():
    """A PSI of 0.3 on a 50-row batch is sampling noise: its bar is as stable as its status."""
    line = formatting.sparkline([0.3, 0.05], width=2, threshold=0.2, watch=0.1, statuses=["stable", "drifted"])
    assert [str(span.style) for span in line.spans] == [formatting.DRIFT_STYLES["stable"], formatting.DRIFT_STYLES["drifted"]]


def test_health_chart_puts_the_highest_value_on_top_and_marks_actions():
    rows = [
        {"file": "a.csv", "labeled": True, "served": 0.9, "shadow": 0.7, "baseline": 0.5, "action": "promoted"},
        {"file": "b.csv", "labeled": True, "served": 0.6, "shadow": 0.8, "baseline": 0.5, "action": "rejected"},
        {"file": "c.csv", "labeled": False, "served": None, "shadow": None, "baseline": None, "action": "none"},
        {"file": "d.csv", "labeled": True, "served": 0.85, "shadow": 0.8, "baseline": 0.5, "action": "none",
         "pointer": "rollback"},
    ]
    lines = charts.health_chart((60, 14), rows, "shadow: static").plain.split("\n")
    plot = [line for line in lines if line[charts.Y_LABEL_WIDTH:charts.Y_LABEL_WIDTH + 1] in "┤│"]
    assert "●" in plot[0] and "─" in plot[-1]  # 0.9 served on top, the 0.5 baseline at the bottom
    marks = next(line for line in lines if "└" in line)
    assert [mark for mark in marks if mark in "▲×·▼"] == ["▲", "×", "·", "▼"]
    assert lines[-1].strip().startswith("a.csv") and lines[-1].rstrip().endswith("d.csv")


def test_event_text_wraps_under_the_message_and_shows_markup_literally():
    message = "[bold]x[/bold].csv: quarantined: " + "a reason that goes on " * 4
    text = event_text.event_text(StoredEvent(1, 0.0, "batch_quarantined", None, None, message, {}), width=60)
    lines = text.plain.split("\n")
    indent = len(lines[0]) - len(lines[0][9 + event_text.KIND_WIDTH + 1:])
    assert len(lines) > 1 and all(line.startswith(" " * indent) for line in lines[1:])
    assert all(len(line) <= 60 for line in lines)
    assert "[bold]x[/bold].csv" in text.plain


def test_header_says_how_long_ago_the_last_file_came_and_what_trains():
    state = header.HeaderState(folder="data", paused=False, ingested=12, quarantined=1, last_seen_at=1000.0,
                               now=1125.0, training={"model": "m", "progress": 0.4, "text": "m: fitting"})
    line = header.header_text(state).plain
    assert "12 batches ingested" in line and "1 quarantined" in line
    assert "last file 2 min ago" in line
    assert "training m" in line and "40%" in line and "fitting" in line
    assert "paused" in header.header_text(header.HeaderState(folder="x", paused=True)).plain


def test_snapshot_note_highlights_an_environment_that_differs():
    row = {"version": 3, "status": "retired", "serving": False, "reason": "", "gate": "ok", "files": ["a.csv"],
           "rows": 10, "metric": "roc_auc", "holdout": 0.8, "seed": 0,
           "config_hash": "abc123", "environment_vs_now": ["scikit-learn 1.5.0 -> 1.9.1"],
           "environment_vs_serving": ["scikit-learn 1.5.0 -> 1.9.1"]}
    note = snapshot_text.snapshot_note(row).plain
    assert "seed 0, config abc123" in note
    assert "trained under another environment: scikit-learn 1.5.0 -> 1.9.1" in note
    assert "differs from serving: scikit-learn 1.5.0 -> 1.9.1" in note


# --- what the screen says, checked on the drawings themselves ------------------------------


def health_rows(metric: str, values: list[float]) -> list[dict]:
    return [{"file": f"{index}.csv", "labeled": True, "metric": metric, "served": value, "shadow": None,
             "baseline": None, "action": "none"} for index, value in enumerate(values)]


def y_axis(chart: str) -> list[float]:
    return [float(line[:charts.Y_LABEL_WIDTH]) for line in chart.split("\n")
            if line[charts.Y_LABEL_WIDTH:charts.Y_LABEL_WIDTH + 1] == "┤"]


@pytest.mark.parametrize("metric, values, low, high", [
    ("roc_auc", [0.97, 0.99, 1.0], 0.0, 1.0),
    ("accuracy", [0.0, 0.004], 0.0, 1.0),
    ("rmse", [0.0, 0.3], 0.0, None),
    ("r2", [0.998, 1.0], None, 1.0),
])
def test_the_health_chart_y_axis_stays_within_what_the_metric_can_take(metric, values, low, high):
    top, bottom = y_axis(charts.health_chart((60, 12), health_rows(metric, values), "shadow").plain)
    assert top >= max(values) and bottom <= min(values)
    assert (low is None or bottom >= low) and (high is None or top <= high)


def test_an_unbounded_metric_still_gets_room_around_its_values():
    top, bottom = y_axis(charts.health_chart((60, 12), health_rows("mae", [5.0, 7.0]), "shadow").plain)
    assert top > 7.0 and bottom < 5.0


def parse_short(text: str) -> float:
    scale = {"k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}.get(text[-1], 1.0)
    return float(text[:-1] if scale != 1.0 else text) * scale


@pytest.mark.parametrize("loc, spread", [(5e4, 2e4), (7e5, 1e5), (1e-5, 1e-6), (-3e7, 1e6), (0.5, 0.2)])
def test_bin_labels_are_whole_numbers_that_fit_and_keep_four_digits(loc: float, spread: float):
    rng = np.random.default_rng(7)
    reference = pd.DataFrame({"x": rng.normal(loc, spread, 4000)})
    current = pd.DataFrame({"x": rng.normal(loc + spread, spread, 2000)})
    built, projected = profiles(reference, current, {"x": "numeric"})
    rows = distribution_rows(built.to_dict()["columns"]["x"], projected.to_dict()["columns"]["x"])
    chart = charts.distribution_chart((90, 14), "x", rows, "numeric").plain
    for row in rows:
        assert len(row["label"]) <= charts.LABEL_WIDTH
        assert row["label"] in chart  # whole, never cut
        for bound, shown in ((row["low"], row["label"].split("–")[0]), (row["high"], row["label"].split("–")[-1])):
            if bound is not None and "–" in row["label"]:
                assert parse_short(shown) == pytest.approx(bound, rel=1e-3 if "e" not in shown else 5e-3)


@pytest.mark.parametrize("value", [0.0, 7.0, 1234.5, 9999.4, 12345.6, 6.8e5, -8.212e6, 3.1e11, 4e-7, -0.00123, 2e17])
def test_short_numbers_read_back_to_four_significant_digits(value: float):
    from app.report import short_number

    text = short_number(value)
    assert len(text) <= 9
    if "e" not in text:
        assert parse_short(text) == pytest.approx(value, rel=1e-3, abs=1e-12)
    else:
        assert float(text) == pytest.approx(value, rel=5e-3)


def test_a_labeled_batch_before_any_model_serves_is_called_labeled():
    latest = {"file": "first.csv", "labeled": True, "metrics": {}, "serving_version": None}
    text = charts.latest_metrics_text(latest).plain
    assert "labeled" in text and "no labels" not in text and "no model serves yet" in text
    unlabeled = charts.latest_metrics_text({**latest, "labeled": False}).plain
    assert "no labels" in unlabeled


def test_the_health_panel_names_the_version_that_scored_the_batch():
    latest = {"file": "b.csv", "labeled": True, "metric": "roc_auc", "metrics": {"roc_auc": 0.8},
              "serving_version": 28}
    text = charts.latest_metrics_text(latest).plain
    assert "scored by v28" in text and "served v28" not in text


def header_state(**changes) -> header.HeaderState:
    values = dict(folder="/tmp/driftdeck-demo-flowers-09k_9138", paused=False, ingested=30, quarantined=1,
                  last_seen_at=1000.0, now=1058.0)
    return header.HeaderState(**{**values, **changes})


@pytest.mark.parametrize("width", [160, 100, 80])
def test_the_header_sets_its_parts_apart_and_keeps_the_counts_at_any_width(width: int):
    line = header.header_text(header_state(), width).plain
    assert len(line) <= width
    assert "● watching │ 30 batches" in line
    assert "│ 1 quarantined │ last file 58 s ago" in line
    if width >= 100:  # room for the folder's name, if not its whole path
        assert "-09k_9138 │" in line
    if width >= 160:
        assert "/tmp/driftdeck-demo-flowers-09k_9138 │" in line and "30 batches ingested" in line


@pytest.mark.parametrize("width", [160, 100, 78])
def test_training_progress_stays_in_the_header_at_any_width(width: int):
    training = {"model": "flowers-dynamic", "progress": 0.4, "text": "flowers-dynamic: training v9 on 6,290 rows"}
    line = header.header_text(header_state(training=training), width).plain
    assert len(line) <= width
    assert "30 batches" in line and "1 quarantined" in line and "last file 58 s ago" in line
    assert "⚙ training" in line and "40%" in line
    queued = header.header_text(header_state(retrain_queued="flowers-static"), width).plain
    assert len(queued) <= width and "retrain" in queued and "queued" in queued


def test_a_paused_header_says_how_many_files_wait():
    assert "⏸ paused · 3 files waiting" in header.header_text(header_state(paused=True, waiting=3)).plain
    assert "1 file waiting" in header.header_text(header_state(paused=True, waiting=1)).plain
    assert "waiting" not in header.header_text(header_state(paused=True, waiting=0)).plain


@pytest.mark.parametrize("width", range(1, 60, 3))
def test_fit_words_keeps_whole_words_only(width: int):
    text = "feature drift: drifted: days_to_holiday, sessions_7d, basket_value (PSI 18.4)"
    fitted = formatting.fit_words(text, width)
    assert len(fitted) <= max(width, 1)
    if fitted != text:
        kept = fitted.removesuffix("…")
        assert fitted.endswith("…") and text.startswith(kept)
        assert kept == "" or text[len(kept)] in " ,:;·"  # the cut falls between words


def test_the_models_verdict_is_clipped_to_its_lines_in_whole_words():
    from rich.text import Text

    text = Text("static is enough for this data: dynamic training changes ROC AUC by -0.1 points "
                "± 1.2 points over the last 6 batches, within the noise (cost: 6 retrains)")
    clipped = formatting.clip_lines(text, 40, 2).plain
    lines = clipped.split("\n")
    assert len(lines) == 2 and all(len(line) <= 40 for line in lines) and lines[-1].endswith("…")
    assert text.plain.replace("\n", " ").startswith(clipped.replace("\n", " ").removesuffix("…").rstrip())


def test_a_snapshot_note_names_its_first_and_last_training_file_and_the_count():
    row = {"version": 2, "status": "retired", "serving": False, "reason": None, "gate": "", "rows": 900,
           "files": [f"2025-07-{day:02d}.csv" for day in (7, 14, 21, 28)], "metric": "roc_auc", "holdout": 0.8}
    note = snapshot_text.snapshot_note(row).plain
    assert "trained on 4 files: 2025-07-07.csv … 2025-07-28.csv, 900 rows" in note


def test_a_snapshot_served_again_sheds_the_reason_it_once_lost_its_place(base: Path, tmp_path: Path):
    from app.report import snapshot_rows

    monitor = Monitor(copy_folder(base, tmp_path / "data"))
    try:
        monitor.dispatcher.rollback("dynamic-lr")
        rolled_back = {row["version"]: row for row in snapshot_rows(monitor.store, "dynamic-lr")}
        monitor.dispatcher.promote("dynamic-lr", 4)
        served_again = {row["version"]: row for row in snapshot_rows(monitor.store, "dynamic-lr")}
    finally:
        monitor.close()
    assert rolled_back[4]["reason"] == "rolled back from v4 to v3"
    assert served_again[4]["serving"] and served_again[4]["reason"] is None


def test_the_header_says_how_far_labels_lag_and_turns_red_beyond_the_limit():
    lag = {"file": "w1.csv", "seen_at": 1000.0 - 7200, "batches_since": 3, "over": True}
    text = header.header_text(header_state(label_lag=lag))
    assert "labels lag 3 batches (w1.csv, 2 h ago)" in text.plain
    part = next(span for span in text.spans if text.plain[span.start:span.end].startswith("labels lag"))
    assert "red" in str(part.style)
    assert "labels lag" not in header.header_text(header_state()).plain


def test_the_health_panel_marks_an_estimate_and_says_when_there_is_none():
    waiting = {"file": "w2.csv", "labeled": False, "metric": "roc_auc", "serving_version": 3, "label_coverage": 0.25,
               "estimate": {"metric": "roc_auc", "value": 0.812, "calibrated": True, "why": ""},
               "track_record": {"mae": 0.021, "batches": 4}}
    text = charts.latest_metrics_text(waiting).plain
    assert "(no labels yet; 25% labelled)" in text and "roc_auc ≈ 0.812 estimate (CBPE) · track record ±0.021 over 4" in text
    regression = {**waiting, "metric": "rmse", "estimate": {"metric": "rmse", "value": None, "calibrated": False,
                                                            "why": "not available for regression"}}
    assert "rmse: no estimate, not available for regression" in charts.latest_metrics_text(regression).plain
    realised = {**waiting, "labeled": True, "metrics": {"roc_auc": 0.790}, "estimate_error": 0.022,
                "labels_from": ["labels_1.csv"]}
    text = charts.latest_metrics_text(realised).plain
    assert "(labeled, labels from labels_1.csv, scored by v3)" in text
    assert "estimated 0.812 before the labels (error +0.022) · track record ±0.021 over 4" in text
