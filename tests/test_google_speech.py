"""Google Cloud Text-to-Speech and Speech-to-Text (v1, gRPC) against a local server speaking their wire format.

tests/support/fakes/google_speech_server.py is a real grpcio server on 127.0.0.1 that serves the documented
methods (``SynthesizeSpeech``, ``StreamingSynthesize``, ``StreamingRecognize``) by their full gRPC names with the
google-cloud packages' own protobuf messages, and fails with real gRPC status codes; so the providers' clients,
channels and error wrapping run as they would against Google. No Google library may look for credentials or a
metadata server here (``google.auth.default`` is made to fail). The last tests talk to Google itself when
``GOOGLE_APPLICATION_CREDENTIALS`` names a service account key file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

# the SDKs are an optional extra: without them there is nothing to test (the registry says which package is missing)
pytest.importorskip("google.cloud.texttospeech_v1", reason="google-cloud-texttospeech is not installed")
pytest.importorskip("google.cloud.speech_v1", reason="google-cloud-speech is not installed")

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from parley.services.errors import ErrorKind, ProviderError
from parley.services.secrets import EnvSecrets, resolve_options, stored_document_problems
from parley.services.stt.base import SttEvent
from parley.services.stt.base import registry as stt_registry
from parley.services.stt.google import GoogleSTT
from parley.services.tts.base import registry as tts_registry
from parley.services.tts.google import GoogleTTS, wav_payload

from .support.fakes.google_speech_server import FakeGoogle, google_speech_server

KEY = "AIzaParley-TEST-key-0123456789abcdefghijk"
TEXT = "Your table is booked for tonight."
REAL = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS", "")


@pytest.fixture(autouse=True)
def local_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback is allowed for the outbound guard; Google's credential discovery (metadata server) must not run."""
    monkeypatch.setenv("PARLEY_OUTBOUND_ALLOW", "127.0.0.1")
    if not REAL:
        import google.auth

        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("google.auth.default() was called: it may probe the metadata server")

        monkeypatch.setattr(google.auth, "default", refuse)


@pytest.fixture
def fake() -> Iterator[FakeGoogle]:
    with google_speech_server() as server:
        yield server


def voice(fake: FakeGoogle, **options: Any) -> GoogleTTS:
    made = tts_registry.create("google", {"endpoint_url": fake.url, "api_key": KEY} | options)
    assert isinstance(made, GoogleTTS)
    return made


def ears(fake: FakeGoogle, **options: Any) -> GoogleSTT:
    made = stt_registry.create("google", {"endpoint_url": fake.url, "api_key": KEY} | options)
    assert isinstance(made, GoogleSTT)
    return made


async def speak(tts: GoogleTTS, text: str = TEXT) -> list[bytes]:
    try:
        return [chunk async for chunk in tts.synthesize(text)]
    finally:
        await tts.aclose()


async def pcm(seconds: float, piece_s: float = 0.1, gap_s: float = 0.0) -> AsyncIterator[bytes]:
    for _ in range(round(seconds / piece_s)):
        yield b"\x01\x00" * int(16000 * piece_s)
        await asyncio.sleep(gap_s)


async def listen(stt: GoogleSTT, seconds: float = 1.0, language: str = "en") -> list[SttEvent]:
    try:
        return [event async for event in stt.stream(pcm(seconds), language)]
    finally:
        await stt.aclose()


async def test_chirp3_hd_voices_stream_pcm(fake: FakeGoogle) -> None:
    fake.piece_gap_s = 0.15
    tts = voice(fake)  # the default voice, en-US-Chirp3-HD-Charon, uses StreamingSynthesize
    start, first, chunks = time.monotonic(), None, []
    async for chunk in tts.synthesize(TEXT):
        first = first if first is not None else time.monotonic() - start
        chunks.append(chunk)
    total = time.monotonic() - start
    await tts.aclose()
    assert first is not None and first < total - 0.3 and len(chunks) == fake.pieces
    assert b"".join(chunks) == fake.audio(TEXT, 24000) and all(len(c) % 2 == 0 for c in chunks)
    (call,) = fake.calls
    assert call["method"] == "StreamingSynthesize" and call["metadata"]["x-goog-api-key"] == KEY
    config, text = call["requests"]
    assert config.streaming_config.voice.name == "en-US-Chirp3-HD-Charon"
    assert config.streaming_config.voice.language_code == "en-US"
    assert config.streaming_config.streaming_audio_config.audio_encoding.name == "PCM"
    assert config.streaming_config.streaming_audio_config.sample_rate_hertz == 24000
    assert text.input.text == TEXT


