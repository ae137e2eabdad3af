"""Post-call analysis on real calls: the live call path (energy VAD, canned STT/LLM, tone TTS: no models) on
SQLite and PostgreSQL, and a real ``parley serve`` whose talk WebSocket call is analysed, listed and re-run.

The canned LLM answers the analysis prompt by rule (its schema's field names are in the prompt), so each
assertion knows which reply the analysis got.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import websockets

from parley.agent.analysis_settings import AnalysisSettings
from parley.agent.document import AgentDocumentError, parse_agent
from parley.agent.storable import storable_problems
from parley.calls import analysis
from parley.net.ssrf import OutboundPolicy
from parley.services.secrets import NoSecrets
from parley.store.blobs.local import LocalBlobStore
from parley.store.calls import CallRepo
from parley.store.db import Database

from .support.keyed_call import Store, run_keyed_call
from .support.service import Service, running_service
from .support.store import db, new_tenant  # noqa: F401 (the fixture)

RATE = 16000
BOOKING = {"summary": "The caller booked a table for two on Friday.", "fields": {"party_size": 2, "day": "Friday"},
           "success": True, "success_reason": "A table was booked."}  # fmt: skip
EDITED = {"summary": "A booking call.", "fields": {"wants_parking": False}, "success": False,
          "success_reason": "Parking was never discussed."}  # fmt: skip


def agent(analysis_llm: dict[str, Any] | None = None) -> dict[str, Any]:
    rules = [
        {"match": "wants_parking", "reply": json.dumps(EDITED)},
        {"match": "Return a JSON object", "reply": json.dumps(BOOKING)},
    ]
    settings: dict[str, Any] = {
        "summary": True,
        "fields": {"party_size": {"type": "integer"}, "day": {"type": "string"}},
        "success": "The caller booked a table.",
    }
    if analysis_llm is not None:
        settings["llm"] = analysis_llm
    return {
        "name": f"booking {uuid.uuid4().hex[:6]}",
        "system_prompt": "You book tables.",
        "greeting": "Hello.",
        "vad": {"provider": "energy"},
        "stt": {"provider": "canned", "options": {"text": "a table for two on Friday please"}},
        "llm": {"provider": "canned", "options": {"rules": rules, "default": "Booked."}},
        "tts": {"provider": "tone", "fallback": None, "options": {"ms_per_char": 10}},
        "analysis": settings,
    }


def caller_audio() -> np.ndarray:
    """Silence through the greeting, a second of loud tone (the energy VAD's speech), silence for the reply."""
    t = np.arange(RATE) / RATE
    tone = (0.3 * 32767 * np.sin(2 * np.pi * 220 * t)).astype(np.int16)
    return np.concatenate([np.zeros(RATE // 2, np.int16), tone, np.zeros(RATE * 3 // 2, np.int16)])


def test_the_document_checks_its_analysis_block() -> None:
    with pytest.raises(AgentDocumentError, match=r"analysis\.fields"):
        parse_agent({**agent(), "analysis": {"fields": {"x": {"type": "no-such-type"}}}})
    with pytest.raises(AgentDocumentError, match=r"analysis\.llm"):
        parse_agent({**agent(), "analysis": {"llm": {"provider": "no-such-llm"}}})
    assert parse_agent(agent()).analysis is not None


def test_a_stored_document_may_not_give_the_analysis_llm_a_secret_inline() -> None:
    inline = {"model": "m", "api_key": "sk-inline", "base_url": "http://10.0.0.1/v1"}
    doc = parse_agent(agent(analysis_llm={"provider": "openai", "options": inline}))
    problems = {p.loc for p in storable_problems(doc, OutboundPolicy.parse(""))}
    assert ("analysis.llm", "options", "api_key") in problems
    assert ("analysis.llm", "options", "base_url") in problems


@pytest.mark.asyncio(loop_scope="module")  # the store fixture's loop
async def test_a_live_call_is_analysed_after_it_ends(db: Database, tmp_path: Path) -> None:  # noqa: F811
    tenant = await new_tenant(db)
    store = Store(db, LocalBlobStore(tmp_path / "rec"), tenant)
    started = time.monotonic()
    record = await run_keyed_call(store, agent(), caller_audio().astype("<i2").tobytes(), [], timeout_s=20)
    ended_in = time.monotonic() - started
    assert record.turns[1].caller_text == "a table for two on Friday please"
    await asyncio.wait_for(analysis.drain(), 10)
    async with db.session() as s:
        (call,) = await CallRepo(s).list(tenant)
        assert await CallRepo(s).list(tenant, analysis_success=False) == []
    assert call.analysis is not None and call.analysis["status"] == "done", (call.analysis, ended_in)
    assert call.analysis_success is True
    assert call.analysis["summary"] == BOOKING["summary"] and call.analysis["fields"] == BOOKING["fields"]
    assert call.analysis["success_reason"] == "A table was booked." and call.analysis["provider"] == "canned"
    await store.blobs.aclose()


@pytest.mark.asyncio(loop_scope="module")  # the store fixture's loop
async def test_invalid_json_twice_is_stored_as_failed(db: Database, tmp_path: Path) -> None:  # noqa: F811
    tenant = await new_tenant(db)
    store = Store(db, LocalBlobStore(tmp_path / "rec"), tenant)
    liar = {"provider": "canned", "options": {"default": "{not json}", "rules": []}}
    doc = agent(analysis_llm=liar)
    record = await run_keyed_call(store, doc, caller_audio().astype("<i2").tobytes(), [], timeout_s=20)
    await asyncio.wait_for(analysis.drain(), 10)
    async with db.session() as s:
        (call,) = await CallRepo(s).list(tenant)
        turns = await CallRepo(s).turns(tenant, call.id)
    assert call.analysis is not None and call.analysis["status"] == "failed"
    assert "not valid JSON" in call.analysis["reason"]
    assert "after a retry" in call.analysis["reason"] and call.analysis_success is None
    assert call.status == "ended" and call.end_reason == record.end_reason and len(turns) == 2
    # a reply that is JSON but breaks the schema fails the same way, naming where
    wrong = {"provider": "canned", "options": {"default": json.dumps({**BOOKING, "fields": {"party_size": "two"}})}}
    settings = AnalysisSettings.model_validate({**doc["analysis"], "llm": wrong})
    result = await analysis.run_analysis(db, tenant, call.id, parse_agent(doc), settings, NoSecrets())
    assert result is not None and result["status"] == "failed" and "fields/party_size" in result["reason"]
    # an LLM slower than the bound: failed, not waited for
    slow = {"provider": "canned", "options": {"default": json.dumps(BOOKING), "delay_ms": 5000}}
    settings = AnalysisSettings.model_validate({**doc["analysis"], "llm": slow, "timeout_secs": 0.3})
    result = await analysis.run_analysis(db, tenant, call.id, parse_agent(doc), settings, NoSecrets())
    assert result is not None and result["reason"] == "the analysis took over 0.3 s"
    await store.blobs.aclose()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("analysis")) as svc:
        yield svc


async def talk(ws_url: str, pcm: np.ndarray) -> list[dict[str, Any]]:
    """The caller's audio at real time over the talk WebSocket, then hang up; the events until the end."""
    events: list[dict[str, Any]] = []
    async with websockets.connect(ws_url, max_size=2**20) as ws:

        async def send() -> None:
            start = time.monotonic()
            for k in range(len(pcm) // 320):
                await asyncio.sleep(max(0.0, start + k * 0.02 - time.monotonic()))
                await ws.send(pcm[k * 320 : (k + 1) * 320].astype("<i2").tobytes())
            await ws.send(json.dumps({"type": "end"}))

        async def receive() -> None:
            async for message in ws:
                if isinstance(message, str):
                    events.append(json.loads(message))
                    if events[-1]["type"] == "end":
                        return

        await asyncio.wait_for(asyncio.gather(send(), receive()), 30)
    return events


def test_api_shows_filters_and_reruns_the_analysis(service: Service) -> None:
    key, other = service.create_key("analysts"), service.create_key("strangers")
    with service.client(key) as c:
        created = c.post("/v1/agents", json=agent())
        assert created.status_code == 201, created.text
        token = c.post(f"/v1/agents/{created.json()['id']}/talk-token").json()
    events = asyncio.run(talk(service.url.replace("http", "ws") + token["url"], caller_audio()))
    call_id = events[0]["call_id"]
    with service.client(key) as c:
        deadline = time.monotonic() + 10
        while (call := c.get(f"/v1/calls/{call_id}").json())["analysis"] is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert call["analysis"]["status"] == "done", call
        assert call["analysis"]["fields"] == BOOKING["fields"] and call["analysis"]["success"] is True
        assert [x["id"] for x in c.get("/v1/calls", params={"analysis.success": "true"}).json()] == [call_id]
        assert c.get("/v1/calls", params={"analysis.success": "false"}).json() == []
        edited = {"fields": {"wants_parking": {"type": "boolean"}}, "success": "Parking was arranged."}
        rerun = c.post(f"/v1/calls/{call_id}/analysis", json=edited)
        assert rerun.status_code == 202 and rerun.json()["status"] == "running", rerun.text  # no request waits
        deadline = time.monotonic() + 30
        while (again := c.get(f"/v1/calls/{call_id}").json()["analysis"])["status"] == "running":
            assert time.monotonic() < deadline, again
            time.sleep(0.1)
        assert again["fields"] == {"wants_parking": False} and again["success"] is False
        assert [x["id"] for x in c.get("/v1/calls", params={"analysis.success": "false"}).json()] == [call_id]
        bad = c.post(f"/v1/calls/{call_id}/analysis", json={"fields": {"x": {"type": "nonsense"}}})
        assert bad.status_code == 422
    with service.client(other) as c:
        assert c.get(f"/v1/calls/{call_id}").status_code == 404
        assert c.post(f"/v1/calls/{call_id}/analysis").status_code == 404
        assert c.get("/v1/calls", params={"analysis.success": "false"}).json() == []


@pytest.mark.asyncio(loop_scope="module")  # the store fixture's loop
async def test_a_restart_resumes_the_analyses_its_worker_owed(db: Database) -> None:  # noqa: F811
    """The process died after a call ended (analysis marked pending with the row's end) or mid-call (the crash
    recovery ended it): the next start of that worker analyses both, and leaves another worker's alone."""
    from sqlalchemy import update

    from parley.calls.analysis_resume import resume_pending
    from parley.pipeline.frames import EndReason
    from parley.store.agents import AgentRepo
    from parley.store.models import Call

    tenant = await new_tenant(db)
    doc = agent()
    worker = f"w-{uuid.uuid4().hex[:6]}"
    async with db.session() as s:
        stored = await AgentRepo(s).create(tenant, doc["name"], doc)
        calls = {}
        pending = {"status": "pending"}
        rows = [("ended", worker, "caller-hangup", pending), ("crashed", worker, EndReason.WORKER_CRASHED, None),
                ("elsewhere", "other-worker", "caller-hangup", pending)]  # fmt: skip
        for name, who, reason, marked in rows:
            row = await CallRepo(s).create(tenant, stored.id, 1, stored.name, "talk", worker_id=who)
            await CallRepo(s).end(tenant, row.id, "ended", str(reason), 3.0)
            await s.execute(update(Call).where(Call.id == row.id).values(analysis=marked))
            calls[name] = row.id
    assert await resume_pending(db, worker) == 2
    await asyncio.wait_for(analysis.drain(), 10)
    async with db.session() as s:
        got = {name: (await CallRepo(s).get(tenant, cid)) for name, cid in calls.items()}
    assert got["ended"] is not None and got["ended"].analysis["status"] == "done"  # type: ignore[index]
    assert got["crashed"] is not None and got["crashed"].analysis["summary"] == BOOKING["summary"]  # type: ignore[index]
    assert got["elsewhere"] is not None and got["elsewhere"].analysis == {"status": "pending"}
    assert await resume_pending(db, worker) == 0  # done is done
