"""SIP messages (RFC 3261 sections 7, 19, 20, 25): parse and serialize, with the forms real peers send.

Anyone on the network can send a datagram to the SIP port, so :func:`parse_message` raises only
:class:`SipParseError`. When the start line and the headers a response needs were readable, the error
carries them (``partial``), so the endpoint can still answer 400 instead of dropping the request.

Accepted on input: compact header names (``v``, ``f``, ``t``, ``i``, ...), header folding, several
values of a list header on one line (``Via: a, b``) or several lines, bare LF line ends, a missing
Content-Length (a datagram's body is the rest of it). Output is always long names, one value a line,
CRLF, and a Content-Length that matches the body.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable

from .headers import JOINED, Headers, canonical
from .syntax import TOKEN as _TOKEN
from .syntax import SipParseError, number
from .uri import Address, SipUri, Via

__all__ = [
    "REASONS",
    "Address",
    "Headers",
    "Request",
    "Response",
    "SipMessage",
    "SipParseError",
    "SipUri",
    "Via",
    "new_branch",
    "new_call_id",
    "new_tag",
    "parse_message",
    "response_to",
]

SIP_VERSION = "SIP/2.0"
BRANCH_COOKIE = "z9hG4bK"
MAX_MESSAGE_BYTES = 65_535  # one UDP datagram
MAX_HEADER_FIELDS = 256


_STATUS_LINE = re.compile(r"^SIP/2\.0 ([1-6]\d\d)(?: (.*))?$", re.IGNORECASE)


class SipMessage:
    headers: Headers
    body: bytes

    @property
    def call_id(self) -> str:
        return self.headers.get("Call-ID") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        """``(number, method)``; checked when the message was parsed."""
        num, _, method = (self.headers.get("CSeq") or "").strip().partition(" ")
        return int(num), method.strip().upper()

    @property
    def from_(self) -> Address:
        return Address.parse(self.headers.get("From") or "")

    @property
    def to(self) -> Address:
        return Address.parse(self.headers.get("To") or "")

    @property
    def vias(self) -> list[Via]:
        return [Via.parse(v) for v in self.headers.get_all("Via")]

    @property
    def top_via(self) -> Via:
        """The first Via, parsed alone: what routing needs, without parsing every hop a peer may list."""
        return Via.parse(self.headers.get("Via") or "")

    @property
    def content_type(self) -> str:
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()

    def start_line(self) -> str:
        raise NotImplementedError

    def encode(self) -> bytes:
        self.headers.set("Content-Length", str(len(self.body)))
        lines = [self.start_line()]
        last = None
        for name, value in self.headers:
            if name == last and name in JOINED:
                lines[-1] += f", {value}"
            else:
                lines.append(f"{name}: {value}")
            last = name
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


class Request(SipMessage):
    def __init__(self, method: str, uri: str, headers: Headers | None = None, body: bytes = b"") -> None:
        self.method = method
        self.uri = uri
        self.headers = headers or Headers()
        self.body = body

    def start_line(self) -> str:
        return f"{self.method} {self.uri} {SIP_VERSION}"

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri} {self.call_id}>"


class Response(SipMessage):
    def __init__(self, status: int, reason: str = "", headers: Headers | None = None, body: bytes = b"") -> None:
        self.status = status
        self.reason = reason or REASONS.get(status, "Unknown")
        self.headers = headers or Headers()
        self.body = body

    def start_line(self) -> str:
        return f"{SIP_VERSION} {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason} {self.call_id}>"


_REQUIRED = ("Via", "From", "To", "Call-ID", "CSeq")
_ANSWER_NEEDS = frozenset(_REQUIRED) - {"Via"}  # Via is a list: it could overflow again


def parse_message(data: bytes) -> Request | Response:
    """One SIP message from one datagram."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise SipParseError("message larger than a datagram")
    head, rest = _split_head(data)
    try:
        lines = head.decode("utf-8").replace("\r\n", "\n").split("\n")
    except UnicodeDecodeError:
        raise SipParseError("the start line and headers are not UTF-8") from None
    first = next((i for i, line in enumerate(lines) if line.strip()), None)  # RFC 3261 7.5: CRLFs before it
    if first is None:
        raise SipParseError("empty message")
    message = _start_line(lines[first])
    problem = _add_headers(message, _unfold(lines[first + 1 :]))
    problem = problem or _check(message)
    if problem is None:
        problem = _take_body(message, rest)
    if problem is not None:
        partial = message if isinstance(message, Request) and _can_answer(message) else None
        raise SipParseError(problem, partial)
    return message


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    """The start line and headers, and the body after the blank line (CRLF CRLF or LF LF; none: no body)."""
    for blank in (b"\r\n\r\n", b"\n\n"):
        end = data.find(blank)
        if end >= 0:
            return data[:end], data[end + len(blank) :]
    return data, b""


def _unfold(lines: list[str]) -> list[list[str]]:
    """Each header field's folded pieces (joined once: no quadratic concatenation); blank lines dropped."""
    unfolded: list[list[str]] = []
    for line in lines:
        if line[:1] in (" ", "\t") and unfolded:
            unfolded[-1].append(line.strip())
        elif line.strip():
            unfolded.append([line])
    return unfolded


