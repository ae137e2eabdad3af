"""SDP (RFC 4566) and the offer/answer model (RFC 3264) for one G.711 audio stream with RFC 4733 events.

Parley speaks PCMU and PCMA at 8 kHz, 20 ms packets, and telephone-event at 8 kHz. The answer names
one codec (the first of the offer's, in the offerer's order of preference, that Parley speaks), so the
far end never switches codecs mid-call. Holds are read from the direction attribute and the old
``c=0.0.0.0`` form (RFC 3264 section 8.4). Parsing raises only :class:`SdpError`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field

from .syntax import number

__all__ = [
    "MediaDescription",
    "MediaParams",
    "NoCommonCodec",
    "SdpError",
    "SessionDescription",
    "accept_answer",
    "answer_offer",
    "make_offer",
]

#: payload types a stream may use without an rtpmap (RFC 3551 table 4)
STATIC = {
    0: ("PCMU", 8000),
    3: ("GSM", 8000),
    4: ("G723", 8000),
    8: ("PCMA", 8000),
    9: ("G722", 8000),
    18: ("G729", 8000),
}
SUPPORTED = ("PCMU", "PCMA")
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
_REVERSE = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}
_RTP_PROTOS = ("RTP/AVP", "RTP/AVPF")
DTMF_PAYLOAD_TYPE = 101
MAX_SDP_BYTES = 16_384


class SdpError(ValueError):
    """The body is not SDP Parley can read (answered 400)."""


class NoCommonCodec(SdpError):
    """A readable offer with no audio stream Parley can take (answered 488 Not Acceptable Here)."""


@dataclass
class MediaDescription:
    """One ``m=`` section."""

    kind: str
    port: int
    proto: str
    formats: list[str]
    connection: str | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)

    def attribute(self, name: str) -> str | None:
        return next((v for n, v in self.attributes if n == name), None)

    def rtpmap(self) -> dict[int, tuple[str, int, int]]:
        """payload type -> (encoding upper-cased, clock rate, channels)."""
        found: dict[int, tuple[str, int, int]] = {}
        for name, value in self.attributes:
            if name != "rtpmap" or not value:
                continue
            pt, _, spec = value.partition(" ")
            enc, _, rest = spec.strip().partition("/")
            rate, _, channels = rest.partition("/")
            pt_n, rate_n, channels_n = number(pt, 3), number(rate), number(channels or "1", 3)
            if pt_n is not None and rate_n is not None and channels_n is not None:
                found[pt_n] = (enc.upper(), rate_n, channels_n)
        return found

    def fmtp(self, pt: int) -> str | None:
        for name, value in self.attributes:
            if name == "fmtp" and value:
                key, _, params = value.partition(" ")
                if key == str(pt):
                    return params.strip()
        return None

    def direction(self, session_default: str) -> str:
        return next((n for n, _ in self.attributes if n in DIRECTIONS), session_default)


@dataclass
class SessionDescription:
    origin: str = "- 0 0 IN IP4 0.0.0.0"
    name: str = "-"
    connection: str | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)

    @classmethod
    def parse(cls, body: bytes | str) -> SessionDescription:
        sdp = cls()
        seen_version = False
        current: MediaDescription | None = None  # the m= section the lines belong to (None: the session)
        for kind, value in _lines(_text(body)):
            if kind == "v":
                if value.strip() != "0":
                    raise SdpError(f"SDP version {value[:10]!r}")
                seen_version = True
            elif not seen_version:
                raise SdpError("SDP must start with v=0")
            else:
                current = sdp._take(kind, value, current)
        if not seen_version:
            raise SdpError("not SDP (no v=0)")
        return sdp

    def _take(self, kind: str, value: str, current: MediaDescription | None) -> MediaDescription | None:
        """One line after ``v=0``, into the session or ``current``; the section the next line belongs to.
        Session-only lines (o=, s=) inside a media section, and lines Parley has no use for, are skipped."""
        target: SessionDescription | MediaDescription = self if current is None else current
        if kind == "m":
            current = _media_line(value)
            self.media.append(current)
        elif kind == "c":
            target.connection = _connection(value)
        elif kind == "a":
            name, colon, attr = value.partition(":")
            target.attributes.append((name.strip().lower(), attr.strip() if colon else None))
        elif kind == "o" and current is None:
            if len(value.split()) != 6:
                raise SdpError(f"bad o= line {value[:60]!r}")
            self.origin = value
        elif kind == "s" and current is None:
            self.name = value
        return current

    def encode(self) -> bytes:
        lines = ["v=0", f"o={self.origin}", f"s={self.name}"]
        if self.connection:
            lines.append(f"c={_c_line(self.connection)}")
        lines.append("t=0 0")
        lines += [_a_line(n, v) for n, v in self.attributes]
        for m in self.media:
            lines.append(f"m={m.kind} {m.port} {m.proto} {' '.join(m.formats)}")
            if m.connection:
                lines.append(f"c={_c_line(m.connection)}")
            lines += [_a_line(n, v) for n, v in m.attributes]
        return ("\r\n".join(lines) + "\r\n").encode()

    def direction(self) -> str:
        return next((n for n, _ in self.attributes if n in DIRECTIONS), "sendrecv")


def _text(body: bytes | str) -> str:
    """The SDP as text: bytes must be UTF-8 and at most MAX_SDP_BYTES."""
    if isinstance(body, str):
        return body
    if len(body) > MAX_SDP_BYTES:
        raise SdpError("SDP body too large")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise SdpError("SDP is not UTF-8") from None


def _lines(text: str) -> Iterator[tuple[str, str]]:
    """Each non-blank line's type letter and value, in order; a line not of the form ``x=...`` is an error."""
    for raw in text.replace("\r\n", "\n").split("\n"):
        line = raw.strip()
        if not line:
            continue
        if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
            raise SdpError(f"bad SDP line {line[:60]!r}")
        yield line[0], line[2:]


