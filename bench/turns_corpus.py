"""The turns bench's callers: who says what, with which pause (see bench/turns.py).

Two kinds of turn, as the issue asks: **paused** (a sentence with a mid-sentence
pause, synthesised whole with a comma at the break so the first half has the
continuing intonation of a phrase that goes on; the comma's gap is replaced by
0.5–1.3 s of silence) and **complete** (a short whole answer).

The sentences come in two sets. ``DEV`` is what the judge's rules were developed
against; ``HELD_OUT`` was written before the rules were tuned and is never tuned on:
its figures are reported separately, and they are the honest ones. Its breaks are
of kinds the dev set does not have ("any", "could I get", a date of birth).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import numpy as np

from parley.calls.synthetic_caller import VOICES as CALLER_VOICES
from parley.calls.synthetic_caller import speech_bounds

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / ".corpus" / "turns"
RATE = 16000
PAUSES = [0.5, 0.7, 0.9, 1.1, 1.3]

DEV: dict[str, list[Any]] = {
    "paused": [
        ("I'd like to book an appointment for", "next Tuesday."),
        ("My number is five five five", "zero one three four."),
        ("Can I speak to", "the dentist please?"),
        ("I was wondering if", "you are open on Sunday."),
        ("I need to cancel my", "appointment on Friday."),
        ("Could you tell me", "how much a cleaning costs?"),
        ("I'm calling about", "my daughter's check-up."),
        ("We'd like to come in on", "Thursday afternoon."),
    ],
    "complete": [
        "Yes.",
        "No, thank you.",
        "Saturday please.",
        "That's all, thanks.",
        "Next Tuesday at ten.",
        "My number is five five five, zero one three four.",
        "What time do you open tomorrow?",
        "Can I book a cleaning?",
    ],
}
HELD_OUT: dict[str, list[Any]] = {
    "paused": [
        ("I'm looking for", "a dentist who takes my insurance."),
        ("Is it possible to", "move my cleaning to the morning?"),
        ("My date of birth is", "March third, nineteen eighty."),
        ("Do you have any", "openings next week?"),
        ("Could I get", "a reminder by text message?"),
        ("The last time I came in was", "about six months ago."),
        ("Would you be able to", "call me back this afternoon?"),
        ("My zip code is nine four one", "oh seven."),
    ],
    "complete": [
        "Thanks, that's everything.",
        "Yes, that works for me.",
        "Around three o'clock.",
        "I'll call back later.",
        "Is the parking free?",
        "Maybe next week.",
        "My name is Sarah Jones.",
        "It's four one five, five five five, two six seven one.",
    ],
}
SETS = {"dev": DEV, "held_out": HELD_OUT}

#: name -> (TTS provider, options): the synthetic callers' voices (Piper's Joe at two speeds, three espeak-ng
#: voices) plus three more espeak-ng accents, sexes and rates
VOICES: dict[str, tuple[str, dict[str, Any]]] = CALLER_VOICES | {
    "gb-female-slow": ("espeak", {"voice": "en-gb+f4", "rate_wpm": 140, "pitch": 60}),
    "scottish-male": ("espeak", {"voice": "en-gb-scotland+m2", "rate_wpm": 165}),
    "caribbean-female": ("espeak", {"voice": "en-029+f2", "rate_wpm": 175}),
}
DEFAULT_VOICES = list(VOICES)


async def spoken(text: str, voice: str) -> np.ndarray:
    """``text`` in ``voice`` at 16 kHz, cached under bench/.corpus (synthesis is the slow part)."""
    from parley.audio import resample
    from parley.services.tts.fallback import create_tts

    provider, options = VOICES[voice]
    key = hashlib.sha256(f"{provider}\n{sorted(options.items())}\n{text}".encode()).hexdigest()[:16]
    path = CACHE / f"{voice}-{key}.npy"
    if path.exists():
        return np.load(path)
    tts = create_tts(provider, options, None)
    try:
        pcm = b"".join([chunk async for chunk in tts.synthesize(text)])
    finally:
        await tts.aclose()
    samples = np.frombuffer(pcm, dtype="<i2")
    samples = resample(samples, tts.sample_rate, RATE) if tts.sample_rate != RATE else samples.copy()
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, samples)
    return samples


def comma_gap(samples: np.ndarray, level_dbfs: float = -45.0) -> tuple[int, int] | None:
    """The longest quiet run inside the speech (the comma's pause), as sample indices."""
    start, end = speech_bounds(samples, RATE)
    hop = RATE // 100
    n = samples.size // hop
    peak = np.abs(samples[: n * hop].astype(np.float32)).reshape(n, hop).max(axis=1)
    quiet = peak < 32768 * 10 ** (level_dbfs / 20)
    best, run_start = (0, 0), None
    for i in range(int(start * 100) + 1, int(end * 100)):
        if quiet[i] and run_start is None:
            run_start = i
        elif not quiet[i] and run_start is not None:
            if i - run_start > best[1] - best[0]:
                best = (run_start, i)
            run_start = None
    return (best[0] * hop, best[1] * hop) if best[1] - best[0] >= 5 else None  # at least 50 ms


async def halves(first: str, second: str, voice: str) -> tuple[np.ndarray, np.ndarray]:
    """The sentence cut at its comma; a voice that leaves no gap there says ``first,`` and ``second`` apart."""
    whole = await spoken(f"{first}, {second}", voice)
    gap = comma_gap(whole)
    if gap is not None:
        return whole[: gap[0]], whole[gap[1] :]
    a, b = await spoken(f"{first},", voice), await spoken(second, voice)
    print(f"no comma gap, halves said apart: {voice} {first!r}", file=sys.stderr)
    return a[: int(speech_bounds(a, RATE)[1] * RATE)], b[int(speech_bounds(b, RATE)[0] * RATE) :]


async def corpus(voices: list[str], sets: list[str]) -> list[dict[str, Any]]:
    """Every turn as {set, kind, voice, text, audio, speech_end, pause: (start, end) or None}."""
    lead, tail = np.zeros(RATE // 2, np.int16), np.zeros(int(2.5 * RATE), np.int16)
    items: list[dict[str, Any]] = []
    for name in sets:
        for voice in voices:
            for first, second in SETS[name]["paused"]:
                head, rest = await halves(first, second, voice)
                for pause in PAUSES:
                    audio = np.concatenate([lead, head, np.zeros(int(pause * RATE), np.int16)])
                    resume = audio.size / RATE
                    audio = np.concatenate([audio, rest, tail])
                    p0 = (lead.size + head.size) / RATE
                    item: dict[str, Any] = {"set": name, "kind": "paused", "voice": voice, "pause_secs": pause}
                    item.update(text=f"{first} … {second}", audio=audio, pause=(p0, resume))
                    items.append(item | {"speech_end": speech_bounds(audio, RATE)[1]})
            for text in SETS[name]["complete"]:
                audio = np.concatenate([lead, await spoken(text, voice), tail])
                done: dict[str, Any] = {"set": name, "kind": "complete", "voice": voice, "text": text, "audio": audio}
                items.append(done | {"pause": None, "speech_end": speech_bounds(audio, RATE)[1]})
    return items
