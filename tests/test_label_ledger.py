"""Label files on real files and a real SQLite store: checks, the join by id, waiting, conflicts, coverage, lag."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.config import load_config
from app.label_files import is_label_file, read_label_file
from app.label_ledger import (
    apply_label_file,
    batch_labels,
    conflicts,
    expire_waiting,
    label_lag,
    labels_of,
    record_batch_ids,
    waiting_count,
    with_labels,
)
from app.store import Store
from app.validation import InvalidBatch
from tests.conftest import STREAM_CONFIG, write_config

LABELS_CONFIG = STREAM_CONFIG.replace('task = "classification"', 'task = "classification"\nid_column = "order"') + """
[labels]
pattern = "labels_*"
wait_seconds = 60
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write_config(tmp_path, LABELS_CONFIG)
    return tmp_path


@pytest.fixture
def store(tmp_path: Path):
    store = Store(tmp_path / "state.db")
    yield store
    store.close()


def write(folder: Path, name: str, frame: pd.DataFrame) -> Path:
    path = folder / name
    if name.endswith(".parquet"):
        frame.to_parquet(path, index=False)
    elif name.endswith(".jsonl"):
        path.write_text(frame.to_json(orient="records", lines=True))
    else:
        frame.to_csv(path, index=False, compression="gzip" if name.endswith(".gz") else None)
    return path


def label_file(store: Store, folder: Path, name: str, frame: pd.DataFrame):
    snapshot, labels = read_label_file(write(folder, name, frame), load_config(folder), known_classes=["0", "1"])
    assert not isinstance(labels, InvalidBatch), labels
    with store.transaction() as db:
        file_id = store.record_file(name, snapshot.sha256, "ingested", rows=labels.rows, db=db)
        return apply_label_file(db, file_id, labels.frame, now=1000.0)


def batch(store: Store, name: str, ids: list, labelled: list[bool] | None = None) -> int:
    with store.transaction() as db:
        file_id = store.record_file(name, "sha-" + name, "ingested", rows=len(ids), db=db)
        record_batch_ids(db, file_id, pd.Series([str(i) for i in ids]),
                         np.array(labelled if labelled is not None else [False] * len(ids)))
    return file_id


def test_label_files_are_told_by_their_name_and_read_in_every_format(folder: Path) -> None:
    config = load_config(folder)
    assert is_label_file("labels_week1.csv", config) and is_label_file("labels_2.parquet", config)
    assert not is_label_file("2025-01-06.csv", config) and not is_label_file("labels_x.txt", config)
    frame = pd.DataFrame({"order": [1, 2, 3], "label": [0, 1, 1], "note": ["a", "b", "c"]})
    for name in ("labels_a.csv", "labels_b.csv.gz", "labels_c.parquet", "labels_d.jsonl"):
        _, labels = read_label_file(write(folder, name, frame), config)
        assert list(labels.frame["id"]) == ["1", "2", "3"] and list(labels.frame["label"]) == ["0", "1", "1"], name
        assert labels.warnings == ["column(s) 'note' ignored: a label file needs only the id and the target"]


def test_a_bad_label_file_is_refused_with_every_reason(folder: Path) -> None:
    config = load_config(folder)
    cases = {
        "labels_noid.csv": (pd.DataFrame({"label": [0, 1]}), "needs the id column 'order'"),
        "labels_twice.csv": (pd.DataFrame({"order": [1, 1, 2, 2], "label": [0, 1, 1, 1]}),
                             "1 id(s) labelled differently within the file, such as '1'"),
        "labels_class.csv": (pd.DataFrame({"order": [1, 2], "label": [0, 7]}), "label(s) '7' are none of the known classes"),
        "labels_gap.csv": (pd.DataFrame({"order": [1, None], "label": [0, 1]}), "1 row(s) without an id (the first is row 2)"),
    }
    for name, (frame, reason) in cases.items():
        _, outcome = read_label_file(write(folder, name, frame), config, known_classes=["0", "1"])
        assert isinstance(outcome, InvalidBatch), name
        assert any(reason in text for text in outcome.reasons), (name, outcome.reasons)


def test_labels_in_several_files_out_of_order_fill_their_batches(store: Store, folder: Path) -> None:
    first = batch(store, "w1.csv", [1, 2, 3, 4])
    second = batch(store, "w2.csv", [5, 6, 7, 8], labelled=[True, False, False, False])
    join = label_file(store, folder, "labels_b.csv", pd.DataFrame({"order": [7, 8, 3], "label": [1, 0, 1]}))
    assert join.matched == {first: 1, second: 2} and join.waiting == 0
    label_file(store, folder, "labels_a.csv", pd.DataFrame({"order": [1, 2, 4, 6], "label": [0, 0, 1, 1]}))
    coverage = batch_labels(store.read)
    assert coverage[first].coverage == 1.0 and coverage[first].labels_from == ["labels_b.csv", "labels_a.csv"]
    assert coverage[second].coverage == 1.0  # one row came labelled, three since
    assert list(labels_of(store.read, first)["label"]) == ["0", "0", "1", "1"]


