"""One contract, three recording stores: local files, S3 and Azure Blob Storage.

AWS S3 / Azure Blob cannot be reached here; these run against SeaweedFS / Azurite, which speak the same
documented wire protocols. Both servers are started once per session on free 127.0.0.1 ports, only when a
test needs them, and stopped at the end. Azurite is installed from npm once into ~/.cache/parley-test.
"""

from __future__ import annotations

import random
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from parley.config import Settings
from parley.store.blobs import MAX_HEAD, READ_CHUNK, BlobNotFound, BlobStore, LocalBlobStore, open_blob_store
from parley.store.blobs.azure import BLOCK_SIZE, AzureBlobStore
from parley.store.blobs.s3 import PART_SIZE, S3BlobStore

from .support.servers import AZURE_ACCOUNT_KEY, BUCKET, CONTAINER, S3_KEY, S3_SECRET, s3_client

FRAME = 640  # bytes per write in the contract test
CALL_FRAME = 1280  # 20 ms of stereo 16 kHz PCM16
CALL_BYTES = 30 * 60 * 16000 * 2 * 2  # 30 minutes of it: ≈ 115 MB
MEMORY_LIMIT = 15 * 1024 * 1024
BACKENDS = ["local", "s3", "azure"]
PART = {"local": 1024 * 1024, "s3": PART_SIZE, "azure": BLOCK_SIZE}


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
    body = s3_client(seaweedfs).get_object(Bucket=BUCKET, Key=f"tenant-1/{key}")["Body"].read()
    assert body == b"hello"
    await store.delete(key)
    await store.aclose()
