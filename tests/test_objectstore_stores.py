"""A bucket as the watched folder, run once per store against a real server of its protocol on localhost, each
through its real fsspec client stack: S3 (moto), Google Cloud Storage (gcp-storage-emulator) and Azure Blob
Storage (Azurite); then what only Azure's and Google's clients say."""

from __future__ import annotations

import hashlib
import io

import pytest

from app.cli import main
from app.events import EventKind
from app.mirror import INDEX_NAME, list_objects
from app.objectstore import parse_store_url, store_error_in_words
from app.workspace import Workspace
from tests.azure_world import azure  # noqa: F401 - fixtures
from tests.conftest import make_batch
from tests.gcs_world import gcs  # noqa: F401 - fixtures
from tests.s3_world import s3  # noqa: F401 - fixtures
from tests.test_objectstore import ledger, mirror, one_model, put_csv, refused_read

FIXTURES = {"s3": "s3", "gs": "gcs", "az": "azure"}


@pytest.fixture(params=sorted(FIXTURES))
def store(request):
    """Each object store in turn, its server on a free localhost port and the environment pointing its client at it:
    a world with ``protocol``, ``bucket_noun``, ``secret`` (the credentials, or None), ``create_bucket``, ``put``
    and ``delete``."""
    return request.getfixturevalue(FIXTURES[request.param])


def url_of(world) -> str:
    return f"{world.protocol}://bkt/incoming"


def test_init_and_watch_a_bucket_exactly_once(store, tmp_path, capsys):
    url = url_of(store)
    store.create_bucket("bkt")
    put_csv(store, "incoming/week-00.csv", make_batch(0, rows=300))
    put_csv(store, "incoming/week-01.csv", make_batch(1, rows=300))
    store.put("incoming/notes.txt", b"not a batch")
    local = tmp_path / "local"

    assert main(["init", url, "--target", "label", "--state", str(local)]) == 0
    config = (local / "driftdeck.toml").read_text()
    assert f'source = "{url}"' in config
    one_model(local)
    assert main(["watch", url, "--once", "--state", str(local)]) == 0
    assert ledger(local) == {"week-00.csv": ["ingested"], "week-01.csv": ["ingested"]}

    # A new object, one replaced under the same key (new ETag, new bytes) and a bad one.
    put_csv(store, "incoming/week-02.csv", make_batch(2, rows=300))
    put_csv(store, "incoming/week-01.csv", make_batch(1, rows=300, seed=7))
    store.put("incoming/broken.csv", b"x1,x2\n1,2\n")
    assert main(["watch", url, "--once", "--state", str(local)]) == 0
    seen = ledger(local)
    assert seen["week-02.csv"] == ["ingested"]
    assert seen["week-01.csv"] == ["ingested", "ingested"]
    assert seen["broken.csv"] == ["quarantined"]
    quarantined = sorted(p.name for p in (local / ".driftdeck" / "quarantine").iterdir())
    assert any(name.endswith("broken.csv") for name in quarantined)

    # Nothing new: nothing is read again, nothing ingested twice.
    before = ledger(local)
    assert main(["watch", url, "--once", "--state", str(local)]) == 0
    assert ledger(local) == before
    assert main(["status", url, "--state", str(local)]) == 0
    out = capsys.readouterr()
    assert store.secret is None or store.secret not in out.out + out.err  # credentials are never printed


