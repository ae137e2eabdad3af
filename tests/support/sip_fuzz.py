"""Random mutations of real SIP messages (INVITE with SDP, REGISTER, OPTIONS), atheris-style but seeded.

Byte flips, inserted separators and odd characters (NUL, non-UTF-8, Unicode digits such as '²' that
``str.isdigit`` accepts and ``int`` refuses), deleted or repeated spans and lines, huge numbers and huge
values in the headers the endpoint reads (Content-Length, CSeq, Max-Forwards, Via, SDP lines).
"""

from __future__ import annotations

import random
import uuid

NASTY = [
    b"\x00", b"\xff", b"\xc3(", b"\r\n", b"\n", b"\r", b" ", b"\t", b":", b";", b",", b"<", b">", b'"', b"\\",
    b"=", b"@", b"[", b"]", "\u00b2".encode(), "\u0663".encode(), "\u00e9".encode(), b"%00", b"-1", b"0",
    b"9" * 30, b"9" * 5000, b"z9hG4bK", b";rport", b";received=", b"sip:", b"tag=", b"SIP/2.0",
]  # fmt: skip
FIELDS = [b"Content-Length: ", b"CSeq: ", b"Max-Forwards: ", b"Via: SIP/2.0/UDP ", b"m=audio ", b"c=IN IP4 ",
          b"a=rtpmap:", b"Expires: ", b"Contact: ", b"Require: ", b"To: ", b"From: ", b"Call-ID: "]  # fmt: skip


def base_messages(agent: str, sip_port: int, host: str, local: int, i: int) -> list[bytes]:
    """Real messages as SIPp and phones send them, each with its own Call-ID and branch."""
    branch = f"z9hG4bK{uuid.uuid4().hex[:16]}"
    common = (
        f"Via: SIP/2.0/UDP {host}:{local};branch={branch};rport\r\nMax-Forwards: 70\r\n"
        f'From: "Fuzz" <sip:fuzz@{host}:{local}>;tag=fz{i}\r\nCall-ID: fuzz-{i}-{uuid.uuid4().hex[:8]}\r\n'
        f"Contact: <sip:fuzz@{host}:{local}>\r\nUser-Agent: fuzz\r\n"
    )
    sdp = (
        f"v=0\r\no=fuzz 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
        f"m=audio {local + 1} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
        f"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\n"
    )
    invite = (
        f"INVITE sip:{agent}@127.0.0.1:{sip_port} SIP/2.0\r\n{common}To: <sip:{agent}@127.0.0.1>\r\n"
        f"CSeq: 1 INVITE\r\nContent-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}"
    )
    register = (
        f"REGISTER sip:127.0.0.1:{sip_port} SIP/2.0\r\n{common}To: <sip:fuzz@127.0.0.1>\r\n"
        f"CSeq: 1 REGISTER\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n"
    )
    options = (
        f"OPTIONS sip:{agent}@127.0.0.1:{sip_port} SIP/2.0\r\n{common}To: <sip:{agent}@127.0.0.1>\r\n"
        f"CSeq: 1 OPTIONS\r\nAccept: application/sdp\r\nContent-Length: 0\r\n\r\n"
    )
    return [invite.encode(), register.encode(), options.encode()]


def _flip(rng: random.Random, data: bytearray) -> None:
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(data))
        data[at] = rng.randrange(256)


def _insert(rng: random.Random, data: bytearray) -> None:
    at = rng.randrange(len(data) + 1)
    data[at:at] = rng.choice(NASTY) * rng.choice([1, 1, 2, 50])


def _delete(rng: random.Random, data: bytearray) -> None:
    at = rng.randrange(len(data))
    del data[at : at + rng.randint(1, 40)]


def _repeat_line(rng: random.Random, data: bytearray) -> None:
    lines = bytes(data).split(b"\r\n")
    at = rng.randrange(len(lines))
    lines[at:at] = [lines[at]] * rng.choice([2, 10, 300])
    data[:] = b"\r\n".join(lines)[:65000]


def _field(rng: random.Random, data: bytearray) -> None:
    """A value the endpoint reads, replaced by something nasty."""
    name = rng.choice(FIELDS)
    at = bytes(data).find(name)
    if at < 0:
        return
    start = at + len(name)
    end = bytes(data).find(b"\r\n", start)
    data[start : end if end >= 0 else len(data)] = rng.choice(NASTY) * rng.choice([1, 1, 3, 1000])


def _truncate(rng: random.Random, data: bytearray) -> None:
    del data[rng.randrange(len(data)) :]


OPERATORS = [_flip, _insert, _delete, _repeat_line, _field, _field, _truncate]


def mutate(rng: random.Random, agent: str, sip_port: int, host: str, local: int, i: int) -> bytes:
    """One to three mutations of one of the real messages."""
    data = bytearray(rng.choice(base_messages(agent, sip_port, host, local, i)))
    for _ in range(rng.randint(1, 3)):
        if data:
            rng.choice(OPERATORS)(rng, data)
    return bytes(data[:65000]) or b"\x00"


def known_nasty(agent: str, sip_port: int, host: str, local: int) -> list[bytes]:
    """Every field the endpoint reads, in each real message, set to a Unicode digit and to 5,000 digits.

    Each is a new transaction (its own branch and Call-ID), so none is taken for a retransmission.
    """
    out: list[bytes] = []
    for kind in range(3):
        for name in [*FIELDS, b"Max-Forwards: ", b";rport="]:
            for value in ("\u00b2".encode(), b"9" * 5000):
                base = base_messages(agent, sip_port, host, local, 10_000 + len(out))[kind]
                if name == b";rport=":
                    base = base.replace(b";rport", b";rport=1")  # replaced below: responses never go to port 1
                at = base.find(name)
                if at < 0:
                    continue
                end = min(i for i in (base.find(b"\r\n", at), base.find(b";", at + len(name))) if i >= 0)
                out.append(base[: at + len(name)] + value + base[end:])
    return out
