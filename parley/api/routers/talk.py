"""Talk to an agent over a WebSocket: the route, who may talk, and to which agent.

Browsers cannot set headers on a WebSocket, so they first get a short-lived talk
token (``POST /v1/agents/{agent}/talk-token``) and pass it as ``?token=``; other
clients may send their API key or JWT in the usual headers. A client-given user id
(the app's logged-in user, remembered like a caller's number) is signed into the token,
or passed as ``?user_id=`` by a header-authenticated client. The protocol on the
socket is :mod:`parley.api.talk_protocol` (docs/talk.md); the call itself runs
through the bridge every WebSocket transport shares (:mod:`parley.calls.ws_bridge`).
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Annotated

import structlog
from fastapi import APIRouter, Body, HTTPException, WebSocket
from fastapi.exceptions import RequestValidationError

from parley.agent.document import AgentDocument, AgentDocumentError, parse_agent
from parley.api.auth import AuthError, Principal
from parley.api.deps import State, Talk, has_scope, rate_limit
from parley.api.routers.agents import find_agent
from parley.api.schemas import TalkToken, TalkTokenRequest
from parley.api.state import AppState
from parley.api.talk_drafts import DraftTalkWire, checked_draft, draft_document, keep_draft, problem_text, take_draft
from parley.api.talk_protocol import TalkWire
from parley.calls.capacity import CAPACITY
from parley.calls.identity import CallInfo, CallTarget
from parley.calls.record_writer import CallStore
from parley.calls.ws_bridge import Socket, run_socket_call
from parley.store.agents import AgentRepo
from parley.store.credentials import TenantSecrets
from parley.store.keys import ApiKeyRepo
from parley.store.memories import valid_user_id
from parley.store.models import TalkDraft

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/v1/agents", tags=["talk"])

TOKEN_TTL_S = 60
POLICY_VIOLATION, TRY_AGAIN_LATER, INTERNAL_ERROR = 1008, 1013, 1011


@router.post("/{agent_ref}/talk-token", response_model=TalkToken)
async def talk_token(
    agent_ref: str, who: Talk, state: State, body: Annotated[TalkTokenRequest | None, Body()] = None
) -> TalkToken:
    """The body is optional: ``{"user_id": …}`` signs the app's user into the token (their memory, if the
    agent keeps one); ``{"draft": {agent document}}`` makes the token's session talk to that unsaved document
    instead of the saved version (checked as a create is, 422 alike; needs the editor role and agents:write)."""
    async with state.db.session() as s:
        agent = await find_agent(AgentRepo(s), who.tenant_id, agent_ref)
    user_id = body.user_id if body is not None else None
    draft = checked_draft(state, who, body.draft) if body is not None and body.draft is not None else None
    token = state.auth.issue_talk_token(who, agent.id, ttl_s=TOKEN_TTL_S, user_id=user_id)
    if draft is not None:
        await keep_draft(state, who, agent, token, draft)
    return TalkToken(token=token, expires_in=TOKEN_TTL_S, url=f"/v1/agents/{agent.id}/talk?token={token}")


async def refuse(ws: WebSocket, code: int, reason: str) -> None:
    """Accept, then close with ``code`` and ``reason`` (why not just close: :meth:`Socket.refuse`)."""
    await Socket(ws).refuse(code, reason)


async def _who(ws: WebSocket, state: AppState, agent_ref: str) -> tuple[Principal, str | None]:
    """The caller, from a talk token (spent here: one session each, none once its key is revoked) or headers,
    and the token's id (what its draft, if it was issued with one, is kept under)."""
    token, user_id = ws.query_params.get("token"), ws.query_params.get("user_id")
    if not token:
        who = await state.auth.authenticate(ws.headers.get("authorization"), ws.headers.get("x-api-key"))
        if not has_scope(who, "talk"):
            raise AuthError(403, "this needs the talk scope")
        return _with_user(who, user_id), None
    if user_id is not None:  # refused before the token is spent: it still opens its one session
        raise AuthError(403, "a talk token carries its own user_id: ?user_id= is not accepted with one")
    try:
        agent_id = uuid.UUID(agent_ref)
    except ValueError:
        raise AuthError(403, "talk tokens name the agent by id") from None

    async def key_is_live(tenant_id: uuid.UUID, key_id: uuid.UUID) -> bool:
        async with state.db.session() as s:
            return await ApiKeyRepo(s).is_live(tenant_id, key_id)

    who = await state.auth.redeem_talk_token(token, agent_id, state.nonces.use, key_is_live)
    return who, state.auth.check_talk_token(token, agent_id).token_id


