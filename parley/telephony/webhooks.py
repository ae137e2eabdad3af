"""What every carrier webhook does the same way: the public address, signed stream parameters, the agent.

A carrier's answer/voice webhook names the call's parties and (in its query) the
agent; it answers with where the media stream connects and which parameters it
carries. Those parameters are signed (HMAC keyed by the carrier's secret), so a
stream cannot choose its own agent; the signature covers an expiry and a nonce,
and the nonce is used once (``state.nonces``: Redis when several workers share it),
so one signed answer opens one stream, within minutes.

A carrier Parley is not configured for takes nothing: until its credential is set
(its settings model's ``credentials``), every webhook is refused (403) and every stream
handshake is closed before it is accepted (the client sees HTTP 403), with a log
line naming the setting. Each carrier's router (:func:`carrier_router`) depends on :func:`carrier_configured`.

Also here, once for every carrier: HTTP Basic (:func:`basic_auth_ok`), a handshake
refused before it is accepted, and a status callback recorded on its call
(:func:`carrier_status`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

import structlog
from fastapi import APIRouter, Depends, HTTPException, WebSocket
from starlette.exceptions import WebSocketException
from starlette.requests import HTTPConnection

from parley.calls.capacity import CAPACITY, Busy
from parley.calls.identity import CallTarget
from parley.config import Settings
from parley.pipeline.frames import EndReason
from parley.store.calls import CallRepo, CallStatus
from parley.store.db import Database
from parley.store.models import Call
from parley.store.ratelimit import UNAVAILABLE_RETRY_S, RateLimitUnavailable
from parley.telephony.carrier import carriers
from parley.telephony.routing import NoSuchAgent, resolve_target
from parley.telephony.state import State, TelephonyState
from parley.telephony.stream import TargetFinder
from parley.telephony.wire import StreamStart

log = structlog.get_logger(__name__)


def __getattr__(name: str) -> Any:
    """``CARRIER_CREDENTIALS``: carrier → the settings its webhooks and streams are checked with (each carrier's
    settings model declares them); until every one is set (and not empty), the carrier is off."""
    if name == "CARRIER_CREDENTIALS":
        return {carrier.name: carrier.settings_model.credentials for carrier in carriers.all()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def missing_credentials(settings: Settings, carrier: str) -> list[str]:
    """The environment variables still to set before ``carrier`` takes anything (empty: it is configured)."""
    return carriers.get(carrier).settings(settings).missing()


def carrier_router(carrier: str) -> APIRouter:
    """The router of ``carrier``'s routes (/telephony/<carrier>/…): each is rate limited per source address and
    refused while the carrier is not configured."""
    return APIRouter(
        prefix=f"/telephony/{carrier}",
        tags=["telephony"],
        dependencies=[Depends(registry_reachable), Depends(source_limit), Depends(carrier_configured(carrier))],
    )


def carrier_configured(carrier: str) -> Callable[..., Awaitable[None]]:
    """Dependency of every route of ``carrier``: refused (webhook 403, handshake closed before accept, so HTTP 403)
    while its credential is not set. An unset secret never means "believe anyone"."""

    async def check(conn: HTTPConnection, state: State) -> None:
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


def basic_auth_ok(authorization: str, username: str, password: str) -> bool:
    """An ``Authorization: Basic`` header naming ``username`` and ``password``; an empty password admits nobody."""
    if not password:
        return False
    scheme, _, value = authorization.partition(" ")
    try:
        given = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, ValueError):
        return False
    return scheme.lower() == "basic" and safe_equal(given, f"{username}:{password}")


def public_url(settings: Settings, request_base: str) -> str:
    """The address carriers reach Parley at: PARLEY_PUBLIC_URL, else what this request came in on."""
    return (settings.public_url or request_base).rstrip("/")


def ws_base(base: str) -> str:
    """``https://host`` → ``wss://host`` (and http → ws): where a carrier opens the media stream."""
    scheme, _, rest = base.partition("://")
    return ("wss://" if scheme == "https" else "ws://") + rest


def busy_error(busy: Busy) -> HTTPException:
    """A carrier's "busy": 503 with Retry-After (its fallback URL or the next trunk takes the call)."""
    return HTTPException(503, f"busy: {busy.message}", headers={"Retry-After": str(busy.retry_after)})


async def registry_reachable(conn: HTTPConnection) -> None:
    """Before anything touches Redis (rate limits, nonces): with the call registry unreachable, every carrier
    route answers 503 + Retry-After (a stream: closed 1013), with the reason, instead of failing on Redis."""
    busy = CAPACITY.registry_busy()
    if busy is None:
        return
    CAPACITY.refusal("telephony", busy)
    if conn.scope["type"] == "websocket":
        raise WebSocketException(code=1013, reason=f"busy: {busy.message}"[:120])
    raise busy_error(busy)


