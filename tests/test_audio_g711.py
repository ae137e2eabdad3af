"""G.711 must match audioop bit for bit: carriers and recordings made with it are the reference."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from parley.audio import (
    alaw_decode,
    alaw_encode,
    alaw_to_pcm16,
    pcm16_to_alaw,
    pcm16_to_ulaw,
    ulaw_decode,
    ulaw_encode,
    ulaw_to_pcm16,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # stdlib audioop on 3.11/3.12, audioop-lts on 3.13+
    import audioop

ALL_PCM = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = np.arange(256, dtype=np.uint8)


def test_ulaw_encode_matches_audioop_for_every_int16() -> None:
    expected = np.frombuffer(audioop.lin2ulaw(ALL_PCM.tobytes(), 2), dtype=np.uint8)
    got = ulaw_encode(ALL_PCM)
    assert got.dtype == np.uint8
    mismatches = np.flatnonzero(got != expected)
    assert mismatches.size == 0, f"first mismatch at sample {ALL_PCM[mismatches[0]]}"


def test_alaw_encode_matches_audioop_for_every_int16() -> None:
    expected = np.frombuffer(audioop.lin2alaw(ALL_PCM.tobytes(), 2), dtype=np.uint8)
    got = alaw_encode(ALL_PCM)
    assert got.dtype == np.uint8
    mismatches = np.flatnonzero(got != expected)
    assert mismatches.size == 0, f"first mismatch at sample {ALL_PCM[mismatches[0]]}"


def test_ulaw_decode_matches_audioop_for_every_code() -> None:
    expected = np.frombuffer(audioop.ulaw2lin(ALL_CODES.tobytes(), 2), dtype=np.int16)
    got = ulaw_decode(ALL_CODES)
    assert got.dtype == np.int16
    np.testing.assert_array_equal(got, expected)


def test_alaw_decode_matches_audioop_for_every_code() -> None:
    expected = np.frombuffer(audioop.alaw2lin(ALL_CODES.tobytes(), 2), dtype=np.int16)
    got = alaw_decode(ALL_CODES)
    assert got.dtype == np.int16
    np.testing.assert_array_equal(got, expected)


def test_bytes_helpers_match_audioop() -> None:
    pcm = ALL_PCM.tobytes()
    codes = ALL_CODES.tobytes()
    assert pcm16_to_ulaw(pcm) == audioop.lin2ulaw(pcm, 2)
    assert pcm16_to_alaw(pcm) == audioop.lin2alaw(pcm, 2)
    assert ulaw_to_pcm16(codes) == audioop.ulaw2lin(codes, 2)
    assert alaw_to_pcm16(codes) == audioop.alaw2lin(codes, 2)


def test_codes_survive_a_decode_encode_round_trip() -> None:
    # µ-law has two zeros (0x7F and 0xFF); 0 encodes to 0xFF, so only 0x7F does not come back.
    ulaw_back = ulaw_encode(ulaw_decode(ALL_CODES))
    assert np.flatnonzero(ulaw_back != ALL_CODES).tolist() == [0x7F]
    np.testing.assert_array_equal(alaw_encode(alaw_decode(ALL_CODES)), ALL_CODES)


def test_encoding_is_close_to_the_input() -> None:
    # G.711 quantisation error grows with magnitude but stays within half a step (< 4% of the value + 16).
    x = ALL_PCM.astype(np.int32)
    for err in (ulaw_decode(ulaw_encode(ALL_PCM)) - x, alaw_decode(alaw_encode(ALL_PCM)) - x):
        assert np.all(np.abs(err) <= np.abs(x) * 0.04 + 16)


def test_shape_is_preserved_and_other_ints_accepted() -> None:
    block = np.array([[0, 1000], [-1000, 32767]], dtype=np.int16)
    assert ulaw_encode(block).shape == (2, 2)
    assert alaw_decode(alaw_encode(block)).shape == (2, 2)
    np.testing.assert_array_equal(ulaw_encode(block.astype(np.int32)), ulaw_encode(block))
    np.testing.assert_array_equal(ulaw_decode(np.array([0, 255], dtype=np.int64)), ulaw_decode(ALL_CODES[[0, 255]]))


def test_bad_input_is_rejected() -> None:
    with pytest.raises(TypeError):
        ulaw_encode(np.zeros(4, dtype=np.float32))
    with pytest.raises(ValueError):
        alaw_encode(np.array([40000]))
    with pytest.raises(TypeError):
        ulaw_decode(np.array([256]))
    with pytest.raises(ValueError, match="even number of bytes"):
        pcm16_to_ulaw(b"\x00\x01\x02")
