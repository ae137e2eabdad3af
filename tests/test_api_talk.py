"""Talking to an agent over the WebSocket, then reading the call back; tenants never see each other.

A real `parley serve` (SQLite, embedded models), a real WebSocket client streaming
synthesized speech at real time, as a newcomer following the README would.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import websockets
import yaml

from parley.audio import read_wav
from parley.calls.synthetic_caller import speak

from .support.service import BACKENDS, ROOT, Service, backend_env, running_service

RECEPTIONIST = yaml.safe_load((ROOT / "examples/agents/receptionist.yaml").read_text())
RECEPTIONIST["llm"]["options"]["max_tokens"] = 24  # short answers: the calls here stay short


@pytest.fixture(scope="module", params=BACKENDS)
def service(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    unlimited = "100000/minute"  # the fuzzer sends thousands of requests from one address
    limits = {"PARLEY_RATE_LIMIT_PER_KEY": unlimited, "PARLEY_RATE_LIMIT_PER_ADDRESS": unlimited}
    with (
        backend_env(request.param, request) as env,
        running_service(tmp_path_factory.mktemp("talk"), **env, **limits) as svc,
    ):
        yield svc


async def stream_call(
    ws_url: str, pcm: np.ndarray, headers: dict[str, str] | None = None, hang_up: bool = True
) -> tuple[list[dict[str, Any]], bytes]:
    """Send ``pcm`` (16 kHz) at real time; collect events and agent audio until the call ends."""
    events: list[dict[str, Any]] = []
    audio = bytearray()
    async with websockets.connect(ws_url, additional_headers=headers or {}, max_size=2**20) as ws:

        async def send() -> None:
            start = time.monotonic()
            for k in range(len(pcm) // 320):
                await asyncio.sleep(max(0.0, start + k * 0.02 - time.monotonic()))
                await ws.send(pcm[k * 320 : (k + 1) * 320].astype("<i2").tobytes())
            if hang_up:
                await ws.send(json.dumps({"type": "end"}))

        async def receive() -> None:
            async for message in ws:
                if isinstance(message, bytes):
                    audio.extend(message)
                else:
                    events.append(json.loads(message))
                    if events[-1]["type"] == "end":
                        return

        if hang_up:
            await asyncio.wait_for(asyncio.gather(send(), receive()), 120)
        else:
            await send()  # then vanish without a word
    return events, bytes(audio)


def test_talk_then_list_transcript_and_recording(service: Service) -> None:
    key = service.create_key("talkers")
    with service.client(key) as c:
        agent = c.post("/v1/agents", json=RECEPTIONIST).json()
        token = c.post(f"/v1/agents/{agent['id']}/talk-token").json()
    question = asyncio.run(speak("What are your opening hours on Saturday?", "joe-quick"))
    pcm = np.concatenate([np.zeros(16000 * 5, np.int16), question, np.zeros(16000 * 9, np.int16)])
    ws_url = service.url.replace("http", "ws") + token["url"]
    events, audio = asyncio.run(stream_call(ws_url, pcm))

    kinds = [e["type"] for e in events]
    assert kinds[0] == "call" and kinds[-1] == "end"
    finals = [e for e in events if e["type"] == "transcript" and e["final"]]
    assert finals and "opening hours" in finals[0]["text"].lower()
    replies = [e for e in events if e["type"] == "agent_text" and e["turn"] == 1]
    assert replies and replies[0]["text"]
    assert any(e["type"] == "turn_metrics" and e["turn"] == 1 and e["voice_to_voice"] for e in events)
    assert len(audio) > 16000 * 2 * 2  # the greeting and an answer: seconds of agent audio

    call_id = events[0]["call_id"]
    with service.client(key) as c:
        listed = c.get("/v1/calls", params={"agent_id": agent["id"]}).json()
        assert [x["id"] for x in listed] == [call_id]
        assert c.get("/v1/calls", params={"q": "OPENING hours"}).json()[0]["id"] == call_id
        assert c.get("/v1/calls", params={"q": "no such words"}).json() == []
        call = c.get(f"/v1/calls/{call_id}").json()
        assert call["status"] == "ended" and call["end_reason"] == "caller-hangup"
        assert call["agent_version"] == 1 and call["transport"] == "talk"
        assert [t["turn"] for t in call["turns"]] == [0, 1]
        assert call["turns"][1]["times"]["first_audio_out"] > call["turns"][1]["times"]["speech_end"]
        text = c.get(f"/v1/calls/{call_id}/transcript", params={"format": "text"}).text
        assert "caller:" in text and "agent:" in text and "opening hours" in text.lower()
        rec = c.get(f"/v1/calls/{call_id}/recording")
        assert rec.status_code == 200 and rec.headers["accept-ranges"] == "bytes"
        wav = read_wav(rec.content)
        assert wav.channels == 2 and wav.sample_rate == 16000
        assert wav.duration == pytest.approx(call["duration_s"], abs=0.1)
        part = c.get(f"/v1/calls/{call_id}/recording", headers={"Range": "bytes=0-43"})
        assert part.status_code == 206 and part.content == rec.content[:44]
        assert part.headers["content-range"] == f"bytes 0-43/{len(rec.content)}"
        tail = c.get(f"/v1/calls/{call_id}/recording", headers={"Range": "bytes=-100"})
        assert tail.status_code == 206 and tail.content == rec.content[-100:]
        bad = c.get(f"/v1/calls/{call_id}/recording", headers={"Range": f"bytes={len(rec.content) + 5}-"})
        assert bad.status_code == 416
        assert c.delete(f"/v1/calls/{call_id}").status_code == 204
        assert c.get(f"/v1/calls/{call_id}/recording").status_code == 404
    if "PARLEY_STORAGE_URL" not in service.env:
        assert not list(Path(service.env["PARLEY_DATA_DIR"], "recordings").rglob(f"{call_id}.wav"))


def test_a_client_that_vanishes_leaves_a_complete_record(service: Service) -> None:
    key = service.create_key("vanishers")
    with service.client(key) as c:
        agent = c.post("/v1/agents", json={**RECEPTIONIST, "greeting": ""}).json()
    question = asyncio.run(speak("Where is your office?", "joe-quick"))
    pcm = np.concatenate([np.zeros(8000, np.int16), question, np.zeros(16000 * 3, np.int16)])
    ws_url = service.url.replace("http", "ws") + f"/v1/agents/{agent['id']}/talk"
    asyncio.run(stream_call(ws_url, pcm, headers={"Authorization": f"Bearer {key}"}, hang_up=False))
    with service.client(key) as c:
        for _ in range(50):
            calls = c.get("/v1/calls", params={"agent_id": agent["id"]}).json()
            if calls and calls[0]["status"] != "active":
                break
            time.sleep(0.2)
        call = c.get(f"/v1/calls/{calls[0]['id']}").json()
        assert call["status"] == "ended" and call["end_reason"] == "client-disconnected"
        assert any("office" in t["caller_text"].lower() for t in call["turns"])
        rec = c.get(f"/v1/calls/{call['id']}/recording")
        assert read_wav(io.BytesIO(rec.content).getvalue()).duration > 2


def test_one_tenant_cannot_reach_another_on_any_endpoint(service: Service) -> None:
    a_key, b_key = service.create_key("tenant-a"), service.create_key("tenant-b")
    with service.client(a_key) as a:
        agent = a.post("/v1/agents", json={**RECEPTIONIST, "name": "A's agent"}).json()
        a_extra_key = a.post("/v1/keys", json={"name": "a2", "role": "viewer"}).json()
        service.assign_number("+15550001111", "tenant-a")
        assert a.post("/v1/numbers", json={"number": "+15550001111", "agent_id": agent["id"]}).status_code == 201
        assert a.put("/v1/credentials/a-provider-key", json={"value": "sk-a-only"}).status_code == 201
        hook = a.post("/v1/webhooks", json={"url": "https://example.com/a-hook", "events": ["call.ended"]})
        assert hook.status_code == 201, hook.text
        assert a.post("/v1/knowledge", json={"name": "a-facts"}).status_code == 201
        files = [("files", ("a.txt", b"A's secret fact.", "text/plain"))]
        a_doc = a.post("/v1/knowledge/a-facts/documents", files=files)
        assert a_doc.status_code == 202, a_doc.text
        a_campaign = a.post("/v1/campaigns", json={"name": "A's", "agent_id": agent["id"], "provider": "sip",
                                                   "contacts": [{"phone": "+12025550123"}]})  # fmt: skip
        assert a_campaign.status_code == 201, a_campaign.text
        assert a.post("/v1/do-not-call", json={"phone": "+12025550199"}).status_code == 201
        question = asyncio.run(speak("Hello?", "joe-quick"))
        token = a.post(f"/v1/agents/{agent['id']}/talk-token").json()
    pcm = np.concatenate([np.zeros(8000, np.int16), question, np.zeros(16000 * 2, np.int16)])
    events, _ = asyncio.run(stream_call(service.url.replace("http", "ws") + token["url"], pcm))
    call_id = events[0]["call_id"]

    ids = {"agent_ref": agent["id"], "call_id": call_id, "key_id": a_extra_key["id"], "version": "1",
           "number": "+15550001111", "name": "a-provider-key", "webhook_id": hook.json()["id"],
           "caller": "+15550001111", "collection": "a-facts", "document_id": a_doc.json()[0]["id"],
           "campaign_id": a_campaign.json()["id"], "phone": "+12025550199"}  # fmt: skip
    with service.client(b_key) as b:
        spec = b.get("/openapi.json").json()
        tried = 0
        for path, methods in spec["paths"].items():
            for method in methods:
                url = path.format(**ids, action="pause")  # a campaign action: not an id that could leak
                body = {**RECEPTIONIST, "name": "hijack"} if method in ("put", "post") and "agent" in path else None
                if path == "/v1/keys" and method == "post":
                    continue  # creates B's own key: nothing of A's involved
                if path.startswith("/v1/credentials/") and method == "put":
                    continue  # sets B's own credential of that name: nothing of A's involved
                if path.startswith("/v1/callers/") and method == "delete":
                    continue  # erases B's own memory of that number (idempotent 204): nothing of A's involved
                if path.startswith("/telephony/"):
                    continue  # carriers' webhooks: signed by the carrier, not reached with tenant keys
                if path.startswith("/v1/campaigns/") and method in ("post", "patch"):  # valid bodies: only 404 is left
                    body = {"to": "+12025550123"} if path.endswith("/test-call") else {} if method == "patch" else None
                files = None
                if path.startswith("/v1/knowledge/") and method == "post":  # a valid body: only the owner can fail it
                    body = {"/urls": {"urls": ["https://example.com/b"]}, "/search": {"query": "secret"}}.get(
                        path[path.rindex("/") :]
                    )
                    files = [("files", ("b.txt", b"B's text", "text/plain"))] if path.endswith("/documents") else None
                r = b.request(method.upper(), url, json=body, files=files)
                tried += 1
                if "{" in path:
                    assert r.status_code == 404, f"{method.upper()} {path}: {r.status_code} {r.text[:200]}"
                elif method == "get" and path.startswith("/v1/"):
                    listing = json.dumps(r.json())
                    for secret_id in ids.values():
                        assert secret_id not in listing or secret_id == "1", f"GET {path} leaks {secret_id}"
        assert tried >= 12
        # B can neither dial out with A's agent nor map a number to it
        assert b.post("/v1/calls", json={"agent_id": agent["id"], "to": "+15550002222"}).status_code == 404
        assert b.post("/v1/numbers", json={"number": "+15550003333", "agent_id": agent["id"]}).status_code == 404
        # B cannot talk to A's agent, by header or with A's token bound to A's agent id
        with pytest.raises(websockets.exceptions.ConnectionClosedError) as refused:  # closed 1008, see docs/talk.md
            asyncio.run(stream_call(service.url.replace("http", "ws") + f"/v1/agents/{agent['id']}/talk", pcm[:320],
                                    headers={"Authorization": f"Bearer {b_key}"}))  # fmt: skip
        assert refused.value.rcvd is not None and refused.value.rcvd.code == 1008
    # and A's things are all still there
    with service.client(a_key) as a:
        assert a.get(f"/v1/agents/{agent['id']}").status_code == 200
        assert a.get(f"/v1/calls/{call_id}").status_code == 200
        assert any(k["id"] == a_extra_key["id"] and k["revoked_at"] is None for k in a.get("/v1/keys").json())
        assert [c["name"] for c in a.get("/v1/credentials").json()] == ["a-provider-key"]


def test_schemathesis_finds_no_server_errors(service: Service, tmp_path: Path) -> None:
    """Fuzz every operation from the service's own OpenAPI spec on PostgreSQL+Redis+S3, and hostile values in every
    field: no 5xx, nothing slower than 1 s. (The embedded backend is fuzzed in tests/test_security_fuzz.py, with a live
    call beside the fuzzer.)"""
    if "PARLEY_DATABASE_URL" not in service.env:
        pytest.skip("the embedded backend is fuzzed by tests/test_security_fuzz.py")
    from .support.fuzz_runs import hostile_values, schemathesis

    key = service.create_key("fuzz")
    findings, _ = schemathesis(service, tmp_path, {"Authorization": f"Bearer {key}"})
    findings += hostile_values(service, key).findings  # NUL, lone surrogates... in every field, on PostgreSQL
    assert not findings, "\n".join(findings)[:20000]


def test_the_example_client_talks_and_saves_the_reply(service: Service, tmp_path: Path) -> None:
    """examples/talk_client.py, run exactly as the README shows."""
    import subprocess
    import sys

    from parley.audio import write_wav

    key = service.create_key("example-client")
    with service.client(key) as c:
        c.post("/v1/agents", json={**RECEPTIONIST, "name": "Example"})
    question = asyncio.run(speak("Is there parking near the building?", "joe-quick"))
    write_wav(tmp_path / "question.wav", np.concatenate([np.zeros(16000 * 5, np.int16), question]), 16000)
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples/talk_client.py"), "--url", service.url, "--key", key,
         "--agent", "Example", "--input", str(tmp_path / "question.wav"), "--output", str(tmp_path / "reply.wav"),
         "--tail", "7"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert any(e["type"] == "transcript" and e["final"] and "parking" in e["text"].lower() for e in events)
    reply = read_wav(tmp_path / "reply.wav")
    assert reply.duration > 5  # the greeting, then the answer where it was heard
