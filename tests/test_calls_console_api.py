"""The calls API the web console reads: list filters and totals, the export, waveform peaks, recording tokens, the
live event stream and the operator's hang-up, across two workers.

Two real `parley serve` processes share one PostgreSQL database (and a token secret), as a multi-worker
deployment does; calls are real talk-WebSocket calls with a model-free agent (energy VAD, canned STT and LLM,
tone TTS). Rows the filters need in numbers are written with the store itself, into the same database.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import numpy as np
import pytest
import websockets

from parley.api.call_export import COLUMNS
from parley.audio import read_wav
from parley.audio.peaks import Peaks
from parley.store.calls import CallRepo, CallStatus
from parley.store.db import Database

from .support.live_call import talker
from .support.service import Service, backend_env, register_secret, running_service

SILENCE = bytes(640)


@pytest.fixture(scope="module")
def pg_env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    with backend_env("postgres", request) as env:
        yield {**env, "PARLEY_TOKEN_SECRET": secrets.token_urlsafe(32)}


@pytest.fixture(scope="module")
def service_env(pg_env: dict[str, str]) -> dict[str, str]:
    return {**pg_env, "PARLEY_WORKER_ID": "console-w1"}


@pytest.fixture(scope="module")
def other(pg_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A second worker on the same database: another process, another worker id."""
    with running_service(tmp_path_factory.mktemp("console-w2"), **pg_env, PARLEY_WORKER_ID="console-w2") as svc:
        yield svc


@pytest.fixture(scope="module")
def agent_doc() -> dict[str, Any]:
    return {**talker(1), "name": "console-api", "greeting": "Hi."}  # the tone voice: 0.3 s a character


def tone(seconds: float, hz: float = 440.0, amplitude: int = 8000) -> bytes:
    t = np.arange(int(16000 * seconds)) / 16000
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()


async def talk(
    service: Service,
    key: str,
    agent_id: str,
    audio: bytes,
    started: asyncio.Future[str] | None = None,
    hang_up: bool = True,
    digits: asyncio.Queue[str] | None = None,
) -> list[dict[str, Any]]:
    """A talk call: ``audio`` at real time, then ``end`` (``hang_up``) or silence until the server ends the call;
    the events it was sent. ``started`` gets the call id as soon as the call exists; keys put in ``digits`` are
    pressed."""
    with service.client(key) as c:
        token = c.post(f"/v1/agents/{agent_id}/talk-token").json()
    events: list[dict[str, Any]] = []
    async with websockets.connect(service.url.replace("http", "ws") + token["url"], max_size=2**20) as ws:

        async def send() -> None:
            start, k = time.monotonic(), 0
            frames = [audio[i : i + 640] for i in range(0, len(audio), 640)]
            while frames or not hang_up:
                if digits is not None and not digits.empty():
                    await ws.send(json.dumps({"type": "dtmf", "digit": digits.get_nowait()}))
                await ws.send(frames.pop(0) if frames else SILENCE)
                k += 1
                await asyncio.sleep(max(0.0, start + k * 0.02 - time.monotonic()))
            await ws.send(json.dumps({"type": "end"}))

        async def receive() -> None:
            async for message in ws:
                if isinstance(message, str):
                    events.append(json.loads(message))
                    if events[-1]["type"] == "call" and started is not None:
                        started.set_result(events[-1]["call_id"])
                    if events[-1]["type"] == "end":
                        return

        sender = asyncio.create_task(send())
        try:
            await asyncio.wait_for(receive(), 120)
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
    return events


@pytest.fixture(scope="module")
def recorded(service: Service, key: str, agent: dict[str, Any]) -> dict[str, Any]:
    """One finished call with turns, events and a recording (the caller's tone left, the agent's right)."""
    audio = bytes(48000) + tone(0.6) + bytes(16000 * 2 * 6)  # 1.5 s of silence, the tone, 6 s for the reply
    events = asyncio.run(talk(service, key, agent["id"], audio))
    call_id = events[0]["call_id"]
    with service.client(key) as c:
        call = c.get(f"/v1/calls/{call_id}").json()
    assert call["status"] == "ended" and call["recording_bytes"], call
    return dict(call)


def run_db(service: Service, work: Any) -> Any:
    """``await work(repo, session)`` on the service's own database."""

    async def go() -> Any:
        db = Database(service.env["PARLEY_DATABASE_URL"])
        try:
            async with db.session() as s:
                return await work(CallRepo(s), s)
        finally:
            await db.close()

    return asyncio.run(go())


