"""RFC 4733 telephone-events: payload format, the sender's packet sequence, one digit per key press."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley.sip.protocol.dtmf import DTMF_EVENTS, DtmfEvent, DtmfReceiver, dtmf_packets
from parley.sip.protocol.rtp import RtpError, RtpPacket

PT = 101


class Sender:
    """Builds the RTP packets a phone sends for key presses: one event per key, shared seq space."""

    def __init__(self, ssrc: int = 0x1234, seq: int = 100, ts: int = 5000) -> None:
        self.ssrc, self.seq, self.ts = ssrc, seq, ts

    def press(self, digit: str, duration_ms: int = 100) -> list[RtpPacket]:
        events = dtmf_packets(digit, duration_ms=duration_ms)
        out = []
        for i, ev in enumerate(events):
            out.append(RtpPacket(PT, self.seq & 0xFFFF, self.ts & 0xFFFFFFFF, self.ssrc, ev.encode(), marker=i == 0))
            self.seq += 1
        self.ts += events[-1].duration + 800  # a gap before the next key
        return out


def feed_all(rx: DtmfReceiver, packets: list[RtpPacket]) -> str:
    return "".join(d for p in packets if (d := rx.feed(p)) is not None)


def test_payload_round_trip_and_layout() -> None:
    ev = DtmfEvent(event=11, end=True, volume=10, duration=800)
    assert ev.encode() == bytes([11, 0x80 | 10, 0x03, 0x20])
    assert DtmfEvent.decode(ev.encode()) == ev
    # the reserved bit is ignored; trailing bytes (a second event block) do not matter
    assert DtmfEvent.decode(bytes([5, 0x40 | 7, 0, 160]) + b"\x00" * 4) == DtmfEvent(5, False, 7, 160)


def test_short_payload_is_rtp_error() -> None:
    for payload in (b"", b"\x01", b"\x01\x02\x03"):
        with pytest.raises(RtpError):
            DtmfEvent.decode(payload)


def test_encode_rejects_out_of_range() -> None:
    with pytest.raises(ValueError):
        DtmfEvent(event=1, end=False, volume=64, duration=0).encode()
    with pytest.raises(ValueError):
        DtmfEvent(event=1, end=False, volume=0, duration=0x10000).encode()


def test_packet_sequence_for_one_key() -> None:
    events = dtmf_packets("5")
    assert [e.duration for e in events] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e in events] == [False] * 4 + [True] * 3
    assert {e.event for e in events} == {5}
    assert dtmf_packets("a")[0].event == 12 and dtmf_packets("*")[0].event == 10
    short = dtmf_packets("#", duration_ms=20)
    assert [(e.duration, e.end) for e in short] == [(160, True)] * 3
    assert dtmf_packets("1", duration_ms=60_000)[-1].duration == 0xFFFF


@pytest.mark.parametrize("bad", ["", "12", "E", "x", " "])
def test_not_a_key(bad: str) -> None:
    with pytest.raises(ValueError):
        dtmf_packets(bad)


def test_digit_sequence_one_digit_per_event() -> None:
    tx, rx = Sender(), DtmfReceiver()
    keys = "0123456789*#ABCD"
    packets = [p for k in keys for p in tx.press(k)]
    assert feed_all(rx, packets) == keys


def test_repeated_key_is_two_presses() -> None:
    tx, rx = Sender(), DtmfReceiver()
    assert feed_all(rx, tx.press("5") + tx.press("5") + tx.press("5")) == "555"


def test_lost_first_packet_still_reports_once() -> None:
    tx, rx = Sender(), DtmfReceiver()
    first, second = tx.press("7"), tx.press("8")
    assert feed_all(rx, first[1:] + second[2:]) == "78"


def test_late_end_retransmission_does_not_repeat_key() -> None:
    tx, rx = Sender(), DtmfReceiver()
    one, two = tx.press("1"), tx.press("2")
    # the last end packet of "1" is overtaken by the start of "2"; a stray duplicate comes even later
    order = one[:-1] + two[:2] + [one[-1]] + two[2:] + [one[3]]
    assert feed_all(rx, order) == "12"


def test_other_ssrc_with_same_timestamp_is_another_event() -> None:
    rx = DtmfReceiver()
    a, b = Sender(ssrc=1, ts=9000), Sender(ssrc=2, ts=9000)
    assert feed_all(rx, a.press("3") + b.press("3")) == "33"


def test_long_key_segments_are_one_press() -> None:
    """A key held past 0xFFFF units continues in a new segment: new timestamp, no marker bit, same event."""
    rx = DtmfReceiver()
    seg1 = [RtpPacket(PT, i, 1000, 9, DtmfEvent(4, False, 10, 160 * (i + 1)).encode(), i == 0) for i in range(3)]
    seg1.append(RtpPacket(PT, 3, 1000, 9, DtmfEvent(4, False, 10, 0xFFFF).encode()))
    ts2 = 1000 + 0xFFFF
    seg2 = [RtpPacket(PT, 4 + i, ts2, 9, DtmfEvent(4, i == 2, 10, 160 * (i + 1)).encode()) for i in range(3)]
    assert feed_all(rx, seg1 + seg2) == "4"
    # the next press of the same key starts with the marker bit: a new digit
    nxt = RtpPacket(PT, 9, ts2 + 2000, 9, DtmfEvent(4, False, 10, 160).encode(), marker=True)
    assert rx.feed(nxt) == "4"


def test_non_dtmf_events_and_garbage_are_ignored() -> None:
    rx = DtmfReceiver()
    flash = RtpPacket(PT, 1, 100, 1, DtmfEvent(16, False, 10, 160).encode(), marker=True)
    assert rx.feed(flash) is None
    assert rx.feed(RtpPacket(PT, 2, 200, 1, b"\x01\x02")) is None
    assert rx.feed(RtpPacket(PT, 3, 300, 1, DtmfEvent(9, False, 10, 160).encode(), marker=True)) == "9"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=12))
def test_fuzz_event_decode(payload: bytes) -> None:
    try:
        ev = DtmfEvent.decode(payload)
    except RtpError:
        assert len(payload) < 4
        return
    assert 0 <= ev.event <= 255 and 0 <= ev.volume <= 63 and 0 <= ev.duration <= 0xFFFF
    assert DtmfEvent.decode(ev.encode()) == ev


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.binary(max_size=6), st.booleans()), max_size=40))
def test_fuzz_receiver_never_raises(items: list[tuple[int, int, bytes, bool]]) -> None:
    rx = DtmfReceiver()
    for ssrc, ts, payload, marker in items:
        digit = rx.feed(RtpPacket(PT, 0, ts, ssrc, payload, marker))
        assert digit is None or digit in DTMF_EVENTS
