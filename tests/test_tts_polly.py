"""Amazon Polly TTS (boto3) against a local server speaking Polly's documented rest-json wire format.

tests/support/fakes/polly_server.py answers ``POST /v1/speech`` as the service model and API reference give it
(JSON body, SigV4 ``Authorization`` header, ``audio/pcm`` in pieces, errors with ``x-amzn-ErrorType``), so these
tests run boto3's real signing, HTTP and error parsing over a real socket. The last test talks to Polly itself
when ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY`` are set.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from parley.services.errors import ErrorKind, ProviderError
from parley.services.secrets import EnvSecrets, resolve_options, stored_document_problems
from parley.services.tts.base import registry
from parley.services.tts.polly import PollyTTS

from .support.fakes.polly_server import FakePolly, polly_server

KEY_ID = "AKIAPARLEYTEST000001"
SECRET = "parley-TEST-aws-secret-0123456789abcdefghij"
TEXT = "Your table is booked for tonight."


@pytest.fixture(autouse=True)
def allow_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake is local: the operator allow-lists loopback for the outbound guard, as a VPC endpoint might need."""
    monkeypatch.setenv("PARLEY_OUTBOUND_ALLOW", "127.0.0.1")
    monkeypatch.delenv("PARLEY_AWS_CREDENTIAL_CHAIN", raising=False)


@pytest.fixture
def fake() -> Iterator[FakePolly]:
    with polly_server() as server:
        server.piece_gap_s = 0.02
        yield server


def polly(fake: FakePolly, **options: Any) -> PollyTTS:
    opts = {"endpoint_url": fake.url, "access_key_id": KEY_ID, "secret_access_key": SECRET, "max_retries": 0}
    voice = registry.create("polly", opts | options)
    assert isinstance(voice, PollyTTS)
    return voice


async def speak(voice: PollyTTS, text: str = TEXT) -> list[bytes]:
    try:
        return [chunk async for chunk in voice.synthesize(text)]
    finally:
        await voice.aclose()


async def test_speech_streams_as_it_arrives(fake: FakePolly) -> None:
    fake.piece_gap_s = 0.2
    voice = polly(fake, voice="Matthew", language_code="en-US")
    await voice.prepare()
    start, first, chunks = time.monotonic(), None, []
    async for chunk in voice.synthesize(TEXT):
        first = first if first is not None else time.monotonic() - start
        chunks.append(chunk)
    total = time.monotonic() - start
    await voice.aclose()
    assert first is not None and first < total - 0.5  # the first piece came ~0.8 s before the last
    assert b"".join(chunks) == fake.audio(TEXT, 16000) and all(len(c) % 2 == 0 for c in chunks)
    assert voice.sample_rate == 16000
    (request,) = fake.requests
    assert request["path"] == "/v1/speech"
    assert request["body"] == {"Engine": "neural", "OutputFormat": "pcm", "SampleRate": "16000", "Text": TEXT,
                               "VoiceId": "Matthew", "LanguageCode": "en-US"}  # fmt: skip
    auth = request["headers"]["Authorization"]
    assert auth.startswith(f"AWS4-HMAC-SHA256 Credential={KEY_ID}/") and "/us-east-1/polly/aws4_request" in auth
    assert all(SECRET not in str(v) for v in request["headers"].values())


async def test_eight_khz_and_other_options(fake: FakePolly) -> None:
    voice = polly(fake, sample_rate=8000, engine="standard", voice="Joanna", region="eu-west-1")
    audio = b"".join(await speak(voice, "Hi."))
    assert voice.sample_rate == 8000 and audio == fake.audio("Hi.", 8000)
    assert fake.requests[0]["body"]["SampleRate"] == "8000" and fake.requests[0]["body"]["Engine"] == "standard"
    assert "/eu-west-1/polly/" in fake.requests[0]["headers"]["Authorization"]
    assert await speak(polly(fake), "  ") == [] and len(fake.requests) == 1  # nothing to say: no request


@pytest.mark.parametrize(
    ("fault", "kind", "status"),
    [
        ("throttle", ErrorKind.RATE_LIMIT, 400),
        ("bad-key", ErrorKind.AUTH, 403),
        ("bad-signature", ErrorKind.AUTH, 403),
        ("too-long", ErrorKind.BAD_REQUEST, 400),
        ("engine", ErrorKind.UNSUPPORTED, 400),
        ("language", ErrorKind.UNSUPPORTED, 400),
        ("server", ErrorKind.SERVER, 500),
        ("unavailable", ErrorKind.SERVER, 503),
    ],
)
async def test_each_error_has_its_kind(fake: FakePolly, fault: str, kind: ErrorKind, status: int) -> None:
    fake.fault = fault
    start = time.monotonic()
    with pytest.raises(ProviderError) as info:
        await speak(polly(fake))
    assert info.value.kind is kind and info.value.status == status and info.value.provider == "polly"
    assert time.monotonic() - start < 3 and SECRET not in str(info.value)


