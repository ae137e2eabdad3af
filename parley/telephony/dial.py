"""One way to dial out, whatever the provider: a carrier's REST API or the native SIP endpoint.

``POST /v1/calls`` and the campaign scheduler both dial through :func:`dial`, so a campaign's call is placed,
recorded and failed exactly like a single API call. The record is created first (status ``dialing``) under the
given ``call_id`` (a campaign attempt's pre-generated id) with the call's ``variables``; the call's media, when
it starts, reads them back (:mod:`parley.calls.variables`).
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from parley.calls.identity import CallTarget
from parley.store.calls import CallRepo
from parley.store.models import Call
from parley.telephony.outbound import DialError, place_call
from parley.telephony.state import TelephonyState


class _AppState(Protocol):
    parley: TelephonyState
    sip: Any


class App(Protocol):
    """What :func:`dial` needs of the running service: the FastAPI app (``request.app``), or anything with its
    ``state`` (``state.parley``, the service state; ``state.sip``, the SIP endpoint or None)."""

    @property
    def state(self) -> _AppState: ...


async def dial(
    app: App,
    target: CallTarget,
    provider: str,
    to: str,
    from_: str | None,
    base_url: str | None = None,
    *,
    call_id: uuid.UUID | None = None,
    variables: dict[str, str] | None = None,
    machine_detection: bool = False,
) -> Call:
    """Place the call; returns its record (``dialing``, or ``failed`` for SIP once the trunk refused).

    ``base_url`` is where carriers reach this service when PARLEY_PUBLIC_URL is unset (a request's base URL);
    a carrier dial without either raises. Raises :class:`DialError` (its message is safe to show a tenant) when
    the provider refused at once or cannot dial at all. SIP has no answering-machine detection: the flag is
    ignored there."""
    state = app.state.parley
    if provider == "sip":
        return await _dial_sip(app.state.sip, state, target, to, from_, call_id, variables)
    base = base_url or state.settings.public_url
    if not base:
        raise DialError("carriers need PARLEY_PUBLIC_URL to reach this service")
    return await place_call(
        state, target, provider, to, from_, base,
        call_id=call_id, variables=variables, machine_detection=machine_detection,
    )  # fmt: skip


async def _dial_sip(
    sip: Any,
    state: TelephonyState,
    target: CallTarget,
    to: str,
    from_: str | None,
    call_id: uuid.UUID | None,
    variables: dict[str, str] | None,
) -> Call:
    """Native SIP: the endpoint dials through PARLEY_SIP_TRUNK_URI and creates the record itself."""
    if sip is None:
        raise DialError("the SIP endpoint is off (PARLEY_SIP_PORT=0 or its port is taken)")
    if not state.settings.sip_trunk_uri:
        raise DialError("outbound SIP calls need PARLEY_SIP_TRUNK_URI")
    placed = await sip.dial(to, target, caller=from_, call_id=call_id, variables=variables)
    async with state.db.session() as s:
        call = await CallRepo(s).get(target.tenant_id, placed)
    if call is None:  # deleted in the instant since: the dial went out all the same
        raise DialError("the call record vanished")
    return call
