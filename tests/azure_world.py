"""Azurite, Microsoft's Azure Storage emulator, on localhost for the real adlfs/azure-storage-blob stack.

``make install-test`` installs it with npm into the environment's ``node/``
folder; without it the tests that need it fail saying so. adlfs is pointed at
it by the development-storage connection string in
``AZURE_STORAGE_CONNECTION_STRING``; objects are written with the Azure SDK's
own blob client. Nothing here reaches any other address.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.s3_world import free_port

AZURITE = Path(sys.prefix) / "node" / "node_modules" / ".bin" / "azurite-blob"
# Azurite's well-known development account (published in Azure's documentation; not a secret of anyone's).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def connection_string(endpoint: str, key: str = ACCOUNT_KEY) -> str:
    return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={key};"
            f"BlobEndpoint={endpoint}/{ACCOUNT};")


@dataclass
class AzureWorld:
    endpoint: str
    protocol: str = "az"
    bucket_noun: str = "container"
    secret: str | None = ACCOUNT_KEY

    def service(self):
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(connection_string(self.endpoint))

    def create_bucket(self, name: str) -> None:
        self.service().create_container(name)

    def put(self, key: str, data: bytes, bucket: str = "bkt") -> None:
        self.service().get_blob_client(bucket, key).upload_blob(data, overwrite=True)

    def delete(self, key: str, bucket: str = "bkt") -> None:
        self.service().get_blob_client(bucket, key).delete_blob()


@pytest.fixture
def azure(monkeypatch, tmp_path) -> Iterator[AzureWorld]:
    """Azurite's blob service on a free localhost port, storing under ``tmp_path``, with adlfs pointed at it."""
    if not AZURITE.exists():
        pytest.fail(f"Azurite is not installed at {AZURITE}: run `make install-test` (it needs npm)", pytrace=False)
    port = free_port()
    server = subprocess.Popen([str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port),
                               "--location", str(tmp_path / "azurite"), "--silent", "--skipApiVersionCheck"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(server, port)
        for name in ("AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_SAS_TOKEN",
                     "AZURE_STORAGE_CLIENT_ID", "AZURE_STORAGE_CLIENT_SECRET", "AZURE_STORAGE_TENANT_ID",
                     "AZURE_STORAGE_ANON"):
            monkeypatch.delenv(name, raising=False)
        endpoint = f"http://127.0.0.1:{port}"
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection_string(endpoint))
        yield AzureWorld(endpoint)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _wait_for_port(server: subprocess.Popen, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"Azurite exited with {server.returncode}: {server.stdout.read().decode()[-300:]}",
                        pytrace=False)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"Azurite did not listen on 127.0.0.1:{port} within {timeout:g} s", pytrace=False)
