"""A model that fails mid-reply ends the turn visibly: an error event, the turn closed, the caller told so.

Real live calls on the fast clock, recorded in SQLite: keypad turns (no speech model needed), the real
OpenAI-compatible client against a local HTTP server that answers 500 (it cannot reach OpenAI here; the server
speaks its documented error format), espeak for speech, and a test-only TTS registered in the registry that
fails the way a remote voice does.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from parley.agent.context import Conversation
from parley.agent.document import DEFAULT_FALLBACK_LINE
from parley.pipeline.frames import (
    Direction,
    Frame,
    LLMDone,
    LLMText,
    ReplyFailed,
    SpeakText,
    Stage,
    StageTime,
    Transcript,
)
from parley.pipeline.processor import Processor
from parley.processors.chunker import SentenceChunker
from parley.processors.responder import Responder
from parley.services.llm.base import LLM, Message, Tool, ToolCall
from parley.services.registry import ProviderOptions
from parley.services.tts import base as tts_base
from parley.services.tts.base import TTS

from .support.frames import run_frames
from .support.keyed_call import Record, Store, open_store, run_keyed_call

RATE = 16000
SECRET = "sk-parley-TEST-secret-0123456789"


class Failing500(BaseHTTPRequestHandler):
    """Every chat completion is a 500 whose body quotes the key, as a careless proxy might."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # the client's preconnect
        self._json(200, {"object": "list", "data": []})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        sent = self.headers.get("Authorization", "")
        self._json(500, {"error": {"message": f"upstream exploded for {sent}", "type": "server_error"}})

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def failing_llm_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("PARLEY_OUTBOUND_ALLOW", "127.0.0.1")  # the operator allows the local server
    server = ThreadingHTTPServer(("127.0.0.1", 0), Failing500)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


class BrokenVoice(TTS):
    """A voice that says a little of each sentence, then fails (a remote TTS dropping the stream)."""

    sample_rate = RATE

    def __init__(self, options: ProviderOptions | None = None) -> None:
        self.options = options

    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        yield bytes(640)
        raise RuntimeError(f"voice service said 503 to key {SECRET}")


@pytest.fixture
def broken_voice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(tts_base.registry._classes, "broken-voice", BrokenVoice)


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with open_store(tmp_path, "failures") as opened:
        yield opened


def agent(llm: dict[str, Any], tts: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "failure test",
        "system_prompt": "A test line.",
        "vad": {"provider": "energy"},
        "stt": {"provider": "canned"},
        "llm": llm,
        "tts": tts,
    }


async def run_call(store: Store, doc: dict[str, Any], presses: list[tuple[float, str]], secs: float = 8) -> Record:
    """A silent line of ``secs`` seconds with keypad ``presses``; the record as the database holds it."""
    return await run_keyed_call(store, doc, bytes(int(secs * RATE) * 2), presses, timeout_s=60)


def openai_llm(url: str) -> dict[str, Any]:
    return {"provider": "openai", "options": {"base_url": url, "model": "m", "api_key": SECRET, "max_retries": 0}}


async def test_a_failed_llm_call_ends_the_turn_with_the_fallback_line(store: Store, failing_llm_url: str) -> None:
    doc = agent(openai_llm(failing_llm_url), {"provider": "espeak", "fallback": None})
    rec = await run_call(store, doc, [(0.5, "1"), (0.7, "#"), (4.0, "2"), (4.2, "#")])

    assert rec.reason == "caller-hangup"
    errors = rec.of("error")
    assert [(e["turn"], e["stage"], e["error"], e["fallback"]) for e in errors] == [
        (1, "llm", "LLMError", DEFAULT_FALLBACK_LINE),
        (2, "llm", "LLMError", DEFAULT_FALLBACK_LINE),
    ]
    for n in (1, 2):  # each turn closed by its own (fallback) reply, heard to the end: not owed until the hang-up
        turn = rec.turns[n]
        assert turn.agent_text == DEFAULT_FALLBACK_LINE and not turn.interrupted
        assert "llm_failed" in turn.times and turn.times["first_audio_out"] >= turn.times["llm_failed"]
    assert rec.speech_bytes > RATE  # the apology was said: more than half a second of speech each
    assert SECRET not in json.dumps(rec.events)


