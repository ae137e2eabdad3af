"""The Deepgram live STT provider, contract-tested against a local server speaking Deepgram's documented format.

Deepgram cannot be reached here: :class:`tests.support.fakes.deepgram_server.FakeDeepgram` is a real WebSocket
server on 127.0.0.1 that checks the ``Authorization: Token`` header and the ``/v1/listen`` query, answers audio
with ``Results``/``UtteranceEnd``/``Metadata`` messages in the documented shapes, and fails on demand (HTTP
401/402/403/429/5xx with Deepgram's JSON body, a 1011/1008 close, a dropped connection, a non-JSON frame,
silence). ``test_real_deepgram`` runs against the real service when ``DEEPGRAM_API_KEY`` is set.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Iterable
from urllib.parse import urlsplit

import numpy as np
import pytest
from pydantic import ValidationError

from parley.services.errors import ErrorKind, ProviderError
from parley.services.secrets import EnvSecrets, resolve_options
from parley.services.stt.base import SttEvent, registry
from parley.services.stt.deepgram import DeepgramSTT

from .support.fakes.deepgram_server import FakeDeepgram

KEY = "dg-test-key-0123456789abcdef"
SECOND = 32000  # bytes of PCM16 mono at 16 kHz


@pytest.fixture(autouse=True)
def allow_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake is local: the operator allow-lists loopback for the SSRF guard, as a self-hosted Deepgram would."""
    monkeypatch.setenv("PARLEY_OUTBOUND_ALLOW", "127.0.0.1")


@pytest.fixture
async def dg() -> AsyncIterator[FakeDeepgram]:
    async with FakeDeepgram(key=KEY) as server:
        yield server


def stt(server: FakeDeepgram, **options: object) -> DeepgramSTT:
    opts = {"api_key": KEY, "base_url": server.url, "connect_timeout_s": 1.0, "first_result_timeout_s": 0.6}
    made = registry.create("deepgram", {**opts, **options})
    assert isinstance(made, DeepgramSTT)
    return made


async def chunks(parts: Iterable[bytes | float]) -> AsyncIterator[bytes]:
    """Audio pieces as a live call sends them; a float is a pause of that many seconds."""
    for part in parts:
        if isinstance(part, float):
            await asyncio.sleep(part)
        else:
            yield part


