"""The jitter buffer: order, duplicates, loss, late packets, wrap-around, resync, underrun."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley.sip.protocol.jitter import JitterBuffer
from parley.sip.protocol.rtp import RtpPacket


def pkt(seq: int, ssrc: int = 1, payload: bytes | None = None) -> RtpPacket:
    seq &= 0xFFFF
    return RtpPacket(0, seq, seq * 160, ssrc, payload if payload is not None else seq.to_bytes(2, "big"))


def num(payload: bytes | None) -> int | None:
    return None if payload is None else int.from_bytes(payload, "big")


def test_primes_before_playing_without_advancing() -> None:
    jb = JitterBuffer(depth_frames=3)
    assert jb.pop() is None
    jb.push(pkt(10))
    assert jb.pop() is None and jb.pop() is None  # waiting, not losing
    jb.push(pkt(11))
    jb.push(pkt(12))
    assert [num(jb.pop()) for _ in range(3)] == [10, 11, 12]
    assert jb.lost == 0


def test_reorders_and_drops_duplicates() -> None:
    jb = JitterBuffer(depth_frames=3)
    for s in (2, 0, 1, 1, 4, 3, 2, 5):
        jb.push(pkt(s))
    assert [num(jb.pop()) for _ in range(6)] == [0, 1, 2, 3, 4, 5]
    assert jb.duplicates == 2 and jb.lost == 0


def test_loss_is_a_gap_and_the_stream_goes_on() -> None:
    jb = JitterBuffer(depth_frames=2)
    for s in (0, 1, 3, 4):
        jb.push(pkt(s))
    assert [num(jb.pop()) for _ in range(5)] == [0, 1, None, 3, 4]
    assert jb.lost == 1


def test_late_packet_after_its_slot_is_dropped() -> None:
    jb = JitterBuffer(depth_frames=2)
    for s in (0, 2, 3):
        jb.push(pkt(s))
    assert [num(jb.pop()) for _ in range(2)] == [0, None]
    jb.push(pkt(1))  # too late: its slot was played as silence
    assert jb.late == 1
    assert [num(jb.pop()) for _ in range(2)] == [2, 3]


def test_first_packets_reordered_at_the_start() -> None:
    jb = JitterBuffer(depth_frames=3)
    for s in (7, 5, 6):
        jb.push(pkt(s))
    assert [num(jb.pop()) for _ in range(3)] == [5, 6, 7]


def test_sequence_wrap_around() -> None:
    jb = JitterBuffer(depth_frames=3)
    seqs = list(range(65530, 65536)) + list(range(6))
    shuffled = seqs[:]
    rng = random.Random(4)
    for i in range(0, len(shuffled) - 1, 2):  # swap neighbours: jitter, not chaos
        if rng.random() < 0.7:
            shuffled[i], shuffled[i + 1] = shuffled[i + 1], shuffled[i]
    out = []
    for s in shuffled:
        jb.push(pkt(s))
        out.append(num(jb.pop()))
    out += [num(jb.pop()) for _ in range(4)]
    assert [o for o in out if o is not None] == seqs
    assert jb.lost == 0 and jb.late == 0


def test_underrun_waits_and_rebuffers() -> None:
    """The far end pauses (no packets, same sequence numbers on return): nothing is lost or late."""
    jb = JitterBuffer(depth_frames=2)
    jb.push(pkt(0))
    jb.push(pkt(1))
    assert [num(jb.pop()) for _ in range(5)] == [0, 1, None, None, None]
    jb.push(pkt(2))
    assert jb.pop() is None  # rebuilding the cushion
    jb.push(pkt(3))
    assert [num(jb.pop()) for _ in range(2)] == [2, 3]
    assert jb.lost == 0 and jb.late == 0


def test_new_ssrc_resyncs_and_old_stragglers_are_dropped() -> None:
    jb = JitterBuffer(depth_frames=2)
    for s in (100, 101, 102):
        jb.push(pkt(s, ssrc=1))
    assert num(jb.pop()) == 100
    for s in (9000, 9001):
        jb.push(pkt(s, ssrc=2))
    jb.push(pkt(103, ssrc=1))  # a straggler from the old stream
    assert [num(jb.pop()) for _ in range(2)] == [9000, 9001]
    assert jb.resyncs == 1 and jb.late == 1


def test_one_stray_jump_is_ignored_two_resync() -> None:
    jb = JitterBuffer(depth_frames=2, max_frames=50)
    for s in range(4):
        jb.push(pkt(s))
    assert num(jb.pop()) == 0
    jb.push(pkt(30000))  # one stray packet far away
    jb.push(pkt(4))
    assert [num(jb.pop()) for _ in range(4)] == [1, 2, 3, 4]
    jb.push(pkt(40000))  # the far end really jumped: the next packet follows on
    jb.push(pkt(40001))
    assert [num(jb.pop()) for _ in range(2)] == [40000, 40001]
    assert jb.resyncs == 1


def test_backward_jump_resyncs() -> None:
    jb = JitterBuffer(depth_frames=1, max_frames=20)
    for s in range(1000, 1003):
        jb.push(pkt(s))
        assert num(jb.pop()) == s
    jb.push(pkt(5))
    jb.push(pkt(6))
    assert [num(jb.pop()) for _ in range(2)] == [5, 6]


def test_latency_creep_is_trimmed() -> None:
    jb = JitterBuffer(depth_frames=2)
    for s in range(20):  # a burst after a stall
        jb.push(pkt(s))
    for s in range(20, 80):  # then steady, one in one out
        jb.push(pkt(s))
        jb.pop()
    assert len(jb) <= 2 * 2 + 2
    assert jb.dropped > 0


def test_invalid_sizes() -> None:
    with pytest.raises(ValueError):
        JitterBuffer(depth_frames=0)
    with pytest.raises(ValueError):
        JitterBuffer(depth_frames=5, max_frames=5)


@settings(max_examples=150, deadline=None)
@given(
    start=st.integers(0, 0xFFFF),
    ops=st.lists(st.one_of(st.integers(-8, 40), st.just("pop")), max_size=200),
)
def test_fuzz_output_is_ordered_and_unique(start: int, ops: list[int | str]) -> None:
    """Whatever arrives (reordered, duplicated, late, far off), what plays is in order and never twice."""
    jb = JitterBuffer(depth_frames=3, max_frames=50)
    played: list[int] = []
    for op in ops:
        if op == "pop":
            p = jb.pop()
            if p is not None:
                played.append(int.from_bytes(p, "big", signed=True))
        else:
            assert isinstance(op, int)
            ext = start + op
            jb.push(RtpPacket(0, ext & 0xFFFF, 0, 7, ext.to_bytes(4, "big", signed=True)))
        assert len(jb) <= 50
    assert len(played) == len(set(played))
    assert played == sorted(played)
