"""An S3 bucket as the watched folder, against a real S3-protocol server (moto) on localhost: what only moto
offers (IAM, credential checks) and the cutting proxy, which knows S3's requests. The tests every store runs
are in ``test_objectstore_stores.py``; the helpers here serve both."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from app.cli import main
from app.events import EventKind
from app.mirror import INDEX_NAME, BucketMirror, list_objects
from app.objectstore import StoreError, open_store, parse_store_url
from app.workspace import Workspace
from tests.conftest import make_batch
from tests.s3_world import cutting_proxy, s3  # noqa: F401 - fixtures

URL = "s3://bkt/incoming"


def put_csv(world, key: str, frame: pd.DataFrame) -> bytes:
    data = frame.to_csv(index=False).encode()
    world.put(key, data)
    return data


def ledger(folder: Path) -> dict[str, list[str]]:
    """File name -> the statuses the ledger holds for it, oldest first."""
    with Workspace.open(folder, read_only=True) as workspace:
        seen: dict[str, list[str]] = {}
        for record in sorted(workspace.store.files(), key=lambda r: r.id):
            seen.setdefault(record.name, []).append(record.status)
        return seen


def one_model(folder: Path) -> None:
    """Keep the written config but with one static model: the test is about intake, not training."""
    config = folder / "driftdeck.toml"
    text = config.read_text()
    cut = text.index("[[models]]")
    second = text.index("[[models]]", cut + 1)
    end = text.find("\n[", second + 1)
    config.write_text(text[:second] + (text[end + 1:] if end >= 0 else ""))


def test_watch_before_init_says_what_to_run(s3, tmp_path, capsys):
    assert main(["watch", URL, "--once", "--state", str(tmp_path / "nothing")]) == 2
    assert f"driftdeck init {URL}" in capsys.readouterr().err


def test_access_denied_is_said_as_such(s3, tmp_path, monkeypatch, capsys):
    from moto import settings

    s3.client().create_bucket(Bucket="bkt")
    monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # from now on the server checks credentials
    with pytest.raises(StoreError, match="access denied"):
        list_objects(parse_store_url(URL), open_store(parse_store_url(URL)))
    assert main(["init", URL, "--target", "label", "--state", str(tmp_path / "local")]) == 2
    assert "access denied" in capsys.readouterr().err


def mirror(folder: Path, events: list, url: str = URL, **options) -> BucketMirror:
    folder.mkdir(exist_ok=True)
    return BucketMirror(parse_store_url(url), folder, events.append, **options)


def refused_read(folder: Path, url: str = URL) -> str:
    """One pass of a mirror whose credentials may list but not read week-00.csv: the one event's words."""
    events: list = []
    copy = mirror(folder, events, url, backoff_seconds=0.01)
    try:
        done = copy.sync()
    finally:
        copy.stop()
    assert done.failed == ("week-00.csv",)
    assert [e.kind for e in events] == [EventKind.FILE_ERROR]
    assert "access denied reading it" in events[0].message
    return events[0].message


def test_a_read_cut_mid_object_is_read_again_whole(cutting_proxy, s3, tmp_path):
    s3.client().create_bucket(Bucket="bkt")
    data = put_csv(s3, "incoming/week-00.csv", make_batch(0, rows=2000))
    events: list = []
    cutting_proxy.cut_reads = 2
    copy = mirror(tmp_path / "local", events, backoff_seconds=0.05)
    try:
        done = copy.sync()
    finally:
        copy.stop()
    assert cutting_proxy.cuts == 2  # the connection really dropped mid-read, twice
    assert done.fetched == ("week-00.csv",)
    assert (tmp_path / "local" / "week-00.csv").read_bytes() == data
    assert not [e for e in events if e.kind == EventKind.FILE_ERROR]


