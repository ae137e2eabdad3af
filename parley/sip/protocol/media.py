"""One call's RTP media: a UDP socket, G.711 both ways, a jitter buffer, RFC 4733 DTMF, hold and timeout.

Why it looks like this:

- Only the negotiated remote address may feed the call. Anything else (a scanner, a stale stream, a
  hijack attempt) is counted and dropped, and logged at debug at most once a second: a flood must not turn
  into a flood of log lines. Garbage never raises out of the datagram callback.
- Per packet the receive path is a header unpack, a dict insert and a counter; G.711 decoding happens at
  the 20 ms tick, one table lookup per frame. That keeps hundreds of calls on one core.
- The caller's audio comes out of :meth:`RtpSession.audio` on a real-time ticker with absolute deadlines
  (``start + k * 20 ms`` on ``loop.time()``), so scheduling jitter never accumulates into drift, and a lost
  packet is a silent frame rather than a hole in time.
- DTMF and comfort-noise packets share the audio's sequence space, so they enter the jitter buffer as empty
  placeholders (played as silence) instead of being counted as lost audio.
"""

from __future__ import annotations

import asyncio
import errno
import random
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from parley.audio import alaw_to_pcm16, pcm16_to_alaw, pcm16_to_ulaw, ulaw_to_pcm16

from .dtmf import DtmfReceiver, dtmf_packets
from .jitter import JitterBuffer
from .rtp import RtpError, RtpPacket

__all__ = ["PCMA", "PCMU", "Codec", "RtpSession", "RtpStats"]

log = structlog.get_logger(__name__)

FRAME_SECS = 0.020
COMFORT_NOISE_PT = 13  # RFC 3389
_HOLD_HOSTS = frozenset({"0.0.0.0", "::"})


@dataclass(frozen=True)
class Codec:
    """An audio codec as negotiated in SDP (``a=rtpmap:<payload_type> <name>/<clock_rate>``)."""

    name: str
    payload_type: int
    clock_rate: int = 8000


PCMU = Codec("PCMU", 0)
PCMA = Codec("PCMA", 8)

_CODECS: dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]] = {
    "PCMU": (ulaw_to_pcm16, pcm16_to_ulaw),
    "PCMA": (alaw_to_pcm16, pcm16_to_alaw),
}


@dataclass
class RtpStats:
    packets_in: int = 0  # accepted from the remote (audio, DTMF, comfort noise)
    packets_out: int = 0
    packets_ignored: int = 0  # from an unexpected address, of a payload type not negotiated, or not RTP
    packets_lost: int = 0  # audio slots the jitter buffer played as silence


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, session: RtpSession) -> None:
        self._session = session

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        try:
            self._session._on_datagram(data, addr)
        except Exception:  # a bug here must not kill the socket's reader
            log.exception("rtp.datagram_failed")

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a remote that is not (yet) listening: expected, and once per packet
        self._session._note_ignored("socket error", str(exc), count=False)


