"""Object storage as a data folder: what a store URL names, where its local side lives, how to reach it.

``s3://bucket/prefix`` (or ``gs://``, ``az://``, any fsspec URL) is watched by
mirroring its batch objects into a local folder (:mod:`app.mirror`) that is a
data folder like any other: its ``driftdeck.toml`` (with ``source`` naming the
URL), ledger, quarantine and snapshots stay on this machine. Credentials come
from the store's own environment (AWS variables, profiles and ``AWS_ENDPOINT_URL``
for s3fs; ``GOOGLE_APPLICATION_CREDENTIALS`` or ``STORAGE_EMULATOR_HOST`` for
gcsfs; ``AZURE_STORAGE_CONNECTION_STRING`` or an account name and key for adlfs);
driftdeck never asks for, stores or prints them.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STORE_URL = re.compile(r"(?P<protocol>[a-z][a-z0-9+.-]*)://(?P<bucket>[^/]+)(?:/(?P<prefix>.*))?")
LOCAL_PROTOCOLS = ("file", "local")
# The library fsspec needs for each common protocol, named in the error when it is missing.
STORE_LIBRARIES = {"s3": "s3fs (pip install 'driftdeck[s3]')", "s3a": "s3fs (pip install 'driftdeck[s3]')",
                   "gs": "gcsfs (pip install 'driftdeck[gs]')", "gcs": "gcsfs (pip install 'driftdeck[gs]')",
                   "az": "adlfs (pip install 'driftdeck[az]')", "abfs": "adlfs (pip install 'driftdeck[az]')",
                   "abfss": "adlfs (pip install 'driftdeck[az]')"}
GOOGLE_PROTOCOLS = ("gs", "gcs")
AZURE_PROTOCOLS = ("az", "abfs", "abfss")
# What a refusal says when the store's library raises neither PermissionError nor an HTTP status on the error:
# S3's AccessDenied, Google's "Forbidden" (gcsfs's OSError for a 403), Azure's AuthorizationFailure and kin.
REFUSAL_WORDS = ("accessdenied", "forbidden", "authorizationfailure", "authenticationfailed",
                 "authorizationpermissionmismatch", "insufficientaccountpermissions")


class StoreError(Exception):
    """The object store cannot be used: the message is one line a person can act on."""


@dataclass(frozen=True)
class StoreLocation:
    """A bucket and a prefix in an object store, as ``protocol://bucket/prefix``."""

    protocol: str
    bucket: str
    prefix: str  # without a leading or trailing "/", "" for the whole bucket

    @property
    def bucket_noun(self) -> str:
        """What the store calls the top of its namespace: a container on Azure, a bucket elsewhere."""
        return "container" if self.protocol in AZURE_PROTOCOLS else "bucket"

    @property
    def url(self) -> str:
        return f"{self.protocol}://{self.bucket}/{self.prefix}".rstrip("/")

    @property
    def root(self) -> str:
        """The prefix as the store's file system names it (``bucket/prefix``)."""
        return f"{self.bucket}/{self.prefix}".rstrip("/")

    def default_local_folder(self) -> Path:
        """``./.driftdeck-<bucket>-<hash of the URL>``: one local folder per bucket and prefix."""
        bucket = re.sub(r"[^A-Za-z0-9_.-]", "_", self.bucket)[:40]
        return Path.cwd() / f".driftdeck-{bucket}-{hashlib.sha256(self.url.encode()).hexdigest()[:10]}"

    def named_in(self, fs: Any, whole_bucket: bool = False) -> str:
        """The prefix (or the bucket) as the file system ``fs`` names it: ``bucket/prefix`` on S3,
        ``/bucket/prefix`` in fsspec's ``memory://``."""
        return type(fs)._strip_protocol(f"{self.protocol}://{self.bucket if whole_bucket else self.root}").rstrip("/")

    def key_of(self, path: str, root: str) -> str | None:
        """The object's key below the prefix (``2026-02-09/part-0.parquet``) from its path as the store names it
        (under ``root``, see :meth:`named_in`); None for a path that is not below it."""
        path = path.rstrip("/")
        return path[len(root):].lstrip("/") or None if path.startswith(root + "/") else None


def is_store_url(text: str) -> bool:
    match = STORE_URL.fullmatch(str(text))
    return match is not None and match["protocol"] not in LOCAL_PROTOCOLS


def parse_store_url(text: str) -> StoreLocation:
    match = STORE_URL.fullmatch(text.strip())
    if match is None or match["protocol"] in LOCAL_PROTOCOLS:
        raise StoreError(f"{text!r} is not an object store URL (protocol://bucket/prefix)")
    return StoreLocation(match["protocol"], match["bucket"], (match["prefix"] or "").strip("/"))


def open_store(location: StoreLocation) -> Any:
    """The fsspec file system for ``location``, with its credentials from the environment."""
    import fsspec

    try:
        # A fresh instance: fsspec's shared one would keep the endpoint and credentials it was first made with.
        if location.protocol in GOOGLE_PROTOCOLS and os.environ.get("STORAGE_EMULATOR_HOST"):
            return _google_emulator_store()
        return fsspec.filesystem(location.protocol, skip_instance_cache=True)
    except ImportError:
        needed = STORE_LIBRARIES.get(location.protocol, f"the fsspec library for {location.protocol}://")
        raise StoreError(f"{location.url}: reading {location.protocol}:// needs {needed}") from None
    except ValueError as error:
        raise StoreError(f"{location.url}: {first_line(error)}") from None


def _google_emulator_store() -> Any:
    """gcsfs's JSON-API file system, without credentials, for the server ``STORAGE_EMULATOR_HOST`` names.

    The file system ``gs://`` otherwise resolves to first asks each bucket's layout over
    gRPC, which emulators do not serve: every read would wait out its 60 s timeout.
    Google's own client library also sends no credentials to an emulator.
    """
    from gcsfs.core import GCSFileSystem

    return GCSFileSystem(token="anon", skip_instance_cache=True)


def store_error_in_words(location: StoreLocation, error: BaseException, what: str = "listing") -> str:
    """One line for a failed call to the store: a missing bucket (a listing's FileNotFoundError, as every store
    raises it for a bucket that is not there) and a refusal said as such."""
    if what == "listing" and isinstance(error, FileNotFoundError):
        return (f"{location.url}: {location.bucket_noun} {location.bucket!r} does not exist"
                " (or is not visible with these credentials)")
    if is_refusal(error):
        return f"{location.url}: access denied ({what}); check the credentials in the environment"
    return f"{location.url}: {what} failed: {type(error).__name__}: {first_line(error)}"


def is_refusal(error: BaseException) -> bool:
    """Whether the store refused the credentials: PermissionError, HTTP 401 or 403 (Azure's ``status_code``,
    gcsfs's ``code``), or a refusal's words in the message."""
    status = getattr(error, "status_code", None) or getattr(error, "code", None)
    words = str(error).replace(" ", "").lower()
    return isinstance(error, PermissionError) or status in (401, 403) or any(word in words for word in REFUSAL_WORDS)


def first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]
