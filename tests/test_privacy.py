"""Personal data and call records: phone numbers, card numbers and emails masked before storage (transcripts,
events, analysis), and a recording policy that keeps no audio. Live calls through the real pipeline (Silero,
the canned STT and LLM so the words are known, espeak), SQLite and the local blob store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

from parley.agent.document import AgentDocumentError, parse_agent
from parley.api.talk_protocol import TalkControl
from parley.privacy.pii import PiiRedactor
from parley.store.calls import CallRepo

from .support.audio import espeak, silence
from .support.keyed_call import Store, open_store, run_keyed_call

HEARD = "Call me on +44 20 7946 0958 or mail jo.doe@example.com, my card is 4111 1111 1111 1111."
REPLY = "Thanks, I have 4111-1111-1111-1111 and jo.doe@example.com, and I'll call 020 7946 0958 at 7 pm."


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with open_store(tmp_path, "privacy") as opened:
        yield opened


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("call +1 (555) 010-0199 or 555 0199", "call [phone] or [phone]"),
        ("card 4111 1111 1111 1111 thanks", "card [card] thanks"),
        ("mail jo.doe@example.co.uk now", "mail [email] now"),
        ("a table for 2 at 7 pm on the 14th, booking B12345", "a table for 2 at 7 pm on the 14th, booking B12345"),
        ("4111 1111 1111 1112", "[phone]"),  # not a card (Luhn): a long number read out is still masked
    ],
)
def test_what_is_masked_and_what_is_left(text: str, masked: str) -> None:
    assert PiiRedactor(["phone", "card", "email"]).text(text) == masked


def test_only_the_configured_kinds_are_masked() -> None:
    assert PiiRedactor(["email"]).text(HEARD) == HEARD.replace("jo.doe@example.com", "[email]")
    assert not PiiRedactor([])


def test_an_unknown_kind_is_a_validation_error() -> None:
    with pytest.raises(AgentDocumentError, match=r"privacy\.redact"):
        parse_agent({"name": "x", "system_prompt": "y", "privacy": {"redact": ["ssn"]}})


def _doc(privacy: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "private",
        "system_prompt": "A test line.",
        "stt": {"provider": "canned", "options": {"text": HEARD}},
        "tts": {"provider": "espeak", "fallback": None},
        "llm": {"provider": "canned", "options": {"default": REPLY}},
        "privacy": privacy,
    }


async def _call(store: Store, privacy: dict[str, Any]) -> Any:
    audio = np.concatenate([silence(0.5), espeak("Here are my details."), silence(30)])
    return await run_keyed_call(store, _doc(privacy), audio.astype("<i2").tobytes(), [], control=TalkControl())


async def test_stored_transcripts_and_events_are_masked_and_the_recording_dropped(store: Store) -> None:
    rec = await _call(store, {"redact": ["phone", "card", "email"], "recording": "drop"})
    turn = rec.turns[1]
    assert turn.caller_text == "Call me on [phone] or mail [email], my card is [card]."
    assert turn.agent_text == "Thanks, I have [card] and [email], and I'll call [phone] at 7 pm."
    stored = repr(rec.events)
    assert "4111" not in stored and "jo.doe" not in stored and "7946" not in stored
    async with store.db.session() as s:
        (call,) = await CallRepo(s).list(store.tenant)
    assert call.recording_key is None and call.recording_bytes is None
    assert not list(store.blobs.root.rglob("*.wav"))  # no audio was written anywhere


async def test_without_privacy_rules_the_record_keeps_what_was_said_and_the_recording(store: Store) -> None:
    rec = await _call(store, {})
    assert rec.turns[1].caller_text == HEARD and rec.turns[1].agent_text == REPLY
    async with store.db.session() as s:
        (call,) = await CallRepo(s).list(store.tenant)
    assert call.recording_key is not None and call.recording_bytes