def _connection(value: str) -> str:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError(f"bad c= line {value[:60]!r}")
    address = parts[2].split("/")[0]
    if not address:
        raise SdpError("empty connection address")
    return address


def _media_line(value: str) -> MediaDescription:
    parts = value.split()
    if len(parts) < 4:
        raise SdpError(f"bad m= line {value[:60]!r}")
    port_text = parts[1].split("/")[0]
    port = number(port_text, 5)
    if port is None or port > 65535:
        raise SdpError(f"bad media port {parts[1][:20]!r}")
    return MediaDescription(parts[0].lower(), port, parts[2], parts[3:])


def _c_line(address: str) -> str:
    return f"IN {'IP6' if ':' in address else 'IP4'} {address}"


def _a_line(name: str, value: str | None) -> str:
    return f"a={name}" if value is None else f"a={name}:{value}"


@dataclass(frozen=True)
class MediaParams:
    """What a negotiation settled: where to send, what to send, and whether Parley may send at all."""

    remote_host: str
    remote_port: int
    encoding: str  # PCMU or PCMA
    payload_type: int
    dtmf_payload_type: int | None
    #: Parley's direction: recvonly/inactive means the far end put the call on hold
    direction: str = "sendrecv"

    @property
    def remote(self) -> tuple[str, int]:
        return (self.remote_host, self.remote_port)

    @property
    def on_hold(self) -> bool:
        return self.direction in ("recvonly", "inactive")


