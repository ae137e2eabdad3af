"""RtpSession over real UDP sockets on 127.0.0.1: two sessions talking, and a hand-driven peer socket."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable
from typing import cast

import numpy as np
import pytest

from parley.audio import alaw_to_pcm16, pcm16_to_alaw, pcm16_to_ulaw, ulaw_to_pcm16
from parley.sip.protocol.dtmf import DtmfEvent, dtmf_packets
from parley.sip.protocol.media import PCMA, PCMU, RtpSession
from parley.sip.protocol.rtp import RtpPacket

HOST = "127.0.0.1"
PORTS = (42000, 42999)
SILENCE = bytes(320)
DTMF_PT = 101


def frame(k: int) -> bytes:
    """A 20 ms frame that survives G.711 recognisably and is never silence."""
    return np.full(160, 1000 + 400 * (k % 60), dtype="<i2").tobytes()


def pcmu(k: int) -> bytes:
    return pcm16_to_ulaw(frame(k))


class Peer(asyncio.DatagramProtocol):
    """A plain UDP socket standing in for the phone at the other end."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait(data)

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def send(self, data: bytes, port: int) -> None:
        assert self.transport is not None
        self.transport.sendto(data, (HOST, port))

    async def packets(self, n: int) -> list[RtpPacket]:
        return [RtpPacket.decode(await asyncio.wait_for(self.received.get(), 2.0)) for _ in range(n)]


async def open_peer() -> Peer:
    _, peer = await asyncio.get_running_loop().create_datagram_endpoint(Peer, local_addr=(HOST, 0))
    return peer


@pytest.fixture
async def session() -> AsyncIterator[RtpSession]:
    s = await RtpSession.open(HOST, PORTS, rtp_timeout_s=5.0)
    yield s
    s.close()


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    p = await open_peer()
    yield p
    assert p.transport is not None
    p.transport.close()


async def collect(s: RtpSession, want: int, max_frames: int = 200, limit_s: float = 5.0) -> list[bytes]:
    """Frames from ``s.audio()`` until ``want`` non-silent ones arrived (or the stream ends)."""
    got: list[bytes] = []

    async def run() -> None:
        async with contextlib.aclosing(s.audio()) as frames:
            async for f in frames:
                got.append(f)
                if sum(f != SILENCE for f in got) >= want or len(got) >= max_frames:
                    return

    await asyncio.wait_for(run(), limit_s)
    return got


