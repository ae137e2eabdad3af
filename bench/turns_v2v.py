"""Voice-to-voice of complete answers through the whole embedded stack, per detector, with its stages.

Each complete answer of the corpus is one real-time offline call of the
receptionist agent (greeting off; its facts in the prompt, as bench/latency.py runs it), with
``turn.detector`` set. Every stage is
reported as its p50 in ms after the true end of speech (found in the audio), so the
table shows where the time goes: the VAD's lag, the end of turn, the transcript,
the LLM's first token, the first synthesised audio and the first audio out.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from turns_corpus import RATE, ROOT, SETS, spoken

STAGES = ("speech_end", "stt_final", "end_of_turn", "llm_first_token", "tts_first_audio", "first_audio_out")


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


async def _files(voices: list[str], sets: list[str], work: Path) -> list[tuple[str, Path, float]]:
    from parley.audio import write_wav
    from parley.calls.synthetic_caller import speech_bounds

    files = []
    for name in sets:
        for voice in voices:
            for i, text in enumerate(SETS[name]["complete"]):
                samples = np.concatenate([np.zeros(RATE // 5, np.int16), await spoken(text, voice)])
                path = work / f"{name}-{voice}-{i}.wav"
                write_wav(path, samples, RATE)
                files.append((name, path, speech_bounds(samples, RATE)[1]))
    return files


def _summary(samples: list[dict[str, float]], n: int) -> dict[str, Any]:
    v2v = [s["first_audio_out"] for s in samples if "first_audio_out" in s]
    stages = {st: _pct([s[st] for s in samples if st in s], 50) for st in STAGES}
    return {"p50_ms": _pct(v2v, 50), "p95_ms": _pct(v2v, 95), "n": len(v2v), "answered_of": n, "stages_p50_ms": stages}


async def voice_to_voice(voices: list[str], detectors: list[str], sets: list[str]) -> dict[str, Any]:
    """{detector: {set: summary}} for complete answers in real time."""
    from parley.agent.document import load_agent
    from parley.calls.session import Services
    from parley.calls.simulate import simulate_call

    work = Path(tempfile.mkdtemp(prefix="parley-turns-"))
    files = await _files(voices, sets, work)
    from latency import INLINE_PROMPT  # the receptionist's facts, as a call puts its small collection in the prompt

    agent_file = load_agent(ROOT / "examples" / "agents" / "receptionist.yaml")
    base = agent_file.model_copy(update={"greeting": "", "knowledge": None, "system_prompt": INLINE_PROMPT})
    out: dict[str, Any] = {}
    for detector in detectors:
        agent = base.model_copy(update={"turn": base.turn.model_copy(update={"detector": detector})})
        services = await Services.create(agent)
        samples: dict[str, list[dict[str, float]]] = {name: [] for name in sets}
        try:
            for name, path, true_end in files:
                report = (await simulate_call(agent, path, work / "out.wav", services=services)).as_dict()
                times = report["turns"][0]["times"] if report["turns"] else {}
                zero = report["caller_audio_offset"] + true_end
                samples[name].append({k: round((times[k] - zero) * 1000, 1) for k in STAGES if k in times})
        finally:
            await services.aclose()
        out[detector] = {name: _summary(samples[name], sum(f[0] == name for f in files)) for name in sets}
        print(f"v2v {detector}: {out[detector]}", file=sys.stderr)
    out["agent_turn"] = base.turn.model_dump(include={"pause_secs", "end_of_turn_secs"})
    return out
