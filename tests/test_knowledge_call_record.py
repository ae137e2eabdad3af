"""The knowledge base in a live call: found the way a served call finds it, its citations as the database keeps them.

The real :class:`~parley.calls.live.LiveCall` on SQLite (energy VAD, canned STT and LLM, tone TTS, espeak's
voice as the caller); the process's knowledge base is installed as ``parley serve`` installs it, answering from
the in-memory shelf of :mod:`tests.support.knowledge_shelf`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

from parley.knowledge import service
from parley.knowledge.types import KnowledgeUnavailable

from .support.audio import espeak, silence
from .support.keyed_call import Store, open_store, run_keyed_call
from .support.knowledge_shelf import Shelf, clinic


class ShelfBase(service.KnowledgeBase):
    """The process's knowledge base, answering every tenant from one shelf (remembering who asked)."""

    def __init__(self, shelf: Shelf) -> None:
        self.shelf = shelf
        self.tenants: list[uuid.UUID] = []

    def for_tenant(self, tenant_id: uuid.UUID) -> Shelf:
        self.tenants.append(tenant_id)
        return self.shelf


@pytest.fixture
def installed() -> Iterator[ShelfBase]:
    before = service.current()
    kb = ShelfBase(clinic())
    service.install(kb)
    try:
        yield kb
    finally:
        service.install(before)


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with open_store(tmp_path, "knowledge") as opened:
        yield opened


def phone_agent() -> dict[str, Any]:
    return {
        "name": "clinic line",
        "system_prompt": "You answer for the clinic.",
        "vad": {"provider": "energy"},
        "stt": {"provider": "canned", "options": {"text": "When are you open on Saturday?"}},
        "llm": {"provider": "canned", "options": {"default": "We are open on Saturday morning."}},
        "tts": {"provider": "tone", "fallback": None, "options": {"ms_per_char": 20}},
        "knowledge": {"collections": ["clinic"]},
        "flow": {"start": "a", "nodes": {"a": {"prompt": "x", "knowledge": ["menu"], "terminal": True}}},
    }


def caller_line() -> bytes:
    audio = np.concatenate([silence(0.3), espeak("When are you open on Saturday?"), silence(6)])
    return audio.astype("<i2").tobytes()


async def test_a_live_calls_stored_turn_keeps_its_citations(store: Store, installed: ShelfBase) -> None:
    doc = phone_agent()
    doc["flow"]["nodes"]["a"]["knowledge"] = ["clinic"]
    rec = await run_keyed_call(store, doc, caller_line(), [])

    assert installed.tenants == [store.tenant]  # the call's tenant's view, nobody else's
    assert installed.shelf.warmed == [["clinic"]]  # warmed at set-up for every collection the call may use
    turn = rec.turns[1]
    assert turn.agent_text == "We are open on Saturday morning."
    assert [c["document"] for c in turn.citations] == ["hours.pdf"] and turn.citations[0]["chunk"] == 0
    assert rec.of("knowledge")[-1]["status"] == "ok"
    assert len(installed.shelf.calls) == len({q for q, _ in installed.shelf.calls})  # no text searched twice


async def test_a_live_call_without_a_knowledge_base_says_so_once(store: Store) -> None:
    before = service.current()
    service.install(None)
    try:
        rec = await run_keyed_call(store, phone_agent(), caller_line(), [])
    finally:
        service.install(before)
    assert rec.turns[1].agent_text == "We are open on Saturday morning."
    assert [e["status"] for e in rec.of("knowledge")] == ["unavailable"]
    assert rec.turns[1].citations is None


async def test_a_failed_warm_up_is_an_event_and_the_call_goes_on(store: Store, installed: ShelfBase) -> None:
    async def broken(collections: Sequence[str]) -> None:
        raise KnowledgeUnavailable("index is rebuilding")

    installed.shelf.warm = broken  # type: ignore[method-assign]
    rec = await run_keyed_call(store, phone_agent(), caller_line(), [])
    warm = [e for e in rec.of("knowledge") if e["status"] == "warm_failed"]
    assert warm and warm[0]["error"] == "KnowledgeUnavailable" and warm[0]["collections"] == ["clinic", "menu"]
    assert rec.turns[1].agent_text == "We are open on Saturday morning."
