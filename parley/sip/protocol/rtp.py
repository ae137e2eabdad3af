"""RTP packets (RFC 3550 section 5.1): the fixed header, CSRCs, header extension and padding.

Every datagram that reaches a media port goes through :meth:`RtpPacket.decode`, and anyone on the network
can send one, so decoding checks every length before slicing and raises only :class:`RtpError`. It is one
``struct`` unpack per packet (this path runs for hundreds of calls per core). CSRCs and header extensions
are parsed past, not kept: a two-party phone call has no use for them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["RTP_HEADER_SIZE", "RtpError", "RtpPacket"]

RTP_HEADER_SIZE = 12
_HEADER = struct.Struct("!BBHII")
_EXT_HEADER = struct.Struct("!HH")


class RtpError(ValueError):
    """A datagram that is not a valid RTP version 2 packet."""


@dataclass
class RtpPacket:
    """One RTP packet. ``sequence`` is 16-bit, ``timestamp`` and ``ssrc`` 32-bit, ``payload_type`` 7-bit."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False

    def encode(self) -> bytes:
        """The packet on the wire (no CSRCs, no extension, no padding)."""
        if not 0 <= self.payload_type <= 127:
            raise RtpError(f"payload type {self.payload_type} is outside 0..127")
        try:
            header = _HEADER.pack(
                0x80,
                (0x80 if self.marker else 0) | self.payload_type,
                self.sequence,
                self.timestamp,
                self.ssrc,
            )
        except struct.error as exc:
            raise RtpError(f"RTP header field out of range: {exc}") from exc
        return header + self.payload

    @classmethod
    def decode(cls, data: bytes) -> RtpPacket:
        """Parse one datagram; :class:`RtpError` for anything that is not RTP version 2."""
        size = len(data)
        if size < RTP_HEADER_SIZE:
            raise RtpError(f"RTP packet of {size} bytes is shorter than the 12-byte header")
        b0, b1, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
        if b0 >> 6 != 2:
            raise RtpError(f"RTP version {b0 >> 6}, expected 2")
        offset = RTP_HEADER_SIZE + 4 * (b0 & 0x0F)  # CSRC list
        if b0 & 0x10:  # header extension: 16-bit profile, 16-bit length in 32-bit words
            if offset + 4 > size:
                raise RtpError("RTP header extension is truncated")
            _profile, words = _EXT_HEADER.unpack_from(data, offset)
            offset += 4 + 4 * words
        end = size
        if b0 & 0x20:  # padding: the last octet counts the padding octets, itself included
            pad = data[-1]
            if pad == 0:
                raise RtpError("RTP padding count is zero")
            end -= pad
        if offset > end:
            raise RtpError("RTP header, CSRCs, extension and padding are longer than the packet")
        return cls(
            payload_type=b1 & 0x7F,
            sequence=sequence,
            timestamp=timestamp,
            ssrc=ssrc,
            payload=bytes(data[offset:end]),
            marker=bool(b1 & 0x80),
        )
