"""A streaming recognizer on a live call: it hears the caller as they speak, its words are ready at the pause, its
own endpointing ends the turn sooner, and a stream that dies mid-utterance hands the same audio to the batch form.

The recognizer is the real ``deepgram`` provider against a local server speaking Deepgram's documented live
``/v1/listen`` format (tests/support/fakes/deepgram_server.py: it "hears" a scripted transcript by the amount of
audio, so a transcript equal to the script proves the words came from the stream, not from Whisper); the rest
of the call is the real pipeline (Silero, the canned LLM, espeak) on SQLite.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

from parley.api.talk_protocol import TalkControl

from .support.audio import espeak, silence
from .support.fakes.deepgram_server import FakeDeepgram
from .support.keyed_call import Record, Store, open_store, run_keyed_call

KEY = "dg-live-test-key-0123456789"


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with open_store(tmp_path, "live stt") as opened:
        yield opened


@pytest.fixture(autouse=True)
def loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_OUTBOUND_ALLOW", "127.0.0.1")


def _doc(url: str) -> dict[str, Any]:
    return {
        "name": "streaming",
        "system_prompt": "A test line.",
        "stt": {"provider": "deepgram", "options": {"api_key": KEY, "base_url": url}},
        "tts": {"provider": "espeak", "fallback": None},
        "llm": {
            "provider": "canned",
            "options": {"rules": [{"match": ["open"], "reply": "We open at eight."}], "default": "Sorry?"},
        },
        "turn": {"end_of_turn_secs": 2.0},  # a long silence rule: the recognizer's endpoint must beat it
    }


async def _call(store: Store, dg: FakeDeepgram) -> Record:
    audio = np.concatenate([silence(0.5), espeak("When do you open?"), silence(6)])
    return await run_keyed_call(store, _doc(dg.url), audio.astype("<i2").tobytes(), [], control=TalkControl())


async def test_the_stream_words_are_ready_at_the_pause_and_its_endpoint_ends_the_turn(store: Store) -> None:
    async with FakeDeepgram(key=KEY, segments=("when do you open",), bytes_per_word=4800) as dg:
        rec = await _call(store, dg)
    turn = rec.turns[1]
    assert turn.caller_text == "when do you open"  # the script: heard by the stream
    assert turn.agent_text == "We open at eight."
    times = turn.times
    assert times["end_of_turn"] - times["speech_end"] < 1.2  # the silence rule alone would need 2 s
    assert times["stt_final"] - times["stt_start"] < 0.2  # no round trip after the pause
    assert len(dg.connections) == 1 and dg.connections[0].audio_bytes > 0
    assert "CloseStream" in dg.connections[0].control_types()  # closed when the turn ended


async def test_a_stream_that_dies_mid_utterance_hands_its_audio_to_the_batch_form(store: Store) -> None:
    async with FakeDeepgram(key=KEY, segments=("when do you open",), bytes_per_word=4800) as dg:
        dg.fault = "close-1011"  # the live stream dies after its first 0.3 s

        async def heal() -> None:
            for _ in range(3000):
                if dg.connections:
                    break
                await asyncio.sleep(0.01)
            dg.fault = None  # the next connection (the batch retry) is healthy

        healing = asyncio.create_task(heal())
        rec = await _call(store, dg)
        await healing
    turn = rec.turns[1]
    assert turn.caller_text == "when do you open" and turn.agent_text == "We open at eight."
    assert [c.fault for c in dg.connections] == ["close-1011", None]
    assert dg.connections[1].audio_bytes > dg.connections[0].audio_bytes  # the whole utterance, from the buffer
