"""A fixed-depth jitter buffer for one RTP stream of 20 ms packets.

UDP delivers late, early, twice or never. Packets wait here by sequence number until the 20 ms ticker asks
for the next one; the ticker then plays that packet, or silence when it is missing. Sequence numbers are
16-bit and wrap, so every comparison is a distance modulo 2**16 from the next sequence due.

- Start (and after a resync): nothing is played until ``depth_frames`` packets are buffered, the cushion
  that absorbs jitter.
- Underrun (the buffer ran dry: the far end paused, or the network stalled): the ticker waits without
  advancing and the cushion is rebuilt, so a stream that resumes is not thrown away as "late".
- Duplicates and packets whose slot was already played are dropped.
- A new SSRC resyncs at once (the far end restarted or was replaced); a sequence jump further than
  ``max_frames`` resyncs once a second packet confirms it (RFC 3550 appendix A.1), so one stray packet
  cannot derail the stream.
- Latency creep (a burst after a stall leaves the buffer deep) is trimmed one frame at a time.
"""

from __future__ import annotations

from .rtp import RtpPacket

__all__ = ["JitterBuffer"]

_SEQ_MOD = 1 << 16
_HALF = 1 << 15
_CREEP_TICKS = 10  # 200 ms too deep, then one extra frame per tick is dropped until the depth is back


class JitterBuffer:
    """Reorders by sequence number (16-bit wrap-around), drops duplicates and late packets, absorbs jitter."""

    def __init__(self, depth_frames: int = 3, max_frames: int = 50) -> None:
        if depth_frames < 1 or max_frames <= depth_frames:
            raise ValueError("need 1 <= depth_frames < max_frames")
        self.depth_frames = depth_frames
        self.max_frames = max_frames
        self._high_water = 2 * depth_frames + 2
        self._buf: dict[int, bytes] = {}
        self._next = 0  # sequence number due at the next pop
        self._ssrc: int | None = None
        self._old_ssrc: int | None = None
        self._priming = True  # waiting for depth_frames packets before playing
        self._started = False  # anything played since the start or the last resync
        self._jump: RtpPacket | None = None  # a far packet seen once, waiting for its successor to confirm it
        self._deep_ticks = 0
        self.received = 0
        self.lost = 0  # slots played as silence because their packet never came in time
        self.late = 0
        self.duplicates = 0
        self.dropped = 0  # dropped to bound the buffer or cut latency
        self.resyncs = 0

    def __len__(self) -> int:
        return len(self._buf)

    def reset(self) -> None:
        """Forget the stream (new codec or remote): the next packet starts priming again."""
        self._buf.clear()
        self._ssrc = self._old_ssrc = None
        self._jump = None
        self._priming = True
        self._started = False
        self._deep_ticks = 0

    def push(self, packet: RtpPacket) -> None:
        seq = packet.sequence & 0xFFFF
        if packet.ssrc != self._ssrc:
            if self._ssrc is not None and packet.ssrc == self._old_ssrc:
                self.late += 1  # stragglers from the stream we already left
                return
            self._resync(packet.ssrc, seq, counted=self._ssrc is not None)
        ahead = (seq - self._next) % _SEQ_MOD
        if ahead >= _HALF:  # behind the slot due next
            behind = _SEQ_MOD - ahead
            if not self._started and self._span() + behind < self.max_frames:
                self._next = seq  # reordered at the very start: nothing played, so start earlier
            elif behind <= self.max_frames:
                self.late += 1
                return
            elif not self._confirm_jump(packet):
                return
        elif ahead >= self.max_frames:
            if not self._started and not self._buf:
                self._next = seq
            elif not self._confirm_jump(packet):
                return
        if seq in self._buf:
            self.duplicates += 1
            return
        self._buf[seq] = packet.payload
        self.received += 1

    def pop(self) -> bytes | None:
        """The payload due at this 20 ms tick, or None (play silence): priming, underrun, or lost packet."""
        buf = self._buf
        if self._priming:
            if len(buf) < self.depth_frames:
                return None
            self._priming = False
            self._started = True
        if not buf:
            self._priming = True  # ran dry: wait in place and rebuild the cushion
            return None
        if len(buf) > self._high_water:
            self._deep_ticks += 1
            if self._deep_ticks >= _CREEP_TICKS:
                self._skip()
        else:
            self._deep_ticks = 0
        payload = buf.pop(self._next, None)
        if payload is None:
            self.lost += 1
        self._next = (self._next + 1) % _SEQ_MOD
        return payload

    def _span(self) -> int:
        """How far ahead of the next slot the furthest buffered packet is."""
        return max(((s - self._next) % _SEQ_MOD for s in self._buf), default=0)

    def _skip(self) -> None:
        """Drop the slot due next (played or not) to shorten the buffer by one frame."""
        if self._buf.pop(self._next, None) is not None:
            self.dropped += 1
        else:
            self.lost += 1
        self._next = (self._next + 1) % _SEQ_MOD

    def _confirm_jump(self, packet: RtpPacket) -> bool:
        """A far jump counts only when the next packet follows it (then both are kept)."""
        first = self._jump
        if first is not None and (first.sequence + 1) & 0xFFFF == packet.sequence & 0xFFFF:
            self._resync(packet.ssrc, first.sequence & 0xFFFF, counted=True)
            self._buf[self._next] = first.payload
            self.received += 1
            return True
        self._jump = packet
        return False

    def _resync(self, ssrc: int, seq: int, counted: bool) -> None:
        if self._ssrc is not None and ssrc != self._ssrc:
            self._old_ssrc = self._ssrc
        self._buf.clear()
        self._ssrc = ssrc
        self._next = seq
        self._priming = True
        self._started = False
        self._jump = None
        self._deep_ticks = 0
        if counted:
            self.resyncs += 1
