"""ElevenLabs TTS (``stream-input`` WebSocket) against a local server speaking the documented wire format.

ElevenLabs cannot be reached here: tests/support/fakes/elevenlabs_server.py checks the handshake (path,
``model_id``, ``output_format``, ``xi-api-key``) and the message sequence, streams a tone word by word, and fails
in each documented way on request. ``test_real_elevenlabs`` runs against the real service when
``ELEVENLABS_API_KEY`` is set.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterator
from contextlib import aclosing

import pytest
from pydantic import ValidationError

from parley.services.errors import ErrorKind, ProviderError
from parley.services.secrets import EnvSecrets, resolve_options
from parley.services.tts.base import TTS, registry
from parley.services.tts.elevenlabs import ElevenLabsTTS, error_kind

from .support.fakes.elevenlabs_server import KEY, MS_PER_CHAR, FakeElevenLabs, serve_elevenlabs


@pytest.fixture(autouse=True)
def allow_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake is local: the operator allow-lists loopback for the SSRF guard."""
    monkeypatch.setenv("PARLEY_OUTBOUND_ALLOW", "127.0.0.1")


@pytest.fixture
def fake() -> Iterator[FakeElevenLabs]:
    yield from serve_elevenlabs()


def make(fake: FakeElevenLabs, **options: object) -> ElevenLabsTTS:
    tts = registry.create("elevenlabs", {"base_url": fake.url, "api_key": KEY, **options})
    assert isinstance(tts, ElevenLabsTTS)
    return tts


async def speak(tts: TTS, text: str) -> bytes:
    async with aclosing(tts.synthesize(text)) as audio:
        return b"".join([chunk async for chunk in audio])