def tenant_id(service: Service, name: str) -> uuid.UUID:
    async def go() -> uuid.UUID:
        conn = await asyncpg.connect(service.env["PARLEY_DATABASE_URL"].replace("+asyncpg", ""))
        try:
            return uuid.UUID(str(await conn.fetchval("SELECT id FROM tenants WHERE name = $1", name)))
        finally:
            await conn.close()

    return asyncio.run(go())


def add_call(
    service: Service,
    tenant: uuid.UUID,
    agent: dict[str, Any],
    *,
    version: int = 1,
    direction: str = "inbound",
    reason: str | None = "caller-hangup",
    duration: float | None = 5.0,
    name: str | None = None,
    recording_key: str | None = None,
) -> str:
    """A call row as a worker writes one (ended unless ``reason`` is None)."""

    async def work(repo: CallRepo, _: Any) -> str:
        call = await repo.create(
            tenant, uuid.UUID(agent["id"]), version, name or agent["name"], "talk", "+15551234567",
            direction=direction,
        )  # fmt: skip
        if reason is not None:
            await repo.end(tenant, call.id, CallStatus.ENDED, reason, duration, recording_key, 100)
        return str(call.id)

    return str(run_db(service, work))


def test_filters_total_count_and_export(
    service: Service, key: str, tenant_name: str, agent: dict[str, Any], recorded: dict[str, Any]
) -> None:
    tenant = tenant_id(service, tenant_name)
    v2 = add_call(service, tenant, agent, version=2, direction="outbound", reason="agent-hangup", duration=30.0)
    formula = add_call(service, tenant, agent, name="=HYPERLINK(1)", duration=3.0)
    live = add_call(service, tenant, agent, reason=None)
    everyone = {recorded["id"], v2, formula, live}
    with service.client(key) as c:
        page = c.get("/v1/calls", params={"agent_id": agent["id"], "limit": 2})
        assert page.status_code == 200 and len(page.json()) == 2 and page.headers["x-total-count"] == "4"
        past = c.get("/v1/calls", params={"agent_id": agent["id"], "offset": 10})
        assert past.json() == [] and past.headers["x-total-count"] == "4"

        def ids(**params: Any) -> set[str]:
            r = c.get("/v1/calls", params={"agent_id": agent["id"], **params})
            assert r.status_code == 200, r.text
            assert r.headers["x-total-count"] == str(len(r.json()))
            return {x["id"] for x in r.json()}

        assert ids() == everyone
        assert ids(agent_version=2) == ids(direction="outbound") == ids(end_reason="agent-hangup") == {v2}
        assert ids(min_duration_s=20) == {v2}
        assert ids(max_duration_s=4) == {formula}
        assert ids(status="active") == {live}
        assert ids(end_reason="caller-hangup", min_duration_s=recorded["duration_s"] - 0.01) == {recorded["id"]}
        for bad in ({"direction": "sideways"}, {"min_duration_s": -1}, {"agent_version": 0}, {"max_duration_s": "x"}):
            assert c.get("/v1/calls", params=bad).status_code == 422, bad

        exported = c.get("/v1/calls/export", params={"agent_id": agent["id"]})
        assert exported.status_code == 200 and exported.headers["content-type"] == "application/json"
        rows = {r["id"]: r for r in exported.json()}
        assert set(rows) == everyone and all(list(r) == list(COLUMNS) for r in rows.values())
        real = rows[recorded["id"]]
        assert real["turns"] == len(recorded["turns"]) >= 2 and real["v2v_p50"] and real["v2v_p95"] >= real["v2v_p50"]
        assert real["duration_s"] == recorded["duration_s"] and rows[live]["ended_at"] is None
        only_v2 = c.get("/v1/calls/export", params={"agent_id": agent["id"], "agent_version": 2}).json()
        assert [r["id"] for r in only_v2] == [v2]
        assert c.get("/v1/calls/export", params={"agent_id": str(uuid.uuid4())}).json() == []

        as_csv = c.get("/v1/calls/export", params={"agent_id": agent["id"], "format": "csv"})
        assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
        assert 'filename="calls.csv"' in as_csv.headers["content-disposition"]
        table = list(csv.DictReader(io.StringIO(as_csv.text)))
        assert [r["id"] for r in table] == [r["id"] for r in exported.json()]
        by_id = {r["id"]: r for r in table}
        assert by_id[formula]["agent_name"] == "'=HYPERLINK(1)"  # a spreadsheet shows it, does not run it
        assert by_id[v2]["caller"] == "+15551234567" and by_id[v2]["direction"] == "outbound"
        assert by_id[live]["ended_at"] == "" and by_id[recorded["id"]]["turns"] == str(real["turns"])
        assert c.get("/v1/calls/export", params={"format": "xml"}).status_code == 422