async def source_limit(conn: HTTPConnection, state: State) -> None:
    """Rate limit per source address on every carrier webhook and stream handshake (PARLEY_TELEPHONY_RATE_LIMIT).

    A refused webhook gets 429; a refused handshake is closed before it is accepted (the client sees HTTP 403).
    """
    address = conn.client.host if conn.client else "unknown"
    try:
        decision = await state.limiter.hit(f"telephony:{address}", state.settings.telephony_rate_limit)
    except RateLimitUnavailable as exc:  # the carrier's retry or fallback URL takes the call
        if conn.scope["type"] == "websocket":
            raise WebSocketException(code=1013, reason="busy: rate limits unavailable") from None
        raise HTTPException(503, str(exc), headers={"Retry-After": str(UNAVAILABLE_RETRY_S)}) from None
    if decision.allowed:
        return
    log.warning("telephony_rate_limited", path=conn.url.path[:80])
    if conn.scope["type"] == "websocket":
        raise WebSocketException(code=1008, reason="rate limit exceeded")
    raise HTTPException(429, "rate limit exceeded", headers={"Retry-After": str(max(1, round(decision.retry_after)))})


async def record_carrier_status(
    repo: CallRepo, call: Call, status: str, failed: Collection[str], **details: str | None
) -> None:
    """A carrier's word on a call: always a ``carrier_status`` event; a dialled call that ends before it was
    answered (a status in ``failed``, or ``completed`` while still dialing) is closed as failed."""
    await repo.add_event(
        call.tenant_id, call.id, 0.0, "carrier_status", {"type": "carrier_status", "status": status, **details}
    )
    if call.status == CallStatus.DIALING and (status in failed or status == "completed"):
        reason = status if status in failed else EndReason.NOT_ANSWERED
        await repo.end(call.tenant_id, call.id, CallStatus.FAILED, reason, 0.0)


async def carrier_status(
    state: TelephonyState,
    carrier: str,
    call_id: str,
    status: str,
    failed: Collection[str],
    record_id: uuid.UUID | None = None,
    **details: str | None,
) -> bool:
    """A status callback about the carrier's call ``call_id`` (and, if given, Parley's record ``record_id``):
    recorded on that call (see record_carrier_status). False when there is no such call (the caller logs it and
    answers 204 all the same)."""
    async with state.db.session() as s:
        repo = CallRepo(s)
        call = await repo.by_provider_id(carrier, call_id) if call_id else None
        if call is None or (record_id is not None and call.id != record_id):
            return False
        await record_carrier_status(repo, call, status, failed, **details)
    return True


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
        db,
        agent_ref=query.get("agent"),
        called=called,
        tenant_ref=query.get("tenant"),
        default_tenant=settings.telephony_tenant,
    )
    params = {
        "agent": str(target.agent_id),
        "tenant": str(target.tenant_id),
        "caller": caller or "",
        "called": called or "",
        call_key: provider_call_id,
        "call": query.get("call", ""),
    }
    return target, params


async def signed_answer(
    state: TelephonyState,
    carrier: str,
    secret: str,
    query: Mapping[str, str],
    parties: tuple[str | None, str | None],
    call_key: str,
    provider_call_id: str,
) -> tuple[CallTarget, dict[str, str]] | None:
    """What an answer webhook needs: the call's agent (see :func:`answer_target`; ``parties`` is caller, called)
    and the stream parameters naming it, signed with ``secret``. None, logged, when no agent answers the call.
    A worker taking no more calls (at its cap, draining) answers 503 + Retry-After at once."""
    busy = CAPACITY.refusal(carrier)
    if busy is not None:
        raise busy_error(busy)
    try:
        target, params = await answer_target(state.db, state.settings, query, *parties, call_key, provider_call_id)
    except NoSuchAgent as exc:
        log.warning(f"{carrier}_unknown_agent", error=str(exc))
        return None
    return target, sign_stream(secret, params, state.settings.telephony_signature_ttl_s)


async def refuse_handshake(ws: WebSocket, event: str, reason: str) -> None:
    """Close a stream before accepting it (the client sees HTTP 403), with a warning ``event`` in the log."""
    log.warning(event)
    await ws.close(code=1008, reason=reason)


async def check_stream_signature(state: TelephonyState, secret: str, params: Mapping[str, str]) -> None:
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


def signed_stream_target(state: TelephonyState, secret: str) -> TargetFinder:
    """The stream's agent, from the parameters our webhook answer signed with ``secret`` (always checked)."""
    if not secret:
        raise ValueError("stream parameters are checked with the carrier's secret, which is not set")

    async def find(start: StreamStart) -> CallTarget:
        params = dict(start.params)
        await check_stream_signature(state, secret, params)
        return await resolve_target(
            state.db,
            agent_ref=params.get("agent"),
            called=start.called,
            tenant_ref=params.get("tenant"),
            default_tenant=state.settings.telephony_tenant,
        )

    return find
