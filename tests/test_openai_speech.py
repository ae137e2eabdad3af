"""OpenAI TTS (``/v1/audio/speech``, streamed PCM) and STT (``/v1/audio/transcriptions``) through the official SDK.

OpenAI cannot be reached here: they run against tests/support/fakes/openai_speech_server.py, a local server
speaking the documented wire format (request bodies, ``Authorization: Bearer``, streamed 24 kHz PCM, the
``{"error": {...}}`` bodies, Retry-After), which fails in each documented way on request.
``test_real_openai`` runs against the real service when ``OPENAI_API_KEY`` is set.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import time
import wave
from collections.abc import Iterator
from contextlib import aclosing

import pytest
from pydantic import ValidationError

from parley.audio.resample import Resampler
from parley.services.errors import ErrorKind, ProviderError
from parley.services.stt.base import registry as stt_registry
from parley.services.stt.openai import OpenAISTT
from parley.services.tts.base import TTS
from parley.services.tts.base import registry as tts_registry
from parley.services.tts.openai import OpenAITTS

from .support.fakes.openai_speech_server import CHUNK_BYTES, KEY, MS_PER_CHAR, FakeOpenAIAudio, serve_openai_audio

PCM_1S = b"\x01\x00" * 16000


@pytest.fixture(autouse=True)
def allow_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake is local: the operator allow-lists loopback for the SSRF guard."""
    monkeypatch.setenv("PARLEY_OUTBOUND_ALLOW", "127.0.0.1")


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAIAudio]:
    yield from serve_openai_audio()


@pytest.fixture(autouse=True)
def clean(fake: FakeOpenAIAudio) -> None:
    fake.faults.clear()
    fake.requests.clear()


def tts(fake: FakeOpenAIAudio, **options: object) -> OpenAITTS:
    made = tts_registry.create("openai", {"base_url": fake.url, "api_key": KEY, **options})
    assert isinstance(made, OpenAITTS)
    return made


def stt(fake: FakeOpenAIAudio, **options: object) -> OpenAISTT:
    made = stt_registry.create("openai", {"base_url": fake.url, "api_key": KEY, **options})
    assert isinstance(made, OpenAISTT)
    return made


async def speak(provider: TTS, text: str) -> list[bytes]:
    try:
        async with aclosing(provider.synthesize(text)) as audio:
            return [chunk async for chunk in audio]
    finally:
        await provider.aclose()


async def transcribe(provider: OpenAISTT, pcm: bytes, language: str = "en") -> str:
    try:
        return await provider.transcribe(pcm, language)
    finally:
        await provider.aclose()


async def prepare(provider: TTS) -> None:
    try:
        await provider.prepare()
    finally:
        await provider.aclose()


def test_tts_streams_pcm_in_the_documented_request(fake: FakeOpenAIAudio) -> None:
    sentence = "Your appointment is on Tuesday at ten."

    async def run() -> list[bytes]:
        provider = tts(fake, voice="nova", instructions="Warm and calm.", speed=1.1)
        await provider.prepare()
        return await speak(provider, sentence)

    chunks = asyncio.run(run())
    assert len(chunks) > 1, "streamed, not gathered"
    assert all(len(c) % 2 == 0 for c in chunks)
    assert len(b"".join(chunks)) == 2 * (24000 * MS_PER_CHAR * len(sentence) // 1000)
    assert [r["path"] for r in fake.requests] == ["/v1/models", "/v1/audio/speech"]
    request = fake.requests[1]
    assert request["headers"]["authorization"] == f"Bearer {KEY}"
    assert request["json"] == {"model": "gpt-4o-mini-tts", "voice": "nova", "input": sentence,
                               "response_format": "pcm", "instructions": "Warm and calm.", "speed": 1.1}  # fmt: skip
    assert tts(fake).sample_rate == 24000


def test_tts_closing_early_stops_the_stream(fake: FakeOpenAIAudio) -> None:
    async def run() -> tuple[int, list[bytes]]:
        provider = tts(fake, preconnect=False)
        first = b""
        async with aclosing(provider.synthesize("word " * 200)) as audio:
            async for chunk in audio:
                first = chunk
                break
        return len(first), await speak(provider, "Next sentence.")

    first, after = asyncio.run(run())
    assert 0 < first <= CHUNK_BYTES and after


def test_stt_sends_a_wav_and_returns_the_text(fake: FakeOpenAIAudio) -> None:
    assert asyncio.run(transcribe(stt(fake, prompt="Parley, Dr. Okafor"), PCM_1S, "en-US")) == fake.transcript
    request = fake.requests[-1]
    assert request["path"] == "/v1/audio/transcriptions"
    assert request["form"] == {"model": "gpt-4o-mini-transcribe", "response_format": "json", "language": "en",
                               "prompt": "Parley, Dr. Okafor"}  # fmt: skip
    with wave.open(io.BytesIO(request["wav"])) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()) == (16000, 1, 2, 16000)
    assert asyncio.run(transcribe(stt(fake), b"")) == ""