async def test_other_voices_answer_whole_without_the_wav_header(fake: FakeGoogle) -> None:
    tts = voice(fake, voice="de-DE-Neural2-B", sample_rate=16000, speaking_rate=1.2, chunk_bytes=3200)
    chunks = await speak(tts)
    assert tts.sample_rate == 16000 and b"".join(chunks) == fake.audio(TEXT, 16000)
    assert max(map(len, chunks)) == 3200
    (call,) = fake.calls
    request = call["requests"][0]
    assert call["method"] == "SynthesizeSpeech" and request.voice.language_code == "de-DE"
    assert request.audio_config.audio_encoding.name == "LINEAR16" and request.audio_config.sample_rate_hertz == 16000
    assert abs(request.audio_config.speaking_rate - 1.2) < 1e-6
    assert await speak(voice(fake), "   ") == [] and len(fake.calls) == 1
    assert wav_payload(b"raw pcm") == b"raw pcm"


async def test_google_stt_streams_interim_final_and_endpoint(fake: FakeGoogle) -> None:
    events = await listen(ears(fake, single_utterance=True, model="latest_short"), 1.0)
    kinds = [e.kind for e in events]
    assert kinds == ["interim"] * 5 + ["endpoint", "final"]
    assert events[0].text == "book" and events[-1].text == fake.transcript and events[-1].t == pytest.approx(1.0)
    assert events[-1].confidence == pytest.approx(0.9)
    (call,) = fake.calls
    first = call["requests"][0].streaming_config
    assert call["method"] == "StreamingRecognize" and call["metadata"]["x-goog-api-key"] == KEY
    assert first.single_utterance and first.interim_results and first.config.model == "latest_short"
    assert first.config.language_code == "en-US" and first.config.sample_rate_hertz == 16000
    assert first.config.encoding.name == "LINEAR16"
    assert sum(len(r.audio_content) for r in call["requests"][1:]) == 32000


async def test_transcribe_and_languages(fake: FakeGoogle) -> None:
    stt = ears(fake, interim_results=False)
    assert await stt.transcribe(b"\x00\x00" * 16000, "es") == fake.transcript
    assert await stt.transcribe(b"", "es") == ""
    await listen(stt, 0.2, "pt-PT")
    await listen(ears(fake, language_code="fr-CA", sample_rate=8000), 0.2, "en")
    languages = [c["requests"][0].streaming_config.config.language_code for c in fake.calls]
    assert languages == ["es-ES", "es-ES", "pt-PT", "fr-CA"]
    assert fake.calls[-1]["requests"][0].streaming_config.config.sample_rate_hertz == 8000


FAULTS = [
    (grpc.StatusCode.UNAUTHENTICATED, "Request had invalid authentication credentials.", ErrorKind.AUTH),
    (grpc.StatusCode.PERMISSION_DENIED, "The caller does not have permission", ErrorKind.AUTH),
    (grpc.StatusCode.NOT_FOUND, "Requested entity was not found.", ErrorKind.NOT_FOUND),
    (grpc.StatusCode.INVALID_ARGUMENT, "Voice 'xx-XX-Nope' does not exist.", ErrorKind.NOT_FOUND),
    (grpc.StatusCode.INVALID_ARGUMENT, "Invalid recognition 'config': bad encoding..", ErrorKind.BAD_REQUEST),
    (grpc.StatusCode.INVALID_ARGUMENT, "Unsupported language_code: xx-XX", ErrorKind.UNSUPPORTED),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, "Quota exceeded for 'Requests per minute'", ErrorKind.RATE_LIMIT),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, "Quota exceeded for 'Characters per day'", ErrorKind.QUOTA),
    (grpc.StatusCode.UNAVAILABLE, "The service is currently unavailable.", ErrorKind.CONNECTION),
    (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline exceeded", ErrorKind.TIMEOUT),
    (grpc.StatusCode.INTERNAL, "Internal error encountered.", ErrorKind.SERVER),
]


