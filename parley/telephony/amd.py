"""Answering-machine detection: what each carrier is asked on the dial, and what its webhook says back.

A dial with ``machine_detection`` asks the carrier to listen first: Twilio ``MachineDetection`` (``Enable``, or
``DetectMessageEnd`` when there is a voicemail message to leave: Twilio then waits for the beep), Vonage
``advanced_machine_detection`` (``detect`` / ``detect_beep``), Plivo ``machine_detection``. Their answers
(Twilio ``AnsweredBy``, Vonage's ``status: machine|human`` event, Plivo ``Machine=true|false``) become one
``machine_detection`` event on the call (``answered_by``: machine, human or unknown) and the call variable
``_answered_by``, which the call reads when its media starts (:mod:`parley.calls.variables`: a machine gets the
voicemail message). Twilio decides before it fetches the voice webhook, so its media knows at once; Vonage and
Plivo report while the call runs: their result is recorded (the campaign outcome ``voicemail``), but a call whose
media has already started keeps its greeting.
"""

from __future__ import annotations

import uuid
from typing import Any

import structlog

from parley.calls.variables import ANSWERED_BY, HUMAN, MACHINE, UNKNOWN
from parley.store.calls import CallRepo
from parley.store.db import Database
from parley.store.models import Call

log = structlog.get_logger(__name__)


def answered_by(value: str | None) -> str:
    """A carrier's word for who answered → machine, human or unknown (Twilio ``machine_end_beep``, ``fax``;
    Vonage ``machine``; Plivo ``true``/``false``)."""
    text = (value or "").strip().lower()
    if text.startswith(("machine", "fax")) or text == "true":
        return MACHINE
    if text in ("human", "false"):
        return HUMAN
    return UNKNOWN


def twilio_params(leave_message: bool) -> dict[str, Any]:
    """``calls.create`` keyword arguments: synchronous detection (the voice webhook waits for the result)."""
    return {"machine_detection": "DetectMessageEnd" if leave_message else "Enable"}


def vonage_params(leave_message: bool) -> dict[str, Any]:
    """The create-call body's part: the call goes on, the result arrives on the event webhook."""
    mode = "detect_beep" if leave_message else "detect"
    return {"advanced_machine_detection": {"behavior": "continue", "mode": mode, "beep_timeout": 45}}


def plivo_params(status_url: str) -> dict[str, Any]:
    """The make-call body's part: the result (``Machine``) is posted to the status webhook."""
    return {"machine_detection": "true", "machine_detection_url": status_url, "machine_detection_method": "POST"}


async def record(db: Database, call: Call | None, carrier: str, value: str | None) -> bool:
    """The carrier's detection result on ``call`` (looked up by the caller, after checking the webhook's
    signature): a ``machine_detection`` event and ``_answered_by``. Once per call: a repeat is ignored."""
    if call is None or not value:
        return False
    result = answered_by(value)
    async with db.session() as s:
        repo = CallRepo(s)
        found = await repo.get(call.tenant_id, call.id)
        if found is None or (found.variables or {}).get(ANSWERED_BY):
            return False
        found.variables = {**(found.variables or {}), ANSWERED_BY: result}
        data = {"type": "machine_detection", "carrier": carrier, "answered_by": result, "detail": value[:64]}
        await repo.add_event(found.tenant_id, found.id, 0.0, "machine_detection", data)
    log.info("machine_detection", carrier=carrier, call_id=str(call.id), answered_by=result)
    return True


async def record_by_id(db: Database, tenant_id: uuid.UUID, call_id: str, carrier: str, value: str | None) -> bool:
    """:func:`record` for a webhook whose (signed) query names Parley's record (``call``) and tenant."""
    try:
        record_id = uuid.UUID(call_id)
    except ValueError:
        return False
    async with db.session() as s:
        call = await CallRepo(s).get(tenant_id, record_id)
    return await record(db, call, carrier, value)


async def record_by_provider_id(db: Database, carrier: str, provider_call_id: str, value: str | None) -> bool:
    """:func:`record` for a status webhook that names only the carrier's call id."""
    if not provider_call_id or not value:
        return False
    async with db.session() as s:
        call = await CallRepo(s).by_provider_id(carrier, provider_call_id)
    return await record(db, call, carrier, value)