def _with_user(who: Principal, user_id: str | None) -> Principal:
    """``?user_id=`` of a header-authenticated client (a trusted server: with a token, the signed one is used).
    The id is never echoed: it is not logged in clear."""
    if user_id is None:
        return who
    if not valid_user_id(user_id):
        raise AuthError(403, "user_id must be 1 to 64 characters of A-Z a-z 0-9 . _ @ : + -")
    return dataclasses.replace(who, user_id=user_id)


Found = tuple[Principal, CallTarget, TalkDraft | None]


async def _authenticate(ws: WebSocket, state: AppState, agent_ref: str) -> Found | None:
    """Who calls, which agent and which document (a draft the token carries, checked again, or the saved one),
    each refused with a close code; the per-key rate limit applies as on HTTP."""
    try:
        who, token_id = await _who(ws, state, agent_ref)
        await rate_limit(state, f"who:{who.tenant_id}:{who.subject}", state.settings.rate_limit_per_key)
        async with state.db.session() as s:
            agent = await find_agent(AgentRepo(s), who.tenant_id, agent_ref)
        draft = await take_draft(state, who, agent.id, token_id) if token_id is not None else None
    except AuthError as exc:
        log.info("talk_refused", reason=exc.message)
        await refuse(ws, POLICY_VIOLATION, exc.message)
        return None
    except HTTPException as exc:
        limited = exc.status_code == 429
        await refuse(ws, TRY_AGAIN_LATER if limited else POLICY_VIOLATION, str(exc.detail))
        return None
    try:
        document: AgentDocument = (
            draft_document(state, draft) if draft is not None else parse_agent(agent.document, f"agent {agent.name}")
        )
    except RequestValidationError as exc:  # the draft, no longer storable (the settings changed)
        await refuse(ws, POLICY_VIOLATION, problem_text(exc.errors()))
        return None
    except AgentDocumentError as exc:
        await refuse(ws, INTERNAL_ERROR, str(exc).splitlines()[0])
        return None
    return who, CallTarget(who.tenant_id, agent.id, agent.version, agent.name, document), draft


@router.websocket("/{agent_ref}/talk")
async def talk(ws: WebSocket, agent_ref: str, state: State) -> None:
    addr = ws.client.host if ws.client else "unknown"  # a trusted proxy's client: see PARLEY_TRUSTED_PROXIES
    busy = CAPACITY.refusal("talk")  # first and at once: full, draining, or Redis down (where the limits live)
    if busy is not None:
        await refuse(ws, TRY_AGAIN_LATER, f"busy: {busy.message}")
        return
    try:
        await rate_limit(state, f"addr:{addr}", state.settings.rate_limit_per_address)
    except HTTPException:
        await refuse(ws, TRY_AGAIN_LATER, "rate limit exceeded")
        return
    found = await _authenticate(ws, state, agent_ref)
    if found is None:
        return
    who, target, draft = found
    # the worker: a restart after a crash finds its calls; the user id: whose memory the call reads and writes
    info = CallInfo(caller=addr, worker_id=state.settings.worker_id, user_id=who.user_id)
    secrets = TenantSecrets(state.db, state.settings, target.tenant_id)
    socket = Socket(ws)
    wire = TalkWire(socket, target) if draft is None else DraftTalkWire(socket, target, state, draft)
    await run_socket_call(wire, target, CallStore(state.db, state.blobs), info, secrets)
