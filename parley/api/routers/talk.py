"""Talk to an agent over a WebSocket: the route, who may talk, and to which agent.

Browsers cannot set headers on a WebSocket, so they first get a short-lived talk
token (``POST /v1/agents/{agent}/talk-token``) and pass it as ``?token=``; other
clients may send their API key or JWT in the usual headers. The protocol on the
socket is :mod:`parley.api.talk_protocol` (docs/talk.md); the call itself runs
through the bridge every WebSocket transport shares (:mod:`parley.calls.ws_bridge`).
"""

from __future__ import annotations

import uuid

import structlog
from fastapi import APIRouter, HTTPException, WebSocket

from parley.agent.document import AgentDocument, AgentDocumentError, parse_agent
from parley.api.auth import AuthError, Principal
from parley.api.deps import State, Talk, has_scope, rate_limit
from parley.api.routers.agents import find_agent
from parley.api.schemas import TalkToken
from parley.api.state import AppState
from parley.api.talk_protocol import TalkWire
from parley.calls.identity import CallInfo, CallTarget
from parley.calls.record_writer import CallStore
from parley.calls.ws_bridge import Socket, run_socket_call
from parley.store.agents import AgentRepo
from parley.store.credentials import TenantSecrets
from parley.store.keys import ApiKeyRepo

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/v1/agents", tags=["talk"])

TOKEN_TTL_S = 60
POLICY_VIOLATION, TRY_AGAIN_LATER, INTERNAL_ERROR = 1008, 1013, 1011


@router.post("/{agent_ref}/talk-token", response_model=TalkToken)
async def talk_token(agent_ref: str, who: Talk, state: State) -> TalkToken:
    async with state.db.session() as s:
        agent = await find_agent(AgentRepo(s), who.tenant_id, agent_ref)
    token = state.auth.issue_talk_token(who, agent.id, ttl_s=TOKEN_TTL_S)
    return TalkToken(token=token, expires_in=TOKEN_TTL_S, url=f"/v1/agents/{agent.id}/talk?token={token}")


async def refuse(ws: WebSocket, code: int, reason: str) -> None:
    """Accept, then close with ``code`` and ``reason`` (why not just close: :meth:`Socket.refuse`)."""
    await Socket(ws).refuse(code, reason)


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
    info = CallInfo(caller=addr, worker_id=state.settings.worker_id)  # a restart after a crash finds its calls
    secrets = TenantSecrets(state.db, state.settings, target.tenant_id)
    await run_socket_call(TalkWire(Socket(ws), target), target, CallStore(state.db, state.blobs), info, secrets)