@pytest.mark.parametrize("which", ["streaming-tts", "whole-tts", "stt"])
async def test_each_status_has_its_kind(fake: FakeGoogle, which: str) -> None:
    for code, details, kind in FAULTS:
        fake.fault, fake.fault_details = code, details
        start = time.monotonic()
        with pytest.raises(ProviderError) as info:
            if which == "stt":
                await listen(ears(fake), 0.3)
            else:
                await speak(voice(fake, streaming=which == "streaming-tts"))
        assert (info.value.kind, info.value.provider) == (kind, "google"), (which, code, details)
        assert code.name in str(info.value) and KEY not in str(info.value)
        assert time.monotonic() - start < 3


def test_grpcios_lost_status_is_a_connection_failure() -> None:
    """A refusal read only after a failed write comes back as INTERNAL "Internal error from Core" (grpcio)."""
    from google.api_core import exceptions as gexc

    from parley.services.tts.google import CORE, GoogleClient, GoogleCloudOptions

    client = GoogleClient("google", GoogleCloudOptions(api_key=KEY))
    error = client.error(gexc.from_grpc_status(grpc.StatusCode.INTERNAL, CORE))
    assert error.kind is ErrorKind.CONNECTION and not error.permanent
    assert client.error(gexc.from_grpc_status(grpc.StatusCode.INTERNAL, "oops")).kind is ErrorKind.SERVER


async def test_a_wrong_key_is_auth(fake: FakeGoogle) -> None:
    with pytest.raises(ProviderError) as info:
        await speak(voice(fake, api_key="BAD"))
    assert info.value.kind is ErrorKind.AUTH and info.value.permanent
    with pytest.raises(ProviderError) as info:
        await listen(ears(fake, api_key="BAD"))
    assert info.value.kind is ErrorKind.AUTH


@pytest.mark.parametrize("fault", ["hang", "stall"])
async def test_a_silent_server_is_a_timeout(fake: FakeGoogle, fault: str) -> None:
    fake.fault, fake.hang_s = fault, 2.0
    for make in (lambda: speak(voice(fake, timeout_s=0.5)), lambda: listen(ears(fake, timeout_s=0.5), 0.2)):
        start = time.monotonic()
        with pytest.raises(ProviderError) as info:
            await make()
        assert info.value.kind is ErrorKind.TIMEOUT and time.monotonic() - start < 1.8


async def test_nobody_listening_is_a_connection_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    for run in (speak(tts_registry.create("google", {"endpoint_url": url, "api_key": KEY})),  # type: ignore[arg-type]
                listen(stt_registry.create("google", {"endpoint_url": url, "api_key": KEY}))):  # type: ignore[arg-type]  # fmt: skip
        with pytest.raises(ProviderError) as info:
            await asyncio.wait_for(run, 5)
        assert info.value.kind is ErrorKind.CONNECTION


async def test_a_listener_that_stops_ends_the_rpc(fake: FakeGoogle) -> None:
    stt = ears(fake)
    start = time.monotonic()
    stream = stt.stream(pcm(5.0, gap_s=0.1))
    assert (await anext(stream)).kind == "interim"
    await stream.aclose()  # type: ignore[attr-defined]
    tts = voice(fake)
    fake.piece_gap_s = 0.5
    pieces = tts.synthesize(TEXT)
    assert await anext(pieces)
    await pieces.aclose()
    await stt.aclose()
    await tts.aclose()
    assert time.monotonic() - start < 2  # not the 5 s of audio nor the 2 s of speech