def test_export_pages_through_every_call(service: Service) -> None:
    """More calls than a page holds: all of them, once each, newest first."""
    name = "console-paging"
    key = service.create_key(name)
    tenant = tenant_id(service, name)
    agent = {"id": str(uuid.uuid4()), "name": "bulk"}

    async def work(repo: CallRepo, _: Any) -> None:
        for _ in range(1203):
            await repo.create(tenant, uuid.UUID(agent["id"]), 1, "bulk", "talk")

    run_db(service, work)
    with service.client(key) as c:
        rows = c.get("/v1/calls/export").json()
        assert len(rows) == len({r["id"] for r in rows}) == 1203
        assert [r["started_at"] for r in rows] == sorted((r["started_at"] for r in rows), reverse=True)
        lines = c.get("/v1/calls/export", params={"format": "csv"}).text.splitlines()
        assert len(lines) == 1204 and lines[0] == ",".join(COLUMNS)
        assert c.get("/v1/calls", params={"limit": 1}).headers["x-total-count"] == "1203"


def test_waveform_peaks(
    service: Service, key: str, tenant_name: str, agent: dict[str, Any], recorded: dict[str, Any]
) -> None:
    call_id = recorded["id"]
    with service.client(key) as c:
        start = time.monotonic()
        wave = c.get(f"/v1/calls/{call_id}/waveform", params={"points": 400})
        assert time.monotonic() - start < 1.0
        assert wave.status_code == 200, wave.text
        body = wave.json()
        assert body["channels"] == ["caller", "agent"] and body["sample_rate"] == 16000
        assert body["duration_s"] == pytest.approx(recorded["duration_s"], abs=0.1)
        caller, agent_side = body["peaks"]
        assert len(caller) == len(agent_side) == 400
        assert all(0.0 <= v <= 1.0 for v in caller + agent_side)
        assert max(caller) == pytest.approx(8000 / 32767, abs=0.01)  # the caller's tone, at its amplitude
        assert max(agent_side) > 0.05 and min(caller) == 0.0  # the agent spoke; the caller was silent at times
        # the tone is where it was sent: from 1.5 s to 2.1 s of the call
        per_s = 400 / body["duration_s"]
        loud = [i for i, v in enumerate(caller) if v > 0.2]
        assert loud[0] / per_s == pytest.approx(1.5, abs=0.1) and loud[-1] / per_s == pytest.approx(2.1, abs=0.1)
        assert len(c.get(f"/v1/calls/{call_id}/waveform").json()["peaks"][0]) == 1000
        assert len(c.get(f"/v1/calls/{call_id}/waveform", params={"points": 4000}).json()["peaks"][1]) == 4000
        for points in (99, 4001, "many"):
            assert c.get(f"/v1/calls/{call_id}/waveform", params={"points": points}).status_code == 422

        tenant = tenant_id(service, tenant_name)
        silent = add_call(service, tenant, agent)  # ended, no recording
        none = c.get(f"/v1/calls/{silent}/waveform")
        assert none.status_code == 404 and "no recording" in none.json()["detail"]
        broken_key = f"{tenant}/broken-{uuid.uuid4()}.wav"
        path = Path(service.env["PARLEY_DATA_DIR"], "recordings", broken_key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"ID3 this is an mp3, not a WAV" + bytes(100))
        broken = add_call(service, tenant, agent, recording_key=broken_key)
        refused = c.get(f"/v1/calls/{broken}/waveform")
        assert refused.status_code == 422 and "not a WAV" in refused.json()["detail"]