def _take_body(message: Request | Response, rest: bytes) -> str | None:
    """Sets the body that Content-Length declares (missing: all of ``rest``); the problem with it, if any."""
    length = message.headers.get("Content-Length")
    if length is None:
        message.body = rest
        return None
    size = number(length)
    if size is None:
        return f"bad Content-Length {length[:20]!r}"
    if size > len(rest):
        return f"Content-Length {size} but {len(rest)} body bytes"
    message.body = rest[:size]
    return None


def _add_headers(message: Request | Response, fields: list[list[str]]) -> str | None:
    """Add each field (its folded pieces) to ``message``; the first problem, if any.

    At most MAX_HEADER_FIELDS lines and values are kept (real peers send a few dozen; each one costs
    time on every lookup). Beyond them only what a 400 needs is taken, so the peer still hears why.
    """
    problem = None
    if len(fields) > MAX_HEADER_FIELDS:
        problem = f"more than {MAX_HEADER_FIELDS} header fields"
        del fields[MAX_HEADER_FIELDS:]
    over = False
    for pieces in fields:
        line = " ".join(pieces)
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or not _TOKEN.match(name):
            problem = problem or f"bad header line {line[:60]!r}"
            continue
        if over and canonical(name) not in _ANSWER_NEEDS:
            continue
        try:
            message.headers.add(name, value)
        except SipParseError as exc:
            problem = problem or f"{canonical(name)}: {exc}"
        if not over and len(message.headers) > MAX_HEADER_FIELDS:  # "Via: a, b, ..." lists
            problem, over = f"more than {MAX_HEADER_FIELDS} header values", True
            message.headers.truncate(MAX_HEADER_FIELDS)
    return problem


def _start_line(line: str) -> Request | Response:
    line = line.strip()
    if m := _STATUS_LINE.match(line):
        return Response(int(m.group(1)), (m.group(2) or "").strip())
    parts = line.split(" ")
    if len(parts) != 3 or not _TOKEN.match(parts[0]) or parts[2].upper() != SIP_VERSION or ":" not in parts[1]:
        raise SipParseError(f"bad start line {line[:80]!r}")
    return Request(parts[0].upper(), parts[1])


def _check(message: Request | Response) -> str | None:
    """The headers every message needs, in a form the rest of the endpoint can rely on."""
    for name in _REQUIRED:
        if name not in message.headers:
            return f"missing {name}"
    num, _, method = (message.headers.get("CSeq") or "").strip().partition(" ")
    seq = number(num)
    if seq is None or seq >= 2**31 or not _TOKEN.match(method.strip() or "-"):
        return "bad CSeq"
    if isinstance(message, Request) and method.strip().upper() != message.method:
        return "CSeq method differs from the request method"
    try:
        _ = (message.from_, message.to, message.vias)  # parsed now, so later use cannot fail
        for name in ("Contact", "Record-Route", "Route"):
            for value in message.headers.get_all(name):
                if value.strip() != "*":
                    Address.parse(value)
    except SipParseError as exc:
        return str(exc)
    return None


def _can_answer(request: Request) -> bool:
    """A response goes back by the top Via and copies the rest as received, malformed or not."""
    if not all(n in request.headers for n in _REQUIRED):
        return False
    try:
        request.top_via  # noqa: B018 - parsed only to see that it parses
    except SipParseError:
        return False
    return True


def response_to(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    record_route: bool = False,
) -> Response:
    """A response with the request's Via, From, To (tagged), Call-ID and CSeq (RFC 3261 section 8.2.6.2)."""
    h = Headers()
    for via in request.headers.get_all("Via"):
        h.add("Via", via)
    for name in ("From", "To", "Call-ID", "CSeq"):
        value = request.headers.get(name)
        if value is not None:
            h.add(name, value)
    if status != 100:  # RFC 3261 section 8.2.6.2: every response but 100 tags the To
        try:
            to = request.to
            if to.tag is None:
                h.set("To", str(to.with_tag(to_tag or new_tag())))
        except SipParseError:
            pass
    if status == 100 and (ts := request.headers.get("Timestamp")):
        h.add("Timestamp", ts)
    if record_route and 100 < status < 300:
        for rr in request.headers.get_all("Record-Route"):
            h.add("Record-Route", rr)
    for name, value in headers:
        h.add(name, value)
    return Response(status, reason or "", h, body)


def new_branch() -> str:
    return BRANCH_COOKIE + secrets.token_hex(8)


def new_tag() -> str:
    return secrets.token_hex(6)


def new_call_id(host: str) -> str:
    return f"{secrets.token_hex(12)}@{host}"


REASONS = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued", 183: "Session Progress",
    200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 407: "Proxy Authentication Required", 408: "Request Timeout",
    415: "Unsupported Media Type", 416: "Unsupported URI Scheme", 420: "Bad Extension",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist", 482: "Loop Detected",
    483: "Too Many Hops",
    486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here", 491: "Request Pending",
    500: "Server Internal Error", 501: "Not Implemented", 503: "Service Unavailable", 603: "Decline",
}  # fmt: skip
