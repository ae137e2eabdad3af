"""Talk to an agent over a WebSocket: PCM16 mono 16 kHz both ways, JSON events as text frames.

Browsers cannot set headers on a WebSocket, so they first get a short-lived talk
token (``POST /v1/agents/{agent}/talk-token``) and pass it as ``?token=``; other
clients may send their API key or JWT in the usual headers. Protocol: docs/talk.md.

The socket is the whole call: when the agent hangs up, the call ends and the
server sends ``{"type": "end"}`` and closes it; a transfer has nowhere to go
(recorded as unsupported, the conversation goes on).
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

import structlog
from fastapi import APIRouter, HTTPException, WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from parley.agent.document import DTMF_DIGITS, AgentDocument, AgentDocumentError, parse_agent
from parley.api.auth import AuthError, Principal
from parley.api.deps import State, Talk, has_scope, rate_limit
from parley.api.routers.agents import find_agent
from parley.api.schemas import TalkToken
from parley.api.state import AppState
from parley.calls.control import CallControl
from parley.calls.live import CallInfo, CallTarget, LiveCall
from parley.calls.session import Services
from parley.store.agents import AgentRepo
from parley.store.credentials import TenantSecrets
from parley.store.keys import ApiKeyRepo

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/v1/agents", tags=["talk"])

MAX_MESSAGE_BYTES = 64_000  # 2 s of audio: a client sending more per message is not streaming
MAX_TEXT_CHARS = 1_000  # the client's events are tiny: {"type": "dtmf", "digit": "5"}
TOKEN_TTL_S = 60
POLICY_VIOLATION, TRY_AGAIN_LATER, INTERNAL_ERROR = 1008, 1013, 1011


class TalkControl(CallControl):
    """Hanging up needs nothing from the socket here: the call ends, then the route sends ``end`` and closes."""

    async def hang_up(self, reason: str) -> None:
        log.info("talk_agent_hangup", reason=reason)


@router.post("/{agent_ref}/talk-token", response_model=TalkToken)
async def talk_token(agent_ref: str, who: Talk, state: State) -> TalkToken:
    async with state.db.session() as s:
        agent = await find_agent(AgentRepo(s), who.tenant_id, agent_ref)
    token = state.auth.issue_talk_token(who, agent.id, ttl_s=TOKEN_TTL_S)
    return TalkToken(token=token, expires_in=TOKEN_TTL_S, url=f"/v1/agents/{agent.id}/talk?token={token}")


async def refuse(ws: WebSocket, code: int, reason: str) -> None:
    """Accept, then close with ``code`` and ``reason``: closing before accepting answers HTTP 403, which a
    browser's WebSocket hides (it sees only 1006), while a close frame's code and reason reach ``onclose``."""
    await ws.accept()
    await ws.close(code=code, reason=reason.encode()[:120].decode(errors="ignore"))


async def _who(ws: WebSocket, state: AppState, agent_ref: str) -> Principal:
    """The caller, from a talk token (spent here: one session each, none once its key is revoked) or headers."""
    token = ws.query_params.get("token")
    if not token:
        who = await state.auth.authenticate(ws.headers.get("authorization"), ws.headers.get("x-api-key"))
        if not has_scope(who, "talk"):
            raise AuthError(403, "this needs the talk scope")
        return who
    try:
        agent_id = uuid.UUID(agent_ref)
    except ValueError:
        raise AuthError(403, "talk tokens name the agent by id") from None

    async def key_is_live(tenant_id: uuid.UUID, key_id: uuid.UUID) -> bool:
        async with state.db.session() as s:
            return await ApiKeyRepo(s).is_live(tenant_id, key_id)

    return await state.auth.redeem_talk_token(token, agent_id, state.nonces.use, key_is_live)


async def _authenticate(ws: WebSocket, state: AppState, agent_ref: str) -> tuple[Principal, CallTarget] | None:
    """Who calls and which agent, each refused with a close code; the per-key rate limit applies as on HTTP."""
    try:
        who = await _who(ws, state, agent_ref)
        await rate_limit(state, f"who:{who.tenant_id}:{who.subject}", state.settings.rate_limit_per_key)
        async with state.db.session() as s:
            agent = await find_agent(AgentRepo(s), who.tenant_id, agent_ref)
    except AuthError as exc:
        log.info("talk_refused", reason=exc.message)
        await refuse(ws, POLICY_VIOLATION, exc.message)
        return None
    except HTTPException as exc:
        limited = exc.status_code == 429
        await refuse(ws, TRY_AGAIN_LATER if limited else POLICY_VIOLATION, str(exc.detail))
        return None
    try:
        document: AgentDocument = parse_agent(agent.document, f"agent {agent.name}")
    except AgentDocumentError as exc:
        await refuse(ws, INTERNAL_ERROR, str(exc).splitlines()[0])
        return None
    return who, CallTarget(who.tenant_id, agent.id, agent.version, agent.name, document)


def text_frame(text: str) -> tuple[Literal["end", "dtmf", "error"], str]:
    """What a client text frame asks: ``end``, a ``dtmf`` digit, or an ``error`` message to answer (the call goes on).

    Bounded first: a deeply nested frame makes ``json.loads`` raise RecursionError, which would end the call.
    """
    if len(text) > MAX_TEXT_CHARS:
        return "error", f"text frames are limited to {MAX_TEXT_CHARS} characters"
    try:
        event = json.loads(text)
    except (ValueError, RecursionError):
        return "error", "text frames must be JSON events"
    if not isinstance(event, dict):
        return "error", "text frames must be JSON objects"
    if event.get("type") == "end":
        return "end", ""
    if event.get("type") == "dtmf":
        digit = event.get("digit")
        if isinstance(digit, str) and len(digit) == 1 and digit in DTMF_DIGITS:
            return "dtmf", digit
        return "error", f"dtmf digit must be one of {DTMF_DIGITS}"
    return "error", 'unknown event; send binary PCM16, {"type": "dtmf", "digit": "1"} or {"type": "end"}'


async def client_audio(
    ws: WebSocket, send_event: Callable[[dict[str, Any]], Awaitable[None]], dtmf: Callable[[str], Awaitable[None]]
) -> AsyncIterator[bytes]:
    """The caller's audio until ``end`` (or raises WebSocketDisconnect); bad frames get an ``error`` event."""
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        if (data := message.get("bytes")) is not None:
            if len(data) <= MAX_MESSAGE_BYTES:
                yield data
            else:
                await send_event(
                    {"type": "error", "message": f"audio messages are limited to {MAX_MESSAGE_BYTES} bytes"}
                )
        elif (text := message.get("text")) is not None:
            kind, value = text_frame(text)
            if kind == "end":
                return
            if kind == "dtmf":
                await dtmf(value)
            else:
                await send_event({"type": "error", "message": value})


