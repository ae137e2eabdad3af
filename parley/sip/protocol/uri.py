"""SIP URIs, name-addrs and Via entries (RFC 3261 sections 19.1, 20.10, 20.42), parsed and printed.

Parsing raises only :class:`SipParseError`: these parsers see whatever a peer put in a header.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from .syntax import SipParseError, format_params, number, parse_params, split_quoted

__all__ = ["Address", "SipParseError", "SipUri", "Via", "format_params", "number", "parse_params", "split_quoted"]


@dataclass
class SipUri:
    """``sip:user:password@host:port;params?headers`` (RFC 3261 section 19.1)."""

    host: str
    user: str | None = None
    port: int | None = None
    scheme: str = "sip"
    password: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str | None = None

    @classmethod
    def parse(cls, text: str) -> SipUri:
        text = text.strip()
        scheme, colon, rest = text.partition(":")
        scheme = scheme.lower()
        if not colon or scheme not in ("sip", "sips"):
            raise SipParseError(f"not a SIP URI: {text[:80]!r}")
        rest, _, headers = rest.partition("?")
        userinfo, at, hostpart = rest.rpartition("@")
        user = password = None
        if at:
            user, _, pw = userinfo.partition(":")
            password = pw or None
            if not user:
                raise SipParseError(f"empty user in {text[:80]!r}")
        hostport, *params = hostpart.split(";")
        host, port = _host_port(hostport)
        return cls(host, user, port, scheme, password, parse_params(params), headers or None)

    @property
    def user_text(self) -> str | None:
        """The user part with %-escapes decoded (``Front%20desk`` -> ``Front desk``)."""
        return unquote(self.user) if self.user is not None else None

    @property
    def hostport(self) -> str:
        return f"{self.host}:{self.port}" if self.port is not None else self.host

    def __str__(self) -> str:
        userinfo = ""
        if self.user is not None:
            userinfo = self.user + (f":{self.password}" if self.password else "") + "@"
        tail = f"?{self.headers}" if self.headers else ""
        return f"{self.scheme}:{userinfo}{self.hostport}{format_params(self.params)}{tail}"


def _host_port(text: str) -> tuple[str, int | None]:
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError(f"bad IPv6 reference {text[:80]!r}")
        host, rest = text[: end + 1], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise SipParseError(f"bad host {text[:80]!r}")
        port_text = rest[1:] if rest else ""
    else:
        host, _, port_text = text.partition(":")
    if not host or not re.match(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)$", host):
        raise SipParseError(f"bad host {text[:80]!r}")
    if port_text == "" and ":" not in text.lstrip("[").split("]")[-1]:
        return host.lower(), None
    port = number(port_text, 5)
    if port is None or not 0 < port < 65536:
        raise SipParseError(f"bad port in {text[:80]!r}")
    return host.lower(), port


@dataclass
class Address:
    """A name-addr or addr-spec with header parameters: From, To, Contact, Route, Refer-To."""

    uri: SipUri
    display: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Address:
        text = text.strip()
        parts = split_quoted(text, ";")
        head = parts[0].strip()
        lt = _unquoted_index(head, "<")
        if lt >= 0:
            display, inner = head[:lt], head[lt + 1 :]
            if not inner.endswith(">"):
                raise SipParseError(f"bad name-addr {text[:80]!r}")
            display = display.strip()
            if display.startswith('"') and display.endswith('"') and len(display) >= 2:
                display = display[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            return cls(SipUri.parse(inner[:-1]), display or None, parse_params(parts[1:]))
        # addr-spec: parameters after the URI belong to the header, not the URI (RFC 3261 section 20.10)
        return cls(SipUri.parse(head), None, parse_params(parts[1:]))

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def with_tag(self, tag: str) -> Address:
        return Address(self.uri, self.display, {**self.params, "tag": tag})

    def __str__(self) -> str:
        display = ""
        if self.display:
            escaped = self.display.replace("\\", "\\\\").replace('"', '\\"')
            display = f'"{escaped}" '
        return f"{display}<{self.uri}>{format_params(self.params)}"


def _unquoted_index(text: str, ch: str) -> int:
    quoted = escaped = False
    for i, c in enumerate(text):
        if escaped:
            escaped = False
        elif quoted and c == "\\":
            escaped = True
        elif c == '"':
            quoted = not quoted
        elif c == ch and not quoted:
            return i
    return -1


@dataclass
class Via:
    """One Via entry: ``SIP/2.0/UDP host:port;branch=z9hG4bK...;rport``."""

    host: str
    port: int | None = None
    transport: str = "UDP"
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Via:
        proto, _, rest = text.strip().partition(" ")
        pieces = [p.strip() for p in proto.split("/")]
        rest = rest.strip()
        if len(pieces) != 3 or pieces[0].upper() != "SIP" or pieces[1] != "2.0" or not rest:
            raise SipParseError(f"bad Via {text[:80]!r}")
        sent_by, *params = split_quoted(rest, ";")
        host, port = _host_port(sent_by)
        return cls(host, port, pieces[2].upper(), parse_params(params))

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def sent_by(self) -> str:
        return f"{self.host}:{self.port or 5060}"

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"SIP/2.0/{self.transport} {self.host}{port}{format_params(self.params)}"
