"""Smart Turn end-of-turn detection: the features, the model on real speech, and the turn taker with it."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from parley.agent.document import InterruptionSettings, TurnSettings, VADSettings
from parley.pipeline.clock import RealClock
from parley.pipeline.frames import (
    DTMF,
    AgentSpoke,
    AudioIn,
    Direction,
    EndOfTurn,
    Frame,
    Interruption,
    SpeechStarted,
    StartFrame,
    Transcript,
    TurnResumed,
    UserTurn,
)
from parley.pipeline.processor import Processor
from parley.processors.turns import TurnTaker
from parley.services.turn import features, smart_turn
from parley.services.turn.judge import EndOfTurnJudge
from parley.services.turn.text import dictating, sounds_finished, sounds_unfinished
from parley.services.vad.silero import SileroVAD

from .support.audio import espeak, silence

RATE = 16000
RECEPTIONIST = Path(__file__).resolve().parents[1] / "examples" / "agents" / "receptionist.yaml"
# transformers' WhisperFeatureExtractor(chunk_length=8), through pipecat 1.14.0's numpy copy of it, on the chirp
# of test_features_match_the_reference_extractor_values: mean, max and a few (mel, frame) cells
REFERENCE: dict[str, Any] = {
    "mean": -0.14432,
    "max": 1.78458,
    "cells": {(5, 520): 0.85725, (20, 600): 1.73686, (60, 799): 0.24467, (0, 0): -0.21542, (30, 650): 1.35135},
}

# --- features --------------------------------------------------------------------------------------------------


def tone(hz: float, secs: float, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * hz * np.arange(int(secs * RATE)) / RATE)).astype(np.float32)


def test_features_have_the_models_shape_and_whisper_scaling() -> None:
    x = features.last_window(np.concatenate([tone(440, 1.0), np.zeros(RATE // 2, np.float32)]))
    assert x.shape == (features.N_SAMPLES,) and not x[: 6 * RATE].any()  # padded at the front, audio at the end
    mel = features.log_mel(x)
    assert mel.shape == (80, 800) and mel.dtype == np.float32
    # Whisper's scaling: log10 clamped to 8 decades below the peak, then (x + 4) / 4
    assert mel.max() - mel.min() == pytest.approx(2.0, abs=1e-5)
    # the tone occupies the last 1.5 s (150 frames, 10 ms each) minus the trailing half second of silence
    loud = mel.max(axis=0) > mel.min() + 0.5
    assert np.flatnonzero(loud).min() == pytest.approx(650, abs=2) and np.flatnonzero(loud).max() == pytest.approx(
        750, abs=2
    )


@pytest.mark.parametrize("hz", [300.0, 1000.0, 3000.0])
def test_a_tone_peaks_in_the_mel_filter_centred_on_it(hz: float) -> None:
    mel = features.log_mel(features.last_window(tone(hz, 8.0)))
    filters = features.mel_filters()
    bins = np.linspace(0, RATE / 2, 201)
    centres = bins[filters.argmax(axis=1)]
    peak = int(mel[:, 400].argmax())
    assert abs(centres[peak] - hz) <= max(60.0, 0.08 * hz)


def test_mel_filters_are_slaney_area_normalised_triangles() -> None:
    filters = features.mel_filters()
    assert filters.shape == (80, 201) and (filters >= 0).all()
    # Slaney norm: each triangle integrates to 1 over Hz (the narrow low ones are coarsely sampled by 40 Hz bins)
    areas = filters.sum(axis=1) * (RATE / 2 / 200)
    assert np.allclose(areas, 1.0, rtol=0.1)
    assert (np.diff(filters.argmax(axis=1)) >= 0).all() and filters[-1, -1] == 0.0


def test_features_match_the_reference_extractor_values() -> None:
    """Figures from transformers' WhisperFeatureExtractor(chunk_length=8) for the same signal (pipecat's copy)."""
    t = np.arange(3 * RATE) / RATE
    chirp = (0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t)).astype(np.float32)
    mel = features.log_mel(features.last_window(chirp))
    assert float(mel.mean()) == pytest.approx(REFERENCE["mean"], abs=1e-4)
    assert float(mel.max()) == pytest.approx(REFERENCE["max"], abs=1e-4)
    for (row, col), value in REFERENCE["cells"].items():
        assert float(mel[row, col]) == pytest.approx(value, abs=1e-4)


def test_silence_gives_constant_features_and_wrong_lengths_are_refused() -> None:
    mel = features.log_mel(np.zeros(features.N_SAMPLES, np.float32))
    assert np.ptp(mel) == 0.0
    with pytest.raises(ValueError):
        features.log_mel(np.zeros(RATE, np.float32))


# --- the model ---------------------------------------------------------------------------------------------------


def test_the_model_is_installed_with_its_licence() -> None:
    path = smart_turn.model_path()
    assert path.stat().st_size > 8_000_000
    assert "BSD 2-Clause" in (path.parent / "LICENSE").read_text()
    assert "SHA-256" in (path.parent / "NOTICE").read_text()


def test_a_missing_model_says_what_to_do(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PARLEY_SMART_TURN_MODEL", str(tmp_path / "nope.onnx"))
    with pytest.raises(RuntimeError, match=r"install-smart-turn\.sh"):
        smart_turn.model_path()


_GB_CUT = pytest.mark.xfail(
    reason="on some hosts Smart Turn v3.2 scores espeak-ng's en-gb 'tomor-' as finished (0.90): synthetic prosody, "
    "the same code passed on another machine (see bench/README, turns.py)",
    strict=False,
)


@pytest.mark.parametrize("voice", ["en-us", pytest.param("en-gb", marks=_GB_CUT), "en-us+m1"])
def test_the_model_separates_a_finished_sentence_from_one_cut_mid_word(voice: str) -> None:
    model = smart_turn.shared()
    speech = espeak("What time do you open tomorrow?", voice=voice)
    quiet = np.flatnonzero(np.abs(speech) > 300)
    start, end = quiet[0], quiet[-1]
    tail = silence(0.064)
    whole = model.probability_pcm(np.concatenate([speech[:end], tail]).tobytes(), RATE)
    cut = model.probability_pcm(np.concatenate([speech[: start + int(0.8 * (end - start))], tail]).tobytes(), RATE)
    assert whole > 0.8, whole
    assert cut < 0.5, cut  # "What time do you open tomor-"


def test_telephone_audio_is_resampled_for_the_model() -> None:
    model = smart_turn.shared()
    speech = espeak("What time do you open tomorrow?", rate=8000)
    assert model.probability_pcm(np.concatenate([speech, silence(0.064, 8000)]).tobytes(), 8000) > 0.8


def test_transcript_cues() -> None:
    for unfinished in ["I'd like to book an appointment for", "Can I speak to?", "My number is 555", "and"]:
        assert sounds_unfinished(unfinished), unfinished
    for finished in ["Yes.", "Saturday please.", "My number is 555-0134.", "I need two.", ""]:
        assert not sounds_unfinished(finished), finished


@pytest.mark.parametrize(
    "text",
    [
        "Could you tell me.",  # a verb still waiting for its object, whatever Whisper's full stop says
        "Can you give us",
        "Would you",  # a modal and its subject
        "Hi, I'd like",  # a clause that stops at its verb
        "We were wondering.",
        "Yesterday my husband and I",  # a subject pronoun
        "The address is",  # a copula after a noun
        "Um.",
        "I need to cancel my",
        "five five five",  # dictation, shorter than a phone number, no "number" said
        "It's 415 555",
        "Could I get",  # a request's verb before its object
        "Do you have.",
        "Can we move",
        "Do you have any",  # a question's quantifier before its noun
        "Are there any?",
        "What would you be able to?",  # a wh-question's infinitive still needs its verb
        "What do I need to",
    ],
)
def test_unfinished_phrases_by_general_rules(text: str) -> None:
    assert sounds_unfinished(text)
    assert not sounds_finished(text)


@pytest.mark.parametrize(
    "text",
    [
        "No, thank you.",
        "Yes, it is.",  # a copula after a pronoun ends a clause
        "Can I come in?",  # a phrasal verb's particle
        "What is it for?",  # a wh-question strands its preposition
        "That's all I need.",  # "I need" mid-clause, not at its start
        "I think so.",
        "See you then.",
        "Next Tuesday at 10.",  # one number is not a dictated one
        "It's 415-555-2671.",
        "What do you have?",  # the wh-word is the object
        "Yes, I have some.",  # a quantifier ends an answer
        "Can I book it?",
        "Who am I speaking to?",  # a stranded preposition ends a wh-question
        "Where are you going to?",
    ],
)
def test_whole_answers_are_not_unfinished(text: str) -> None:
    assert not sounds_unfinished(text)
    assert sounds_finished(text)


def test_dictation_is_a_number_being_spoken() -> None:
    assert dictating("My number is 555-0134.") and dictating("five five five") and dictating("It's 415 555 2671")
    assert not dictating("Next Tuesday at 10.") and not dictating("In 2024.") and not dictating("Yes.")


# --- the turn taker ----------------------------------------------------------------------------------------------


class Listener(Processor):
    """Collects frames; answers each speculative attempt with its transcript, as the transcriber would."""

    def __init__(self, texts: list[tuple[float, str]] | None = None) -> None:
        super().__init__()
        self.frames: list[Frame] = []
        self.texts = texts or []  # (attempts sent before this time, their text)

    async def process(self, frame: Frame, direction: Direction) -> None:
        self.frames.append(frame)
        if isinstance(frame, UserTurn) and self.texts:
            text = next((txt for before, txt in self.texts if frame.t < before), self.texts[-1][1])
            await self.push(Transcript(turn_id=frame.turn_id, text=text, t=frame.t), Direction.UPSTREAM)


async def run_turns(
    audio: np.ndarray, texts: list[tuple[float, str]] | None = None, greeting_playing: bool = False, **turn: object
) -> list[Frame]:
    settings = TurnSettings.model_validate(turn)
    judge = EndOfTurnJudge(settings, expect_transcripts=bool(texts))
    taker = TurnTaker(SileroVAD(), VADSettings(), settings, InterruptionSettings(), judge=judge)
    sink = Listener(texts)
    taker.link(sink)
    await taker.queue_frame(StartFrame(sample_rate=RATE))
    if not greeting_playing:
        await taker.queue_frame(AgentSpoke(turn_id=0), Direction.UPSTREAM)
    step = RATE // 50
    for k in range(audio.size // step):
        pcm = audio[k * step : (k + 1) * step].astype("<i2").tobytes()
        await taker.queue_frame(AudioIn(pcm=pcm, sample_rate=RATE, t=k * 0.02))
    return [f for f in sink.frames if not isinstance(f, AudioIn | StartFrame)]


def paused_sentence(first: str, second: str, pause: float) -> tuple[np.ndarray, float, float]:
    """``first, second`` spoken in one breath with the comma's gap stretched to ``pause`` s; (audio, start, end)."""
    whole = espeak(f"{first}, {second}")
    hop = RATE // 100
    loud = np.abs(whole[: whole.size // hop * hop]).reshape(-1, hop).max(axis=1) > 180  # about -45 dBFS
    idx = np.flatnonzero(loud)
    gaps = [(a, b) for a, b in itertools.pairwise(idx) if b - a > 1]
    a, b = max(gaps, key=lambda g: g[1] - g[0])
    lead = silence(0.5)
    audio = np.concatenate([lead, whole[: (a + 1) * hop], silence(pause), whole[b * hop :], silence(2.0)])
    start = (lead.size + (a + 1) * hop) / RATE
    return audio, start, start + pause


def ends(frames: list[Frame]) -> list[float]:
    return [f.t for f in frames if isinstance(f, EndOfTurn)]


async def test_a_caller_pausing_mid_number_is_not_cut_off_with_smart_turn() -> None:
    audio, pause_start, pause_end = paused_sentence("My number is five five five", "zero one three four", 0.9)
    cut = await run_turns(audio, detector="silence", end_of_turn_secs=0.4)
    assert any(pause_start < t < pause_end for t in ends(cut))  # today's fixed silence answers inside the pause
    frames = await run_turns(audio, detector="smart_turn")
    assert [e for e in ends(frames) if e < pause_end] == []
    assert len(ends(frames)) == 1 and any(isinstance(f, TurnResumed) for f in frames)


async def test_the_transcript_keeps_a_turn_open_that_sounds_finished() -> None:
    """The model hears "…an appointment for" as finished (espeak's intonation); the transcript says otherwise."""
    first, second = "I'd like to book an appointment for", "next Tuesday"
    audio, pause_start, pause_end = paused_sentence(first, second, 0.9)
    frames = await run_turns(audio, detector="smart_turn")
    assert any(pause_start < t < pause_end for t in ends(frames))  # the sound alone: cut off
    texts = [(pause_end, first), (99.0, f"{first} {second}.")]
    frames = await run_turns(audio, texts=texts, detector="smart_turn")
    assert len(ends(frames)) == 1 and ends(frames)[0] > pause_end


async def test_a_finished_answer_ends_sooner_than_the_fixed_silence() -> None:
    q = espeak("What time do you open tomorrow?")
    audio = np.concatenate([silence(0.5), q, silence(2.0)])
    fixed = ends(await run_turns(audio, detector="silence", end_of_turn_secs=0.4))
    smart = ends(await run_turns(audio, detector="smart_turn", complete_wait_secs=0.2))
    assert len(fixed) == len(smart) == 1
    assert smart[0] <= fixed[0] - 0.15


async def test_barge_in_is_unchanged_with_smart_turn() -> None:
    q = espeak("Stop, I have a question")
    frames = await run_turns(
        np.concatenate([silence(0.6), q, silence(1.0)]), greeting_playing=True, detector="smart_turn"
    )
    started = next(f for f in frames if isinstance(f, SpeechStarted))
    interrupt = next(f for f in frames if isinstance(f, Interruption) and not isinstance(f, TurnResumed))
    assert interrupt.t - started.t <= 0.032 + 1e-6


async def test_without_the_model_the_fixed_silence_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> smart_turn.SmartTurn:
        raise RuntimeError("no model")

    monkeypatch.setattr(smart_turn, "shared", missing)
    judge = EndOfTurnJudge(TurnSettings(detector="smart_turn", end_of_turn_secs=0.4))
    assert judge.model is None
    assert await judge.silence_needed(0.1) == 0.4


class CountingModel(smart_turn.SmartTurn):
    """The real model, counting the inferences it was asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = 0

    async def predict(self, pcm: bytes, sample_rate: int) -> float:
        self.asked += 1
        return await super().predict(pcm, sample_rate)


async def test_the_model_runs_only_for_pauses_that_last_and_the_transcript_has_not_decided() -> None:
    """Pauses between words end before the verdict is due: they cost no inference; nor does a pause whose
    transcript says the caller stopped mid-phrase; in a call the model waits for the transcript."""
    import asyncio

    model = CountingModel()
    settings = TurnSettings(detector="smart_turn")  # pause 64 ms, verdict at 200 ms
    judge = EndOfTurnJudge(settings, model=model, expect_transcripts=True)
    spawn = lambda coro, name: asyncio.get_running_loop().create_task(coro, name=name)  # noqa: E731
    pcm = espeak("What time do you open tomorrow?").astype("<i2").tobytes()

    judge.paused(1, pcm, RATE, spawn)  # a pause between words: the caller speaks again at 96 ms
    for silence_s in (0.064, 0.096):
        assert await judge.silence_needed(silence_s) == settings.complete_wait_secs
    judge.reset()
    assert model.asked == 0

    judge.paused(2, pcm, RATE, spawn)  # the transcript came first and stops mid-phrase: no verdict needed
    judge.heard(2, "I'd like to book an appointment for")
    for silence_s in (0.064, 0.128, 0.224):
        wait = await judge.silence_needed(silence_s)
    assert wait == settings.max_wait_secs and model.asked == 0
    judge.reset()

    judge.paused(3, pcm, RATE, spawn)  # a pause that lasts: the model waits for the transcript, then decides
    for silence_s in (0.064, 0.128, 0.224):
        wait = await judge.silence_needed(silence_s)
    assert model.asked == 0 and wait > 0.224  # the turn cannot end before its transcript
    judge.heard(3, "What time do you open tomorrow?")
    wait = await judge.silence_needed(0.256)
    assert model.asked == 1 and len(judge.probabilities) == 1
    assert wait in (settings.complete_wait_secs, settings.end_of_turn_secs, settings.max_wait_secs)


# --- transcripts through a real call, keypad entry, dictation ----------------------------------------------------


class AudioClock(RealClock):
    """Call time = the caller's audio time, as a transport's clock would be: keypad presses and audio agree."""

    def __init__(self) -> None:
        super().__init__()
        self.t = 0.0

    def now(self) -> float:
        return self.t


async def test_a_transcript_reaches_the_judge_in_a_real_call(tmp_path: Path) -> None:
    """Whisper's transcript of the first pause travels up the real pipeline and keeps "…if" from being cut off."""
    from parley.agent.document import load_agent
    from parley.audio import write_wav
    from parley.calls.session import Services
    from parley.calls.simulate import simulate_call

    audio, pause_start, pause_end = paused_sentence("I was wondering if", "you are open on Sunday", 0.9)
    assert any(pause_start < t < pause_end for t in ends(await run_turns(audio, detector="smart_turn")))  # by sound
    write_wav(tmp_path / "caller.wav", audio, RATE)
    base = load_agent(RECEPTIONIST)
    agent = base.model_copy(
        update={
            "greeting": "",
            "llm": base.llm.model_copy(update={"provider": "canned", "options": {"default": "Of course."}}),
            "tts": base.tts.model_copy(update={"provider": "espeak", "options": {}}),
            # complete_threshold 0.3: the model's verdict on this host-synthesised espeak sentence differs between
            # CPUs (p 0.11 on an AVX-512/AMX Xeon, above a sixth on AMD); below a third of the threshold it is a
            # sure "not finished" that the transcript may not outweigh, which is not what this test is about
            "turn": base.turn.model_copy(
                update={"detector": "smart_turn", "max_wait_secs": 3.0, "complete_threshold": 0.3}
            ),
        }
    )
    services = await Services.create(agent)
    try:
        report = await simulate_call(
            agent, tmp_path / "caller.wav", tmp_path / "call.wav", fast=True, services=services
        )
    finally:
        await services.aclose()
    turns = report.turns
    assert len(turns) == 1, [t.caller_text for t in turns]  # one turn: the pause did not end it
    assert "sunday" in turns[0].caller_text.lower() and turns[0].agent_text == "Of course."
    times = turns[0].times
    assert times["stt_final"] <= times["end_of_turn"]  # the turn waited for its transcript
    waited = times["end_of_turn"] - times["speech_end"]
    if sounds_finished(turns[0].caller_text):
        assert waited < 2.5  # a punctuated whole sentence: the turn ended on it, not after the 3 s wait
    else:  # Whisper left it unpunctuated (it does on some CPUs): an unsure verdict then waits the maximum, no more
        assert waited < 3.0 + 0.5


async def run_keyed(audio: np.ndarray, press_at: float | None, **turn: object) -> list[float]:
    """End-of-turn times of ``audio`` through the turn taker with smart_turn; a keypad digit at ``press_at``."""
    settings = TurnSettings.model_validate({"detector": "smart_turn", **turn})
    taker = TurnTaker(SileroVAD(), VADSettings(), settings, InterruptionSettings(), judge=EndOfTurnJudge(settings))
    clock = AudioClock()
    taker.clock = clock
    sink = Listener()
    taker.link(sink)
    await taker.queue_frame(StartFrame(sample_rate=RATE))
    await taker.queue_frame(AgentSpoke(turn_id=0), Direction.UPSTREAM)
    step = RATE // 50
    for k in range(audio.size // step):
        clock.t = k * 0.02
        if press_at is not None and abs(clock.t - press_at) < 0.01:
            await taker.queue_frame(DTMF(digit="4", t=clock.t))
        pcm = audio[k * step : (k + 1) * step].astype("<i2").tobytes()
        await taker.queue_frame(AudioIn(pcm=pcm, sample_rate=RATE, t=clock.t))
    return [f.t for f in sink.frames if isinstance(f, EndOfTurn)]  # the spoken turn's first, then the keypad's


async def test_the_judge_never_hurries_a_caller_at_the_keypad() -> None:
    answer = espeak("What time do you open tomorrow?")
    audio = np.concatenate([silence(0.6), answer, silence(2.5)])
    true_end = 0.6 + np.flatnonzero(np.abs(answer) > 300)[-1] / RATE
    spoken = await run_keyed(audio, None, end_of_turn_secs=0.4, complete_wait_secs=0.2)
    keyed = await run_keyed(audio, 0.3, end_of_turn_secs=0.4, complete_wait_secs=0.2)
    assert spoken[0] - true_end < 0.4  # the model hears a finished question: the short wait
    assert keyed[0] - true_end >= 0.4  # a digit was pressed just before: at least the fixed silence


async def test_a_dictated_number_waits_the_fixed_silence_never_less_nor_the_long_wait() -> None:
    """A whole phone number: the caller may add to it, so not the short wait; but it is whole, so not 1.5 s."""
    said = espeak("My number is five five five, zero one three four.", voice="en-gb-scotland+m2", wpm=165)
    audio = np.concatenate([silence(0.5), said, silence(2.5)])
    true_end = 0.5 + np.flatnonzero(np.abs(said) > 300)[-1] / RATE
    texts = [(99.0, "My number is 555-0134.")]
    frames = await run_turns(audio, texts=texts, detector="smart_turn", end_of_turn_secs=0.4, max_wait_secs=1.5)
    assert len(ends(frames)) == 1
    assert 0.4 <= ends(frames)[0] - true_end < 1.0
