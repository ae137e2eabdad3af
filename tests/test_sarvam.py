"""Sarvam AI STT (Saarika/Saaras) and TTS (Bulbul), and the language check of agent documents.

Sarvam cannot be reached here: the providers run against a local server (tests/support/fakes/sarvam_server.py)
speaking Sarvam's documented REST format: multipart speech-to-text, JSON text-to-speech with base64 WAV answers,
the ``api-subscription-key`` header and ``{"error": {"code", "message"}}`` errors. The last test talks to the
real service when ``SARVAM_API_KEY`` is set.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from parley.agent.document import AgentDocumentError, load_agent, parse_agent
from parley.services.errors import ErrorKind, ProviderError
from parley.services.languages import LanguageProblem, match, problems_for
from parley.services.secrets import EnvSecrets, resolve_options
from parley.services.stt.base import registry as stt_registry
from parley.services.stt.sarvam import SarvamSTT
from parley.services.tts.base import registry as tts_registry
from parley.services.tts.sarvam import SarvamTTS, pieces

from .support.fakes.sarvam_server import ENGLISH, HINDI, KEY, MS_PER_CHAR, FakeSarvam, serve_sarvam

ROOT = Path(__file__).resolve().parents[1]
PCM = (np.sin(np.arange(8000) / 5) * 8000).astype("<i2").tobytes()  # half a second at 16 kHz


@pytest.fixture(scope="module")
def server() -> Iterator[FakeSarvam]:
    yield from serve_sarvam()


@pytest.fixture
def sarvam(server: FakeSarvam, monkeypatch: pytest.MonkeyPatch) -> FakeSarvam:
    """The fake, emptied; loopback allowed for the SSRF guard, as an operator would for a local server."""
    monkeypatch.setenv("PARLEY_OUTBOUND_ALLOW", "127.0.0.1")
    server.faults.clear()
    server.requests.clear()
    return server


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def stt(fake: FakeSarvam, **options: Any) -> SarvamSTT:
    made = stt_registry.create("sarvam", {"base_url": fake.url, "api_key": KEY, **options})
    assert isinstance(made, SarvamSTT)
    return made


def tts(fake: FakeSarvam, **options: Any) -> SarvamTTS:
    made = tts_registry.create("sarvam", {"base_url": fake.url, "api_key": KEY, "language_code": "hi-IN", **options})
    assert isinstance(made, SarvamTTS)
    return made


async def transcribe(provider: SarvamSTT, language: str = "hi") -> str:
    try:
        return await provider.transcribe(PCM, language)
    finally:
        await provider.aclose()


async def speak(provider: SarvamTTS, text: str) -> list[bytes]:
    try:
        return [chunk async for chunk in provider.synthesize(text)]
    finally:
        await provider.aclose()


# --- speech to text ---------------------------------------------------------------------------------------------


def test_stt_sends_a_wav_in_the_agents_language(sarvam: FakeSarvam) -> None:
    assert run(transcribe(stt(sarvam), "hi")) == HINDI
    (seen,) = sarvam.requests
    assert seen["path"] == "/speech-to-text" and seen["headers"]["api-subscription-key"] == KEY
    assert seen["form"] == {"model": "saarika:v2.5", "language_code": "hi-IN"}
    wav = seen["file"]
    assert wav[:4] == b"RIFF" and struct.unpack("<I", wav[24:28])[0] == 16000 and wav[44:] == PCM


def test_stt_language_code_option_wins_and_unknown_detects(sarvam: FakeSarvam) -> None:
    provider = stt(sarvam, language_code="unknown")
    assert run(transcribe(provider, "en")) == HINDI
    assert sarvam.requests[0]["form"]["language_code"] == "unknown"
    assert provider.detected_language == "hi-IN"


def test_stt_translate_gives_english(sarvam: FakeSarvam) -> None:
    assert run(transcribe(stt(sarvam, translate=True))) == ENGLISH
    assert sarvam.requests[0]["path"] == "/speech-to-text-translate"
    assert sarvam.requests[0]["form"] == {"model": "saaras:v2.5"}  # the endpoint detects the language itself
    assert run(transcribe(stt(sarvam, model="saaras:v3", translate=True))) == ENGLISH
    assert sarvam.requests[1]["path"] == "/speech-to-text"
    assert sarvam.requests[1]["form"] == {"model": "saaras:v3", "language_code": "hi-IN", "mode": "translate"}


def test_stt_silence_costs_no_request(sarvam: FakeSarvam) -> None:
    provider = stt(sarvam)
    assert run(provider.transcribe(b"", "hi")) == ""
    run(provider.aclose())
    assert sarvam.requests == []


# --- text to speech ---------------------------------------------------------------------------------------------


def test_tts_decodes_the_wav_into_100ms_chunks(sarvam: FakeSarvam) -> None:
    text = "नमस्ते, आपका स्वागत है"
    provider = tts(sarvam, speaker="vidya", pace=1.2, pitch=0.1, speech_sample_rate=16000)
    chunks = run(speak(provider, text))
    assert provider.sample_rate == 16000 and {len(c) for c in chunks[:-1]} == {3200}
    assert sum(len(c) for c in chunks) // 2 == int(len(text) * MS_PER_CHAR / 1000 * 16000)
    (seen,) = sarvam.requests
    assert seen["path"] == "/text-to-speech" and seen["headers"]["api-subscription-key"] == KEY
    assert seen["json"] == {"text": text, "target_language_code": "hi-IN", "speaker": "vidya", "model": "bulbul:v2",
                            "speech_sample_rate": 16000, "pace": 1.2, "pitch": 0.1}  # fmt: skip


def test_tts_default_voice_and_a_long_text_in_pieces(sarvam: FakeSarvam) -> None:
    text = " ".join(["नमस्ते"] * 400)  # 2,799 characters: over bulbul:v2's 1,500
    chunks = run(speak(tts(sarvam), text))
    assert [len(r["json"]["text"]) for r in sarvam.requests] == [1497, 1301]
    assert {r["json"]["speaker"] for r in sarvam.requests} == {"anushka"}
    assert sum(len(c) for c in chunks) > 0
    assert pieces("ab cd " + "x" * 7, 4) == ["ab", "cd", "xxxx", "xxx"]


def test_tts_v3_takes_temperature_not_pitch(sarvam: FakeSarvam) -> None:
    run(speak(tts(sarvam, model="bulbul:v3", speaker="ritu", temperature=0.4), "हाँ"))
    assert sarvam.requests[0]["json"]["model"] == "bulbul:v3" and sarvam.requests[0]["json"]["temperature"] == 0.4
    with pytest.raises(ValidationError, match="only bulbul:v2 takes pitch"):
        tts(sarvam, model="bulbul:v3", pitch=0.2)


# --- failures -----------------------------------------------------------------------------------------------------

FAULTS = [
    ("403", ErrorKind.AUTH, 403),
    ("429", ErrorKind.RATE_LIMIT, 429),
    ("quota", ErrorKind.QUOTA, 429),
    ("busy", ErrorKind.RATE_LIMIT, 503),
    ("500", ErrorKind.SERVER, 500),
    ("html", ErrorKind.SERVER, 502),
    ("html-200", ErrorKind.BAD_RESPONSE, None),
    ("garbage", ErrorKind.BAD_RESPONSE, None),
]


@pytest.mark.parametrize("fault,kind,status", FAULTS)
def test_stt_failures_are_classified(sarvam: FakeSarvam, fault: str, kind: ErrorKind, status: int | None) -> None:
    sarvam.faults.append(fault)
    with pytest.raises(ProviderError) as caught:
        run(transcribe(stt(sarvam)))
    assert (caught.value.kind, caught.value.status, caught.value.provider) == (kind, status, "sarvam stt")
    assert KEY not in str(caught.value) and "<html" not in str(caught.value)
    assert caught.value.retry_after == (7.0 if fault == "429" else None)


@pytest.mark.parametrize("fault,kind", [("403", ErrorKind.AUTH), ("no-audio", ErrorKind.BAD_RESPONSE)])
def test_tts_failures_are_classified(sarvam: FakeSarvam, fault: str, kind: ErrorKind) -> None:
    sarvam.faults.append(fault)
    with pytest.raises(ProviderError) as caught:
        run(speak(tts(sarvam), "नमस्ते"))
    assert caught.value.kind == kind and caught.value.provider == "sarvam tts"


def test_a_language_sarvam_refuses_is_unsupported(sarvam: FakeSarvam) -> None:
    """Past the document check (made directly), Sarvam's own 400 about the language is a permanent UNSUPPORTED."""
    with pytest.raises(ProviderError) as caught:
        run(transcribe(stt(sarvam, language_code="fr-FR")))
    assert caught.value.kind == ErrorKind.UNSUPPORTED and caught.value.permanent