def test_recording_token_streams_without_headers(
    service: Service, key: str, recorded: dict[str, Any], tenant_name: str, agent: dict[str, Any]
) -> None:
    call_id = recorded["id"]
    with service.client(key) as c:
        whole = c.get(f"/v1/calls/{call_id}/recording").content
        viewer = c.post("/v1/keys", json={"name": "player", "role": "viewer", "scopes": ["calls:read"]}).json()
        other_call = add_call(service, tenant_id(service, tenant_name), agent)
    register_secret(viewer["secret"])
    with service.client(viewer["secret"]) as v:
        issued = v.post(f"/v1/calls/{call_id}/recording-token")
        assert issued.status_code == 200, issued.text
        grant = issued.json()
        assert grant["expires_in"] == 600 and grant["url"] == f"/v1/calls/{call_id}/recording?token={grant['token']}"
        assert v.post(f"/v1/calls/{other_call}/recording-token").status_code == 404  # no recording to grant
    register_secret(grant["token"])
    with httpx.Client(base_url=service.url, timeout=30) as bare:  # no credentials: what an <audio src> sends
        full = bare.get(grant["url"])
        assert full.status_code == 200 and full.content == whole and full.headers["content-type"] == "audio/wav"
        assert read_wav(full.content).channels == 2
        for _ in range(3):  # a player's Range requests: the token serves them all within its life
            part = bare.get(grant["url"], headers={"Range": "bytes=44-1043"})
            assert part.status_code == 206 and part.content == whole[44:1044]
        assert bare.get(f"/v1/calls/{other_call}/recording", params={"token": grant["token"]}).status_code == 403
        assert bare.get(f"/v1/calls/{call_id}/recording", params={"token": "x" + grant["token"]}).status_code == 401
        assert bare.get(f"/v1/calls/{call_id}/recording").status_code == 401
        as_bearer = bare.get("/v1/calls", headers={"Authorization": f"Bearer {grant['token']}"})
        assert as_bearer.status_code == 401  # it opens the recording, nothing else
        with service.client(key) as c:
            assert c.delete(f"/v1/keys/{viewer['id']}").status_code == 204
        revoked = bare.get(grant["url"])
        assert revoked.status_code == 401 and "revoked" in revoked.json()["detail"]
        assert grant["token"] not in revoked.text


