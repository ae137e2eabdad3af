"""Synthetic callers: spoken questions from several voices, for the demo, tests and benchmarks.

The true end of each question is measured from the audio itself (last sample
above a level), so latency can be measured from what a listener would call the
end of speech, not from the VAD's own decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from parley.audio import resample, write_wav

#: name → (TTS provider, options); Piper's Joe and several espeak-ng voices
VOICES: dict[str, tuple[str, dict[str, Any]]] = {
    "joe": ("piper", {}),
    "joe-quick": ("piper", {"length_scale": 0.85}),
    "us-female": ("espeak", {"voice": "en-us+f3", "rate_wpm": 160}),
    "gb-male": ("espeak", {"voice": "en-gb+m3", "rate_wpm": 170}),
    "us-male-fast": ("espeak", {"voice": "en-us+m1", "rate_wpm": 190, "pitch": 40}),
}

RATE = 16000


async def speak(text: str, voice: str = "us-female", rate: int = RATE) -> np.ndarray:
    """``text`` spoken by ``voice`` as int16 mono at ``rate``."""
    from parley.services.tts.fallback import create_tts  # the TTS engines load only when a voice is needed

    provider, options = VOICES[voice]
    tts = create_tts(provider, options, None)
    try:
        pcm = b"".join([chunk async for chunk in tts.synthesize(text)])
    finally:
        await tts.aclose()
    samples = np.frombuffer(pcm, dtype="<i2")
    return resample(samples, tts.sample_rate, rate) if tts.sample_rate != rate else samples.copy()


def speech_bounds(samples: np.ndarray, rate: int, level_dbfs: float = -40.0) -> tuple[float, float]:
    """Start and end (seconds) of the part of ``samples`` louder than ``level_dbfs`` (10 ms resolution)."""
    hop = rate // 100
    n = samples.size // hop
    if n == 0:
        return 0.0, 0.0
    frames = samples[: n * hop].astype(np.float32).reshape(n, hop) / 32768.0
    rms = np.sqrt(np.mean(frames**2, axis=1) + 1e-12)
    loud = np.flatnonzero(20 * np.log10(rms) > level_dbfs)
    if loud.size == 0:
        return 0.0, 0.0
    return float(loud[0] * hop / rate), float((loud[-1] + 1) * hop / rate)


@dataclass
class CallerScript:
    """A caller recording and where each question's speech lies in it."""

    path: Path
    samples: np.ndarray
    sample_rate: int
    spans: list[tuple[float, float]]


async def caller_recording(
    questions: list[str] | tuple[str, ...],
    path: str | Path,
    voice: str = "us-female",
    gap_secs: float = 2.5,
    lead_secs: float = 0.3,
) -> CallerScript:
    """Write the questions, separated by ``gap_secs`` of silence, to a 16 kHz WAV."""
    parts = [np.zeros(int(RATE * lead_secs), dtype=np.int16)]
    spans: list[tuple[float, float]] = []
    t = lead_secs
    for q in questions:
        audio = await speak(q, voice)
        start, end = speech_bounds(audio, RATE)
        spans.append((t + start, t + end))
        parts += [audio, np.zeros(int(RATE * gap_secs), dtype=np.int16)]
        t += (audio.size + int(RATE * gap_secs)) / RATE
    samples = np.concatenate(parts)
    write_wav(path, samples, RATE)
    return CallerScript(Path(path), samples, RATE, spans)
