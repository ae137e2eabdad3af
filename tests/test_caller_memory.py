"""Per-caller memory on real parts: live calls through the real pipeline (energy VAD, canned STT/LLM, tone TTS:
no models) with caller numbers, on SQLite and PostgreSQL, and the erase/read API on a real ``parley serve``.

The agent's canned LLM answers the memory prompt (it starts "Return a JSON object") with a fixed memory, and a
spy on the LLM records the system prompt each call's replies were asked with.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from parley.agent.document import AgentDocumentError, parse_agent
from parley.calls import memory
from parley.calls.control import CallControl
from parley.calls.identity import CallInfo, CallTarget
from parley.calls.line import CallLine
from parley.calls.live import LiveCall
from parley.calls.record_writer import CallStore
from parley.calls.session import Services
from parley.pipeline.clock import FastClock
from parley.services.secrets import NoSecrets
from parley.store.blobs.local import LocalBlobStore
from parley.store.calls import CallRepo
from parley.store.db import Database
from parley.store.memories import MemoryRepo, caller_key
from parley.store.tenants import TenantRepo
from parley.transports.traits import TransportTraits

from .support.service import Service, running_service
from .support.store import db, new_tenant  # noqa: F401 (the fixture)

RATE = 16000
NUMBER, SAME_NUMBER = "+15550100100", "+1 (555) 010-0100"
REMEMBERED = {
    "summary": "Ada booked a table for two on Friday; call back on +44 20 7946 0958 about parking.",
    "facts": {"name": "Ada", "email": "ada@example.com", "prefers": "window seat"},
}


def agent(enabled: bool = True) -> dict[str, Any]:
    rules = [{"match": "Return a JSON object", "reply": json.dumps(REMEMBERED)}]
    return {
        "name": f"booking {uuid.uuid4().hex[:6]}",
        "system_prompt": "You book tables.",
        "greeting": "Hello.",
        "vad": {"provider": "energy"},
        "stt": {"provider": "canned", "options": {"text": "a table for two on Friday please"}},
        "llm": {"provider": "canned", "options": {"rules": rules, "default": "Booked."}},
        "tts": {"provider": "tone", "fallback": None, "options": {"ms_per_char": 10}},
        "privacy": {"redact": ["phone", "email"]},
        "memory": {"enabled": enabled, "max_chars": 400},
    }


def caller_audio() -> bytes:
    """Silence through the greeting, a second of loud tone (the energy VAD's speech), silence for the reply."""
    t = np.arange(RATE) / RATE
    tone = (0.3 * 32767 * np.sin(2 * np.pi * 220 * t)).astype(np.int16)
    pcm = np.concatenate([np.zeros(RATE // 2, np.int16), tone, np.zeros(RATE * 3 // 2, np.int16)])
    return pcm.astype("<i2").tobytes()


async def call_from(
    db: Database,  # noqa: F811
    blobs: LocalBlobStore,
    tenant: uuid.UUID,
    doc: dict[str, Any],
    caller: str,
    before_audio: Callable[[], Awaitable[None]] | None = None,
    user_id: str | None = None,
) -> list[str]:
    """One live call from ``caller`` (and ``user_id``, a client's); the system prompts the agent's LLM was asked
    with during it."""
    document = parse_agent(doc)
    services = await Services.create(document)
    prompts: list[str] = []
    stream = services.llm.stream

    def spy(messages: Any, *args: Any, **kwargs: Any) -> Any:
        prompts.extend(m["content"] for m in messages if m["role"] == "system")
        return stream(messages, *args, **kwargs)

    services.llm.stream = spy  # type: ignore[method-assign]
    target = CallTarget(tenant, uuid.uuid4(), 1, document.name, document)

    async def send_audio(audio: bytes) -> None:
        return None

    line = CallLine(TransportTraits("test"), send_audio, CallControl())
    call = LiveCall(
        target, services, CallStore(db, blobs), line, CallInfo(caller=caller, user_id=user_id), clock=FastClock()
    )
    pcm = caller_audio()

    async def audio() -> AsyncIterator[bytes]:
        if before_audio is not None:  # the call is under way: its row exists, its memory was read
            await before_audio()
        for k in range(0, len(pcm), 640):
            yield pcm[k : k + 640]

    try:
        await asyncio.wait_for(call.run(audio()), 20)
    finally:
        await services.aclose()
    await asyncio.wait_for(memory.drain(), 10)
    return prompts


def test_caller_keys_ignore_formatting_and_skip_what_is_no_number() -> None:
    assert caller_key(SAME_NUMBER) == caller_key("+1-555-010-0100") == caller_key(NUMBER) == NUMBER
    assert caller_key("tel:+1 555 010 0100") == NUMBER and caller_key("5550100") == "5550100"
    assert caller_key("127.0.0.1") is None and caller_key("alice") is None and caller_key(None) is None


def test_the_document_checks_its_memory_block() -> None:
    assert parse_agent(agent()).memory.max_chars == 400 and not parse_agent({**agent(), "memory": {}}).memory.enabled
    with pytest.raises(AgentDocumentError, match=r"memory\.max_chars"):
        parse_agent({**agent(), "memory": {"enabled": True, "max_chars": 10}})
    with pytest.raises(AgentDocumentError, match=r"memory"):
        parse_agent({**agent(), "memory": {"enabled": True, "forever": True}})
    summary, facts = memory.bounded({"summary": "x" * 500, "facts": {"a": "1" * 50, "b": "2" * 50}}, 120)
    assert len(summary) + len(json.dumps(facts)) <= 120 and facts == {"a": "1" * 50}


@pytest.mark.asyncio(loop_scope="module")  # the store fixture's loop
async def test_the_next_call_from_the_number_starts_with_what_was_remembered(db: Database, tmp_path: Path) -> None:  # noqa: F811
    tenant, blobs = await new_tenant(db), LocalBlobStore(tmp_path / "rec")
    doc = agent()
    first = await call_from(db, blobs, tenant, doc, NUMBER)
    assert first and all("remember" not in p for p in first)  # nothing known yet
    async with db.session() as s:
        row = await MemoryRepo(s).get(tenant, NUMBER)
    assert row is not None and row.calls == 1 and row.facts["name"] == "Ada"
    assert "7946 0958" not in row.summary and "call back on" in row.summary  # the privacy rules hold
    assert "ada@example.com" not in json.dumps(row.facts) and row.facts["prefers"] == "window seat"
    second = await call_from(db, blobs, tenant, doc, SAME_NUMBER)  # the same caller, spelled differently
    assert second and all("What you remember about this caller (1 earlier call" in p for p in second), second
    assert all("Ada booked a table" in p and "prefers: window seat" in p and "You book tables." in p for p in second)
    async with db.session() as s:
        row = await MemoryRepo(s).get(tenant, NUMBER)
        assert row is not None and row.calls == 2
        # another tenant's call from the same number neither sees nor touches it
        assert await MemoryRepo(s).get(await new_tenant(db), NUMBER) is None
    await blobs.aclose()


@pytest.mark.asyncio(loop_scope="module")
async def test_an_agent_without_memory_remembers_nothing(db: Database, tmp_path: Path) -> None:  # noqa: F811
    tenant, blobs = await new_tenant(db), LocalBlobStore(tmp_path / "rec")
    prompts = await call_from(db, blobs, tenant, agent(enabled=False), NUMBER)
    assert prompts and all("remember" not in p for p in prompts)
    # memory on, but an LLM that never answers in JSON (twice: the retry): nothing stored, the call ends as ever
    mute = agent()
    mute["llm"]["options"]["rules"] = []
    await call_from(db, blobs, tenant, mute, NUMBER)
    async with db.session() as s:
        assert await MemoryRepo(s).get(tenant, NUMBER) is None
        assert [c.status for c in await CallRepo(s).list(tenant)] == ["ended", "ended"]
    await blobs.aclose()


@pytest.mark.asyncio(loop_scope="module")
async def test_an_erasure_wins_over_the_call_under_way(db: Database, tmp_path: Path) -> None:  # noqa: F811
    tenant, blobs = await new_tenant(db), LocalBlobStore(tmp_path / "rec")
    doc = agent()
    await call_from(db, blobs, tenant, doc, NUMBER)

    async def erase() -> None:
        async with db.session() as s:
            assert await MemoryRepo(s).erase(tenant, NUMBER)

    await call_from(db, blobs, tenant, doc, SAME_NUMBER, before_audio=erase)  # erased mid-call
    async with db.session() as s:
        assert await MemoryRepo(s).get(tenant, NUMBER) is None  # the call's end did not bring it back
    third = await call_from(db, blobs, tenant, doc, NUMBER)  # a call after the erasure starts afresh
    assert all("remember" not in p for p in third)
    async with db.session() as s:
        row = await MemoryRepo(s).get(tenant, NUMBER)
        assert row is not None and row.calls == 1
    # the update, run again for the call that was under way, still writes nothing
    async with db.session() as s:
        assert await MemoryRepo(s).erase(tenant, NUMBER)
    async with db.session() as s:
        calls = await CallRepo(s).list(tenant)
    done = [await memory.update_memory(db, tenant, c.id, parse_agent(doc), NoSecrets()) for c in calls]
    assert done == [None, None, None]
    await blobs.aclose()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, str]]:
    data = tmp_path_factory.mktemp("memory")
    url = f"sqlite+aiosqlite:///{data / 'parley.db'}"
    with running_service(data, PARLEY_DATABASE_URL=url) as svc:
        yield svc, url


async def _remember(url: str, tenant_name: str) -> None:
    """A memory for the tenant's caller, written the way a call's end writes it."""
    database = Database(url)
    try:
        async with database.session() as s:
            tenant = await TenantRepo(s).by_name(tenant_name)
            assert tenant is not None
            from parley.store.models import utcnow

            await MemoryRepo(s).save(tenant.id, NUMBER, "Ada booked.", {"name": "Ada"}, utcnow())
    finally:
        await database.close()


def test_api_reads_and_erases_a_callers_memory(service: tuple[Service, str]) -> None:
    svc, url = service
    owner, stranger = f"owners-{uuid.uuid4().hex[:6]}", f"strangers-{uuid.uuid4().hex[:6]}"
    key, other = svc.create_key(owner), svc.create_key(stranger)
    viewer = svc.create_key(owner, role="viewer")
    asyncio.run(_remember(url, owner))
    path = "/v1/callers/%2B1%20(555)%20010-0100/memory"  # the caller as dialled, URL-encoded
    with svc.client(key) as c:
        got = c.get(path)
        assert got.status_code == 200, got.text
        assert got.json()["caller"] == NUMBER and got.json()["facts"] == {"name": "Ada"} and got.json()["calls"] == 1
        assert c.get("/v1/callers/%2B15550100100/memory").json()["summary"] == "Ada booked."
        assert c.get("/v1/callers/not-a-number/memory").status_code == 422
    with svc.client(other) as c:
        assert c.get(path).status_code == 404
        assert c.delete(path).status_code == 204  # erases only its own (nothing)
    with svc.client(viewer) as c:
        assert c.get(path).status_code == 200
        assert c.delete(path).status_code == 403  # erasing takes calls:write
    with svc.client(key) as c:
        assert c.delete(path).status_code == 204
        assert c.get(path).status_code == 404
        assert c.delete(path).status_code == 204  # again: still forgotten
