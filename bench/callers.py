"""The load benchmarks' callers: what they say (a buzz, or synthesized voices) over line noise, as µ-law frames."""

from __future__ import annotations

import asyncio
import base64

import numpy as np

from parley.audio import pcm16_to_ulaw

SENTENCES = [("joe", "What time do you open tomorrow?"), ("us-female", "Can I book a table for four people?"),
             ("gb-male", "Do you have any parking near the station?"), ("joe", "Yes, that works for me.")]  # fmt: skip
PAUSED = ("us-male-fast", "I would like to come in on", "Saturday morning please.")  # 0.4 s pause between


def utterance() -> np.ndarray:
    """1.2 s of a voiced, speech-like sound (a buzz with syllable-rate amplitude), 8 kHz."""
    t = np.arange(int(1.2 * 8000)) / 8000
    syllables = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t)
    buzz = np.sign(np.sin(2 * np.pi * 140 * t)) * 0.5 + np.sin(2 * np.pi * 700 * t) * 0.3
    return (buzz * syllables * 0.3 * 32767).astype(np.int16)


def voices() -> list[np.ndarray]:
    """The synthesized utterances at 8 kHz, trimmed to their speech (the paused one last)."""
    from parley.calls.synthetic_caller import speak, speech_bounds

    async def one(voice: str, text: str) -> np.ndarray:
        pcm = await speak(text, voice, 8000)
        a, b = speech_bounds(pcm, 8000)
        return pcm[int(a * 8000) : int(b * 8000)]

    async def all_of() -> list[np.ndarray]:
        said = [await one(v, t) for v, t in SENTENCES]
        first, second = await one(PAUSED[0], PAUSED[1]), await one(PAUSED[0], PAUSED[2])
        return [*said, np.concatenate([first, np.zeros(int(0.4 * 8000), np.int16), second])]

    return asyncio.run(all_of())


def noisy(pcm: np.ndarray, dbfs: float | None, seed: int) -> np.ndarray:
    """``pcm`` over white line noise at ``dbfs`` (none: digital silence)."""
    if dbfs is None:
        return pcm
    noise = np.random.default_rng(seed).normal(0, 32768 * 10 ** (dbfs / 20), pcm.size)
    return np.clip(pcm + noise, -32768, 32767).astype(np.int16)


def frames_b64(pcm: np.ndarray) -> list[str]:
    data = pcm16_to_ulaw(pcm.tobytes())
    return [base64.b64encode(data[i : i + 160]).decode() for i in range(0, len(data) - 159, 160)]


def caller_audio(speech: str, dbfs: float | None) -> tuple[list[list[str]], list[str]]:
    """(utterances as µ-law frames, 50 frames of line noise) for the callers to send."""
    said = [utterance()] if speech == "buzz" else voices()
    line = frames_b64(noisy(np.zeros(8000, np.int16), dbfs, 99))
    return [frames_b64(noisy(u, dbfs, i)) for i, u in enumerate(said)], line