async def paced(peer: Peer, port: int, packets: list[bytes]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time()
    for data in packets:
        peer.send(data, port)
        deadline += 0.02
        await asyncio.sleep(max(0.0, deadline - loop.time()))


def rtp(seq: int, k: int, ssrc: int = 77, pt: int = 0, payload: bytes | None = None) -> bytes:
    return RtpPacket(
        pt, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, ssrc, payload if payload is not None else pcmu(k)
    ).encode()


def voiced(frames: list[bytes]) -> list[bytes]:
    return [f for f in frames if f != SILENCE]


def expected(
    ks: range | list[int],
    decode: Callable[[bytes], bytes] = ulaw_to_pcm16,
    encode: Callable[[bytes], bytes] = pcm16_to_ulaw,
) -> list[bytes]:
    return [decode(encode(frame(k))) for k in ks]


async def test_two_sessions_talk_in_order_and_paced() -> None:
    a = await RtpSession.open(HOST, PORTS)
    b = await RtpSession.open(HOST, PORTS)
    try:
        assert a.local_port % 2 == 0 and b.local_port % 2 == 0 and a.local_port != b.local_port
        a.configure((HOST, b.local_port), PCMU, DTMF_PT)
        b.configure((HOST, a.local_port), PCMU, DTMF_PT)
        n = 25

        async def speak() -> None:
            loop = asyncio.get_running_loop()
            deadline = loop.time()
            for k in range(n):
                await a.send(frame(k))
                deadline += 0.02
                await asyncio.sleep(max(0.0, deadline - loop.time()))

        loop = asyncio.get_running_loop()
        t0 = loop.time()
        speaker = asyncio.create_task(speak())
        got = await collect(b, n)
        elapsed = loop.time() - t0
        await speaker
        assert all(len(f) == 320 for f in got)
        assert voiced(got) == expected(range(n))
        assert len(got) <= elapsed / 0.02 + 2  # a real-time ticker never runs ahead of the clock
        assert b.stats.packets_in == n and b.stats.packets_lost == 0 and b.stats.packets_ignored == 0
        assert a.stats.packets_out == n
    finally:
        a.close()
        b.close()


async def test_outgoing_packets_are_well_formed(session: RtpSession, peer: Peer) -> None:
    await session.send(frame(0))  # not configured yet: nothing goes out
    session.configure((HOST, peer.port), PCMA, DTMF_PT)
    for k in range(3):
        await session.send(frame(k))
    pkts = await peer.packets(3)
    assert [p.marker for p in pkts] == [True, False, False]
    assert {p.payload_type for p in pkts} == {8} and len({p.ssrc for p in pkts}) == 1
    assert [(p.sequence - pkts[0].sequence) & 0xFFFF for p in pkts] == [0, 1, 2]
    assert [(p.timestamp - pkts[0].timestamp) & 0xFFFFFFFF for p in pkts] == [0, 160, 320]
    assert [alaw_to_pcm16(p.payload) for p in pkts] == expected(range(3), alaw_to_pcm16, pcm16_to_alaw)

    session.hold(True)  # on hold: nothing is sent, but time (the timestamp) goes on
    await session.send(frame(3))
    session.hold(False)
    await session.send(frame(4))
    (p,) = await peer.packets(1)
    assert peer.received.empty()
    assert p.sequence == (pkts[2].sequence + 1) & 0xFFFF
    assert p.timestamp == (pkts[2].timestamp + 320) & 0xFFFFFFFF and p.marker
    assert session.stats.packets_out == 4

    session.configure(("0.0.0.0", peer.port), PCMU, DTMF_PT)  # RFC 2543 hold
    assert session.on_hold
    await session.send(frame(5))
    await asyncio.sleep(0.05)
    assert peer.received.empty()


async def test_reordered_duplicated_and_lost_packets(session: RtpSession, peer: Peer) -> None:
    session.configure((HOST, peer.port), PCMU, DTMF_PT)
    order = [0, 1, 2, 4, 3, 3, 5, 7, 6, 8, 10, 11, 12, 13]  # 9 is lost, 3 duplicated, neighbours swapped
    feeder = asyncio.create_task(paced(peer, session.local_port, [rtp(1000 + k, k) for k in order]))
    got = await collect(session, 13)
    await feeder
    assert voiced(got) == expected([k for k in range(14) if k != 9])
    want = expected(range(14))
    assert SILENCE in got[got.index(want[8]) + 1 : got.index(want[10])]  # the lost packet's slot is silent
    assert session.stats.packets_lost == 1


async def test_sequence_wraps_around(session: RtpSession, peer: Peer) -> None:
    session.configure((HOST, peer.port), PCMU, None)
    seqs = [65530 + i for i in range(12)]
    feeder = asyncio.create_task(paced(peer, session.local_port, [rtp(s, i) for i, s in enumerate(seqs)]))
    got = await collect(session, 12)
    await feeder
    assert voiced(got) == expected(range(12))


async def test_third_party_and_garbage_are_ignored(session: RtpSession, peer: Peer) -> None:
    intruder = await open_peer()
    try:
        session.configure((HOST, peer.port), PCMU, DTMF_PT)
        for k in range(5):
            intruder.send(rtp(k, k, ssrc=666), session.local_port)  # valid RTP, wrong address
        for junk in (b"\x00" * 5, b"\xff" * 40, b"GET / HTTP/1.1\r\n\r\n", bytes([0x80, 200]) + bytes(30)):
            peer.send(junk, session.local_port)  # right address, not RTP (or RTCP: PT 72 is not negotiated)
        peer.send(rtp(0, 0, pt=18), session.local_port)  # G.729: not negotiated
        await asyncio.sleep(0.1)
        assert session.stats.packets_ignored == 10 and session.stats.packets_in == 0

        feeder = asyncio.create_task(paced(peer, session.local_port, [rtp(k, k) for k in range(6)]))
        got = await collect(session, 6)
        await feeder
        assert voiced(got) == expected(range(6))
    finally:
        assert intruder.transport is not None
        intruder.transport.close()


async def test_dtmf_between_sessions_one_digit_per_press() -> None:
    a = await RtpSession.open(HOST, PORTS)
    b = await RtpSession.open(HOST, PORTS)
    digits: list[str] = []
    b.on_dtmf = digits.append
    try:
        a.configure((HOST, b.local_port), PCMU, DTMF_PT)
        b.configure((HOST, a.local_port), PCMU, DTMF_PT)
        for d in "1#9":
            await a.send_dtmf(d)
        for _ in range(50):
            if len(digits) >= 3:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert digits == ["1", "#", "9"]
        assert b.stats.packets_in == 3 * len(dtmf_packets("1"))
    finally:
        a.close()
        b.close()


async def test_send_dtmf_wire_format_and_audio_pause(session: RtpSession, peer: Peer) -> None:
    session.configure((HOST, peer.port), PCMU, DTMF_PT)
    await session.send(frame(0))
    (first,) = await peer.packets(1)

    async def talk() -> None:  # audio keeps coming from the app while the key is sent
        for k in range(12):
            await session.send(frame(k))
            await asyncio.sleep(0.02)

    talker = asyncio.create_task(talk())
    await asyncio.sleep(0.005)
    await session.send_dtmf("5")
    await talker
    pkts = []
    while not peer.received.empty():
        pkts.append(RtpPacket.decode(peer.received.get_nowait()))
    events = [p for p in pkts if p.payload_type == DTMF_PT]
    assert [DtmfEvent.decode(p.payload) for p in events] == dtmf_packets("5")
    assert [p.marker for p in events] == [True] + [False] * 6
    assert len({p.timestamp for p in events}) == 1
    seqs = [p.sequence for p in [first, *pkts]]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))  # one sequence space
    start = events[0].timestamp
    after = pkts[pkts.index(events[-1]) + 1 :]
    assert after and all((p.timestamp - start) & 0xFFFFFFFF >= 800 for p in after)
    between = pkts[pkts.index(events[0]) : pkts.index(events[-1])]
    assert all(p.payload_type == DTMF_PT for p in between)  # no audio during the key press

    with pytest.raises(ValueError):
        await session.send_dtmf("Z")


