"""Outbound calls: the ``dial`` of the carrier chosen by name, behind ``POST /v1/calls``.

The call record is created first (status ``dialing``) so it exists even if the
carrier never calls back; the provider's call id is stored on it, and the media
stream or SIP dialog that follows turns it ``active``. A carrier that dials
overrides :meth:`parley.telephony.carrier.Carrier.dial`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable

import structlog

from parley.calls.identity import CallTarget
from parley.calls.variables import VOICEMAIL
from parley.store.calls import CallRepo, CallStatus
from parley.store.models import Call
from parley.telephony.carrier import Outbound, UnknownCarrier, carriers
from parley.telephony.state import TelephonyState
from parley.telephony.webhooks import public_url

log = structlog.get_logger(__name__)

Dial = Callable[[TelephonyState, Outbound], Awaitable[str]]


class DialError(RuntimeError):
    """The provider refused or could not be reached; the message is safe to show the API client."""


#: the operator's carrier API address and account ids: in the server log, never in what a tenant sees
_OPERATOR_DETAILS = re.compile(
    r"(?:https?|wss?)://\S+|/(?:Accounts|Account|v1/Account|v2/accounts)/\S+|\b(?:AC|MA|SA)[0-9a-fA-F]{32}\b"
    r"|host='[^']*'|port=\d+"
)
_UNREACHABLE = ("Max retries exceeded", "NewConnectionError", "Connection refused", "Name or service not known")


def public_reason(exc: BaseException) -> str:
    """Why a dial failed, in words a tenant may read: transport failures are summarised, addresses removed."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) or any(marker in message for marker in _UNREACHABLE):
        return "the carrier's API cannot be reached (the server log has the details)"
    return _OPERATOR_DETAILS.sub("…", message)


def dialer(provider: str) -> Dial:
    """The ``dial`` of carrier ``provider`` ("sip" is dialled by the running SIP endpoint: api/routers/calls.py)."""
    try:
        carrier = carriers.get(provider)
    except UnknownCarrier:
        carrier = None
    if carrier is None or not carrier.dials:
        raise DialError(f"unknown provider {provider!r}")
    return carrier.dial


def dialling_carriers() -> list[str]:
    """The carriers ``POST /v1/calls`` offers as its ``provider``."""
    return [carrier.name for carrier in carriers.all() if carrier.dials]


async def place_call(
    state: TelephonyState,
    target: CallTarget,
    provider: str,
    to: str,
    from_: str | None,
    base_url: str,
    *,
    call_id: uuid.UUID | None = None,
    variables: dict[str, str] | None = None,
    machine_detection: bool = False,
) -> Call:
    """Creates the record (under ``call_id`` when given, with the call's ``variables``), asks the provider to
    dial (with answering-machine detection when asked and the carrier has it), and returns the record."""
    call_id = call_id or uuid.uuid4()
    async with state.db.session() as s:
        call = await CallRepo(s).create(
            target.tenant_id,
            target.agent_id,
            target.agent_version,
            target.agent_name,
            provider,
            caller=from_,
            direction="outbound",
            called=to,
            status=CallStatus.DIALING,
            call_id=call_id,
            worker_id=state.settings.worker_id,
        )
        if variables:
            call.variables = dict(variables)
            await s.flush()
    try:
        base = public_url(state.settings, base_url)
        leave = bool(variables and variables.get(VOICEMAIL))
        outbound = Outbound(target, call_id, to, from_, base, machine_detection=machine_detection, leave_message=leave)
        provider_call_id = await dialer(provider)(state, outbound)
    except Exception as exc:
        log.warning("dial_failed", provider=provider, error=(str(exc) or type(exc).__name__)[:300])
        message = public_reason(exc)
        async with state.db.session() as s:
            repo = CallRepo(s)
            await repo.add_event(target.tenant_id, call_id, 0.0, "dial_failed", {"error": message[:500]})
            await repo.end(target.tenant_id, call_id, CallStatus.FAILED, f"dial-failed: {message}"[:200], 0.0)
        raise DialError(message) from exc
    async with state.db.session() as s:
        repo = CallRepo(s)
        found = await repo.get(target.tenant_id, call_id)
        assert found is not None
        if not found.provider_call_id:
            found.provider_call_id = provider_call_id
        await repo.add_event(target.tenant_id, call_id, 0.0, "dialed", {"provider_call_id": provider_call_id})
        await s.flush()
        call = found
    log.info("call_dialed", provider=provider, call_id=str(call_id))
    return call
