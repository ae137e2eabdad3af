"""Outbound calls: one ``dial`` per provider, chosen by name, behind ``POST /v1/calls``.

The call record is created first (status ``dialing``) so it exists even if the
carrier never calls back; the provider's call id is stored on it, and the media
stream or SIP dialog that follows turns it ``active``. A provider module offers
``async def dial(state, target, call_id, to, from_, base_url) -> provider call id``.
"""

from __future__ import annotations

import importlib
import re
import uuid
from collections.abc import Awaitable, Callable, Collection

import structlog

from parley.api.state import AppState
from parley.calls.live import CallTarget
from parley.store.calls import CallRepo
from parley.store.models import Call

log = structlog.get_logger(__name__)

Dial = Callable[[AppState, CallTarget, uuid.UUID, str, str | None, str], Awaitable[str]]

#: provider name → module with a ``dial`` function
PROVIDERS = {
    "twilio": "parley.telephony.twilio",
    "vonage": "parley.telephony.vonage",
    "plivo": "parley.telephony.plivo",
    "exotel": "parley.telephony.exotel",
}  # "sip" is dialled by the running SIP endpoint (api/routers/calls.py)


async def record_carrier_status(
    repo: CallRepo, call: Call, status: str, failed: Collection[str], **details: str | None
) -> None:
    """A carrier's word on a call: always a ``carrier_status`` event; a dialled call that ends before it was
    answered (a status in ``failed``, or ``completed`` while still dialing) is closed as failed."""
    await repo.add_event(call.tenant_id, call.id, 0.0, "carrier_status",
                         {"type": "carrier_status", "status": status, **details})  # fmt: skip
    if call.status == "dialing" and (status in failed or status == "completed"):
        await repo.end(call.tenant_id, call.id, "failed", status if status in failed else "not-answered", 0.0)


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
    try:
        module = importlib.import_module(PROVIDERS[provider])
    except KeyError:
        raise DialError(f"unknown provider {provider!r}") from None
    dial: Dial = module.dial
    return dial


async def place_call(
    state: AppState, target: CallTarget, provider: str, to: str, from_: str | None, base_url: str
) -> Call:
    """Creates the record, asks the provider to dial, and returns the record (failed if the dial failed)."""
    call_id = uuid.uuid4()
    async with state.db.session() as s:
        call = await CallRepo(s).create(
            target.tenant_id, target.agent_id, target.agent_version, target.agent_name, provider, caller=from_,
            direction="outbound", called=to, status="dialing", call_id=call_id, worker_id=state.settings.worker_id,
        )  # fmt: skip
    try:
        provider_call_id = await dialer(provider)(state, target, call_id, to, from_, base_url)
    except Exception as exc:
        log.warning("dial_failed", provider=provider, error=(str(exc) or type(exc).__name__)[:300])
        message = public_reason(exc)
        async with state.db.session() as s:
            repo = CallRepo(s)
            await repo.add_event(target.tenant_id, call_id, 0.0, "dial_failed", {"error": message[:500]})
            await repo.end(target.tenant_id, call_id, "failed", f"dial-failed: {message}"[:200], 0.0)
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
