"""A real S3-protocol server on localhost (moto), and a proxy in front of it that cuts object reads.

Nothing here reaches any other address: the AWS variables point the real
s3fs/botocore stack at 127.0.0.1, and the instance metadata service is off.
"""

from __future__ import annotations

import socket
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class S3World:
    endpoint: str
    port: int
    protocol: str = "s3"
    bucket_noun: str = "bucket"
    secret: str | None = "testing"  # the credentials, never to be printed

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def put(self, key: str, data: bytes, bucket: str = "bkt") -> None:
        self.client().put_object(Bucket=bucket, Key=key, Body=data)

    def delete(self, key: str, bucket: str = "bkt") -> None:
        self.client().delete_object(Bucket=bucket, Key=key)


@pytest.fixture
def s3(monkeypatch) -> Iterator[S3World]:
    """A moto S3 server on a free localhost port, with the environment pointing the AWS stack at it."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    # The server keeps its buckets in this process: each test starts from an empty store.
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10).close()
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    try:
        yield S3World(endpoint, port)
    finally:
        server.stop()


class CuttingProxy:
    """A TCP proxy to ``upstream_port`` that, while ``cut_reads`` is not 0, cuts object reads mid-body.

    An object read is a ``GET /bucket/key`` (a listing has a query string).
    Its response is passed on up to ``body_bytes`` bytes of the body, then
    both connections are closed. ``cuts`` counts the reads actually cut;
    ``cut_reads`` < 0 cuts every read.
    """

    def __init__(self, upstream_port: int, body_bytes: int = 64) -> None:
        self.upstream_port = upstream_port
        self.body_bytes = body_bytes
        self.cut_reads = 0
        self.cuts = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            cutting = threading.Event()
            threading.Thread(target=self._requests, args=(client, upstream, cutting), daemon=True).start()
            threading.Thread(target=self._responses, args=(upstream, client, cutting), daemon=True).start()

    def _requests(self, client: socket.socket, upstream: socket.socket, cutting: threading.Event) -> None:
        try:
            while data := client.recv(65536):
                line = data.split(b"\r\n", 1)[0]
                if line.startswith(b"GET ") and b"?" not in line.split(b" ")[1]:
                    with self._lock:
                        if self.cut_reads:
                            self.cut_reads -= 1 if self.cut_reads > 0 else 0
                            cutting.set()
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            _close(client, upstream)

    def _responses(self, upstream: socket.socket, client: socket.socket, cutting: threading.Event) -> None:
        seen = b""
        try:
            while data := upstream.recv(65536):
                if not cutting.is_set():
                    client.sendall(data)
                    continue
                seen += data
                header_end = seen.find(b"\r\n\r\n")
                if header_end < 0:
                    continue
                client.sendall(seen[: header_end + 4 + self.body_bytes])
                with self._lock:
                    self.cuts += 1
                break
        except OSError:
            pass
        finally:
            _close(client, upstream)


def _close(*sockets: socket.socket) -> None:
    for each in sockets:
        try:
            each.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        each.close()


@pytest.fixture
def cutting_proxy(s3, monkeypatch) -> Iterator[CuttingProxy]:
    """A :class:`CuttingProxy` in front of the moto server; the AWS stack is pointed at the proxy."""
    proxy = CuttingProxy(s3.port)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    try:
        yield proxy
    finally:
        proxy.close()
