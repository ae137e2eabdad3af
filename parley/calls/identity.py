"""What a live call is given to start: the agent it is for, and what its transport knows about it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from parley.agent.document import AgentDocument


@dataclass(frozen=True)
class CallTarget:
    """Who the call is for: the agent as stored (its version is recorded with the call)."""

    tenant_id: uuid.UUID
    agent_id: uuid.UUID
    agent_version: int
    agent_name: str
    document: AgentDocument


@dataclass(frozen=True)
class CallInfo:
    """What the transport knows about the call, recorded with it."""

    caller: str | None = None
    called: str | None = None
    direction: str = "inbound"
    provider_call_id: str | None = None
    worker_id: str | None = None
    #: an outbound call's record, created when it was dialled ('dialing'); media makes it active
    call_id: uuid.UUID | None = None
    #: a client-given user id (the talk WebSocket's): the caller's memory is this user's, not the number's
    user_id: str | None = None
