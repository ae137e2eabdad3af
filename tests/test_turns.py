"""VAD and turn-taking on real speech (espeak-ng voices) through the real Silero model."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from parley.agent.document import InterruptionSettings, TurnSettings, VADSettings
from parley.calls.synthetic_caller import speech_bounds
from parley.pipeline.frames import (
    AgentSpoke,
    AudioIn,
    EndOfTurn,
    Frame,
    Interruption,
    SpeechStarted,
    StageTime,
    TurnResumed,
    UserTurn,
)
from parley.processors.turns import TurnTaker
from parley.services.vad.silero import SileroVAD

from .support.audio import espeak, noise, silence
from .support.frames import Send, Upstream, run_frames


async def run_turns(
    audio: np.ndarray, rate: int = 16000, greeting_playing: bool = False, **turn: float
) -> tuple[list[Frame], TurnTaker]:
    taker = TurnTaker(SileroVAD(), VADSettings(), TurnSettings(**turn), InterruptionSettings())
    step = rate // 50
    sends: list[Send] = [] if greeting_playing else [Upstream(AgentSpoke(turn_id=0))]
    for k in range(0, audio.size // step):
        pcm = audio[k * step : (k + 1) * step].astype("<i2").tobytes()
        sends.append(AudioIn(pcm=pcm, sample_rate=rate, t=k * 0.02))
    ran = await run_frames(taker, sends, sample_rate=rate, end=None)
    return [f for f in ran.down if not isinstance(f, AudioIn)], taker


async def test_two_questions_make_two_turns_with_accurate_speech_end() -> None:
    q1, q2 = espeak("What time do you open tomorrow?"), espeak("And where are you?", voice="en-gb")
    audio = np.concatenate([silence(0.5), q1, silence(1.5), q2, silence(1.5)])
    frames, _ = await run_turns(audio)
    ends = [f for f in frames if isinstance(f, EndOfTurn)]
    assert [e.turn_id for e in ends] == [1, 2]
    true_end1 = 0.5 + speech_bounds(q1, 16000)[1]
    speech_end = next(f.t for f in frames if isinstance(f, StageTime) and f.stage == "speech_end" and f.turn_id == 1)
    assert abs(speech_end - true_end1) < 0.15
    # the utterance was sent for STT at the pause, before the end of turn was declared
    first_turn = next(f for f in frames if isinstance(f, UserTurn) and f.turn_id == 1)
    assert first_turn.t < ends[0].t
    assert ends[0].t - true_end1 == pytest.approx(0.45, abs=0.15)
    assert len(first_turn.pcm) / 2 / 16000 == pytest.approx(len(q1) / 16000, abs=0.4)
    before_end = frames[: frames.index(ends[0])]
    assert not any(isinstance(f, Interruption) for f in before_end)  # nobody was speaking over the agent
    # turn 1's reply never reported back as spoken, so the second question barges in on it
    assert any(type(f) is Interruption for f in frames[frames.index(ends[0]) :])


async def test_a_short_pause_inside_a_sentence_resumes_the_same_turn() -> None:
    part1, part2 = espeak("I would like to book"), espeak("a cleaning on Monday")
    audio = np.concatenate([silence(0.3), part1, silence(0.3), part2, silence(1.0)])
    frames, _ = await run_turns(audio, pause_secs=0.2, end_of_turn_secs=0.6)
    assert [f.turn_id for f in frames if isinstance(f, EndOfTurn)] == [1]
    assert any(isinstance(f, TurnResumed) for f in frames)
    turns = [f for f in frames if isinstance(f, UserTurn)]
    assert len(turns[-1].pcm) > len(turns[0].pcm)  # the last attempt holds the whole sentence


@pytest.mark.parametrize("audio", [silence(3.0), noise(3.0, dbfs=-35)], ids=["silence", "noise"])
async def test_silence_and_steady_noise_are_not_turns(audio: np.ndarray) -> None:
    frames, taker = await run_turns(audio)
    assert not [f for f in frames if isinstance(f, EndOfTurn | SpeechStarted)]
    assert taker.idle


async def test_barge_in_interrupts_within_one_vad_window() -> None:
    q = espeak("Stop, I have a question")
    audio = np.concatenate([silence(0.6), q, silence(1.0)])
    frames, _ = await run_turns(audio, greeting_playing=True)
    started = next(f for f in frames if isinstance(f, SpeechStarted))
    interrupt = next(f for f in frames if isinstance(f, Interruption) and not isinstance(f, TurnResumed))
    assert interrupt.t - started.t <= 0.032 + 1e-6
    true_start = 0.6 + speech_bounds(q, 16000)[0]
    assert interrupt.t - true_start < 0.15


async def test_telephone_rate_8k_works() -> None:
    q = espeak("Can I speak to the dentist please?", rate=8000)
    audio = np.concatenate([silence(0.3, 8000), q, silence(1.0, 8000)])
    frames, _ = await run_turns(audio, rate=8000)
    assert [f.turn_id for f in frames if isinstance(f, EndOfTurn)] == [1]
    turn = next(f for f in frames if isinstance(f, UserTurn))
    assert turn.sample_rate == 8000


async def test_a_sixty_second_monologue_is_cut_into_turns() -> None:
    sentence = espeak("This is a very long story about my teeth and it keeps going", wpm=200)
    chunks: list[np.ndarray] = []
    while sum(c.size for c in chunks) < 62 * 16000:
        chunks += [sentence, silence(0.1)]
    audio = np.concatenate([*chunks, silence(1.0)])
    frames, _ = await asyncio.wait_for(run_turns(audio, max_turn_secs=25), 60)
    ends = [f for f in frames if isinstance(f, EndOfTurn)]
    assert len(ends) >= 2
    # cut at the first breath after 25 s (the utterance also holds the 0.25 s pre-roll)
    assert all(len(f.pcm) / 2 / 16000 < 29 for f in frames if isinstance(f, UserTurn))
