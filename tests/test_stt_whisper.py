"""Whisper tiny.en with real models: Piper and espeak-ng voices round-trip, silence and noise stay empty, offline."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soxr
from pydantic import ValidationError

from parley.services.stt import whisper
from parley.services.stt.base import registry
from parley.services.stt.whisper import WhisperSTT
from parley.services.tts.base import TTS
from parley.services.tts.base import registry as tts_registry

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
# sentence, words that must come back (numbers left out: Whisper writes "4" for "four")
PHRASES = {
    "table": ("I would like to book a table for four people tomorrow.", "book table people tomorrow"),
    "cancel": ("Please cancel my appointment on Thursday afternoon.", "cancel appointment thursday afternoon"),
    "hours": ("What time do you open on Saturday morning?", "what time open saturday morning"),
    "name": ("My name is Sarah Johnson.", "name johnson"),
    "bill": ("I want to pay my bill.", "want pay bill"),
}
VOICES = {"piper": {}, "espeak": {"voice": "en-us"}}


def words(text: str) -> set[str]:
    return set(re.sub(r"[^a-z0-9' ]", " ", text.lower()).split())


def to_pcm16k(samples: np.ndarray, rate: int) -> bytes:
    return np.asarray(soxr.resample(samples.astype(np.int16), rate, 16000), dtype=np.int16).tobytes()


def speak(tts: TTS, text: str) -> bytes:
    """``text`` spoken by ``tts``, as PCM16 at 16 kHz."""

    async def collect() -> bytes:
        return b"".join([chunk async for chunk in tts.synthesize(text)])

    return to_pcm16k(np.frombuffer(asyncio.run(collect()), dtype=np.int16), tts.sample_rate)


@pytest.fixture(scope="session")
def stt() -> Iterator[WhisperSTT]:
    model = registry.create("whisper", {})
    assert isinstance(model, WhisperSTT)
    asyncio.run(model.prepare())
    yield model
    whisper.shutdown()


@pytest.fixture(scope="session")
def utterances() -> dict[tuple[str, str], bytes]:
    """Every phrase in every voice, synthesized once per session."""
    voices = {name: tts_registry.create(name, opts) for name, opts in VOICES.items()}
    return {(v, key): speak(voices[v], text) for v in voices for key, (text, _) in PHRASES.items()}


@pytest.mark.parametrize("voice", VOICES)
@pytest.mark.parametrize("phrase", PHRASES)
async def test_round_trip(stt: WhisperSTT, utterances: dict[tuple[str, str], bytes], voice: str, phrase: str) -> None:
    text = await stt.transcribe(utterances[(voice, phrase)])
    missing = words(PHRASES[phrase][1]) - words(text)
    assert not missing, f"{voice}: {text!r} lacks {missing}"


def noise(seconds: float, dbfs: float, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 32768 * 10 ** (dbfs / 20), int(seconds * 16000))
    return np.clip(x, -32768, 32767).astype(np.int16).tobytes()


@pytest.mark.parametrize(
    "pcm",
    [
        pytest.param(bytes(2 * 32000), id="silence"),
        pytest.param(noise(2.0, -20, 1), id="white-noise-loud"),
        pytest.param(noise(3.0, -35, 2), id="white-noise"),
        pytest.param(noise(2.0, -60, 3), id="white-noise-faint"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\x01", id="one-byte"),
    ],
)
async def test_nothing_said_is_empty(stt: WhisperSTT, pcm: bytes) -> None:
    assert await stt.transcribe(pcm) == ""


async def test_speech_after_leading_silence(stt: WhisperSTT, utterances: dict[tuple[str, str], bytes]) -> None:
    pcm = bytes(2 * 8000) + utterances[("espeak", "cancel")] + bytes(2 * 16000)
    assert {"cancel", "appointment"} <= words(await stt.transcribe(pcm))


async def test_short_window_is_faster_and_agrees(utterances: dict[tuple[str, str], bytes]) -> None:
    """The short encoder window is the speed choice of this module; the stock 30 s path is the reference."""
    pcm = utterances[("piper", "table")]
    fast, stock = WhisperSTT(), WhisperSTT(WhisperSTT.Options(short_window=False))
    timings: dict[str, float] = {}
    for name, model in (("fast", fast), ("stock", stock)):
        await model.transcribe(pcm)
        start = time.perf_counter()
        text = await model.transcribe(pcm)
        timings[name] = time.perf_counter() - start
        assert words(PHRASES["table"][1]) <= words(text), (name, text)
    assert timings["fast"] < timings["stock"], timings


async def test_event_loop_keeps_running(stt: WhisperSTT, utterances: dict[tuple[str, str], bytes]) -> None:
    gaps: list[float] = []
    done = asyncio.Event()

    async def tick() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    await stt.transcribe(utterances[("piper", "cancel")])
    done.set()
    await ticker
    assert len(gaps) > 3 and max(gaps) < 0.1, max(gaps)


async def test_instances_share_one_model(stt: WhisperSTT, utterances: dict[tuple[str, str], bytes]) -> None:
    other = registry.create("whisper", {"beam_size": 2})  # decoding option: same weights
    assert "bill" in words(await other.transcribe(utterances[("piper", "bill")]))
    assert len(whisper._cache._models) == 1


def test_options_are_checked() -> None:
    with pytest.raises(ValidationError):
        registry.options("whisper", {"beam": 2})
    with pytest.raises(ValidationError):
        registry.options("whisper", {"cpu_threads": -1})
    with pytest.raises(RuntimeError, match=r"model\.bin"):
        registry.create("whisper", {"model_path": str(ROOT)})


@pytest.mark.parametrize(
    ("words_", "looped"),
    [("no", False), ("no no no", True), ("speak to a human speak to a human speak", True), ("yes i said yes", False)],
)
def test_loop_detector(words_: str, looped: bool) -> None:
    assert whisper._looped(words_.split()) is looped


OFFLINE_SCRIPT = """
import asyncio, socket

def refuse(*args, **kwargs):
    raise OSError("network access during an offline test")

socket.socket.connect = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse

import numpy as np, soxr
from parley.services.stt.base import registry as stt
from parley.services.tts.base import registry as tts

async def main():
    recognizer, voice = stt.create("whisper", {}), tts.create("piper", {})
    await recognizer.prepare()
    pcm = b"".join([c async for c in voice.synthesize("Please cancel my appointment.")])
    audio = soxr.resample(np.frombuffer(pcm, dtype=np.int16), voice.sample_rate, 16000)
    print(await recognizer.transcribe(np.asarray(audio, dtype=np.int16).tobytes()))

asyncio.run(main())
"""


def test_models_load_without_network() -> None:
    """A fresh process with HF_HUB_OFFLINE=1 and every socket connect refused still loads and runs both models."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE"))} | {"HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", OFFLINE_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert {"cancel", "appointment"} <= words(proc.stdout), proc.stdout


async def test_shutdown_stops_the_worker(utterances: dict[tuple[str, str], bytes]) -> None:
    model = WhisperSTT()
    await model.transcribe(utterances[("piper", "bill")])
    whisper.shutdown()
    assert not [t for t in threading.enumerate() if t.name.startswith(whisper.THREAD_PREFIX)]
    assert "bill" in words(await model.transcribe(utterances[("piper", "bill")]))  # reloads on demand
