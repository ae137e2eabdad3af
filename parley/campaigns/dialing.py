"""From a claimed contact to a placed call: the agent as a call target, the call's variables, the dial.

Every campaign call goes through :func:`parley.telephony.dial.dial` (the same path as ``POST /v1/calls``), with
the attempt's pre-chosen call id, so its record is the attempt's call. The scheduler takes the dial function as
a parameter (:class:`DialFn`): tests hand it a recording fake.
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from parley.agent.document import AgentDocumentError, parse_agent
from parley.calls.identity import CallTarget
from parley.calls.variables import GREETING, LANGUAGE, VOICEMAIL
from parley.campaigns.queue import Claim
from parley.store.db import Database
from parley.store.models import Agent, Call
from parley.store.models_campaigns import Campaign, DoNotCall
from parley.telephony.outbound import public_reason

log = structlog.get_logger(__name__)

AGENT_DELETED = "agent deleted"


class DialFn(Protocol):
    """:func:`parley.telephony.dial.dial`'s signature."""

    async def __call__(
        self,
        app: Any,
        target: CallTarget,
        provider: str,
        to: str,
        from_: str | None,
        base_url: str | None = None,
        *,
        call_id: uuid.UUID | None = None,
        variables: dict[str, str] | None = None,
        machine_detection: bool = False,
    ) -> Call: ...


class TestCallRefused(ValueError):
    """A test call that cannot be placed (the agent is gone, the number is on the do-not-call list); the
    message is safe to show the tenant."""

    __test__ = False  # not a pytest class


def default_dial() -> DialFn:
    from parley.telephony.dial import dial

    return dial


async def target(s: AsyncSession, campaign: Campaign) -> CallTarget | str:
    """The campaign's agent as a call target, or why it cannot take calls (``agent deleted``, an invalid one)."""
    agent = await s.scalar(select(Agent).where(Agent.id == campaign.agent_id, Agent.tenant_id == campaign.tenant_id))
    if agent is None:
        return AGENT_DELETED
    try:
        document = parse_agent(agent.document, f"agent {agent.name}")
    except AgentDocumentError as exc:
        return f"agent cannot take calls: {str(exc).splitlines()[0]}"[:300]
    return CallTarget(campaign.tenant_id, agent.id, agent.version, agent.name, document)


def call_variables(
    variables: dict[str, Any], language: str | None, greeting: str | None, voicemail: str | None = None
) -> dict[str, str]:
    """The contact's columns as the call's variables (strings), with Parley's own keys
    (:mod:`parley.calls.variables`): the contact's language and greeting, the campaign's voicemail message."""
    out = {str(k): "" if v is None else str(v) for k, v in variables.items() if not str(k).startswith("_")}
    for key, value in ((LANGUAGE, language), (GREETING, greeting), (VOICEMAIL, voicemail)):
        if value:
            out[key] = value
    return out


def detects_machines(campaign: Campaign) -> bool:
    return bool((campaign.voicemail or {}).get("detect"))


def voicemail_message(campaign: Campaign) -> str | None:
    """The message left when a machine answers (only with detection on)."""
    message = (campaign.voicemail or {}).get("message")
    return str(message) if message and detects_machines(campaign) else None


async def place(
    dial: DialFn, app: Any, campaign: Campaign, call_target: CallTarget, claim: Claim, base_url: str | None
) -> str | None:
    """Dials one claimed contact; None when the call was placed, else why not (safe to record)."""
    try:
        await dial(
            app, call_target, campaign.provider, claim.phone, campaign.caller_id, base_url,
            call_id=claim.call_id,
            variables=call_variables(claim.variables, claim.language, claim.greeting, voicemail_message(campaign)),
            machine_detection=detects_machines(campaign),
        )  # fmt: skip
    except Exception as exc:
        log.warning("campaign_dial_failed", campaign=str(campaign.id), attempt=str(claim.attempt_id),
                    error=(str(exc) or type(exc).__name__)[:300])  # fmt: skip
        return public_reason(exc)[:300]
    return None


async def test_call(
    app: Any,
    db: Database,
    campaign: Campaign,
    to: str,
    base_url: str | None = None,
    *,
    variables: dict[str, str] | None = None,
    dial: DialFn | None = None,
) -> Call:
    """One call to ``to`` now with the campaign's agent, carrier and caller id (``POST …/test-call``); no
    attempt is recorded. Raises :class:`TestCallRefused`, or :class:`~parley.telephony.outbound.DialError` when
    the carrier refused."""
    async with db.session() as s:
        found = await target(s, campaign)
        listed = await s.scalar(
            select(DoNotCall.phone).where(DoNotCall.tenant_id == campaign.tenant_id, DoNotCall.phone == to)
        )
    if isinstance(found, str):
        raise TestCallRefused(found)
    if listed is not None:
        raise TestCallRefused(f"{to} is on the do-not-call list")
    placer = dial or default_dial()
    return await placer(
        app, found, campaign.provider, to, campaign.caller_id, base_url,
        call_id=uuid.uuid4(), variables=call_variables(variables or {}, None, None, voicemail_message(campaign)),
        machine_detection=detects_machines(campaign),
    )  # fmt: skip


def problem(app: Any, provider: str) -> str | None:
    """Why this worker cannot dial ``provider`` at all (the campaign is paused with it); None when it can, or
    when there is no app to ask (tests with a fake dial)."""
    state = getattr(getattr(app, "state", None), "parley", None)
    if state is None:
        return None
    if provider == "sip":
        if getattr(app.state, "sip", None) is None:
            return "the SIP endpoint is off (PARLEY_SIP_PORT=0 or its port is taken)"
        if not state.settings.sip_trunk_uri:
            return "outbound SIP calls need PARLEY_SIP_TRUNK_URI"
        return None
    if not state.settings.public_url:
        return "carriers need PARLEY_PUBLIC_URL to reach this service"
    return None
