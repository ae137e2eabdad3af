"""Smart Turn's shared queue: batched runs equal single ones, a failure stays with its request, cancelled are free."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from parley.services.turn import features, smart_turn

from .support.audio import espeak, noise, silence

RATE = 16000


def clips() -> list[np.ndarray]:
    """Finished and cut-off sentences of several lengths and voices (int16, 16 kHz)."""
    a = espeak("What time do you open tomorrow?")
    b = espeak("I would like to book a table for", voice="en-gb")
    c = espeak("Can you hear me? Yes, I can hear you, I am calling about my account.", voice="en-us+m1")
    d = np.concatenate([c, c])  # longer than the 8 s the model hears
    return [np.concatenate([x, silence(0.064)]) for x in (a, b, c, d)]


def test_a_batch_gives_the_probabilities_of_single_runs() -> None:
    model = smart_turn.SmartTurn(max_batch=4)
    audio = [features.last_window((x / 32768).astype(np.float32)) for x in clips()]
    single = [model.probability(x) for x in audio]
    together = model.probabilities(audio)
    assert np.allclose(single, together, atol=1e-4), (single, together)
    assert max(single) - min(single) > 0.3  # the clips are not all alike: the comparison means something


def test_short_clip_features_equal_the_plain_computation() -> None:
    """log_mel's shortcuts (one constant frame for the zero padding, the filters' own bins) change nothing."""
    for n in (0, 150, 201, 4000, 16000, features.N_SAMPLES - 401, features.N_SAMPLES):
        x = features.last_window((noise(n / RATE, dbfs=-20.0, seed=n) / 32768).astype(np.float32))
        assert np.allclose(features.log_mel(x), plain_log_mel(x), rtol=0, atol=1e-6), n


def plain_log_mel(x: np.ndarray) -> np.ndarray:
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    padded = np.pad(x.astype(np.float64), features.N_FFT // 2, mode="reflect")
    starts = np.arange(features.N_FRAMES + 1) * features.HOP
    frames = padded[starts[:, None] + np.arange(features.N_FFT)[None, :]]
    spectrum = np.fft.rfft(frames * features._WINDOW, axis=1)
    mel = np.log10(np.maximum((spectrum.real**2 + spectrum.imag**2) @ features._FILTERS.T, 1e-10))
    mel = mel.T[:, : features.N_FRAMES]
    mel = np.maximum(mel, mel.max() - 8.0)
    return ((mel + 4.0) / 4.0).astype(np.float32)


async def test_concurrent_calls_share_batches_and_a_bad_request_fails_alone() -> None:
    model = smart_turn.SmartTurn(max_batch=8)
    pcms = [x.tobytes() for x in clips()]
    expected = [model.probability_pcm(p, RATE) for p in pcms]
    requests = [model.predict(p, RATE) for p in pcms[:2]] + [model.predict(b"\x00" * 3, RATE)]
    requests += [model.predict(p, RATE) for p in pcms[2:]]
    results = await asyncio.gather(*requests, return_exceptions=True)
    assert isinstance(results[2], ValueError)  # three bytes are not PCM16
    got = [float(r) for i, r in enumerate(results) if i != 2 and not isinstance(r, BaseException)]
    assert np.allclose(got, expected, atol=1e-4), (got, expected)
    assert model.stats.inferences == 4 and model.stats.failed == 1
    assert model.stats.batches < 4  # the first ran alone; the rest waited together


async def test_a_request_cancelled_before_its_turn_costs_no_inference() -> None:
    model = smart_turn.SmartTurn(max_batch=1)
    pcm = clips()[0].tobytes()
    tasks = [asyncio.ensure_future(model.predict(pcm, RATE)) for _ in range(3)]
    await asyncio.sleep(0)  # all three are queued; the thread is on the first
    tasks[2].cancel()  # the caller spoke again
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[2], asyncio.CancelledError)
    assert results[0] == pytest.approx(results[1], abs=1e-6)
    assert model.stats.requests == 3 and model.stats.inferences == 2 and model.stats.dropped == 1


async def test_the_queue_keeps_working_after_a_failure() -> None:
    model = smart_turn.SmartTurn()
    with pytest.raises(ValueError):
        await model.predict(b"\x01\x00", 0)
    assert 0.0 <= await model.predict(clips()[0].tobytes(), RATE) <= 1.0
