"""Piper and espeak-ng TTS with real engines: rates, streaming, barge-in stops the work, missing-engine fallback."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path

import numpy as np
import pytest
import structlog
from pydantic import ValidationError

import parley.services.tts as tts_package
from parley.services.registry import ProviderOptions, UnknownProvider
from parley.services.tts import piper
from parley.services.tts.base import TTS, registry
from parley.services.tts.espeak import EspeakTTS
from parley.services.tts.fallback import create_tts
from parley.services.tts.piper import PiperTTS, clauses

pytestmark = pytest.mark.slow

SHORT = "Your table is booked for tonight."
LONG = (
    "Thanks for calling, I can book a table for four people tomorrow evening at seven, "
    "and I will send a confirmation to the email address on your account."
)


@pytest.fixture(scope="session")
def joe() -> Iterator[PiperTTS]:
    voice = registry.create("piper", {})
    assert isinstance(voice, PiperTTS)
    asyncio.run(voice.prepare())
    yield voice
    piper.shutdown()


async def timed(tts: TTS, text: str) -> tuple[list[bytes], list[float]]:
    """Chunks of ``text`` and the time each one arrived, from the start of synthesis."""
    start, chunks, times = time.perf_counter(), [], []
    async for chunk in tts.synthesize(text):
        chunks.append(chunk)
        times.append(time.perf_counter() - start)
    return chunks, times


def espeak_children() -> list[int]:
    """PIDs of live espeak-ng processes started by this process (from /proc, no helper library)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except (OSError, ValueError):
            continue
        name, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
        if name == "espeak-ng" and int(rest[1]) == os.getpid() and rest[0] != "Z":
            pids.append(int(entry.name))
    return pids


def test_sample_rates(joe: PiperTTS) -> None:
    assert joe.sample_rate == 22050  # from the voice's config
    assert EspeakTTS().sample_rate == 22050


@pytest.mark.parametrize("name", ["piper", "espeak"])
async def test_speaks_pcm16(joe: PiperTTS, name: str) -> None:
    tts = joe if name == "piper" else registry.create("espeak", {})
    chunks, _ = await timed(tts, SHORT)
    assert all(len(c) % 2 == 0 for c in chunks)
    audio = np.frombuffer(b"".join(chunks), dtype=np.int16)
    assert 1.0 < len(audio) / tts.sample_rate < 4.0
    assert np.abs(audio).max() > 3000  # not silence


async def test_nothing_to_say(joe: PiperTTS) -> None:
    assert (await timed(joe, "  "))[0] == []
    assert (await timed(EspeakTTS(), ""))[0] == []


async def test_piper_streams_clause_by_clause(joe: PiperTTS) -> None:
    chunks, times = await timed(joe, LONG)
    assert len(chunks) == len(clauses(LONG)) == 3
    assert times[0] < times[-1] / 2, times


async def test_piper_without_clause_split_is_one_chunk(joe: PiperTTS) -> None:
    chunks, _ = await timed(PiperTTS(PiperTTS.Options(clause_split=False)), LONG)
    assert len(chunks) == 1


async def test_piper_options_reach_the_voice(joe: PiperTTS) -> None:
    normal = sum(map(len, (await timed(joe, SHORT))[0]))
    fast = sum(map(len, (await timed(PiperTTS(PiperTTS.Options(length_scale=0.5)), SHORT))[0]))
    assert fast < 0.7 * normal


async def test_espeak_streams_while_speaking() -> None:
    chunks, times = await timed(EspeakTTS(), " ".join([LONG] * 30))
    assert len(chunks) > 10
    assert times[0] < times[-1] / 4, (times[0], times[-1])


async def test_piper_close_after_first_chunk_stops_worker(joe: PiperTTS) -> None:
    stream = joe.synthesize(" ".join([LONG] * 4))
    await anext(stream)
    start = time.perf_counter()
    await stream.aclose()
    assert time.perf_counter() - start < 0.5
    assert piper.active_jobs() == 0


async def test_piper_cancel_mid_inference_stops_worker(joe: PiperTTS) -> None:
    """Barge-in during a long clause: the running ONNX inference is aborted, not finished."""
    text = "I can book a table for four people tomorrow evening at seven and send a confirmation to your email " * 3

    async def listen() -> None:
        async for _ in joe.synthesize(text):
            pass

    task = asyncio.create_task(listen())
    await asyncio.sleep(0.05)
    assert piper.active_jobs() == 1
    start = time.perf_counter()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.perf_counter() - start < 0.3
    assert piper.active_jobs() == 0


async def test_espeak_close_kills_process() -> None:
    stream = EspeakTTS().synthesize(" ".join([LONG] * 200))
    await anext(stream)
    assert espeak_children(), "espeak-ng should still be speaking"
    await stream.aclose()
    assert espeak_children() == []


async def test_espeak_bad_voice_is_reported() -> None:
    with pytest.raises(RuntimeError, match="espeak-ng failed"):
        await timed(EspeakTTS(EspeakTTS.Options(voice="xx-no-such-voice")), SHORT)


async def test_espeak_text_is_not_parsed_as_options() -> None:
    chunks, _ = await timed(EspeakTTS(), "-v xx --stdout; rm -rf /tmp/nothing")
    assert sum(map(len, chunks)) > 22050  # spoken as text


def test_fallback_when_engine_package_is_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A real provider module whose engine package is not installed: the registry reports it, espeak speaks."""
    (tmp_path / "ghostvoice.py").write_text("import parley_test_engine_that_is_not_installed\n")
    monkeypatch.setattr(tts_package, "__path__", [*tts_package.__path__, str(tmp_path)])
    with pytest.raises(UnknownProvider, match="needs a missing package"):
        registry.get("ghostvoice")
    with structlog.testing.capture_logs() as logs:
        tts = create_tts("ghostvoice", {"anything": 1})
    assert isinstance(tts, EspeakTTS)
    assert [e["provider"] for e in logs if e["log_level"] == "warning"] == ["ghostvoice"]


def test_fallback_when_engine_fails_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoEngine(TTS):
        def __init__(self, options: ProviderOptions) -> None:
            raise RuntimeError("the engine binary is not installed")

        async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
            yield b""

    monkeypatch.setitem(registry._classes, "no-engine", NoEngine)
    assert isinstance(create_tts("no-engine", {}), EspeakTTS)
    with pytest.raises(RuntimeError):
        create_tts("no-engine", {}, fallback=None)


def test_configuration_errors_do_not_fall_back() -> None:
    with pytest.raises(UnknownProvider, match="unknown tts provider"):
        create_tts("pipr", {})
    with pytest.raises(ValidationError):
        create_tts("piper", {"length": 1.0})
    with pytest.raises(ValidationError):
        create_tts("espeak", {"rate_wpm": 5})


def test_clauses() -> None:
    assert clauses("Yes, I can help.") == ["Yes, I can help."]
    assert clauses("It costs 1,000 dollars; that is all.") == ["It costs 1,000 dollars;", "that is all."]
    assert clauses(LONG)[0] == "Thanks for calling,"
