"""A real GCS-protocol server on localhost (gcp-storage-emulator, in this process) for the real gcsfs stack.

``STORAGE_EMULATOR_HOST`` points gcsfs at it; objects are written with plain
JSON-API requests, not through gcsfs, so what driftdeck reads is what the
server holds. Nothing here reaches any other address.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.s3_world import free_port

BOUNDARY = "driftdeck-object"


@dataclass
class GcsWorld:
    endpoint: str
    protocol: str = "gs"
    bucket_noun: str = "bucket"
    secret: str | None = None  # the emulator takes no credentials

    def create_bucket(self, name: str) -> None:
        self._call("POST", "/storage/v1/b?project=driftdeck-tests", json.dumps({"name": name}).encode(),
                   "application/json")

    def put(self, key: str, data: bytes, bucket: str = "bkt") -> None:
        """A multipart upload (the object's name, then its bytes in base64), as Google's clients send small
        objects; the emulator takes no empty body by the simpler media upload."""
        body = (f"--{BOUNDARY}\r\nContent-Type: application/json\r\n\r\n{json.dumps({'name': key})}\r\n"
                f"--{BOUNDARY}\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                f"{base64.b64encode(data).decode()}\r\n--{BOUNDARY}--\r\n").encode()
        self._call("POST", f"/upload/storage/v1/b/{bucket}/o?uploadType=multipart", body,
                   f"multipart/related; boundary={BOUNDARY}")

    def delete(self, key: str, bucket: str = "bkt") -> None:
        self._call("DELETE", f"/storage/v1/b/{bucket}/o/{urllib.parse.quote(key, safe='')}")

    def _call(self, method: str, path: str, body: bytes | None = None,
              content_type: str = "application/octet-stream") -> None:
        request = urllib.request.Request(self.endpoint + path, data=body, method=method,
                                         headers={"Content-Type": content_type})
        urllib.request.urlopen(request, timeout=10).close()


@pytest.fixture
def gcs(monkeypatch) -> Iterator[GcsWorld]:
    """A GCS emulator on a free localhost port, its store in memory, with gcsfs pointed at it."""
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    try:
        yield GcsWorld(f"http://127.0.0.1:{port}")
    finally:
        server.stop()
