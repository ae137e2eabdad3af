"""Recording tokens: a signed, short-lived grant to fetch one call's recording without headers.

An ``<audio src>`` cannot send a bearer header, so the console asks ``POST /v1/calls/{id}/recording-token`` and
puts the token in the URL. Unlike a talk token it is not spent on use: a player fetches the file in several Range
requests. It is bound to the tenant and the call, lives :data:`TTL_S` seconds, and stops working when the key that
minted it is revoked. Signed like talk tokens (HS256, ``PARLEY_TOKEN_SECRET``); the token is never logged.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import jwt

from parley.api.auth import RECORDING_AUDIENCE, TALK_LEEWAY_S, Authenticator, AuthError, Principal

TTL_S = 600


@dataclass(frozen=True)
class RecordingGrant:
    """Whose recording a verified token opens."""

    tenant_id: uuid.UUID
    call_id: uuid.UUID
    subject: str
    key_id: uuid.UUID | None


def issue(auth: Authenticator, who: Principal, call_id: uuid.UUID, ttl_s: int = TTL_S) -> str:
    """A token for ``call_id``'s recording, on behalf of ``who`` (checked for ``calls:read`` by the route)."""
    now = int(time.time())
    claims = {
        "aud": RECORDING_AUDIENCE,
        "sub": who.subject,
        "tenant_id": str(who.tenant_id),
        "call_id": str(call_id),
        **({"key_id": str(who.key_id)} if who.key_id else {}),
        "iat": now,
        "exp": now + ttl_s,
    }
    return jwt.encode(claims, auth.signing_secret, algorithm="HS256")


async def redeem(
    auth: Authenticator,
    token: str,
    call_id: uuid.UUID,
    key_is_live: Callable[[uuid.UUID, uuid.UUID], Awaitable[bool]],
) -> RecordingGrant:
    """The grant ``token`` carries, if it is valid, unexpired, for ``call_id`` and its key is not revoked."""
    try:
        claims = jwt.decode(
            token,
            auth.signing_secret,
            algorithms=["HS256"],
            audience=RECORDING_AUDIENCE,
            leeway=TALK_LEEWAY_S,
            options={"require": ["exp", "aud", "tenant_id", "call_id"]},
        )
        grant = RecordingGrant(
            uuid.UUID(claims["tenant_id"]),
            uuid.UUID(claims["call_id"]),
            str(claims.get("sub", "")),
            uuid.UUID(claims["key_id"]) if "key_id" in claims else None,
        )
    except jwt.ExpiredSignatureError:
        raise AuthError(401, "recording token expired") from None
    except (jwt.PyJWTError, ValueError, TypeError, AttributeError):
        raise AuthError(401, "invalid recording token") from None
    if grant.call_id != call_id:
        raise AuthError(403, "recording token is for another call")
    if grant.key_id is not None and not await key_is_live(grant.tenant_id, grant.key_id):
        raise AuthError(401, "the key that issued this recording token has been revoked")
    return grant
