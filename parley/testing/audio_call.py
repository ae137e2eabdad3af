"""A scripted call in audio: the caller's turns spoken by a synthetic voice (or taken from recordings) into one
WAV, run through the whole offline call (VAD, STT, LLM, TTS) on the fast clock, read back from its report.

``phone`` sends the caller through what a phone line does to it (8 kHz, µ-law there and back); ``noise_db`` adds
white noise at that level (dBFS, seeded: the same every run).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from parley.agent.document import AgentDocument
from parley.audio import load_audio, resample, ulaw_decode, ulaw_encode, write_wav
from parley.calls.session import Services
from parley.calls.simulate import CallReport, caller_pcm, simulate_call
from parley.calls.synthetic_caller import RATE, speak
from parley.pipeline.frames import EndReason
from parley.testing.expect import CallResult, TurnResult
from parley.testing.scenarios import Scenario, TestFile

PHONE_RATE = 8000
LEAD_SECS = 0.3


async def _turn_audio(tests: TestFile, scenario: Scenario, index: int) -> np.ndarray:
    turn = scenario.turns[index]
    if turn.wav is not None:
        return np.frombuffer(caller_pcm(load_audio(tests.path(turn.wav))), dtype="<i2")
    return await speak(turn.caller or "", scenario.voice)


def phone_line(samples: np.ndarray, rate: int = RATE) -> np.ndarray:
    """``samples`` as they arrive over a phone call: down to 8 kHz, µ-law encoded and decoded, back up."""
    narrow = resample(samples, rate, PHONE_RATE)
    return np.asarray(resample(ulaw_decode(ulaw_encode(narrow)), PHONE_RATE, rate), dtype=np.int16)


def add_noise(samples: np.ndarray, level_dbfs: float, seed: int = 0) -> np.ndarray:
    rms = 32768.0 * 10 ** (level_dbfs / 20)
    noise = np.random.default_rng(seed).normal(0.0, rms, samples.size)
    return np.clip(samples.astype(np.float64) + noise, -32768, 32767).astype(np.int16)


async def turn_samples(tests: TestFile, scenario: Scenario, seed: int = 0) -> list[np.ndarray]:
    """Each caller turn's audio at 16 kHz, through the phone line and noise the scenario asks for."""
    out = []
    for i in range(len(scenario.turns)):
        samples = await _turn_audio(tests, scenario, i)
        if scenario.phone:
            samples = phone_line(samples)
        if scenario.noise_db is not None:
            samples = add_noise(samples, scenario.noise_db, seed + i)
        out.append(samples)
    return out


async def caller_wav(tests: TestFile, scenario: Scenario, path: Path, seed: int = 0) -> None:
    """The scenario's caller side as one 16 kHz WAV: each turn, then its pause."""
    parts = [np.zeros(int(RATE * LEAD_SECS), dtype=np.int16)]
    for turn, samples in zip(scenario.turns, await turn_samples(tests, scenario, seed), strict=True):
        parts += [samples, np.zeros(int(RATE * turn.pause_ms / 1000), dtype=np.int16)]
    write_wav(path, np.concatenate(parts), RATE)


def from_report(report: CallReport) -> CallResult:
    """The call's report as a test result: heard is the transcript, reply what the caller heard."""
    result = CallResult(
        greeting=report.greeting.agent_text if report.greeting else "",
        end_reason=report.end_reason,
        errors=list(report.errors),
    )
    for i, rec in enumerate(report.turns, start=1):
        actions = [
            {"action": e.get("action", ""), "target": e.get("target", ""), "reason": e.get("reason", "")}
            for e in rec.events
            if e.get("type") == "action"
        ]
        result.turns.append(
            TurnResult(
                index=i,
                heard=rec.caller_text,
                reply=rec.agent_text,
                actions=actions,
                events=[e for e in rec.events if e.get("type") != "action"],
                voice_to_voice=rec.voice_to_voice,
                interrupted=rec.interrupted,
            )
        )
    if result.turns and report.end_reason == EndReason.AGENT_HANGUP:
        last = result.turns[-1]
        if not any(a["action"] == "hang_up" for a in last.actions):
            last.actions.append({"action": "hang_up", "target": "", "reason": ""})
    return result


async def run_audio_call(
    agent: AgentDocument, tests: TestFile, scenario: Scenario, services: Services, work: Path, seed: int = 0
) -> CallResult:
    """One run of an audio scenario; its caller WAV and the call's stereo recording are left in ``work``."""
    await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
    caller = work / f"caller-{seed}.wav"
    await caller_wav(tests, scenario, caller, seed)
    report = await simulate_call(
        agent, caller, work / f"call-{seed}.wav", fast=True, services=services, variables=scenario.variables
    )
    return from_report(report)
