"""HTTP digest authentication as a SIP client (RFC 2617, RFC 7616, RFC 3261 section 22).

Trunks challenge an outbound INVITE with 401 (WWW-Authenticate) or 407 (Proxy-Authenticate); the
INVITE is sent again with the matching Authorization or Proxy-Authorization header. When a server offers
several challenges, the strongest algorithm Parley knows wins. qop=auth is preferred; auth-int is used
only when it is the sole qop offered; a challenge without qop gets the RFC 2069 response.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field

__all__ = ["Challenge", "DigestError", "authorization", "choose_challenge", "parse_challenge"]

_HASHES = {"MD5": "md5", "SHA-256": "sha256", "SHA-512-256": "sha512_256"}
_PREFERENCE = ("SHA-512-256", "SHA-256", "MD5")


class DigestError(ValueError):
    """A challenge Parley cannot answer (unknown scheme or algorithm, missing realm or nonce)."""


@dataclass(frozen=True)
class Challenge:
    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False
    params: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def base_algorithm(self) -> str:
        return self.algorithm.upper().removesuffix("-SESS")

    @property
    def session(self) -> bool:
        return self.algorithm.upper().endswith("-SESS")


def _auth_params(text: str) -> dict[str, str]:
    """``name=value, name="quoted, value"`` pairs (names lower-cased)."""
    params: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t,":
            i += 1
        start = i
        while i < n and text[i] not in "= \t,":
            i += 1
        name = text[start:i].lower()
        while i < n and text[i] in " \t":
            i += 1
        if not name or i >= n or text[i] != "=":
            raise DigestError(f"bad auth parameter near {text[start : start + 30]!r}")
        i += 1
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == '"':
            i += 1
            buf: list[str] = []
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                buf.append(text[i])
                i += 1
            if i >= n:
                raise DigestError("unterminated quoted string")
            i += 1
            value = "".join(buf)
        else:
            start = i
            while i < n and text[i] not in ",":
                i += 1
            value = text[start:i].strip()
        params[name] = value
    return params


def parse_challenge(header: str) -> Challenge:
    """One WWW-Authenticate / Proxy-Authenticate value."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "digest":
        raise DigestError(f"unsupported auth scheme {scheme[:20]!r}")
    params = _auth_params(rest)
    if "realm" not in params or "nonce" not in params:
        raise DigestError("a digest challenge needs realm and nonce")
    algorithm = params.get("algorithm", "MD5").strip()  # echoed as the server spelled it
    if algorithm.upper().removesuffix("-SESS") not in _HASHES:
        raise DigestError(f"unsupported digest algorithm {algorithm[:20]!r}")
    qop = tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip())
    stale = params.get("stale", "").lower() == "true"
    return Challenge(params["realm"], params["nonce"], algorithm, qop, params.get("opaque"), stale, params)


def choose_challenge(headers: list[str]) -> Challenge:
    """The strongest of the challenges Parley can answer."""
    found: list[Challenge] = []
    for value in headers:
        try:
            found.append(parse_challenge(value))
        except DigestError:
            continue
    if not found:
        raise DigestError("no digest challenge Parley can answer")
    return min(found, key=lambda c: _PREFERENCE.index(c.base_algorithm))


def _h(algorithm: str, text: str) -> str:
    return hashlib.new(_HASHES[algorithm], text.encode()).hexdigest()


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def authorization(
    challenge: Challenge,
    method: str,
    uri: str,
    username: str,
    password: str,
    *,
    body: bytes = b"",
    nc: int = 1,
    cnonce: str | None = None,
) -> str:
    """The Authorization / Proxy-Authorization value answering ``challenge`` for this request."""
    alg = challenge.base_algorithm
    qop = "auth" if "auth" in challenge.qop else ("auth-int" if "auth-int" in challenge.qop else None)
    cnonce = cnonce or secrets.token_hex(8)
    ha1 = _h(alg, f"{username}:{challenge.realm}:{password}")
    if challenge.session:
        ha1 = _h(alg, f"{ha1}:{challenge.nonce}:{cnonce}")
    a2 = f"{method}:{uri}" if qop != "auth-int" else f"{method}:{uri}:{_hb(alg, body)}"
    ha2 = _h(alg, a2)
    if qop:
        response = _h(alg, f"{ha1}:{challenge.nonce}:{nc:08x}:{cnonce}:{qop}:{ha2}")
    else:
        response = _h(alg, f"{ha1}:{challenge.nonce}:{ha2}")
    parts = [
        f"username={_quote(username)}",
        f"realm={_quote(challenge.realm)}",
        f"nonce={_quote(challenge.nonce)}",
        f"uri={_quote(uri)}",
        f"response={_quote(response)}",
        f"algorithm={challenge.algorithm}",
    ]
    if qop:
        parts += [f"cnonce={_quote(cnonce)}", f"qop={qop}", f"nc={nc:08x}"]
    if challenge.opaque is not None:
        parts.append(f"opaque={_quote(challenge.opaque)}")
    return "Digest " + ", ".join(parts)


def _hb(algorithm: str, body: bytes) -> str:
    return hashlib.new(_HASHES[algorithm], body).hexdigest()