async def test_a_wrong_key_id_is_auth(fake: FakePolly) -> None:
    with pytest.raises(ProviderError) as info:
        await speak(polly(fake, access_key_id="BADKEY0000000000"))
    assert info.value.kind is ErrorKind.AUTH and info.value.permanent


@pytest.mark.parametrize("fault", ["hang", "stall"])
async def test_silence_is_a_timeout_within_the_read_deadline(fake: FakePolly, fault: str) -> None:
    fake.fault, fake.hang_s = fault, 3.0
    start = time.monotonic()
    with pytest.raises(ProviderError) as info:
        await speak(polly(fake, read_timeout_s=0.5))
    assert info.value.kind is ErrorKind.TIMEOUT and not info.value.permanent
    assert time.monotonic() - start < 2.5


async def test_nobody_listening_is_a_connection_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    voice = registry.create("polly", {"endpoint_url": f"http://127.0.0.1:{port}", "access_key_id": KEY_ID,
                                      "secret_access_key": SECRET, "max_retries": 0})  # fmt: skip
    with pytest.raises(ProviderError) as info:
        await speak(voice)  # type: ignore[arg-type]
    assert info.value.kind is ErrorKind.CONNECTION


async def test_barge_in_stops_reading(fake: FakePolly) -> None:
    fake.piece_gap_s = 0.5
    voice = polly(fake)
    start = time.monotonic()
    stream = voice.synthesize(TEXT)
    assert await anext(stream)
    await stream.aclose()
    await voice.aclose()
    assert time.monotonic() - start < 1.5  # not the 2.5 s the whole answer takes


async def test_without_keys_the_servers_identity_is_not_used(fake: FakePolly, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    with pytest.raises(ProviderError, match="PARLEY_AWS_CREDENTIAL_CHAIN") as info:
        await speak(polly(fake, access_key_id=None, secret_access_key=None))
    assert info.value.kind is ErrorKind.AUTH and fake.requests == []
    monkeypatch.setenv("PARLEY_AWS_CREDENTIAL_CHAIN", "1")  # the operator allows AWS's chain: the env keys sign
    assert await speak(polly(fake, access_key_id=None, secret_access_key=None))
    assert f"Credential={KEY_ID}/" in fake.requests[0]["headers"]["Authorization"]


async def test_the_outbound_guard_refuses_loopback_unless_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_OUTBOUND_ALLOW", "")
    for url in ("http://127.0.0.1:9", "http://169.254.169.254", "http://localhost:9"):
        with pytest.raises(ProviderError, match="refused") as info:
            await speak(registry.create("polly", {"endpoint_url": url, "access_key_id": KEY_ID,  # type: ignore[arg-type]
                                                  "secret_access_key": SECRET}))  # fmt: skip
        assert info.value.kind is ErrorKind.BAD_REQUEST


async def test_keys_are_secret_fields(caplog: pytest.LogCaptureFixture, fake: FakePolly) -> None:
    caplog.set_level(logging.DEBUG)
    opts_cls = registry.get("polly").Options
    env = EnvSecrets(["AWS_KEY_ID", "AWS_SECRET"], {"AWS_KEY_ID": KEY_ID, "AWS_SECRET": SECRET})
    doc = {"endpoint_url": fake.url, "access_key_id_env": "AWS_KEY_ID", "secret_access_key_env": "AWS_SECRET"}
    resolved = await resolve_options(opts_cls, doc, env, "tts")
    assert resolved["secret_access_key"] == SECRET and await speak(registry.create("polly", resolved))  # type: ignore[arg-type]
    inline = {"access_key_id": KEY_ID, "secret_access_key": SECRET}
    refused = {p.loc for p in stored_document_problems([("tts", opts_cls, inline)], lambda url: None)}
    assert refused == {("tts", "options", "access_key_id"), ("tts", "options", "secret_access_key")}
    assert all(SECRET not in r.getMessage() for r in caplog.records)
    assert all(KEY_ID not in r.getMessage() for r in caplog.records if r.name.startswith("parley"))


@pytest.mark.skipif(
    not (os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY")),
    reason="needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for the real Polly",
)
async def test_real_polly(monkeypatch: pytest.MonkeyPatch) -> None:
    options = {
        "access_key_id": os.environ["AWS_ACCESS_KEY_ID"],
        "secret_access_key": os.environ["AWS_SECRET_ACCESS_KEY"],
        "region": os.environ.get("AWS_REGION", "us-east-1"),
    }
    audio = b"".join(await speak(registry.create("polly", options), TEXT))  # type: ignore[arg-type]
    assert len(audio) > 16000  # over half a second of 16 kHz PCM16