async def test_the_outbound_guard_refuses_loopback_unless_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_OUTBOUND_ALLOW", "")
    for url in ("http://127.0.0.1:9", "http://169.254.169.254", "http://localhost:9"):
        with pytest.raises(ProviderError, match="refused") as info:
            await speak(tts_registry.create("google", {"endpoint_url": url, "api_key": KEY}))  # type: ignore[arg-type]
        assert info.value.kind is ErrorKind.BAD_REQUEST
        with pytest.raises(ProviderError, match="refused"):
            await listen(stt_registry.create("google", {"endpoint_url": url, "api_key": KEY}))  # type: ignore[arg-type]


def service_account_json() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return json.dumps({"type": "service_account", "project_id": "parley-test", "private_key_id": "k1",
                       "private_key": pem.decode(), "client_email": "tts@parley-test.iam.gserviceaccount.com",
                       "client_id": "1", "token_uri": "https://oauth2.googleapis.com/token"})  # fmt: skip


def test_credentials_are_checked_when_the_provider_is_made() -> None:
    with pytest.raises(ProviderError, match="api_key or service_account_json") as info:
        tts_registry.create("google", {})  # https without a credential: never Google's default credentials
    assert info.value.kind is ErrorKind.AUTH
    with pytest.raises(ProviderError, match="not a service account key") as info:
        stt_registry.create("google", {"service_account_json": '{"private_key": "' + KEY + '"}'})
    assert info.value.kind is ErrorKind.AUTH and KEY not in str(info.value)
    account = service_account_json()
    assert isinstance(tts_registry.create("google", {"service_account_json": account}), GoogleTTS)
    internal = json.loads(account) | {"token_uri": "http://10.0.0.5/token"}
    with pytest.raises(ProviderError, match="token_uri") as info:
        tts_registry.create("google", {"service_account_json": json.dumps(internal)})
    assert info.value.kind is ErrorKind.BAD_REQUEST
    with pytest.raises(ProviderError, match="only over https"):
        stt_registry.create("google", {"service_account_json": account, "endpoint_url": "http://127.0.0.1:9"})
    with pytest.raises(ValueError, match="no path"):
        tts_registry.create("google", {"endpoint_url": "https://texttospeech.googleapis.com/v1", "api_key": KEY})


async def test_keys_are_secret_fields(caplog: pytest.LogCaptureFixture, fake: FakeGoogle) -> None:
    caplog.set_level(logging.DEBUG)
    for registry in (tts_registry, stt_registry):
        opts_cls = registry.get("google").Options
        env = EnvSecrets(["GOOGLE_KEY"], {"GOOGLE_KEY": KEY})
        resolved = await resolve_options(opts_cls, {"endpoint_url": fake.url, "api_key_env": "GOOGLE_KEY"}, env, "x")
        assert resolved["api_key"] == KEY
        inline = {"api_key": KEY, "service_account_json": "{}"}
        refused = {p.loc for p in stored_document_problems([("x", opts_cls, inline)], lambda url: None)}
        assert refused == {("x", "options", "api_key"), ("x", "options", "service_account_json")}
        made = registry.create("google", resolved)
        if isinstance(made, GoogleTTS):
            assert await speak(made)
        else:
            assert isinstance(made, GoogleSTT) and await listen(made, 0.3)
    assert all(KEY not in r.getMessage() for r in caplog.records)


@pytest.mark.skipif(not REAL, reason="needs GOOGLE_APPLICATION_CREDENTIALS (a service account key file)")
async def test_real_google_speaks_and_hears_itself() -> None:
    account = Path(REAL).read_text()  # noqa: ASYNC240 (a small key file, once)
    tts = tts_registry.create("google", {"service_account_json": account, "sample_rate": 16000})
    audio = b"".join(await speak(tts, "Book a table for two, please."))  # type: ignore[arg-type]
    assert len(audio) > 16000
    stt = stt_registry.create("google", {"service_account_json": account})
    try:
        text = await stt.transcribe(audio, "en")
    finally:
        await stt.aclose()
    assert "table" in text.lower()
