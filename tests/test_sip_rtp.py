"""RTP packet encoding and decoding (RFC 3550 section 5.1), including hostile input."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley.sip.protocol.rtp import RtpError, RtpPacket


def _raw(
    *,
    version: int = 2,
    padding: int = 0,
    extension: bytes | None = None,
    csrcs: tuple[int, ...] = (),
    marker: bool = False,
    pt: int = 0,
    seq: int = 1,
    ts: int = 2,
    ssrc: int = 3,
    payload: bytes = b"abc",
) -> bytes:
    b0 = version << 6 | (0x20 if padding else 0) | (0x10 if extension is not None else 0) | len(csrcs)
    out = struct.pack("!BBHII", b0, (0x80 if marker else 0) | pt, seq, ts, ssrc)
    out += b"".join(struct.pack("!I", c) for c in csrcs)
    if extension is not None:
        out += struct.pack("!HH", 0xBEDE, len(extension) // 4) + extension
    out += payload
    if padding:
        out += bytes(padding - 1) + bytes([padding])
    return out


def test_round_trip_keeps_every_field() -> None:
    pkt = RtpPacket(payload_type=101, sequence=0xFFFF, timestamp=0xFFFFFFFF, ssrc=0xDEADBEEF, payload=b"x" * 160)
    pkt.marker = True
    data = pkt.encode()
    assert len(data) == 12 + 160
    assert data[0] == 0x80 and data[1] == 0x80 | 101
    assert RtpPacket.decode(data) == pkt


def test_decode_skips_csrcs_extension_and_padding() -> None:
    data = _raw(csrcs=(7, 8), extension=b"\x10\x01\x02\x03" * 2, padding=4, marker=True, pt=8, payload=b"hello")
    pkt = RtpPacket.decode(data)
    assert (pkt.payload, pkt.payload_type, pkt.marker, pkt.sequence, pkt.timestamp, pkt.ssrc) == (
        b"hello",
        8,
        True,
        1,
        2,
        3,
    )


def test_empty_payload_is_valid() -> None:
    assert RtpPacket.decode(_raw(payload=b"")).payload == b""
    assert RtpPacket.decode(_raw(payload=b"", padding=1)).payload == b""


_GARBAGE = [
    b"",
    b"\x80" * 11,  # shorter than the fixed header
    _raw(version=1),
    _raw(version=3),
    bytes([0xA0]) + _raw()[1:-1] + b"\x00",  # padding flag with a zero count
    bytes([0xA0]) + _raw(payload=b"ab")[1:-1] + b"\xff",  # padding longer than the packet
    _raw(csrcs=(1, 2, 3))[:20],  # CSRC list cut short
    bytes([0x90]) + _raw(payload=b"")[1:] + b"\xbe\xde",  # extension header truncated
    bytes([0x90]) + _raw(payload=b"")[1:] + b"\xbe\xde\x00\x05" + b"\x00" * 8,  # extension body truncated
]


@pytest.mark.parametrize("data", _GARBAGE)
def test_garbage_raises_rtp_error(data: bytes) -> None:
    with pytest.raises(RtpError):
        RtpPacket.decode(data)


def test_encode_rejects_out_of_range_fields() -> None:
    with pytest.raises(RtpError):
        RtpPacket(payload_type=128, sequence=0, timestamp=0, ssrc=0, payload=b"").encode()
    with pytest.raises(RtpError):
        RtpPacket(payload_type=0, sequence=1 << 16, timestamp=0, ssrc=0, payload=b"").encode()
    assert issubclass(RtpError, ValueError)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=80))
def test_fuzz_decode_random_bytes(data: bytes) -> None:
    try:
        pkt = RtpPacket.decode(data)
    except RtpError:
        return
    assert len(pkt.payload) <= len(data) - 12


@settings(max_examples=400, deadline=None)
@given(
    b0=st.integers(0x80, 0xBF),  # always version 2, any P/X/CC
    rest=st.binary(min_size=11, max_size=60),
)
def test_fuzz_decode_version_2_headers(b0: int, rest: bytes) -> None:
    try:
        pkt = RtpPacket.decode(bytes([b0]) + rest)
    except RtpError:
        return
    assert 0 <= pkt.payload_type <= 127
    assert pkt.encode()[12:] == pkt.payload


@settings(max_examples=200, deadline=None)
@given(
    pt=st.integers(0, 127),
    seq=st.integers(0, 0xFFFF),
    ts=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=200),
    marker=st.booleans(),
)
def test_fuzz_round_trip(pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool) -> None:
    pkt = RtpPacket(pt, seq, ts, ssrc, payload, marker)
    assert RtpPacket.decode(pkt.encode()) == pkt