async def test_received_dtmf_fills_its_slots_with_silence(session: RtpSession, peer: Peer) -> None:
    digits: list[str] = []
    session.on_dtmf = digits.append
    session.configure((HOST, peer.port), PCMU, DTMF_PT)
    packets = [rtp(k, k) for k in range(4)]
    for i, ev in enumerate(dtmf_packets("7")):
        packets.append(RtpPacket(DTMF_PT, 4 + i, 4 * 160, 77, ev.encode(), marker=i == 0).encode())
    packets += [rtp(11 + k, 4 + k) for k in range(4)]
    feeder = asyncio.create_task(paced(peer, session.local_port, packets))
    got = await collect(session, 8)
    await feeder
    assert digits == ["7"]
    assert voiced(got) == expected(range(8))
    assert session.stats.packets_lost == 0


async def test_audio_times_out_without_packets_but_not_on_hold(peer: Peer) -> None:
    s = await RtpSession.open(HOST, PORTS, rtp_timeout_s=0.3)
    try:
        s.configure((HOST, peer.port), PCMU, None)
        await paced(peer, s.local_port, [rtp(k, k) for k in range(4)])
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        got = await collect(s, 1000, limit_s=3.0)  # ends by itself once the packets stop
        assert voiced(got) == expected(range(4))
        assert loop.time() - t0 >= 0.25

        s.hold(True)
        task = asyncio.create_task(collect(s, 1000, max_frames=10_000))
        await asyncio.sleep(0.6)
        assert not task.done()  # on hold the silence is expected
        s.close()
        await asyncio.wait_for(task, 1.0)  # close() ends the stream
    finally:
        s.close()


async def test_audio_before_any_packet_times_out_and_close_ends_it() -> None:
    s = await RtpSession.open(HOST, PORTS, rtp_timeout_s=0.2)
    s.configure((HOST, 9), PCMU, None)
    assert await collect(s, 1, limit_s=2.0) == []
    s2 = await RtpSession.open(HOST, PORTS)
    task = asyncio.create_task(collect(s2, 1, limit_s=2.0))
    await asyncio.sleep(0.05)
    s2.close()
    assert await task == []
    s.close()


async def test_port_range_exhaustion() -> None:
    base = 43990
    a = await RtpSession.open(HOST, (base, base + 3))
    b = await RtpSession.open(HOST, (base, base + 3))
    try:
        assert {a.local_port, b.local_port} == {base, base + 2}
        with pytest.raises(OSError):
            await RtpSession.open(HOST, (base, base + 3))
    finally:
        a.close()
        b.close()
    with pytest.raises(ValueError):
        await RtpSession.open(HOST, (43991, 43991))


async def test_on_dtmf_errors_do_not_break_reception(session: RtpSession, peer: Peer) -> None:
    def boom(digit: str) -> None:
        raise RuntimeError("owner bug")

    session.on_dtmf = boom
    session.configure((HOST, peer.port), PCMU, DTMF_PT)
    ev = dtmf_packets("3")[0]
    peer.send(RtpPacket(DTMF_PT, 1, 0, 5, ev.encode(), marker=True).encode(), session.local_port)
    await asyncio.sleep(0.05)
    feeder = asyncio.create_task(paced(peer, session.local_port, [rtp(2 + k, k, ssrc=5) for k in range(4)]))
    got = await collect(session, 4)
    await feeder
    assert voiced(got) == expected(range(4))