def test_the_same_label_twice_is_fine_and_another_value_is_a_conflict_where_the_first_stands(store: Store, folder: Path) -> None:
    first = batch(store, "w1.csv", [1, 2])
    label_file(store, folder, "labels_1.csv", pd.DataFrame({"order": [1, 2], "label": [0, 1]}))
    join = label_file(store, folder, "labels_2.csv", pd.DataFrame({"order": [1, 2], "label": [0, 0]}))
    assert join.same == 1 and join.labelled == 0
    assert [(c.id, c.batch, c.kept, c.refused) for c in join.conflicts] == [("2", "w1.csv", "1", "0")]
    assert [(c.id, c.kept) for c in conflicts(store.read)] == [("2", "1")]
    assert list(labels_of(store.read, first)["label"]) == ["0", "1"]


def test_labels_for_unseen_ids_wait_for_their_batch_then_are_reported_unmatched(store: Store, folder: Path) -> None:
    join = label_file(store, folder, "labels_early.csv", pd.DataFrame({"order": [10, 11, 12], "label": [1, 0, 1]}))
    assert join.waiting == 3 and waiting_count(store.read) == 3
    with store.transaction() as db:
        assert expire_waiting(db, now=1030.0, wait_seconds=60) == []  # not yet
    later = batch(store, "w3.csv", [10, 11, 13])
    assert batch_labels(store.read)[later].labelled == 2  # the batch met the labels that waited for it
    with store.transaction() as db:
        unmatched = expire_waiting(db, now=1061.0, wait_seconds=60)
    assert [(u.label_file, list(u.rows["id"])) for u in unmatched] == [("labels_early.csv", ["12"])]
    assert waiting_count(store.read) == 0


def test_the_lag_is_the_oldest_batch_short_of_the_labeled_share(store: Store, folder: Path) -> None:
    assert label_lag(store.read, 0.9) is None
    batch(store, "w1.csv", [1, 2])
    batch(store, "w2.csv", [3, 4])
    batch(store, "w3.csv", [5, 6])
    label_file(store, folder, "labels_1.csv", pd.DataFrame({"order": [1, 2, 3], "label": [0, 1, 1]}))
    lag = label_lag(store.read, 0.9)
    assert (lag.name, lag.batches_since) == ("w2.csv", 2)  # w1 is fully labelled; w2 has half (0.5 < 0.9)
    assert label_lag(store.read, 0.5).name == "w3.csv"


def test_the_lag_among_many_labels_is_the_oldest_batch_short_of_the_share(store: Store) -> None:
    """40 batches of 250 rows, most labelled: the lag reads the rows still waiting, and agrees with every batch's coverage."""
    rows, labelled_share = 250, {30: 0.95, 31: 0.8}  # batches 0-29 fully labelled, 32-39 not at all
    ids = {index: [f"{index}-{row}" for row in range(rows)] for index in range(40)}
    files = {index: batch(store, f"w{index:02d}.csv", ids[index]) for index in ids}
    given = [identifier for index in ids if index < 32
             for identifier in ids[index][:int(rows * labelled_share.get(index, 1.0))]]
    with store.transaction() as db:
        label_file_id = store.record_file("labels_all.csv", "sha-labels", "labels", rows=len(given), db=db)
        join = apply_label_file(db, label_file_id, pd.DataFrame({"id": given, "label": ["1"] * len(given)}), now=1000.0)
    assert join.labelled == len(given) == 30 * rows + 237 + 200

    for share, oldest in ((0.9, 31), (0.75, 32), (0.96, 30), (1.0, 30)):
        lag = label_lag(store.read, share)
        assert (lag.name, lag.batches_since) == (f"w{oldest:02d}.csv", 39 - oldest), share
        by_coverage = next(labels for labels in batch_labels(store.read).values() if labels.coverage < share)
        assert by_coverage.file_id == files[oldest]
    assert label_lag(store.read, 0.0) is None
    assert store.read("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'label_ids_unlabelled'")


def test_regression_labels_are_numbers_and_text_is_refused(tmp_path: Path, store: Store) -> None:
    write_config(tmp_path, LABELS_CONFIG.replace('task = "classification"', 'task = "regression"'))
    config = load_config(tmp_path)
    _, labels = read_label_file(write(tmp_path, "labels_r.csv", pd.DataFrame({"order": [1, 2], "label": [1.5, -2.25]})), config)
    assert list(labels.frame["label"]) == [1.5, -2.25]
    _, refused = read_label_file(write(tmp_path, "labels_t.csv", pd.DataFrame({"order": [1], "label": ["high"]})), config)
    assert isinstance(refused, InvalidBatch) and "target 'label' must be numeric for regression, found 'high'" in refused.reasons[0]
    first = batch(store, "w1.csv", [1, 2, 3])
    with store.transaction() as db:
        file_id = store.record_file("labels_r.csv", "sha-r", "labels", rows=2, db=db)
        apply_label_file(db, file_id, labels.frame, now=0.0)
    filled = with_labels(pd.DataFrame({"label": [np.nan] * 3}), labels_of(store.read, first), "label", "regression")
    assert filled["label"].tolist()[:2] == [1.5, -2.25] and np.isnan(filled["label"].iloc[2])
