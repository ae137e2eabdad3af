"""DTMF as RFC 4733 telephone-events: the 4-byte payload, a receiver that reports each key press once, and
the packet sequence a sender emits.

A sender repeats an event every packet interval with a growing duration, all packets carrying the RTP
timestamp of the event's start (the first one has the marker bit), and sends the final packet (E bit)
three times. So the receiver keys an event on (SSRC, RTP timestamp): any packet of an event it has not seen
yields the digit, even when the first packet was lost, and repeats and end retransmissions yield nothing.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

from .rtp import RtpError, RtpPacket

__all__ = ["DTMF_EVENTS", "DtmfEvent", "DtmfReceiver", "dtmf_packets"]

#: event code -> key (RFC 4733 section 3.2: 0-9, * = 10, # = 11, A-D = 12-15)
DTMF_EVENTS = "0123456789*#ABCD"
_PAYLOAD = struct.Struct("!BBH")
_MAX_DURATION = 0xFFFF


@dataclass
class DtmfEvent:
    """One telephone-event payload. ``duration`` is in RTP timestamp units; ``volume`` is -dBm0 (0..63)."""

    event: int
    end: bool
    volume: int
    duration: int

    def encode(self) -> bytes:
        if not (0 <= self.event <= 255 and 0 <= self.volume <= 63 and 0 <= self.duration <= _MAX_DURATION):
            raise ValueError(f"telephone-event field out of range: {self}")
        return _PAYLOAD.pack(self.event, (0x80 if self.end else 0) | self.volume, self.duration)

    @classmethod
    def decode(cls, payload: bytes) -> DtmfEvent:
        """The first event of ``payload`` (the reserved bit is ignored, as the RFC asks)."""
        if len(payload) < 4:
            raise RtpError(f"telephone-event payload of {len(payload)} bytes, expected 4")
        event, flags, duration = _PAYLOAD.unpack_from(payload)
        return cls(event=event, end=bool(flags & 0x80), volume=flags & 0x3F, duration=duration)


def dtmf_packets(
    digit: str, duration_ms: int = 100, volume: int = 10, clock_rate: int = 8000, interval_ms: int = 20
) -> list[DtmfEvent]:
    """The payloads that send one key press, one per ``interval_ms``; the first goes with the marker bit.

    Updates carry the growing duration, then the final duration goes three times with the E bit (RFC 4733
    section 2.5.1.4). Durations are clamped to the 16-bit field (8 s at 8 kHz), so no segmenting is needed.
    """
    key = digit.upper()
    if len(key) != 1 or key not in DTMF_EVENTS:
        raise ValueError(f"not a DTMF key: {digit!r} (expected one of {DTMF_EVENTS})")
    event = DTMF_EVENTS.index(key)
    step = clock_rate * interval_ms // 1000
    updates = max(1, -(-duration_ms // interval_ms))  # packet intervals the key is held, rounded up
    total = min(updates * step, _MAX_DURATION)
    packets = [DtmfEvent(event, False, volume, min(i * step, total)) for i in range(1, updates)]
    packets += [DtmfEvent(event, True, volume, total) for _ in range(3)]
    return packets


class DtmfReceiver:
    """Turns incoming telephone-event packets into key presses, each reported once."""

    def __init__(self, memory: int = 16) -> None:
        # events seen lately, so an end retransmission that arrives after the next key started stays silent
        self._seen: deque[tuple[int, int]] = deque(maxlen=memory)
        self._last: tuple[int, int, int] | None = None  # (ssrc, timestamp, event) of the newest event
        self._last_ended = True

    def feed(self, packet: RtpPacket) -> str | None:
        """The key of a new event, or None for repeats, end retransmissions, non-DTMF events and garbage."""
        try:
            ev = DtmfEvent.decode(packet.payload)
        except RtpError:
            return None
        key = (packet.ssrc, packet.timestamp)
        if key in self._seen:
            if self._last is not None and key == self._last[:2] and ev.end:
                self._last_ended = True
            return None
        if self._is_next_segment(packet, ev):
            self._remember(packet, ev)
            return None
        self._remember(packet, ev)
        return DTMF_EVENTS[ev.event] if ev.event < len(DTMF_EVENTS) else None

    def _is_next_segment(self, packet: RtpPacket, ev: DtmfEvent) -> bool:
        """A key held past 0xFFFF timestamp units goes on in a new segment: new timestamp, no marker bit."""
        if self._last is None or self._last_ended or packet.marker:
            return False
        ssrc, ts, event = self._last
        ahead = (packet.timestamp - ts) & 0xFFFFFFFF
        return ssrc == packet.ssrc and event == ev.event and 0 < ahead <= 2 * _MAX_DURATION

    def _remember(self, packet: RtpPacket, ev: DtmfEvent) -> None:
        self._seen.append((packet.ssrc, packet.timestamp))
        self._last = (packet.ssrc, packet.timestamp, ev.event)
        self._last_ended = ev.end
