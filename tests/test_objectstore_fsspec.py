"""A store other than S3: fsspec's ``memory://`` file system, which keeps no ETag and names its paths ``/bucket/…``,
watched through the command line exactly as a bucket is."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from app.cli import main
from app.mirror import list_objects
from app.objectstore import open_store, parse_store_url
from tests.conftest import make_batch
from tests.test_objectstore import ledger, one_model

URL = "memory://bkt/incoming"


@pytest.fixture
def memory_store() -> Iterator[fsspec.AbstractFileSystem]:
    """fsspec's in-memory file system (one store per process), emptied after the test."""
    store = fsspec.filesystem("memory")
    try:
        yield store
    finally:
        store.store.clear()
        store.pseudo_dirs[:] = [""]


def put(store, key: str, data: bytes) -> None:
    with store.open(f"/bkt/{key}", "wb") as out:
        out.write(data)


def test_a_memory_store_is_watched_like_a_bucket(memory_store, tmp_path):
    put(memory_store, "incoming/week-00.csv", make_batch(0, rows=300).to_csv(index=False).encode())
    put(memory_store, "elsewhere/week-09.csv", make_batch(9, rows=300).to_csv(index=False).encode())  # not below
    for index in range(2):
        put(memory_store, f"incoming/week-01/part-{index}.parquet", make_batch(1 + index, rows=200).to_parquet())
    put(memory_store, "incoming/week-01/_SUCCESS", b"")
    local = tmp_path / "local"

    assert main(["init", URL, "--target", "label", "--state", str(local)]) == 0
    one_model(local)
    assert main(["watch", URL, "--once", "--state", str(local)]) == 0
    assert ledger(local) == {"week-00.csv": ["ingested"], "week-01": ["ingested"]}
    assert sorted(path.name for path in (local / "week-01").iterdir()) == ["_SUCCESS", "part-0.parquet",
                                                                           "part-1.parquet"]
    assert not (tmp_path / "bkt").exists() and not Path("/bkt").exists()  # every copy inside the local folder

    # No ETag here: an object written again (its size and time change) is read again; the rest is not.
    put(memory_store, "incoming/week-00.csv", make_batch(0, rows=310).to_csv(index=False).encode())
    assert main(["watch", URL, "--once", "--state", str(local)]) == 0
    assert ledger(local) == {"week-00.csv": ["ingested", "ingested"], "week-01": ["ingested"]}
    assert main(["watch", URL, "--once", "--state", str(local)]) == 0
    assert ledger(local) == {"week-00.csv": ["ingested", "ingested"], "week-01": ["ingested"]}


def test_a_memory_bucket_that_is_not_there_is_said_so(memory_store, tmp_path, capsys):
    assert main(["init", "memory://nothing/here", "--target", "label", "--state", str(tmp_path / "local")]) == 2
    assert "bucket 'nothing' does not exist" in capsys.readouterr().err
    assert not (tmp_path / "local").exists()
    location = parse_store_url(URL)
    put(memory_store, "incoming/a.csv", b"x\n1\n")
    assert [item.key for item in list_objects(location, open_store(location))] == ["a.csv"]