def audio(secs: float) -> list[bytes]:
    """``secs`` of (silent) PCM in 100 ms pieces: the fake "hears" words by the byte."""
    return [bytes(SECOND // 10)] * round(secs * 10)


async def events(client: DeepgramSTT, parts: Iterable[bytes | float], language: str = "en") -> list[SttEvent]:
    return [e async for e in client.stream(chunks(parts), language)]


async def test_stream_yields_interims_finals_and_endpoints(dg: FakeDeepgram) -> None:
    got = await events(stt(dg), audio(0.8), "en-US")
    finals = [e.text for e in got if e.kind == "final"]
    assert finals == list(dg.segments)
    assert [e.text for e in got if e.kind == "interim"][:2] == ["book", "book a"]
    kinds = [e.kind for e in got]
    last_final = len(kinds) - 1 - kinds[::-1].index("final")
    assert kinds[last_final + 1 :] == ["endpoint", "endpoint"]  # speech_final, then UtteranceEnd
    assert got[last_final].t == pytest.approx(0.6) and got[last_final].confidence == pytest.approx(0.97)
    assert got[-1].t == pytest.approx(0.6)  # UtteranceEnd's last_word_end
    (conn,) = dg.connections
    assert conn.authorization == f"Token {KEY}" and conn.path == "/v1/listen"
    query = {k: v[-1] for k, v in conn.query.items()}
    assert query == {"model": "nova-3", "encoding": "linear16", "sample_rate": "16000", "channels": "1",
                     "interim_results": "true", "endpointing": "300", "utterance_end_ms": "1000",
                     "language": "en-US", "punctuate": "true"}  # fmt: skip
    assert conn.audio_bytes == 8 * SECOND // 10
    assert conn.control_types()[-2:] == ["Finalize", "CloseStream"]


async def test_transcribe_through_the_registry_joins_finals(dg: FakeDeepgram) -> None:
    client = registry.create("deepgram", {"api_key": KEY, "base_url": dg.url})
    assert await client.transcribe(bytes(SECOND), "en") == dg.transcript


async def test_finalize_flushes_words_not_yet_final(dg: FakeDeepgram) -> None:
    """Audio that ends mid-segment: Finalize/CloseStream make the server send what it heard as a final."""
    got = await events(stt(dg), audio(0.5))
    assert [e.text for e in got if e.kind == "final"] == ["book a table", "for two"]


async def test_options_shape_the_query(dg: FakeDeepgram) -> None:
    await events(stt(dg, language="de", endpointing_ms=0, utterance_end_ms=None, smart_format=True,
                     keywords=["Parley", "table d'hôte"]), audio(0.1))  # fmt: skip
    await events(stt(dg, model="nova-2", keywords=["Parley"]), audio(0.1))
    nova3, nova2 = (c.query for c in dg.connections)
    assert nova3["language"] == ["de"] and nova3["endpointing"] == ["false"] and "utterance_end_ms" not in nova3
    assert nova3["smart_format"] == ["true"] and nova3["keyterm"] == ["Parley", "table d'hôte"]
    assert nova2["keywords"] == ["Parley"] and "keyterm" not in nova2


@pytest.mark.parametrize(
    ("fault", "kind", "status"),
    [
        ("reject-401", ErrorKind.AUTH, 401),
        ("reject-403", ErrorKind.AUTH, 403),
        ("reject-402", ErrorKind.QUOTA, 402),
        ("reject-429", ErrorKind.RATE_LIMIT, 429),
        ("reject-503", ErrorKind.SERVER, 503),
        ("hang-handshake", ErrorKind.TIMEOUT, None),
        ("close-1011", ErrorKind.CONNECTION, None),
        ("close-1008", ErrorKind.BAD_REQUEST, None),
        ("drop", ErrorKind.CONNECTION, None),
        ("garbage", ErrorKind.BAD_RESPONSE, None),
        ("silent", ErrorKind.TIMEOUT, None),
    ],
)
async def test_faults_are_classified_in_bounded_time(
    dg: FakeDeepgram, fault: str, kind: ErrorKind, status: int | None
) -> None:
    dg.fault = fault
    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        await events(stt(dg, connect_timeout_s=0.5), audio(0.8))
    assert time.monotonic() - started < 3.0
    error = caught.value
    assert error.kind == kind and error.status == status and error.provider == "deepgram"
    assert str(error).startswith("deepgram: ") and KEY not in str(error)
    if fault == "reject-429":
        assert error.retry_after == 7.0 and "TOO_MANY_REQUESTS" in str(error)
    if fault == "close-1011":
        assert "1011" in str(error) and "NET-0000" in str(error)


async def test_a_wrong_key_is_an_auth_error_naming_its_source(dg: FakeDeepgram) -> None:
    with pytest.raises(ProviderError) as caught:
        await events(stt(dg, api_key="dg-wrong-key-000000000"), audio(0.1))
    assert caught.value.kind == ErrorKind.AUTH and caught.value.permanent
    assert "INVALID_AUTH" in str(caught.value) and "check options.api_key" in str(caught.value)
    assert "dg-wrong-key" not in str(caught.value)


async def test_keepalives_hold_the_stream_open_while_audio_pauses() -> None:
    async with FakeDeepgram(key=KEY, idle_timeout_s=0.5) as dg:
        got = await events(stt(dg, keepalive_s=0.15), [*audio(0.3), 1.0, *audio(0.5)])
        assert [e.text for e in got if e.kind == "final"] == list(dg.segments)
        (conn,) = dg.connections
        pause = [t for t, kind in conn.controls if kind == "KeepAlive"]
        assert len(pause) >= 4 and conn.control_types()[-2:] == ["Finalize", "CloseStream"]
        assert all(conn.audio_times[2] < t < conn.audio_times[3] for t in pause)  # only while no audio flowed

        dg.fault = None  # without keep-alives the server gives up: Deepgram's NET-0001 close
        with pytest.raises(ProviderError) as caught:
            await events(stt(dg, keepalive_s=8.0), [*audio(0.3), 1.0, *audio(0.5)])
        assert caught.value.kind == ErrorKind.CONNECTION and "NET-0001" in str(caught.value)


async def test_the_key_never_reaches_logs_or_errors(
    dg: FakeDeepgram, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)
    await events(stt(dg), audio(0.3))
    dg.fault = "reject-401"
    with pytest.raises(ProviderError) as caught:
        await events(stt(dg), audio(0.3))
    monkeypatch.setenv("PARLEY_OUTBOUND_ALLOW", "")
    with pytest.raises(ProviderError) as refused:
        await events(stt(dg), audio(0.3))
    assert caplog.records and KEY not in caplog.text
    for error in (caught.value, refused.value):
        assert KEY not in str(error) and KEY not in repr(error) and error.__cause__ is None


async def test_the_outbound_guard_refuses_loopback_unless_allowed(
    dg: FakeDeepgram, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARLEY_OUTBOUND_ALLOW", "")
    port = urlsplit(dg.url).port
    for url in (dg.url, f"ws://localhost:{port}", f"http://[::ffff:127.0.0.1]:{port}"):
        with pytest.raises(ProviderError) as caught:
            await events(stt(dg, base_url=url), audio(0.1))
        assert caught.value.kind == ErrorKind.BAD_REQUEST and "loopback" in str(caught.value)
        with pytest.raises(ProviderError, match="loopback"):  # before the call starts, too
            await stt(dg, base_url=url).prepare()
    assert dg.connections == []  # refused before any connection was made
    monkeypatch.setenv("PARLEY_OUTBOUND_ALLOW", "127.0.0.1")
    await stt(dg).prepare()  # allowed: nothing opened (Deepgram bills open streams)
    assert dg.connections == []


async def test_an_audio_source_failure_is_raised_as_itself(dg: FakeDeepgram) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield bytes(SECOND // 10)
        raise RuntimeError("microphone unplugged")

    with pytest.raises(RuntimeError, match="microphone unplugged"):
        _ = [e async for e in stt(dg).stream(broken())]


def test_options_are_validated() -> None:
    with pytest.raises(ValidationError, match="api_key_credential"):
        registry.options("deepgram", {})
    for bad in ({"base_url": "ftp://api.deepgram.com"}, {"base_url": "wss://u:p@api.deepgram.com"},
                {"language": "en_US; drop"}, {"utterance_end_ms": 500}, {"unknown": 1}):  # fmt: skip
        with pytest.raises(ValidationError):
            registry.options("deepgram", {"api_key": KEY, **bad})
    client = registry.create("deepgram", {"api_key": KEY, "base_url": "https://dg.example.com/proxy/"})
    assert isinstance(client, DeepgramSTT) and client.url == "wss://dg.example.com/proxy/v1/listen"
    with pytest.raises(ProviderError) as caught:  # a reference nobody resolved
        registry.create("deepgram", {"api_key_credential": "deepgram"})
    assert caught.value.kind == ErrorKind.AUTH and caught.value.permanent


async def test_api_key_env_is_resolved_by_the_secret_source(dg: FakeDeepgram) -> None:
    options = {"api_key_env": "MY_DG_KEY", "base_url": dg.url}
    secrets = EnvSecrets(["MY_DG_KEY"], {"MY_DG_KEY": KEY})
    resolved = await resolve_options(DeepgramSTT.Options, options, secrets, "stt")
    assert await registry.create("deepgram", resolved).transcribe(bytes(SECOND)) == dg.transcript
    assert dg.connections[-1].authorization == f"Token {KEY}"


@pytest.mark.skipif(not os.environ.get("DEEPGRAM_API_KEY"), reason="DEEPGRAM_API_KEY is not set")
async def test_real_deepgram(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real service: espeak's words come back (network and a Deepgram key needed)."""
    from .support.audio import espeak, silence

    monkeypatch.delenv("PARLEY_OUTBOUND_ALLOW")
    pcm = np.concatenate([silence(0.3), espeak("I would like to book a table for two."), silence(1.0)])
    client = registry.create("deepgram", {"api_key": os.environ["DEEPGRAM_API_KEY"]})
    text = await client.transcribe(pcm.astype(np.int16).tobytes(), "en-US")
    assert "table" in text.lower(), text