FAULTS = [
    ("401", ErrorKind.AUTH, None),
    ("403", ErrorKind.AUTH, None),
    ("404", ErrorKind.NOT_FOUND, None),
    ("429", ErrorKind.RATE_LIMIT, 3.0),
    ("quota", ErrorKind.QUOTA, None),
    ("500-html", ErrorKind.SERVER, None),
    ("garbage", ErrorKind.BAD_RESPONSE, None),
    ("hang", ErrorKind.TIMEOUT, None),
]


@pytest.mark.parametrize(("fault", "kind", "retry_after"), [*FAULTS, ("close-mid", ErrorKind.CONNECTION, None)])
def test_tts_faults_are_classified(
    fake: FakeOpenAIAudio, caplog: pytest.LogCaptureFixture, fault: str, kind: ErrorKind, retry_after: float | None
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.faults.append(fault)
    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        asyncio.run(speak(tts(fake, timeout_s=0.5, preconnect=False), "Hello there."))
    check(caught.value, kind, retry_after, started, caplog)


@pytest.mark.parametrize(("fault", "kind", "retry_after"), FAULTS)
def test_stt_faults_are_classified(
    fake: FakeOpenAIAudio, caplog: pytest.LogCaptureFixture, fault: str, kind: ErrorKind, retry_after: float | None
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.faults.append(fault)
    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        asyncio.run(transcribe(stt(fake, timeout_s=0.5, preconnect=False), PCM_1S))
    check(caught.value, kind, retry_after, started, caplog)


def check(
    error: ProviderError, kind: ErrorKind, retry_after: float | None, started: float, caplog: pytest.LogCaptureFixture
) -> None:
    assert time.monotonic() - started < 3
    assert error.kind is kind, error
    assert error.retry_after == retry_after and error.provider == "openai"
    assert KEY not in str(error) and KEY not in caplog.text


def test_refused_address_and_unresolved_key(fake: FakeOpenAIAudio, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_OUTBOUND_ALLOW", "")
    with pytest.raises(ProviderError) as caught:
        asyncio.run(prepare(tts(fake)))
    assert caught.value.kind is ErrorKind.BAD_REQUEST and "loopback" in str(caught.value)
    with pytest.raises(ProviderError) as caught:
        asyncio.run(transcribe(stt(fake), PCM_1S))
    assert caught.value.kind is ErrorKind.BAD_REQUEST
    with pytest.raises(ProviderError, match="not resolved"):
        stt_registry.create("openai", {"api_key_env": "OPENAI_API_KEY"})
    with pytest.raises(ValidationError):
        tts_registry.options("openai", {"base_url": "file:///etc/passwd"})
    with pytest.raises(ValidationError):
        tts_registry.options("openai", {"speed": 9})


@pytest.mark.skipif(not os.environ.get("OPENAI_API_KEY"), reason="needs OPENAI_API_KEY (the real service)")
def test_real_openai(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PARLEY_OUTBOUND_ALLOW")
    key = os.environ["OPENAI_API_KEY"]

    async def run() -> str:
        pcm = b"".join(await speak(tts_registry.create("openai", {"api_key": key}), "Hello, this is a test."))
        assert len(pcm) > 24000 * 2 * 0.5
        provider = stt_registry.create("openai", {"api_key": key})
        assert isinstance(provider, OpenAISTT)
        return await transcribe(provider, Resampler(24000, 16000).process(pcm), "en")

    assert "test" in asyncio.run(run()).lower()