def test_a_read_that_keeps_failing_is_an_event_and_nothing_half_there(cutting_proxy, s3, tmp_path):
    s3.client().create_bucket(Bucket="bkt")
    data = put_csv(s3, "incoming/week-00.csv", make_batch(0, rows=2000))
    events: list = []
    folder = tmp_path / "local"
    cutting_proxy.cut_reads = -1
    copy = mirror(folder, events, attempts=2, backoff_seconds=0.05)
    try:
        done = copy.sync()
        assert cutting_proxy.cuts >= 2
        assert done.failed == ("week-00.csv",)
        assert [e.kind for e in events] == [EventKind.FILE_ERROR]
        assert "read failed 2 times" in events[0].message
        assert sorted(p.name for p in folder.iterdir()) == [INDEX_NAME]  # no partial file left behind
        cutting_proxy.cut_reads = 0  # the network is back: the next listing reads it whole
        assert copy.sync().fetched == ("week-00.csv",)
    finally:
        copy.stop()
    assert (folder / "week-00.csv").read_bytes() == data


def test_the_engine_polls_the_bucket_and_ingests_what_lands(s3, tmp_path):
    import threading

    from app.cli import watch_headless
    from app.engine.monitor import Monitor
    from tests.conftest import wait_until

    client = s3.client()
    client.create_bucket(Bucket="bkt")
    put_csv(s3, "incoming/week-00.csv", make_batch(0, rows=200))
    local = tmp_path / "local"
    assert main(["init", URL, "--target", "label", "--state", str(local)]) == 0
    config = local / "driftdeck.toml"
    config.write_text(config.read_text().split("[[models]]")[0].replace("source =", "models = []\nsource =")
                      + "\n[watch]\nlist_seconds = 0.2\nsettle_seconds = 0.2\n")
    seen: list[dict] = []
    stop = threading.Event()

    def statuses(name: str) -> list[str] | None:
        try:
            return ledger(local).get(name)
        except sqlite3.OperationalError:  # the engine has made state.db but not its tables yet
            return None

    def producer() -> None:  # the engine runs on the main thread (it takes SIGTERM); the bucket's producer here
        try:
            seen.append({"first": wait_until(lambda: statuses("week-00.csv") == ["ingested"], timeout=30)})
            put_csv(s3, "incoming/week-01.csv", make_batch(1, rows=200))  # lands while the engine runs
            seen.append({"second": wait_until(lambda: statuses("week-01.csv") == ["ingested"], timeout=30)})
        finally:
            stop.set()

    thread = threading.Thread(target=producer)
    thread.start()
    assert watch_headless(Monitor(local), True, stop) == 0
    thread.join()
    assert seen == [{"first": True}, {"second": True}]


def test_an_object_the_credentials_may_list_but_not_read_is_an_event(s3, tmp_path, monkeypatch):
    import json

    import boto3
    from moto import settings

    client = s3.client()
    client.create_bucket(Bucket="bkt")
    put_csv(s3, "incoming/week-00.csv", make_batch(0, rows=50))
    iam = boto3.client("iam", endpoint_url=s3.endpoint, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    iam.create_user(UserName="lister")
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "*"}]}
    iam.put_user_policy(UserName="lister", PolicyName="list-only", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="lister")["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # from now on the server checks credentials
    assert key["SecretAccessKey"] not in refused_read(tmp_path / "local")


def test_a_folder_without_a_marker_is_taken_once_a_listing_shows_it_unchanged(s3, tmp_path):
    client = s3.client()
    client.create_bucket(Bucket="bkt")
    for index in range(2):
        client.put_object(Bucket="bkt", Key=f"incoming/day/part-{index}.parquet", Body=b"PAR1 parts " * 10)
    events: list = []
    folder = tmp_path / "local"
    copy = mirror(folder, events)
    try:
        assert copy.sync().fetched == ()  # first seen: it may still be growing
        client.put_object(Bucket="bkt", Key="incoming/day/part-2.parquet", Body=b"PAR1 late " * 10)
        assert copy.sync().fetched == ()  # it grew since the last listing
        assert sorted(copy.sync().fetched) == [f"day/part-{index}.parquet" for index in range(3)]
        assert copy.sync().fetched == ()
    finally:
        copy.stop()
    assert sorted(p.name for p in folder.iterdir()) == [INDEX_NAME, "day"]  # no hidden staging folder left
    assert sorted(p.name for p in (folder / "day").iterdir()) == [f"part-{index}.parquet" for index in range(3)]
    assert events == []