async def test_a_failed_tts_is_replaced_by_the_fallback_voice(store: Store, broken_voice: None) -> None:
    llm = {"provider": "canned", "options": {"rules": [], "default": "Your order ships tomorrow. Anything else?"}}
    doc = agent(llm, {"provider": "broken-voice", "fallback": "espeak"})
    doc["fallback_line"] = "One moment, I cannot speak properly."
    rec = await run_call(store, doc, [(0.5, "1"), (0.7, "#")])

    [error] = rec.of("error")
    assert error["turn"] == 1 and error["stage"] == "tts" and error["error"] == "RuntimeError"
    assert error["fallback"] == "One moment, I cannot speak properly."
    turn = rec.turns[1]
    # the broken voice's first words, then the fallback voice's line; the rest of the reply was dropped
    assert turn.agent_text.endswith("One moment, I cannot speak properly.") and "Anything else" not in turn.agent_text
    assert not turn.interrupted
    assert rec.speech_bytes > RATE
    assert SECRET not in json.dumps(rec.events)


async def test_with_no_working_voice_the_turn_still_closes_and_the_event_says_so(
    store: Store, broken_voice: None
) -> None:
    llm = {"provider": "canned", "options": {"rules": [], "default": "Hello there."}}
    doc = agent(llm, {"provider": "broken-voice", "fallback": None})
    rec = await run_call(store, doc, [(0.5, "1"), (0.7, "#"), (3.0, "2"), (3.2, "#")])

    assert [(e["turn"], e["stage"], e["fallback"]) for e in rec.of("error")] == [(1, "tts", ""), (2, "tts", "")]
    for n in (1, 2):
        assert not rec.turns[n].interrupted  # closed when the reply ended, not cut off by the hang-up


class BreaksOff(LLM):
    """Says a few words, then its server drops the stream."""

    async def stream(self, messages: list[Message], tools: Sequence[Tool] = ()) -> AsyncGenerator[str | ToolCall, None]:
        yield "Your table is "
        yield "booked for"
        raise ConnectionResetError(f"peer reset, key {SECRET}")


class Spawner(Processor):
    """Starts work that fails, the way a processor's model call can."""

    async def process(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, LLMText):

            async def work() -> None:
                raise KeyError(SECRET)

            self.spawn(work(), "work")
        await self.push(frame, direction)


async def test_an_llm_that_breaks_off_mid_reply_ends_it_with_the_fallback_line() -> None:
    responder = Responder(BreaksOff(), Conversation("A test line.", 4), fallback_line="Sorry, say again?")
    ran = await run_frames([responder, SentenceChunker()], [Transcript(turn_id=1, text="A table for two, please.")])

    said = [f.text for f in ran.of(SpeakText)]
    assert " ".join(said) == "Your table is booked for Sorry, say again?"  # what was said stays, then the line
    assert [f.turn_id for f in ran.of(LLMDone)] == [1]  # the reply ends, so the turn can close
    [failed] = ran.of(ReplyFailed, Direction.UPSTREAM)
    assert (failed.turn_id, failed.stage, failed.error) == (1, "llm", "ConnectionResetError")
    assert failed.fallback == "Sorry, say again?" and SECRET not in failed.message
    assert ran.errors == [failed]
    [stamp] = [f for f in ran.of(StageTime) if f.stage == Stage.LLM_FAILED]
    assert stamp.text == "Your table is booked for"  # the record keeps what the LLM wrote before it broke


async def test_a_spawned_task_that_fails_is_reported_upstream() -> None:
    ran = await run_frames(Spawner(), [LLMText(text="go")])
    [error] = ran.errors
    assert error.message == "Spawner work: KeyError" and SECRET not in error.message