@router.websocket("/{agent_ref}/talk")
async def talk(ws: WebSocket, agent_ref: str, state: State) -> None:
    addr = ws.client.host if ws.client else "unknown"  # a trusted proxy's client: see PARLEY_TRUSTED_PROXIES
    try:
        await rate_limit(state, f"addr:{addr}", state.settings.rate_limit_per_address)
    except HTTPException:
        await refuse(ws, TRY_AGAIN_LATER, "rate limit exceeded")
        return
    found = await _authenticate(ws, state, agent_ref)
    if found is None:
        return
    _who, target = found
    # models load before the handshake completes: a client streams only once the agent can listen
    try:
        services = await Services.create(target.document, TenantSecrets(state.db, state.settings, target.tenant_id))
    except Exception as exc:
        log.exception("talk_services_failed")
        await refuse(ws, INTERNAL_ERROR, f"the agent's services cannot start: {exc}")
        return
    await ws.accept()

    async def send_audio(pcm: bytes) -> None:
        if ws.application_state is WebSocketState.CONNECTED:
            try:
                await ws.send_bytes(pcm)
            except (WebSocketDisconnect, RuntimeError):
                pass

    async def send_event(event: dict[str, Any]) -> None:
        if ws.application_state is WebSocketState.CONNECTED:
            try:
                await ws.send_text(json.dumps(event))
            except (WebSocketDisconnect, RuntimeError):
                pass

    info = CallInfo(caller=addr, worker_id=state.settings.worker_id)  # a restart after a crash finds its calls
    call = LiveCall(
        target, services, state.db, state.blobs, "talk", send_audio, send_event, control=TalkControl(), info=info
    )
    try:
        reason = await call.run(client_audio(ws, send_event, call.dtmf))
        await send_event({"type": "end", "reason": reason, "call_id": str(call.call_id)})
    finally:
        await services.aclose()
        if ws.application_state is WebSocketState.CONNECTED:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):  # the client may have gone meanwhile
                await ws.close()