class RtpSession:
    """One call's media: a UDP socket on an even port from a range; RTP only to/from the negotiated address."""

    local_port: int
    on_dtmf: Callable[[str], None] | None

    def __init__(self, loop: asyncio.AbstractEventLoop, rtp_timeout_s: float, jitter_depth: int) -> None:
        self._loop = loop
        self._transport: asyncio.DatagramTransport | None = None
        self.local_port = 0
        self.rtp_timeout_s = rtp_timeout_s
        self.on_dtmf = None
        self.stats = RtpStats()
        self._remote: tuple[str, int] | None = None
        self._codec = PCMU
        self._decode, self._encode = _CODECS["PCMU"]
        self._dtmf_pt: int | None = None
        self._held = False  # hold(True) from the owner
        self._remote_hold = False  # the remote's address is 0.0.0.0 (RFC 2543 hold) or its port 0
        self._closed = False
        self._started = False  # the first packet from the remote has arrived
        self._wake = asyncio.Event()
        self._last_rx = loop.time()
        self._jitter = JitterBuffer(depth_frames=jitter_depth)
        self._dtmf = DtmfReceiver()
        self._ignored_since_log = 0
        self._last_ignored_log = -1.0
        # sending: random SSRC and initial sequence/timestamp (RFC 3550 section 5.1); _ts never wraps here
        self._ssrc = random.getrandbits(32)
        self._seq = random.getrandbits(16)
        self._ts = random.getrandbits(32)
        self._marker = True
        self._dtmf_lock = asyncio.Lock()
        self._dtmf_sending = False

    @classmethod
    async def open(
        cls,
        host: str,
        port_range: tuple[int, int] = (20000, 20999),
        *,
        rtp_timeout_s: float = 60.0,
        jitter_depth: int = 3,
    ) -> RtpSession:
        """Bind a free even port of ``port_range`` (inclusive) on ``host``, starting at a random one."""
        loop = asyncio.get_running_loop()
        lo, hi = port_range
        ports = list(range(lo + (lo & 1), hi + 1, 2))
        if not ports:
            raise ValueError(f"no even port in {port_range}")
        first = random.randrange(len(ports))
        session = cls(loop, rtp_timeout_s, jitter_depth)
        for port in ports[first:] + ports[:first]:
            try:
                transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(session), local_addr=(host, port))
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    continue
                raise
            session._transport = transport
            session.local_port = port
            return session
        raise OSError(errno.EADDRINUSE, f"no free even UDP port in {lo}..{hi} on {host}")

    # --- negotiation and state ---------------------------------------------------------------------------

    def configure(self, remote: tuple[str, int], codec: Codec, dtmf_payload_type: int | None) -> None:
        """Apply the negotiated media (again on a re-INVITE). ``remote`` must be an IP address, not a name."""
        coders = _CODECS.get(codec.name.upper())
        if coders is None or codec.clock_rate != 8000:
            raise ValueError(f"unsupported codec {codec.name}/{codec.clock_rate}")
        host, port = remote[0], int(remote[1])
        if (host, port) != self._remote or codec != self._codec:
            self._jitter.reset()  # a new source or codec: old payloads and sequence numbers mean nothing now
        self._remote = (host, port)
        self._codec = codec
        self._decode, self._encode = coders
        self._dtmf_pt = dtmf_payload_type
        remote_hold = host in _HOLD_HOSTS or port == 0
        if self._remote_hold and not remote_hold:
            self._marker = True
        self._remote_hold = remote_hold

    def hold(self, on: bool) -> None:
        """On hold nothing is sent and silence from the remote is no reason to end the call."""
        if self._held and not on:
            self._marker = True  # a new talkspurt (RFC 3551 section 4.1)
        self._held = on

    @property
    def can_send_dtmf(self) -> bool:
        """The far end's SDP offered telephone-event, so :meth:`send_dtmf` reaches it."""
        return self._dtmf_pt is not None

    @property
    def on_hold(self) -> bool:
        return self._held or self._remote_hold

    @property
    def remote(self) -> tuple[str, int] | None:
        return self._remote

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        if self._transport is not None:
            self._transport.close()

    # --- receiving ---------------------------------------------------------------------------------------

    def _on_datagram(self, data: bytes, addr: tuple[Any, ...]) -> None:
        remote = self._remote
        if remote is None or addr[1] != remote[1] or addr[0] != remote[0]:
            self._note_ignored("unexpected source", addr)
            return
        try:
            packet = RtpPacket.decode(data)
        except RtpError as exc:
            self._note_ignored("not RTP", str(exc))
            return
        pt = packet.payload_type
        if pt == self._codec.payload_type:
            self._jitter.push(packet)
        elif pt == self._dtmf_pt:
            digit = self._dtmf.feed(packet)
            packet.payload = b""  # a placeholder slot: the remote sends no audio during the key press
            self._jitter.push(packet)
            if digit is not None and self.on_dtmf is not None:
                try:
                    self.on_dtmf(digit)
                except Exception:
                    log.exception("rtp.on_dtmf_failed")
        elif pt == COMFORT_NOISE_PT:
            packet.payload = b""
            self._jitter.push(packet)
        else:
            self._note_ignored("payload type not negotiated", pt)
            return
        self.stats.packets_in += 1
        self._last_rx = self._loop.time()
        if not self._started:
            self._started = True
            self._wake.set()

    def _note_ignored(self, reason: str, detail: object, count: bool = True) -> None:
        if count:
            self.stats.packets_ignored += 1
        self._ignored_since_log += 1
        now = self._loop.time()
        if now - self._last_ignored_log >= 1.0:
            log.debug(
                "rtp.ignored", reason=reason, detail=detail, port=self.local_port, since_last=self._ignored_since_log
            )
            self._last_ignored_log = now
            self._ignored_since_log = 0

    def _timed_out(self, now: float) -> bool:
        if self.on_hold:
            self._last_rx = now  # the timeout starts afresh when the hold ends
            return False
        if now - self._last_rx > self.rtp_timeout_s:
            log.info("rtp.timeout", port=self.local_port, secs=self.rtp_timeout_s, packets_in=self.stats.packets_in)
            return True
        return False

    async def audio(self) -> AsyncGenerator[bytes, None]:
        """The remote's audio: PCM16 mono 8 kHz, one 320-byte frame per 20 ms. One consumer per session.

        Nothing before the first packet; then a frame every tick (silence for lost packets and while on
        hold). Ends on :meth:`close` or after ``rtp_timeout_s`` without a packet (not while on hold).
        """
        loop = self._loop
        while not self._started:
            if self._closed or self._timed_out(loop.time()):
                return
            try:
                await asyncio.wait_for(self._wake.wait(), min(1.0, max(self.rtp_timeout_s, 0.01)))
            except TimeoutError:
                pass
        frame = round(FRAME_SECS * self._codec.clock_rate) * 2
        silence = bytes(frame)
        jitter, stats = self._jitter, self.stats
        pending = b""  # decoded audio not yet played (packets longer than 20 ms)
        deadline = loop.time()
        while not self._closed and not self._timed_out(loop.time()):
            while len(pending) < frame:
                payload = jitter.pop()
                if payload is None:
                    break
                pending += self._decode(payload) if payload else silence[: frame - len(pending)]
            stats.packets_lost = jitter.lost
            if len(pending) >= frame:
                out, pending = pending[:frame], pending[frame:]
            else:
                out, pending = pending + silence[len(pending) :], b""
            yield out
            deadline += FRAME_SECS
            now = loop.time()
            if deadline > now:
                await asyncio.sleep(deadline - now)
            elif now - deadline > 0.5:
                deadline = now  # the consumer stalled: start a new timeline rather than burst to catch up

    # --- sending -----------------------------------------------------------------------------------------

    def _send_packet(self, payload_type: int, timestamp: int, payload: bytes, marker: bool) -> None:
        assert self._transport is not None and self._remote is not None
        packet = RtpPacket(payload_type, self._seq, timestamp & 0xFFFFFFFF, self._ssrc, payload, marker)
        self._transport.sendto(packet.encode(), self._remote)
        self._seq = (self._seq + 1) & 0xFFFF
        self.stats.packets_out += 1

    def _can_send(self) -> bool:
        return self._remote is not None and not self.on_hold and not self._closed and self._transport is not None

    async def send(self, pcm16: bytes) -> None:
        """Send one frame of PCM16 8 kHz (320 bytes for 20 ms); the caller paces.

        Skipped frames (on hold, not configured, a DTMF key being sent) still advance the RTP timestamp, as
        RTP wants: the timestamp tells time, the sequence number counts packets.
        """
        samples = len(pcm16) // 2
        if self._can_send() and not self._dtmf_sending:
            self._send_packet(self._codec.payload_type, self._ts, self._encode(pcm16), self._marker)
            self._marker = False
        self._ts += samples

    async def send_dtmf(self, digit: str) -> None:
        """Send one key press as RFC 4733 events (about 160 ms); audio from :meth:`send` pauses meanwhile."""
        events = dtmf_packets(digit, clock_rate=self._codec.clock_rate)  # ValueError for a non-key
        if self._dtmf_pt is None:
            log.info("rtp.dtmf_not_negotiated", port=self.local_port)
            return
        async with self._dtmf_lock:
            if not self._can_send():
                return
            step = round(FRAME_SECS * self._codec.clock_rate)
            start_ts = self._ts
            self._dtmf_sending = True
            try:
                deadline = self._loop.time()
                for i, event in enumerate(events):
                    if not self._can_send() or self._dtmf_pt is None:
                        break
                    if i:
                        deadline += FRAME_SECS
                        await asyncio.sleep(max(0.0, deadline - self._loop.time()))
                    self._send_packet(self._dtmf_pt, start_ts, event.encode(), marker=i == 0)
            finally:
                self._dtmf_sending = False
                # the next event (or audio) must start after this one, even if no audio was sent meanwhile
                self._ts = max(self._ts, start_ts + len(events) * step)