def test_speaks_a_sentence_in_the_documented_messages(fake: FakeElevenLabs) -> None:
    sentence = "Hello there, how can I help you today?"

    async def run() -> tuple[bytes, bytes]:
        tts = make(fake, sample_rate=22050, stability=0.4, similarity_boost=0.8, language_code="en")
        await tts.prepare()
        try:
            return await speak(tts, sentence), await speak(tts, "Goodbye.")
        finally:
            await tts.aclose()

    first, second = asyncio.run(run())
    chars = sum(len(w) for w in sentence.split())
    assert abs(len(first) // 2 - 22050 * MS_PER_CHAR * chars // 1000) < 20 * len(sentence.split())
    assert len(second) > 0 and len(first) % 2 == 0
    used = [s for s in fake.sessions if s.messages]
    assert len(used) == 2, "one connection per sentence"
    s = used[0]
    assert s.path == "/v1/text-to-speech/JBFqnCBsd6RMkjVDRZzb/stream-input"
    assert s.query["model_id"] == ["eleven_flash_v2_5"] and s.query["output_format"] == ["pcm_22050"]
    assert s.query["language_code"] == ["en"] and s.query["auto_mode"] == ["true"]
    assert s.headers["xi-api-key"] == KEY
    assert s.messages[0] == {"text": " ", "voice_settings": {"stability": 0.4, "similarity_boost": 0.8}}
    assert s.messages[1] == {"text": f"{sentence} ", "flush": True}
    assert s.messages[2] == {"text": ""}


def test_first_audio_comes_before_the_sentence_is_done(fake: FakeElevenLabs) -> None:
    """Audio is yielded per server message, not gathered: the first chunk arrives while later words are pending."""
    words = "one two three four five six seven eight"

    async def run() -> list[float]:
        tts = make(fake)
        await tts.prepare()
        try:
            async with aclosing(tts.synthesize(words)) as audio:
                return [time.monotonic() async for _ in audio]
        finally:
            await tts.aclose()

    arrived = asyncio.run(run())
    sent = next(s for s in fake.sessions if s.messages).words_sent
    assert len(arrived) == len(sent) == 8
    assert arrived[0] < sent[-1] - 0.1  # the first word was heard well before the server made the last


def test_barge_in_then_the_next_sentence(fake: FakeElevenLabs) -> None:
    """Closing synthesize early drops that connection (the server stops); the next sentence still speaks."""

    async def run() -> bytes:
        tts = make(fake)
        await tts.prepare()
        try:
            async with aclosing(tts.synthesize("a long sentence of many many words to be cut short")) as audio:
                async for _ in audio:
                    break
            return await speak(tts, "Still here.")
        finally:
            await tts.aclose()

    assert len(asyncio.run(run())) > 0
    cut = next(s for s in fake.sessions if s.messages)
    assert len(cut.words_sent) < 11


def test_sentences_at_once_take_connections_of_their_own(fake: FakeElevenLabs) -> None:
    """A chain's probe may overlap a sentence: each takes a connection (the spare or a new one)."""

    async def run() -> list[bytes]:
        tts = make(fake)
        await tts.prepare()
        try:
            return list(await asyncio.gather(speak(tts, "First one."), speak(tts, "Second one.")))
        finally:
            await tts.aclose()

    assert all(asyncio.run(run()))
    assert sorted(s.messages[1]["text"] for s in fake.sessions if s.messages) == ["First one. ", "Second one. "]


def test_a_spare_the_server_dropped_is_replaced(fake: FakeElevenLabs) -> None:
    async def run() -> bytes:
        tts = make(fake)
        fake.faults = ["idle-close"]
        await tts.prepare()
        await asyncio.sleep(0.1)
        try:
            return await speak(tts, "Hello.")
        finally:
            await tts.aclose()

    assert len(asyncio.run(run())) > 0


@pytest.mark.parametrize(
    ("fault", "kind", "retry_after"),
    [
        ("reject-401", ErrorKind.AUTH, None),
        ("reject-429", ErrorKind.RATE_LIMIT, 7.0),
        ("reject-500-html", ErrorKind.SERVER, None),
        ("auth", ErrorKind.AUTH, None),
        ("quota", ErrorKind.QUOTA, None),
        ("close-1008", ErrorKind.AUTH, None),
        ("garbage", ErrorKind.BAD_RESPONSE, None),
        ("close-mid", ErrorKind.CONNECTION, None),
        ("hang", ErrorKind.TIMEOUT, None),
    ],
)
def test_faults_are_classified(
    fake: FakeElevenLabs, caplog: pytest.LogCaptureFixture, fault: str, kind: ErrorKind, retry_after: float | None
) -> None:
    async def run() -> ProviderError:
        tts = make(fake, preconnect=False, receive_timeout_s=0.5)
        fake.faults = [fault]
        try:
            with pytest.raises(ProviderError) as caught:
                await speak(tts, "Hello there, friend.")
            return caught.value
        finally:
            await tts.aclose()

    caplog.set_level(logging.DEBUG)
    started = time.monotonic()
    error = asyncio.run(run())
    assert time.monotonic() - started < 3
    assert error.kind is kind, error
    assert error.retry_after == retry_after
    assert error.provider == "elevenlabs"
    assert KEY not in str(error) and KEY not in caplog.text


def test_a_wrong_key_and_a_refused_address(fake: FakeElevenLabs, monkeypatch: pytest.MonkeyPatch) -> None:
    async def wrong_key() -> ProviderError:
        tts = registry.create("elevenlabs", {"base_url": fake.url, "api_key": "xi-wrong", "preconnect": False})
        with pytest.raises(ProviderError) as caught:
            await speak(tts, "Hello.")
        return caught.value

    error = asyncio.run(wrong_key())
    assert error.kind is ErrorKind.AUTH and error.status == 401 and "invalid_api_key" in str(error)
    monkeypatch.setenv("PARLEY_OUTBOUND_ALLOW", "")

    async def refused() -> None:
        tts = make(fake)
        with pytest.raises(ProviderError) as caught:
            await tts.prepare()  # refused by the policy: the call cannot start
        assert caught.value.kind is ErrorKind.BAD_REQUEST and "loopback" in str(caught.value)

    asyncio.run(refused())


def test_options_are_checked() -> None:
    with pytest.raises(ValidationError, match="api_key_credential"):
        registry.options("elevenlabs", {})
    with pytest.raises(ValidationError):
        registry.options("elevenlabs", {"api_key": "k", "sample_rate": 8000})
    with pytest.raises(ValidationError):
        registry.options("elevenlabs", {"api_key": "k", "base_url": "ftp://x"})
    with pytest.raises(ProviderError, match="not resolved") as caught:
        registry.create("elevenlabs", {"api_key_env": "ELEVEN"})
    assert caught.value.kind is ErrorKind.AUTH
    resolved = asyncio.run(
        resolve_options(
            ElevenLabsTTS.Options, {"api_key_env": "ELEVEN"}, EnvSecrets(["ELEVEN"], {"ELEVEN": "k"}), "tts"
        )
    )
    assert registry.options("elevenlabs", resolved).api_key.get_secret_value() == "k"  # type: ignore[attr-defined]
    assert error_kind("Have not received a new text input within the timeout of 20 seconds") is ErrorKind.TIMEOUT
    assert error_kind("voice_not_found") is ErrorKind.NOT_FOUND


@pytest.mark.skipif(not os.environ.get("ELEVENLABS_API_KEY"), reason="needs ELEVENLABS_API_KEY (the real service)")
def test_real_elevenlabs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PARLEY_OUTBOUND_ALLOW")

    async def run() -> tuple[bytes, bytes]:
        tts = registry.create("elevenlabs", {"api_key": os.environ["ELEVENLABS_API_KEY"]})
        await tts.prepare()
        try:
            return await speak(tts, "Hello from Parley."), await speak(tts, "And goodbye.")
        finally:
            await tts.aclose()

    first, second = asyncio.run(run())
    assert len(first) > 16000 * 2 * 0.3 and len(second) > 16000 * 2 * 0.2  # some audio at 16 kHz