def test_a_slow_answer_is_a_timeout(sarvam: FakeSarvam) -> None:
    sarvam.faults.append("hang")
    with pytest.raises(ProviderError) as caught:
        run(transcribe(stt(sarvam, timeout_s=0.3)))
    assert caught.value.kind == ErrorKind.TIMEOUT and not caught.value.permanent


def test_a_wrong_key_is_never_written_down(sarvam: FakeSarvam, caplog: pytest.LogCaptureFixture) -> None:
    wrong = "sk_wrong_key_that_must_not_leak_42"
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ProviderError) as caught:
        run(transcribe(stt(sarvam, api_key=wrong)))
    assert caught.value.kind == ErrorKind.AUTH and caught.value.permanent
    assert sarvam.requests[0]["headers"]["api-subscription-key"] == wrong
    assert wrong not in str(caught.value) and wrong not in caplog.text and KEY not in caplog.text


def test_keys_come_from_the_calls_secret_source(sarvam: FakeSarvam) -> None:
    options = {"base_url": sarvam.url, "api_key_env": "SARVAM_TEST_KEY"}
    with pytest.raises(ProviderError, match=r"\$SARVAM_TEST_KEY was not resolved") as caught:
        stt_registry.create("sarvam", options)
    assert caught.value.kind == ErrorKind.AUTH
    source = EnvSecrets(["SARVAM_TEST_KEY"], {"SARVAM_TEST_KEY": KEY})
    resolved = run(resolve_options(SarvamSTT.Options, options, source, "stt"))
    assert run(transcribe(stt_registry.create("sarvam", resolved))) == HINDI  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="Sarvam needs a key"):
        stt_registry.options("sarvam", {})


