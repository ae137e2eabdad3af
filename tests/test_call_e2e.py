"""Whole offline calls through the real embedded stack (Silero, Whisper, SmolLM2, Piper).

Callers are synthesized speech (Piper's voice and espeak-ng's), so transcripts and
replies are real; calls run with the fast clock, which keeps simulated time.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from parley.agent.document import AgentDocument, load_agent
from parley.audio import pcm16_to_ulaw, read_wav, resample, write_wav
from parley.calls.session import Services
from parley.calls.simulate import simulate_call
from parley.calls.synthetic_caller import caller_recording, speak, speech_bounds
from parley.services.stt.base import registry as stt_registry

from .support.audio import noise, silence

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def agent() -> AgentDocument:
    return load_agent(ROOT / "examples" / "agents" / "receptionist.yaml")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def services(agent: AgentDocument) -> AsyncIterator[Services]:
    s = await Services.create(agent)
    yield s
    await s.aclose()


def words(text: str) -> set[str]:
    return {w.strip(".,!?;:'\"").lower() for w in text.split()}


async def transcribe(samples: np.ndarray, rate: int) -> str:
    stt = stt_registry.create("whisper")
    pcm = resample(samples, rate, 16000) if rate != 16000 else samples
    return await stt.transcribe(np.asarray(pcm, dtype="<i2").tobytes())


async def test_multi_turn_call_with_real_speech(agent: AgentDocument, services: Services, tmp_path: Path) -> None:
    script = await caller_recording(
        ["What are your opening hours on Saturday?", "How much does a cleaning cost?"],
        tmp_path / "caller.wav",
        voice="joe-quick",
        gap_secs=15.0,  # room for a whole reply: this test is not about barge-in
    )
    out = tmp_path / "call.wav"
    report = await simulate_call(agent, script.path, out, fast=True, services=services)

    assert report.errors == []
    assert report.greeting is not None and "Bright Smile" in report.greeting.agent_text
    assert len(report.turns) == 2, [t.caller_text for t in report.turns]
    assert {"saturday", "hours"} & words(report.turns[0].caller_text)
    assert {"cleaning", "cost"} & words(report.turns[1].caller_text)
    for turn, (_, true_end) in zip(report.turns, script.spans, strict=True):
        t = turn.times
        assert turn.agent_text and not turn.interrupted
        assert t["speech_end"] <= t["end_of_turn"] <= t["first_audio_out"]
        assert t["stt_final"] <= t["llm_first_token"] <= t["tts_first_audio"] <= t["first_audio_out"] + 0.02
        assert turn.voice_to_voice is not None and 0 < turn.voice_to_voice < 5
        # the VAD's speech end is close to the true end of speech in the recording
        assert abs(t["speech_end"] - (report.caller_audio_offset + true_end)) < 0.2

    # the recording: stereo, caller left exactly as fed (after the greeting), agent right
    rec = read_wav(out)
    assert rec.channels == 2 and rec.sample_rate == 16000
    assert rec.duration == pytest.approx(report.duration, abs=0.05)
    left, right = rec.samples[:, 0], rec.samples[:, 1]
    start = round(report.caller_audio_offset * 16000)
    np.testing.assert_array_equal(left[start : start + script.samples.size], script.samples)
    first_reply = report.turns[0].times["first_audio_out"]
    agent_reply = right[int(first_reply * 16000) : int((first_reply + 4) * 16000)]
    assert speech_bounds(agent_reply, 16000) != (0.0, 0.0)
    heard = await transcribe(right[: int(report.caller_audio_offset * 16000)], 16000)
    assert {"bright", "smile", "dental", "calling"} & words(heard), heard


async def test_telephone_ulaw_recording(agent: AgentDocument, services: Services, tmp_path: Path) -> None:
    speech = await speak("Where is your office?", "us-male-fast")
    samples = np.concatenate([silence(0.3), speech, silence(1.0)])
    path = tmp_path / "caller.ulaw"
    path.write_bytes(pcm16_to_ulaw(resample(samples, 16000, 8000).astype("<i2").tobytes()))
    report = await simulate_call(agent, path, tmp_path / "call.wav", fast=True, services=services)
    assert len(report.turns) == 1
    assert {"office", "where"} & words(report.turns[0].caller_text)
    assert report.turns[0].agent_text


async def test_silence_only_gets_the_greeting_and_no_reply(
    agent: AgentDocument, services: Services, tmp_path: Path
) -> None:
    write_wav(tmp_path / "silence.wav", silence(4.0), 16000)
    report = await simulate_call(agent, tmp_path / "silence.wav", tmp_path / "call.wav", fast=True, services=services)
    assert report.turns == [] and report.errors == []
    assert report.greeting is not None and report.greeting.agent_text.startswith("Hello")
    assert report.end_reason == "input-ended"


async def test_noise_is_not_a_caller(agent: AgentDocument, services: Services, tmp_path: Path) -> None:
    write_wav(tmp_path / "noise.wav", noise(5.0, dbfs=-30), 16000)
    report = await simulate_call(agent, tmp_path / "noise.wav", tmp_path / "call.wav", fast=True, services=services)
    assert report.errors == []
    assert all(not t.caller_text for t in report.turns)


async def test_interruption_in_the_middle_of_the_first_word(
    agent: AgentDocument, services: Services, tmp_path: Path
) -> None:
    """The caller talks over the greeting 0.2 s into it: the agent stops at once and answers."""
    question = await speak("Sorry, are you open on Sunday?", "joe-quick")
    write_wav(tmp_path / "caller.wav", np.concatenate([silence(0.2), question, silence(2.0)]), 16000)
    out = tmp_path / "call.wav"
    report = await simulate_call(
        agent, tmp_path / "caller.wav", out, fast=True, services=services, wait_for_greeting=False
    )
    assert report.greeting is not None
    assert report.greeting.interrupted
    assert report.greeting.agent_text == ""  # not even "Hello" was heard in full
    assert len(report.turns) == 1 and {"sunday", "open"} & words(report.turns[0].caller_text)
    assert report.turns[0].agent_text
    # the agent channel goes quiet within ~100 ms of the caller's first sound, until the answer
    right = read_wav(out).samples[:, 1]
    speech_start = 0.2 + speech_bounds(question, 16000)[0]
    answer = report.turns[0].times["first_audio_out"]
    # up to the frame before the answer: first_audio_out is stamped as its first frame leaves, just after it is recorded
    quiet = right[int((speech_start + 0.1) * 16000) : int((answer - 0.02) * 16000)]
    assert np.abs(quiet.astype(np.int32)).max() < 200


async def test_barge_in_during_a_reply_keeps_only_what_was_heard(
    agent: AgentDocument, services: Services, tmp_path: Path
) -> None:
    q1 = await speak("Tell me about all the services you offer and your prices.", "joe-quick")
    q2 = await speak("Thanks, and where are you?", "joe-quick")
    end1 = speech_bounds(q1, 16000)[1]
    # the second question starts 2.2 s after the first ends: the agent is mid-reply by then
    gap = 2.2 - (q1.size / 16000 - end1)
    write_wav(tmp_path / "caller.wav", np.concatenate([q1, silence(gap), q2, silence(2.0)]), 16000)
    report = await simulate_call(agent, tmp_path / "caller.wav", tmp_path / "call.wav", fast=True, services=services)
    assert len(report.turns) == 2
    first = report.turns[0]
    assert first.interrupted
    assert first.agent_text_generated, "the reply was being generated"
    heard = first.agent_text.split()
    assert heard, "the caller heard the start of the reply (it began ~0.6 s after the question)"
    assert len(heard) < len(first.agent_text_generated.split())
    assert first.agent_text_generated.startswith(first.agent_text.rstrip(".,!?")[: len(first.agent_text) - 1])
    assert report.turns[1].agent_text and not report.turns[1].interrupted
    # the LLM's context keeps the interrupted reply only as far as it was played
    assert report.context[0] == {"user": first.caller_text, "assistant": first.agent_text}
    assert report.context[1]["assistant"] == report.turns[1].agent_text


async def test_a_sixty_second_monologue(agent: AgentDocument, services: Services, tmp_path: Path) -> None:
    """A caller who talks for a minute without pausing: the turn is cut at max_turn_secs and answered."""
    story = (
        "My tooth has been hurting for weeks and I do not know what to do. It started after a trip to the mountains "
        "last winter. At first it was only when I drank something cold. Then it began to ache at night as well. "
        "My sister said I should try salt water, so I did that every evening. It helped for a few days at most. "
        "Last Tuesday the pain moved to the left side of my jaw. I could hardly eat my lunch at work. "
        "My manager told me to call a dentist straight away. I have never been to your clinic before. "
        "A friend of mine recommended you because you were kind to her children. She said the waiting room has "
        "a big aquarium with yellow fish. I am a little nervous about dentists in general. "
        "The last time I had a filling it took almost two hours. I also want to ask about the price of a cleaning. "
        "And I wonder whether you are open early in the morning. I start work at nine so eight would be perfect. "
        "I could also come on a Saturday if that is easier for you."
    )
    sentences = story.split(". ")
    parts: list[np.ndarray] = []
    for sentence in sentences + sentences[:7]:  # the story, then its start again: over a minute
        parts += [await speak(sentence, "joe-quick"), silence(0.08)]  # breaths shorter than a pause
    assert sum(p.size for p in parts) > 60 * 16000
    write_wav(tmp_path / "monologue.wav", np.concatenate([*parts, silence(1.0)]), 16000)
    report = await simulate_call(
        agent,
        tmp_path / "monologue.wav",
        tmp_path / "call.wav",
        fast=True,
        services=services,
    )
    assert report.errors == []
    assert len(report.turns) >= 2
    texts = [t.caller_text for t in report.turns]
    assert all(len(words(t)) > 20 for t in texts[:2]), texts
    assert {"tooth", "hurting"} & words(texts[0]), texts
    assert report.turns[-1].agent_text, "the monologue gets an answer at its end"
    assert report.duration > 60


@pytest.mark.filterwarnings("ignore::pytest.PytestWarning")
def test_cli_call_writes_the_recording_and_report(tmp_path: Path) -> None:
    """The command a user runs, in a subprocess, as in the README."""
    import json
    import subprocess
    import sys

    speech = np.concatenate([silence(0.2), espeak_question(), silence(1.5)])
    write_wav(tmp_path / "question.wav", speech, 16000)
    result = subprocess.run(
        [sys.executable, "-m", "parley.cli", "call", str(ROOT / "examples/agents/receptionist.yaml"),
         "--input", str(tmp_path / "question.wav"), "--output", str(tmp_path / "call.wav"),
         "--report", str(tmp_path / "r.json"), "--fast",
         "--knowledge", f"bright-smile={ROOT / 'examples/agents/knowledge/bright-smile.md'}"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PARLEY_DATA_DIR": str(tmp_path / "data")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "voice-to-voice" in result.stdout and "Do you have parking" in result.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert len(report["turns"]) == 1
    turn = report["turns"][0]
    assert set(turn) >= {"caller_text", "agent_text", "interrupted", "times", "voice_to_voice"}
    assert set(turn["times"]) >= {
        "speech_end", "stt_final", "llm_first_token", "tts_first_audio", "first_audio_out"
    }  # fmt: skip
    assert turn["voice_to_voice"] == pytest.approx(
        turn["times"]["first_audio_out"] - turn["times"]["speech_end"], abs=2e-3
    )
    assert read_wav(tmp_path / "call.wav").channels == 2
    assert turn["citations"] and turn["citations"][0]["collection"] == "bright-smile"  # answered from the file


def espeak_question() -> np.ndarray:
    from .support.audio import espeak

    return espeak("Do you have parking near the office?")
