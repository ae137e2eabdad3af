"""Request and response bodies of the /v1 API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from parley.api.auth import Role
from parley.api.deps import SCOPES, Scope
from parley.calls.variables import CallVariables
from parley.store.calls import CallStatus
from parley.store.memories import USER_ID_PATTERN
from parley.telephony.outbound import dialling_carriers

if TYPE_CHECKING:
    Provider = str
else:  # every registered carrier that dials, and the native SIP endpoint
    Provider = Literal[(*dialling_carriers(), "sip")]


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class AgentOut(_Out):
    id: uuid.UUID
    name: str
    version: int
    document: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class AgentVersionOut(_Out):
    version: int
    document: dict[str, Any]
    created_at: datetime


class TurnOut(_Out):
    turn: int
    caller_text: str
    agent_text: str
    agent_text_generated: str
    interrupted: bool
    times: dict[str, float]
    voice_to_voice: float | None
    #: the knowledge-base chunks the reply was given: document, chunk, score (None: no knowledge used)
    citations: list[dict[str, Any]] | None = None


class EventOut(_Out):
    t: float
    kind: str
    data: dict[str, Any]
    created_at: datetime


class CallOut(_Out):
    id: uuid.UUID
    agent_id: uuid.UUID
    agent_version: int
    agent_name: str
    transport: str
    status: CallStatus
    caller: str | None
    started_at: datetime
    ended_at: datetime | None
    end_reason: str | None
    duration_s: float | None
    recording_bytes: int | None
    direction: str = "inbound"
    called: str | None = None
    provider_call_id: str | None = None


class CallDetail(CallOut):
    turns: list[TurnOut]
    events: list[EventOut]
    #: the post-call analysis: ``status`` "done" (``summary``, ``fields``, ``success``, ``success_reason``) or
    #: "failed" (``reason``); None until one has run
    analysis: dict[str, Any] | None = None


class AnalysisRerun(BaseModel):
    """``POST /v1/calls/{id}/analysis``: the agent's ``analysis`` settings, with these parts replaced."""

    model_config = ConfigDict(extra="forbid")
    summary: bool | None = None
    fields: dict[str, Any] | None = None
    success: str | None = Field(None, max_length=4_000)


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    role: Role = Role.viewer
    scopes: list[Scope] = Field(
        default_factory=list,
        max_length=len(SCOPES),
        description="limit the key to these scopes (within its role); none: everything its role allows",
    )


class KeyOut(_Out):
    id: uuid.UUID
    name: str
    prefix: str
    role: str
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class KeyCreated(KeyOut):
    secret: str = Field(description="shown once; Parley keeps only its hash")


class TalkTokenRequest(BaseModel):
    """Other fields are ignored (not refused): a request for another tenant's agent is a 404 whatever it sends."""

    user_id: str | None = Field(
        None,
        pattern=USER_ID_PATTERN,
        description="your app's user: the agent remembers them across sessions like a caller's number "
        "(1-64 characters of A-Z a-z 0-9 . _ @ : + -); signed into the token",
    )
    #: an object here (not the AgentDocument schema): checked in the route, after the agent is found (another
    #: tenant's agent is a 404 whatever the draft), with the 422 a create gives, located under body.draft
    draft: dict[str, Any] | None = Field(
        None,
        description="an unsaved agent document (as POST /v1/agents takes): the token's session talks to it "
        "instead of the saved version (checked as a create is, 422 alike; kept only for the token's life; needs "
        "the editor role and agents:write)",
    )


class TalkToken(BaseModel):
    token: str
    expires_in: int
    url: str = Field(description="WebSocket path to connect to, with the token as a query parameter")


#: what a carrier can dial: digits with an optional "+", or a SIP URI of printable ASCII (no quotes, brackets or
#: spaces); anything else is a 422 here rather than a request that reaches the carrier's API
DIALLABLE = r"^(\+?[0-9]{1,20}|sips?:[!#-;=?-~]{1,240})$"


class CallCreate(BaseModel):
    """An outbound call: the agent calls ``to`` through ``provider``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    agent_id: str = Field(min_length=1, max_length=200, description="agent id or name")
    to: str = Field(min_length=1, max_length=200, pattern=DIALLABLE, description="phone number (E.164) or SIP URI")
    from_: str | None = Field(None, alias="from", max_length=200, pattern=DIALLABLE, description="caller id (yours)")
    provider: Provider = "twilio"
    variables: CallVariables = Field(default_factory=dict)
    machine_detection: bool = Field(False, description="ask the carrier to detect an answering machine (not SIP)")


class NumberCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    number: str = Field(min_length=1, max_length=200, description="E.164 number or SIP user callers dial")
    agent_id: str = Field(min_length=1, max_length=200, description="agent id or name")


class NumberOut(_Out):
    number: str
    agent_id: uuid.UUID
    created_at: datetime
