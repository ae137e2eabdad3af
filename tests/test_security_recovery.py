"""A crash (``kill -9``) mid-call loses neither the recording nor the call record.

The stores' recovery runs against the real servers (SeaweedFS, Azurite) with a writer abandoned mid-stream,
as a killed process leaves it; the whole path runs against a real `parley serve` killed with SIGKILL during a
talk call and started again on the same data directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import websockets
from sqlalchemy import update
from websockets.exceptions import ConnectionClosed

from parley.audio import read_wav, wav_header
from parley.calls.recorder import BlobSink, fixed_wav_head
from parley.calls.recovery import recover_crashed_calls
from parley.store.blobs import BlobStore, LocalBlobStore
from parley.store.blobs.azure import AzureBlobStore
from parley.store.blobs.s3 import PART_SIZE, S3BlobStore
from parley.store.calls import CallRepo
from parley.store.db import Database
from parley.store.models import CallEvent, Turn, utcnow

from .support.servers import BUCKET, CONTAINER, S3_KEY, S3_SECRET, s3_client
from .support.service import BACKENDS, Service, backend_env, running_service
from .support.store import db, new_tenant
from .support.twilio import PUBLIC, SID, TOKEN, signed_post, stream_of, stream_url, voice_form
from .support.twilio_peer import TwilioPeer

__all__ = ["db"]  # the store tests' fixture: SQLite and PostgreSQL

RATE = 16000
SECOND = RATE * 2 * 2  # bytes of stereo PCM16 a second
PART = {"local": 256 * 1024, "s3": PART_SIZE, "azure": 1024 * 1024}  # local: its write buffer; S3's minimum part
SHORT = 600 * 1024  # less than one remote part: only the spool has it


SPOOLED = 256 * 1024  # the most a remote writer's spool may lag behind


def _open(kind: str, request: pytest.FixtureRequest, root: Path, spool: Path | None) -> BlobStore:
    if kind == "local":
        return LocalBlobStore(root)
    if kind == "s3":
        endpoint = request.getfixturevalue("seaweedfs")
        return S3BlobStore(BUCKET, "crash", endpoint_url=endpoint, access_key_id=S3_KEY, secret_access_key=S3_SECRET,
                           spool_dir=spool)  # fmt: skip
    return AzureBlobStore(request.getfixturevalue("azurite"), CONTAINER, "crash", block_size=PART["azure"],
                          spool_dir=spool)  # fmt: skip


@pytest.fixture(params=["local", "s3", "s3-disk-lost", "azure", "azure-disk-lost"])
async def stores(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[BlobStore, BlobStore, int, int]]:
    """The store the dead process wrote with, the restarted process's own, its part size and the most a crash
    may lose.

    Remote stores spool their unsent part on local disk; "disk-lost": the restart happens elsewhere."""
    kind, lost = request.param.split("-")[0], request.param.endswith("disk-lost")
    spool = tmp_path / "spool"
    dead = _open(kind, request, tmp_path, spool)
    fresh = _open(kind, request, tmp_path, tmp_path / "another-disk" if lost else spool)
    yield dead, fresh, PART[kind], PART[kind] if lost or kind == "local" else SPOOLED
    assert lost or not list(spool.glob("*")), "recovery leaves no spool behind"
    await dead.aclose()
    await fresh.aclose()


@pytest.mark.parametrize("length", ["short", "long"])
async def test_a_recording_cut_by_a_crash_is_recovered_as_a_valid_wav(
    stores: tuple[BlobStore, BlobStore, int, int], length: str
) -> None:
    dead, fresh, part, loss = stores
    key = f"{uuid.uuid4()}/{uuid.uuid4()}.wav"
    rng = np.random.default_rng(5)
    n = SHORT if length == "short" else int(2.5 * part)  # 2½ parts
    audio = rng.integers(-3000, 3000, size=n // 4 * 2, dtype="<i2").tobytes()
    sink = BlobSink(await dead.writer(key), RATE)
    for i in range(0, len(audio), SECOND // 50 * 25):  # half a second at a time, as the recorder writes
        await sink.write(audio[i : i + SECOND // 50 * 25])
    # the process dies here: no close, no abort
    assert await fresh.size(key) is None, "nothing is visible before recovery"
    recovered = await fresh.recover(key, fixed_wav_head)
    if len(audio) + 44 < part and loss == part:  # a remote store, restarted elsewhere: no part reached storage
        assert recovered is None
        return
    assert recovered is not None
    stored = b"".join([chunk async for chunk in fresh.read(key)])
    assert len(stored) == recovered.size
    kept = len(stored) - 44
    # every full part (local: every full write buffer) reached storage; only the tail is lost
    assert kept >= len(audio) - loss, (kept, len(audio))
    assert stored[:44] == wav_header(RATE, 2, kept // 4 * 4)
    assert stored[44:] == audio[:kept]
    wav = read_wav(stored)
    assert wav.sample_rate == RATE and abs(wav.duration - kept / SECOND) < 0.01
    # a second recovery finds the finished object and changes nothing
    again = await fresh.recover(key, fixed_wav_head)
    assert again is not None and again.size == recovered.size
    if isinstance(fresh, S3BlobStore):
        uploads = s3_client(fresh._client.meta.endpoint_url).list_multipart_uploads(Bucket=BUCKET, Prefix="crash/")
        assert [u for u in uploads.get("Uploads", []) if u["Key"].endswith(key)] == []


async def test_nothing_stored_recovers_nothing(stores: tuple[BlobStore, BlobStore, int, int]) -> None:
    _, fresh, _, _ = stores
    assert await fresh.recover(f"{uuid.uuid4()}/{uuid.uuid4()}.wav", fixed_wav_head) is None


@pytest.mark.asyncio(loop_scope="module")
async def test_a_restart_ends_its_own_and_workerless_calls_at_their_last_sign_of_life(db: Database) -> None:
    tenant = await new_tenant(db)
    long_ago = utcnow() - timedelta(minutes=10)
    async with db.session() as s:
        repo = CallRepo(s)
        mine, theirs, workerless = [
            await repo.create(tenant, uuid.uuid4(), 1, "a", "talk", worker_id=w) for w in ("w1", "w2", None)
        ]
        for call in (mine, theirs, workerless):
            call.started_at = long_ago
        await repo.upsert_turn(tenant, mine.id, 0, "hi", "hello", "hello", False, {}, None, checked=True)
        await repo.add_event(tenant, workerless.id, 1.0, "dtmf", {}, checked=True)
    async with db.session() as s:
        for model in (Turn, CallEvent):  # the last writes happened 30 s and 12 s into the calls
            await s.execute(update(model).where(model.tenant_id == tenant).values(
                {Turn.updated_at if model is Turn else CallEvent.created_at: long_ago + timedelta(seconds=30
                 if model is Turn else 12)}))  # fmt: skip
    assert await recover_crashed_calls(db, LocalBlobStore(Path("/nonexistent")), "w1") >= 2
    async with db.session() as s:
        repo = CallRepo(s)
        got = {c.id: c for c in [await repo.get(tenant, x.id) for x in (mine, theirs, workerless)] if c}
    assert got[theirs.id].status == "active", "another worker's call goes on"
    for call, seconds in ((mine, 30), (workerless, 12)):
        ended = got[call.id]
        assert ended.status == "ended" and ended.end_reason == "worker-crashed" and ended.recording_key is None
        assert ended.duration_s is not None and abs(ended.duration_s - seconds) < 1, ended.duration_s


# --- a real server killed mid-call ---------------------------------------------------------------------------

TALKER = {
    "name": "long-talker",
    "system_prompt": "Say the greeting.",
    "greeting": "Thank you for calling, please hold while we talk for a long while. " * 20,
    "vad": {"provider": "energy"},
    "stt": {"provider": "canned", "options": {"text": "hello"}},
    "llm": {"provider": "canned", "options": {"default": "Still here."}},
    "tts": {"provider": "tone", "fallback": None},
    "interruptions": {"enabled": False},
}


async def _talk(service: Service, key: str, agent_id: str, killed: asyncio.Event) -> tuple[str, float]:
    """Stream silence over the talk socket until the server is killed; (call id, seconds of call)."""
    url = service.url.replace("http", "ws", 1) + f"/v1/agents/{agent_id}/talk"
    headers = {"Authorization": f"Bearer {key}"}
    async with websockets.connect(url, additional_headers=headers, max_size=2**20, ping_interval=None) as ws:
        first = json.loads(await ws.recv())
        assert first["type"] == "call", first
        start = time.monotonic()
        k = 0
        with contextlib.suppress(ConnectionClosed):
            while not killed.is_set():
                await ws.send(bytes(640))
                k += 1
                await asyncio.sleep(max(0.0, start + k * 0.02 - time.monotonic()))
                while True:  # drain what the agent sent
                    try:
                        await asyncio.wait_for(ws.recv(), 0.001)
                    except TimeoutError:
                        break
        return str(first["call_id"]), time.monotonic() - start


async def _twilio(service: Service, agent_id: str, killed: asyncio.Event) -> float:
    """A Twilio Media Stream to the agent until the server is killed; seconds of call."""
    answer = signed_post(service, f"/telephony/twilio/voice?agent={agent_id}", voice_form())
    assert answer.status_code == 200, answer.text
    _, params = stream_of(answer.text)
    url, headers = stream_url(service)
    peer = TwilioPeer(url, params, headers)
    started = 0.0

    async def script(p: TwilioPeer) -> None:
        nonlocal started
        started = time.monotonic()
        await killed.wait()

    with contextlib.suppress(ConnectionClosed, OSError):
        await peer.run(script)
    return time.monotonic() - started


async def _calls_then_kill(service: Service, key: str, agent_id: str, seconds: float) -> tuple[str, float, float]:
    """A talk call and a Twilio stream, the server SIGKILLed ``seconds`` into them."""
    killed = asyncio.Event()

    async def kill() -> None:
        await asyncio.sleep(seconds)
        os.kill(service.pid, signal.SIGKILL)
        killed.set()

    (call_id, talked), streamed, _ = await asyncio.gather(
        _talk(service, key, agent_id, killed), _twilio(service, agent_id, killed), kill()
    )
    return call_id, talked, streamed


def _check_recording(c: Any, call: dict[str, Any], seconds: float, rate: int) -> None:
    assert call["status"] == "ended" and call["end_reason"] == "worker-crashed", call
    assert seconds - 3 <= call["duration_s"] <= seconds + 1.5, (call["transport"], call["duration_s"], seconds)
    rec = c.get(f"/v1/calls/{call['id']}/recording")
    assert rec.status_code == 200, rec.text
    wav = read_wav(io.BytesIO(rec.content).getvalue())
    assert wav.channels == 2 and wav.sample_rate == rate
    assert seconds - 3 <= wav.duration <= seconds + 0.5, (call["transport"], wav.duration, seconds)
    assert np.abs(wav.samples[:, 1]).max() > 0, "the agent's greeting is in the recording"
    kind, recorded = call["transport"], call["duration_s"]
    print(f"{kind}: {seconds:.2f} s of call, {recorded:.2f} s on record, {wav.duration:.2f} s of recording")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_killed_server_ends_its_calls_and_keeps_their_recordings(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    twilio = {"PARLEY_TWILIO_ACCOUNT_SID": SID, "PARLEY_TWILIO_AUTH_TOKEN": TOKEN, "PARLEY_PUBLIC_URL": PUBLIC}
    with backend_env(backend, request) as env:
        env.update(twilio, PARLEY_WORKER_ID="worker-1")
        with running_service(tmp_path, **env) as service:
            key = service.create_key("crashers")
            with service.client(key) as c:
                agent = c.post("/v1/agents", json=TALKER)
                assert agent.status_code == 201, agent.text
            call_id, talked, streamed = asyncio.run(_calls_then_kill(service, key, agent.json()["id"], 6.0))
        time.sleep(4)  # downtime: no part of the calls
        with running_service(tmp_path, **env) as service, service.client(key) as c:
            calls = {x["transport"]: x for x in c.get("/v1/calls").json()}
            assert set(calls) == {"talk", "twilio"} and calls["talk"]["id"] == call_id, calls
            _check_recording(c, calls["talk"], talked, 16000)
            _check_recording(c, calls["twilio"], streamed, 8000)
        assert not list(tmp_path.rglob("*.part")) and not list(tmp_path.rglob("*.tail")), "nothing is left behind"