def test_a_missing_bucket_is_one_clear_line_and_makes_nothing(store, tmp_path, capsys):
    local = tmp_path / "local"
    assert main(["init", f"{store.protocol}://no-such-bucket/x", "--target", "label", "--state", str(local)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert f"{store.bucket_noun} 'no-such-bucket' does not exist" in err
    assert not local.exists()


def test_an_object_replaced_between_listing_and_read_is_not_taken_for_the_listed_one(store, tmp_path):
    store.create_bucket("bkt")
    first = make_batch(0, rows=100).to_csv(index=False).encode()
    store.put("incoming/week-00.csv", first)
    events: list = []
    folder = tmp_path / "local"
    copy = mirror(folder, events, url_of(store), attempts=1)
    try:
        listed = list_objects(copy.location, copy.fs)
        assert [item.md5 for item in listed] == [hashlib.md5(first).hexdigest()]  # each store lists the MD5
        second = first[:-2] + (b"1" if first[-2:-1] != b"1" else b"2") + first[-1:]  # same size, other bytes
        store.put("incoming/week-00.csv", second)
        assert copy.fetch_all(listed).failed == ("week-00.csv",)
        assert [e.kind for e in events] == [EventKind.FILE_ERROR]
        # s3fs reads with If-Match on the listed ETag and refuses by itself; gcsfs and adlfs read the new bytes,
        # which driftdeck's check against the listed MD5 refuses.
        refusal = "FileExpired" if store.protocol == "s3" else "do not match the object's listed MD5"
        assert refusal in events[0].message
        assert sorted(p.name for p in folder.iterdir()) == [INDEX_NAME]  # nothing taken under the old listing
        assert copy.sync().fetched == ("week-00.csv",)  # the next listing reads the new object
    finally:
        copy.stop()
    assert (folder / "week-00.csv").read_bytes() == second


def test_an_object_deleted_between_listing_and_read_is_reported_and_skipped(store, tmp_path):
    store.create_bucket("bkt")
    put_csv(store, "incoming/week-00.csv", make_batch(0, rows=100))
    put_csv(store, "incoming/week-01.csv", make_batch(1, rows=100))
    events: list = []
    copy = mirror(tmp_path / "local", events, url_of(store))
    try:
        listed = list_objects(copy.location, copy.fs)
        store.delete("incoming/week-00.csv")
        done = copy.fetch_all(listed)
    finally:
        copy.stop()
    assert done.vanished == ("week-00.csv",) and done.fetched == ("week-01.csv",)
    assert [e.kind for e in events] == [EventKind.FILE_SKIPPED]
    assert not (tmp_path / "local" / "week-00.csv").exists()


def test_a_listing_that_fails_is_an_event_then_back(store, tmp_path):
    events: list = []
    copy = mirror(tmp_path / "local", events, url_of(store))
    try:
        assert copy.sync().fetched == ()  # the bucket does not exist yet
        store.create_bucket("bkt")
        put_csv(store, "incoming/week-00.csv", make_batch(0, rows=50))
        assert copy.sync().fetched == ("week-00.csv",)
    finally:
        copy.stop()
    assert [e.kind for e in events] == [EventKind.FOLDER_MISSING, EventKind.FOLDER_BACK]
    assert "does not exist" in events[0].message


def test_a_partitioned_batch_in_the_bucket_is_taken_once_its_marker_is_listed(store, tmp_path):
    url = url_of(store)
    store.create_bucket("bkt")
    put_csv(store, "incoming/week-00.csv", make_batch(0, rows=300))
    local = tmp_path / "local"
    assert main(["init", url, "--target", "label", "--state", str(local)]) == 0
    one_model(local)
    store.put("incoming/week-01/", b"")  # the empty "folder" object a console's "create folder" leaves
    for index in range(2):
        buffer = io.BytesIO()
        make_batch(1 + index, rows=400).to_parquet(buffer)
        store.put(f"incoming/week-01/part-{index}.parquet", buffer.getvalue())
    assert main(["watch", url, "--once", "--state", str(local)]) == 0
    assert "week-01" not in ledger(local)  # parts without their marker, new to the listing: not complete yet
    assert not (local / "week-01").exists()
    store.put("incoming/week-01/_SUCCESS", b"")
    assert main(["watch", url, "--once", "--state", str(local)]) == 0
    with Workspace.open(local, read_only=True) as workspace:
        rows = {record.name: (record.status, record.rows) for record in workspace.store.files()}
    assert rows == {"week-00.csv": ("ingested", 300), "week-01": ("ingested", 800)}


def test_a_refused_azure_key_is_said_as_such_and_never_printed(azure, tmp_path, monkeypatch, capsys):
    from tests.azure_world import connection_string

    azure.create_bucket("bkt")
    wrong_key = "A" * 86 + "=="
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection_string(azure.endpoint, wrong_key))
    assert main(["init", "az://bkt/incoming", "--target", "label", "--state", str(tmp_path / "local")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "driftdeck: az://bkt/incoming: access denied (listing); check the credentials in the environment"
    assert not (tmp_path / "local").exists()


def test_an_azure_token_that_may_list_but_not_read_is_an_event(azure, tmp_path, monkeypatch):
    from datetime import datetime, timedelta, timezone

    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    from tests.azure_world import ACCOUNT, ACCOUNT_KEY

    azure.create_bucket("bkt")
    put_csv(azure, "incoming/week-00.csv", make_batch(0, rows=50))
    token = generate_container_sas(ACCOUNT, "bkt", account_key=ACCOUNT_KEY,
                                   permission=ContainerSasPermissions(list=True),
                                   expiry=datetime.now(timezone.utc) + timedelta(hours=1))
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING",
                       f"BlobEndpoint={azure.endpoint}/{ACCOUNT};SharedAccessSignature={token}")
    assert token.split("sig=")[1][:20] not in refused_read(tmp_path / "local", "az://bkt/incoming")


def test_a_google_refusal_is_said_as_such():
    from gcsfs.retry import validate_response

    location = parse_store_url("gs://bkt/incoming")
    with pytest.raises(OSError) as refused:  # what gcsfs raises for the server's 403
        validate_response(403, b'{"error": {"code": 403, "message": "caller does not have storage.objects.list"}}',
                          "b/bkt/o")
    assert store_error_in_words(location, refused.value) == ("gs://bkt/incoming: access denied (listing); check the"
                                                             " credentials in the environment")