async def sse(service: Service, key: str, call_id: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(event name, data) of the call's event stream, comments skipped, until it closes."""
    headers = {"Authorization": f"Bearer {key}"}
    async with (
        httpx.AsyncClient(base_url=service.url, timeout=60) as client,
        client.stream("GET", f"/v1/calls/{call_id}/events/stream", headers=headers) as response,
    ):
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        name = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                yield name, json.loads(line.removeprefix("data: "))


def test_event_stream_of_an_ended_call(service: Service, key: str, recorded: dict[str, Any]) -> None:
    async def collect() -> list[tuple[str, dict[str, Any]]]:
        return [m async for m in sse(service, key, recorded["id"])]

    messages = asyncio.run(asyncio.wait_for(collect(), 10))
    assert messages[-1] == ("end", {"status": "ended", "end_reason": "caller-hangup"})
    streamed = [(name, data) for name, data in messages[:-1]]
    assert all(name == data["kind"] for name, data in streamed)
    stored = recorded["events"]
    assert sorted(json.dumps(d, sort_keys=True) for _, d in streamed) == sorted(
        json.dumps(e, sort_keys=True) for e in stored
    )
    with service.client(key) as c:  # a client that lost the stream resumes after the last id it read
        whole = c.get(f"/v1/calls/{recorded['id']}/events/stream").text
        ids = [int(line.removeprefix("id: ")) for line in whole.splitlines() if line.startswith("id: ")]
        assert len(ids) == len(stored) and ids == sorted(ids)
        rest = c.get(f"/v1/calls/{recorded['id']}/events/stream", headers={"Last-Event-ID": str(ids[1])}).text
        assert [int(x.removeprefix("id: ")) for x in rest.splitlines() if x.startswith("id: ")] == ids[2:]
        assert rest.endswith('event: end\ndata: {"status":"ended","end_reason":"caller-hangup"}\n\n')


def test_live_events_and_hang_up_from_another_worker(service: Service, other: Service, key: str) -> None:
    """A call on worker 1; worker 2 streams its events as they happen, and hangs it up."""
    with service.client(key) as c:
        long_agent = c.post("/v1/agents", json={**talker(120), "name": "console-long"}).json()
        viewer = c.post("/v1/keys", json={"name": "watcher", "role": "viewer"}).json()["secret"]
    register_secret(viewer)
    intruder = other.create_key("console-intruder")

    async def scenario() -> tuple[list[dict[str, Any]], list[tuple[str, dict[str, Any]]], float]:
        started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        digits: asyncio.Queue[str] = asyncio.Queue()
        call = asyncio.create_task(talk(service, key, long_agent["id"], b"", started, False, digits))
        call_id = await asyncio.wait_for(started, 60)
        seen: list[tuple[str, dict[str, Any]]] = []
        got_dtmf = asyncio.Event()

        async def watch() -> None:
            async for message in sse(other, key, call_id):
                seen.append(message)
                if message[0] == "dtmf":
                    got_dtmf.set()

        watcher = asyncio.create_task(watch())
        async with httpx.AsyncClient(base_url=other.url, timeout=30) as http:

            def auth(k: str) -> dict[str, str]:
                return {"Authorization": f"Bearer {k}"}

            hangup = f"/v1/calls/{call_id}/hangup"
            assert (await http.post(hangup, headers=auth(viewer))).status_code == 403  # calls:write, editor
            assert (await http.post(hangup, headers=auth(intruder))).status_code == 404
            stream = await http.get(f"/v1/calls/{call_id}/events/stream", headers=auth(intruder))
            assert stream.status_code == 404
            active = await http.get("/v1/calls", params={"status": "active"}, headers=auth(key))
            assert call_id in [x["id"] for x in active.json()]
            await digits.put("5")
            await asyncio.wait_for(got_dtmf.wait(), 5)  # live: worker 2 streams what worker 1 writes
            asked = time.monotonic()
            r = await http.post(hangup, headers=auth(key))
            assert r.status_code == 202 and r.json() == {"requested": True}
            events = await asyncio.wait_for(call, 15)
            took = time.monotonic() - asked
            await asyncio.wait_for(watcher, 10)
            assert (await http.post(hangup, headers=auth(key))).status_code == 409
        return events, seen, took

    events, seen, took = asyncio.run(scenario())
    assert events[-1]["type"] == "end" and events[-1]["reason"] == "hung_up_by_operator", events[-1]
    assert took < 5.0, f"the other worker took {took:.1f} s to end the call"
    assert seen[-1] == ("end", {"status": "ended", "end_reason": "hung_up_by_operator"})
    assert any(name == "hangup" and data["data"]["by"] == "operator" for name, data in seen)
    assert [name for name, _ in seen].count("dtmf") == 1


def test_hang_up_on_the_same_worker_is_at_once(service: Service, key: str) -> None:
    with service.client(key) as c:
        long_agent = c.post("/v1/agents", json={**talker(120), "name": "console-long-2"}).json()

    async def scenario() -> tuple[list[dict[str, Any]], float]:
        started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        call = asyncio.create_task(talk(service, key, long_agent["id"], b"", started, False))
        call_id = await asyncio.wait_for(started, 60)
        await asyncio.sleep(0.5)
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
            asked = time.monotonic()
            r = await http.post(f"/v1/calls/{call_id}/hangup", headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 202
            events = await asyncio.wait_for(call, 15)
        return events, time.monotonic() - asked

    events, took = asyncio.run(scenario())
    assert events[-1]["reason"] == "hung_up_by_operator" and took < 0.9, (events[-1], took)


def test_other_tenants_and_unknown_calls_get_404(service: Service, key: str, recorded: dict[str, Any]) -> None:
    stranger = service.create_key("console-stranger")
    call_id = recorded["id"]
    with service.client(stranger) as c:
        for method, path in [("GET", "waveform"), ("POST", "recording-token"), ("GET", "events/stream"),
                             ("POST", "hangup"), ("GET", "recording")]:  # fmt: skip
            for target in (call_id, str(uuid.uuid4())):
                r = c.request(method, f"/v1/calls/{target}/{path}")
                assert r.status_code == 404, (method, path, r.status_code, r.text)
        assert c.get("/v1/calls/export").json() == []
        assert c.get("/v1/calls").headers["x-total-count"] == "0"


def test_peaks_do_not_depend_on_how_the_bytes_are_cut() -> None:
    rng = np.random.default_rng(7)
    samples = rng.integers(-32768, 32767, size=(10_007, 2), dtype=np.int16)
    samples[5000, 1] = -32768  # full scale, negative: |x| must not overflow int16
    data = samples.astype("<i2").tobytes()
    whole = Peaks(len(samples), 2, 333)
    whole.feed(data + b"\x01\x02\x03")  # bytes past the declared length are ignored
    cut = Peaks(len(samples), 2, 333)
    for start in range(0, len(data), 999):  # chunks that split frames and samples
        cut.feed(data[start : start + 999])
    assert whole.result() == cut.result()
    bucket = np.arange(len(samples)) * 333 // len(samples)  # frame i belongs to bucket i * points // frames
    loudest = [[np.abs(samples[bucket == i, c].astype(np.int32)).max() / 32767 for i in range(333)] for c in (0, 1)]
    assert np.allclose(whole.result(), loudest, atol=1e-4) and max(whole.result()[1]) == 1.0
    few = Peaks(3, 1, 100)  # fewer frames than points: the rest stay silent
    few.feed(np.array([16384, -16384, 0], "<i2").tobytes())
    assert len(few.result()[0]) == 100 and sum(v > 0 for v in few.result()[0]) == 2