def test_loopback_is_refused_unless_the_operator_allows_it(sarvam: FakeSarvam, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PARLEY_OUTBOUND_ALLOW")
    with pytest.raises(ProviderError) as caught:
        run(transcribe(stt(sarvam)))
    assert caught.value.kind == ErrorKind.BAD_REQUEST and "loopback" in str(caught.value)
    assert sarvam.requests == []


# --- the language check -------------------------------------------------------------------------------------------


def document(**changes: Any) -> dict[str, Any]:
    key = {"api_key_env": "SARVAM_API_KEY"}
    doc: dict[str, Any] = {
        "name": "Hindi",
        "system_prompt": "आप एक रिसेप्शनिस्ट हैं।",
        "language": "hi-IN",
        "stt": {"provider": "sarvam", "options": dict(key)},
        "llm": {"provider": "canned"},
        "tts": {"provider": "sarvam", "options": {"language_code": "hi-IN", **key}},
    }
    return doc | changes


def sarvam_tts(**options: Any) -> dict[str, Any]:
    return {"provider": "sarvam", "options": {"language_code": "hi-IN", "api_key_env": "SARVAM_API_KEY", **options}}


@pytest.mark.parametrize(
    "changes,error",
    [
        ({"tts": sarvam_tts(speaker="x")}, "tts.options.speaker: Value error, Sarvam bulbul:v2 has no voice 'x'"),
        ({"tts": sarvam_tts(model="bulbul:v3", speaker="anushka")}, "tts.options.speaker"),
        (
            {
                "language": "ta-IN",
                "tts": sarvam_tts(language_code="ta-IN", model="bulbul:v4-flash", speaker="ritu_hi_customer"),
            },
            "tts.options.speaker: Sarvam voice 'ritu_hi_customer' does not speak ta-IN",
        ),
        ({"tts": sarvam_tts(language_code="ta-IN")}, "tts.options.language_code: ta-IN is not the agent's language"),
        ({"tts": sarvam_tts(model="bulbul:v3", loudness=1.2)}, "tts.options.loudness"),
        ({"tts": sarvam_tts(language_code="fr-FR")}, "tts.options.language_code"),
        ({"language": "fr", "stt": {"provider": "whisper"}}, "tts.provider: Sarvam Bulbul does not speak fr"),
        (
            {"language": "as-IN", "tts": {"provider": "tone"}},
            "stt.provider: sarvam (saarika:v2.5) does not recognise as-IN",
        ),
        (
            {
                "stt": {"provider": "whisper", "fallback": [{"provider": "sarvam", "options": {"api_key_env": "K"}}]},
                "language": "as-IN",
                "tts": {"provider": "tone"},
            },
            "stt.fallback.0.provider: sarvam (saarika:v2.5) does not recognise as-IN",
        ),
        (
            {"stt": {"provider": "sarvam", "options": {"language_code": "xx-IN", "api_key_env": "K"}}},
            "stt.options.language_code: Sarvam saarika:v2.5 does not recognise 'xx-IN'",
        ),
    ],
)
def test_language_mistakes_name_their_field(changes: dict[str, Any], error: str) -> None:
    with pytest.raises(AgentDocumentError) as caught:
        parse_agent(document(**changes))
    assert error in str(caught.value), str(caught.value)


def test_languages_that_fit_pass() -> None:
    assert parse_agent(document()).language == "hi-IN"
    saaras = {"provider": "sarvam", "options": {"model": "saaras:v3", "api_key_env": "SARVAM_API_KEY"}}
    assert parse_agent(document(language="as-IN", stt=saaras, tts={"provider": "tone"})).stt.provider == "sarvam"
    persona = sarvam_tts(language_code="en-IN", model="bulbul:v4-flash", speaker="shubh_enhi_ads")
    assert parse_agent(document(language="en-IN", tts=persona)).tts.options["speaker"] == "shubh_enhi_ads"
    auto = {"provider": "sarvam", "options": {"language_code": "unknown", "api_key_env": "SARVAM_API_KEY"}}
    assert parse_agent(document(language="en", stt=auto, tts={"provider": "tone"})).language == "en"


def test_the_helper_matches_by_primary_subtag_and_reads_a_languages_attribute() -> None:
    assert match("hi", ["en-IN", "hi-IN"]) == "hi-IN" and match("OR", ["od-IN"]) == "od-IN"
    assert match("HI-in", ["hi-IN"]) == "hi-IN" and match("fr", ["hi-IN"]) is None

    class Speaks:
        provider_name = "demo"
        languages = ("de-DE", "fr-FR")

    assert problems_for(Speaks, "fr-CA", None) == []
    assert problems_for(Speaks, "hi-IN", None) == [
        LanguageProblem(("provider",), "demo does not speak hi-IN; it speaks de-DE, fr-FR")
    ]
    assert problems_for(object, "hi-IN", None) == []  # a provider that says nothing is not checked


def test_the_hindi_example_validates() -> None:
    doc = load_agent(ROOT / "examples" / "agents" / "hindi.yaml")
    assert doc.language == "hi-IN" and (doc.stt.provider, doc.tts.provider) == ("sarvam", "sarvam")
    assert doc.tts.options["api_key_env"] == doc.stt.options["api_key_env"] == "SARVAM_API_KEY"
    assert "नमस्ते" in doc.greeting and "हिंदी" in doc.system_prompt


# --- the real service ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(not os.environ.get("SARVAM_API_KEY"), reason="needs SARVAM_API_KEY (the real Sarvam API)")
def test_the_real_sarvam_speaks_and_hears_hindi() -> None:
    key = os.environ["SARVAM_API_KEY"]
    voice = tts_registry.create("sarvam", {"api_key": key, "language_code": "hi-IN", "speech_sample_rate": 16000})
    audio = b"".join(run(speak(voice, "नमस्ते, मुझे अपॉइंटमेंट चाहिए")))  # type: ignore[arg-type]
    assert len(audio) > 16000  # over half a second of speech
    ear = stt_registry.create("sarvam", {"api_key": key})
    try:
        text = run(ear.transcribe(audio, "hi"))
    finally:
        run(ear.aclose())
    assert "नमस्ते" in text or "अपॉइंटमेंट" in text, text
