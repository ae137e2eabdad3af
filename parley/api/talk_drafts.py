"""Talking to an unsaved draft of an agent (the console's "talk to this draft").

``POST /v1/agents/{agent}/talk-token`` with ``draft`` keeps the document (validated as a create would) for the
token's life, keyed by the token's signed id (:mod:`parley.store.talk_drafts`); the token's WebSocket session
takes it, checks it again (settings may have changed in the minute between) and runs it instead of the saved
version. The saved agent is never changed.

How the call record says it ran a draft: its ``agent_version`` is the saved version current when the session
opened (a real version, so the agent's filters and version links keep working), and its first event is
``draft``, holding ``based_on_version`` and the whole document that ran: a call record can always show the exact
document it ran, as it can for saved versions.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import HTTPException

from parley.agent.document import AgentDocument
from parley.api.auth import TALK_LEEWAY_S, Principal, Role
from parley.api.deps import has_scope
from parley.api.routers.agent_versions import storable
from parley.api.state import AppState
from parley.api.talk_protocol import TalkWire
from parley.calls.identity import CallTarget
from parley.calls.ws_bridge import Socket
from parley.store.calls import CallRepo
from parley.store.models import Agent, TalkDraft
from parley.store.talk_drafts import TalkDraftRepo

DRAFT_EVENT = "draft"


def may_run_drafts(who: Principal) -> None:
    """403 unless ``who`` could save the document: a draft runs in the server's process as a saved one does."""
    if not who.role.allows(Role.editor) or not has_scope(who, "agents:write"):
        raise HTTPException(status_code=403, detail="talking to a draft needs the editor role and agents:write")


def checked_draft(state: AppState, who: Principal, draft: dict[str, Any]) -> dict[str, Any]:
    """``draft`` as it will be kept, if ``who`` may run it (403) and a create would take it (422 located under
    ``body.draft``): checked before any token is issued."""
    may_run_drafts(who)
    return storable(draft, state.settings, ("body", "draft")).model_dump(mode="json")


async def keep_draft(state: AppState, who: Principal, agent: Agent, token: str, document: dict[str, Any]) -> None:
    """Keep the checked ``document`` for ``token``'s one session, until the token expires."""
    grant = state.auth.check_talk_token(token, agent.id)
    # kept a little past the token's own leeway, so it cannot vanish while the token still opens a session
    expires_at = datetime.fromtimestamp(grant.expires_at + TALK_LEEWAY_S + 5, UTC)
    async with state.db.session() as s:
        await TalkDraftRepo(s).keep(who.tenant_id, agent.id, grant.token_id, agent.version, document, expires_at)


async def take_draft(state: AppState, who: Principal, agent_id: uuid.UUID, token_id: str) -> TalkDraft | None:
    """The draft the token was issued with, taken (deleted) for this one session; None when it carries none."""
    async with state.db.session() as s:
        return await TalkDraftRepo(s).take(who.tenant_id, agent_id, token_id)


def draft_document(state: AppState, draft: TalkDraft) -> AgentDocument:
    """The draft checked again at connect; ``RequestValidationError`` if it may no longer run."""
    return storable(draft.document, state.settings, ("draft",))


def problem_text(errors: Any) -> str:
    """The first fault of a 422's errors, as a close reason (``loc: msg``)."""
    first = next(iter(errors), {"loc": (), "msg": "invalid"})
    return f"the draft is not valid: {'.'.join(str(p) for p in first['loc'])}: {first['msg']}"


class DraftTalkWire(TalkWire):
    """The talk WebSocket running a draft: the call's record notes it (its first event) and so does the client."""

    def __init__(self, socket: Socket, target: CallTarget, state: AppState, draft: TalkDraft) -> None:
        super().__init__(socket, target)
        self._state = state
        self._draft = draft

    async def opened(self, call_id: uuid.UUID) -> None:
        t, draft = self.target, self._draft
        data = {"type": DRAFT_EVENT, "t": 0.0, "based_on_version": draft.based_on_version, "document": draft.document}
        async with self._state.db.session() as s:
            await CallRepo(s).add_event(t.tenant_id, call_id, 0.0, DRAFT_EVENT, data)
        await super().opened(call_id)
        await self.send_event({"type": DRAFT_EVENT, "based_on_version": draft.based_on_version})
