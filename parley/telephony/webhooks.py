"""What every carrier webhook does the same way: the public address, signed stream parameters, the agent.

A carrier's answer/voice webhook names the call's parties and (in its query) the
agent; it answers with where the media stream connects and which parameters it
carries. Those parameters are signed (HMAC keyed by the carrier's secret), so a
stream cannot choose its own agent; the signature covers an expiry and a nonce,
and the nonce is used once (``state.nonces``: Redis when several workers share it),
so one signed answer opens one stream, within minutes.

A carrier Parley is not configured for takes nothing: until its credential is set
(:data:`CARRIER_CREDENTIALS`), every webhook is refused (403) and every stream
handshake is closed before it is accepted (the client sees HTTP 403), with a log
line naming the setting. Each carrier's router depends on :func:`carrier_configured`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping

import structlog
from fastapi import HTTPException
from pydantic import SecretStr
from starlette.exceptions import WebSocketException
from starlette.requests import HTTPConnection

from parley.api.state import AppState
from parley.calls.live import CallTarget
from parley.config import Settings
from parley.store.db import Database
from parley.telephony.routing import NoSuchAgent, resolve_target
from parley.telephony.stream import StreamStart, TargetFinder

log = structlog.get_logger(__name__)


#: the settings each carrier's webhooks and streams are checked with: until every one is set (and not empty), the
#: carrier is off — no webhook is believed and no stream opens
CARRIER_CREDENTIALS: dict[str, tuple[str, ...]] = {
    "twilio": ("twilio_auth_token",),
    "vonage": ("vonage_signature_secret",),
    "plivo": ("plivo_auth_token",),
    "exotel": ("exotel_api_key", "exotel_api_token"),
    "asterisk": ("asterisk_password",),
    "freeswitch": ("freeswitch_token",),
}


def missing_credentials(settings: Settings, carrier: str) -> list[str]:
    """The environment variables still to set before ``carrier`` takes anything (empty: it is configured)."""
    missing = []
    for name in CARRIER_CREDENTIALS[carrier]:
        value = getattr(settings, name)
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if not text:
            missing.append(f"PARLEY_{name.upper()}")
    return missing


def carrier_configured(carrier: str) -> Callable[[HTTPConnection], Awaitable[None]]:
    """Dependency of every route of ``carrier``: refused (webhook 403, handshake closed before accept, so HTTP 403)
    while its credential is not set. An unset secret never means "believe anyone"."""
    if carrier not in CARRIER_CREDENTIALS:
        raise ValueError(f"no credentials are known for carrier {carrier!r}")

    async def check(conn: HTTPConnection) -> None:
        state: AppState = conn.app.state.parley
        missing = missing_credentials(state.settings, carrier)
        if not missing:
            return
        log.warning("carrier_not_configured", carrier=carrier, path=conn.url.path[:80], setting=" and ".join(missing))
        reason = f"{carrier} is not configured ({', '.join(missing)})"
        if conn.scope["type"] == "websocket":
            raise WebSocketException(code=1008, reason=reason)
        raise HTTPException(403, reason)

    return check


def safe_equal(given: str, expected: str) -> bool:
    """Constant-time comparison of two texts as bytes: any text (non-ASCII, lone surrogates) is just unequal."""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


def public_url(settings: Settings, request_base: str) -> str:
    """The address carriers reach Parley at: PARLEY_PUBLIC_URL, else what this request came in on."""
    return (settings.public_url or request_base).rstrip("/")


def ws_base(base: str) -> str:
    """``https://host`` → ``wss://host`` (and http → ws): where a carrier opens the media stream."""
    scheme, _, rest = base.partition("://")
    return ("wss://" if scheme == "https" else "ws://") + rest


async def source_limit(conn: HTTPConnection) -> None:
    """Rate limit per source address on every carrier webhook and stream handshake (PARLEY_TELEPHONY_RATE_LIMIT).

    A refused webhook gets 429; a refused handshake is closed before it is accepted (the client sees HTTP 403).
    """
    state: AppState = conn.app.state.parley
    address = conn.client.host if conn.client else "unknown"
    decision = await state.limiter.hit(f"telephony:{address}", state.settings.telephony_rate_limit)
    if decision.allowed:
        return
    log.warning("telephony_rate_limited", path=conn.url.path[:80])
    if conn.scope["type"] == "websocket":
        raise WebSocketException(code=1008, reason="rate limit exceeded")
    raise HTTPException(429, "rate limit exceeded", headers={"Retry-After": str(max(1, round(decision.retry_after)))})


def stream_token(secret: str, params: Mapping[str, str]) -> str:
    """HMAC over the stream's parameters: the stream proves they came from a webhook answer we signed.

    The text is canonical JSON, so no value can shift the boundary between two parameters.
    """
    text = "parley-stream:" + json.dumps(dict(params), sort_keys=True, separators=(",", ":"))
    return hmac.new(secret.encode(), text.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def sign_stream(secret: str, params: Mapping[str, str], ttl_s: float) -> dict[str, str]:
    """``params`` plus an expiry, a nonce and the ``token`` over all of them (what a webhook answer carries)."""
    signed = {**params, "exp": str(int(time.time() + ttl_s)), "nonce": secrets.token_urlsafe(12)}
    signed["token"] = stream_token(secret, signed)
    return signed


async def answer_target(
    db: Database,
    settings: Settings,
    query: Mapping[str, str],
    caller: str | None,
    called: str | None,
    call_key: str,
    provider_call_id: str,
) -> tuple[CallTarget, dict[str, str]]:
    """The agent a webhook's call goes to, and the stream parameters naming it (unsigned).

    ``query`` holds Parley's own parameters (``agent``, ``tenant``, and ``call`` for a call Parley dialled, whose
    far party is then the "to" side). Raises :class:`~parley.telephony.routing.NoSuchAgent`.
    """
    if query.get("call"):
        caller, called = called, caller
    target = await resolve_target(
        db, agent_ref=query.get("agent"), called=called, tenant_ref=query.get("tenant"),
        default_tenant=settings.telephony_tenant,
    )  # fmt: skip
    params = {"agent": str(target.agent_id), "tenant": str(target.tenant_id), "caller": caller or "",
              "called": called or "", call_key: provider_call_id, "call": query.get("call", "")}  # fmt: skip
    return target, params


async def check_stream_signature(state: AppState, secret: str, params: Mapping[str, str]) -> None:
    """Signed by us, not expired, and not used before (raises :class:`NoSuchAgent`, which closes with 1008)."""
    unsigned = dict(params)
    given = unsigned.pop("token", "")
    if not safe_equal(given, stream_token(secret, unsigned)):
        raise NoSuchAgent("stream parameters are not signed by this Parley")
    try:
        left = float(unsigned.get("exp", "")) - time.time()
    except ValueError:
        left = -1.0
    if left <= 0:
        raise NoSuchAgent("signed stream parameters have expired")
    if not await state.nonces.use(f"stream:{unsigned.get('nonce', '')}", left + 1):
        raise NoSuchAgent("signed stream parameters were already used")


def signed_stream_target(state: AppState, secret: str) -> TargetFinder:
    """The stream's agent, from the parameters our webhook answer signed with ``secret`` (always checked)."""
    if not secret:
        raise ValueError("stream parameters are checked with the carrier's secret, which is not set")

    async def find(start: StreamStart) -> CallTarget:
        params = dict(start.params)
        await check_stream_signature(state, secret, params)
        return await resolve_target(
            state.db, agent_ref=params.get("agent"), called=start.called, tenant_ref=params.get("tenant"),
            default_tenant=state.settings.telephony_tenant,
        )  # fmt: skip

    return find