def _is_null(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_unspecified
    except ValueError:
        return False


def _ours(address: str, theirs: str) -> str:
    """Parley's direction facing ``theirs``; ``c=0.0.0.0`` (old-style hold) means: send nothing there."""
    if _is_null(address):
        return "recvonly" if theirs in ("sendrecv", "sendonly") else "inactive"
    return _REVERSE[theirs]


def _pick(m: MediaDescription) -> tuple[str, int, int | None, str | None]:
    """(encoding, payload type, telephone-event payload type, its fmtp) for an offered stream."""
    rtpmap = m.rtpmap()
    codec: tuple[str, int] | None = None
    dtmf: int | None = None
    for fmt in m.formats:
        pt_or_none = number(fmt, 3)
        if pt_or_none is None or pt_or_none > 127:
            continue
        pt = pt_or_none
        enc, rate, channels = rtpmap.get(pt) or (*STATIC.get(pt, ("", 0)), 1)
        if enc == "TELEPHONE-EVENT" and rate == 8000 and dtmf is None:
            dtmf = pt
        elif codec is None and enc in SUPPORTED and rate == 8000 and channels == 1:
            codec = (enc, pt)
    if codec is None:
        raise NoCommonCodec(f"no PCMU or PCMA in the offer ({' '.join(m.formats)[:60]})")
    return codec[0], codec[1], dtmf, m.fmtp(dtmf) if dtmf is not None else None


def _audio_attributes(encoding: str, pt: int, dtmf: int | None, events: str | None, direction: str) -> list:
    attrs: list[tuple[str, str | None]] = [("rtpmap", f"{pt} {encoding}/8000")]
    if dtmf is not None:
        attrs += [("rtpmap", f"{dtmf} telephone-event/8000"), ("fmtp", f"{dtmf} {events or '0-16'}")]
    return [*attrs, ("ptime", "20"), (direction, None)]


def answer_offer(
    offer: SessionDescription, host: str, port: int, session_id: int, version: int
) -> tuple[SessionDescription, MediaParams]:
    """The answer to ``offer`` (one m-line per offered one, RFC 3264 section 6) and what it settled."""
    chosen: MediaParams | None = None
    problem: SdpError | None = None
    media: list[MediaDescription] = []
    for m in offer.media:
        usable = chosen is None and m.kind == "audio" and m.port != 0 and m.proto.upper() in _RTP_PROTOS
        address = m.connection or offer.connection
        if usable and address is None:
            problem, usable = SdpError("the audio stream has no connection address"), False
        if usable:
            try:
                enc, pt, dtmf, events = _pick(m)
            except NoCommonCodec as exc:
                problem, usable = exc, False
        if not usable or address is None:
            media.append(MediaDescription(m.kind, 0, m.proto, m.formats[:1]))
            continue
        offered = m.direction(offer.direction())
        ours = _ours(address, offered)
        chosen = MediaParams(address, m.port, enc, pt, dtmf, ours)
        formats = [str(pt)] + ([str(dtmf)] if dtmf is not None else [])
        media.append(
            MediaDescription("audio", port, m.proto, formats, None, _audio_attributes(enc, pt, dtmf, events, ours))
        )
    if chosen is None:
        raise problem or NoCommonCodec("the offer has no audio stream")
    return _session(host, session_id, version, media), chosen


def make_offer(host: str, port: int, session_id: int, version: int, direction: str = "sendrecv") -> SessionDescription:
    """Parley's offer (outbound calls, and late-offer INVITEs): PCMU, PCMA, telephone-event."""
    attrs: list[tuple[str, str | None]] = [
        ("rtpmap", "0 PCMU/8000"),
        ("rtpmap", "8 PCMA/8000"),
        ("rtpmap", f"{DTMF_PAYLOAD_TYPE} telephone-event/8000"),
        ("fmtp", f"{DTMF_PAYLOAD_TYPE} 0-16"),
        ("ptime", "20"),
        (direction, None),
    ]
    m = MediaDescription("audio", port, "RTP/AVP", ["0", "8", str(DTMF_PAYLOAD_TYPE)], None, attrs)
    return _session(host, session_id, version, [m])


def accept_answer(answer: SessionDescription) -> MediaParams:
    """What the far end's answer to :func:`make_offer` settled (its first codec that Parley offered)."""
    for m in answer.media:
        if m.kind != "audio" or m.port == 0:
            continue
        address = m.connection or answer.connection
        if address is None:
            raise SdpError("the answer's audio stream has no connection address")
        enc, pt, dtmf, _ = _pick(m)
        theirs = m.direction(answer.direction())
        ours = _ours(address, theirs)
        return MediaParams(address, m.port, enc, pt, dtmf, ours)
    raise NoCommonCodec("the answer accepts no audio stream")


def _session(host: str, session_id: int, version: int, media: list[MediaDescription]) -> SessionDescription:
    family = "IP6" if ":" in host else "IP4"
    return SessionDescription(f"parley {session_id} {version} IN {family} {host}", "parley", host, [], media)
