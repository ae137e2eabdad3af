"""An attempt's outcome from its call record, and what the retry policy makes of it.

Carriers and the SIP endpoint word the same fact differently, and the call record keeps their words
(``end_reason``): Twilio ``busy``/``no-answer``/``canceled``, Vonage ``unanswered``/``rejected``/``timeout``, Plivo
``cancel``, the SIP endpoint ``sip-486 Busy Here``/``sip-480 …``/``no-answer``, Parley's own ``not-answered`` (a
carrier said ``completed`` before anyone answered) and ``dial-failed: …``. Here they become the campaign's few
outcomes; anything not recognised is ``failed`` (retried as its rule says, never taken for an answer).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from parley.campaigns.schedule import RetryPolicy, RetryRule

ANSWERED, NO_ANSWER, BUSY, FAILED = "answered", "no_answer", "busy", "failed"
VOICEMAIL, HUNG_UP_EARLY, DNC, DIAL_LOST = "voicemail", "hung_up_early", "dnc", "dial_lost"
OUTCOMES = (ANSWERED, NO_ANSWER, BUSY, FAILED, VOICEMAIL, HUNG_UP_EARLY, DNC, DIAL_LOST)
#: outcomes that reached a person or a machine: a contact without retries left is ``done``, not ``failed``
REACHED = (ANSWERED, VOICEMAIL, HUNG_UP_EARLY)

_BUSY = ("busy", "sip-486", "sip-600", "sip-603", "decline")
_NO_ANSWER = (
    "no-answer", "not-answered", "unanswered", "noanswer", "timeout", "canceled", "cancelled", "cancel",
    "sip-408", "sip-480", "sip-487",
)  # fmt: skip
#: a worker lost mid-call: the record was closed for it, which says nothing of an answer
_LOST = ("server-restart", "worker-crashed", "worker-lost")  # worker-lost: the registry's, for a SIGKILLed worker
_MACHINE = ("machine", "fax")


def failure_outcome(end_reason: str | None) -> str:
    """The outcome of a call that ended before it was answered (record status ``failed``)."""
    reason = (end_reason or "").strip().lower()
    if reason.startswith(_BUSY):
        return BUSY
    if reason.startswith(_NO_ANSWER):
        return NO_ANSWER
    return FAILED


def is_machine(detection: Mapping[str, Any] | None) -> bool:
    """Whether a ``machine_detection`` event's data says a machine answered: Twilio ``AnsweredBy``
    (``machine_start``, ``machine_end_beep``, ``fax``…), Vonage ``status: machine``, Plivo ``machine: true``."""
    if not detection:
        return False
    for key, value in detection.items():
        name = key.lower()
        if isinstance(value, bool) and name in ("machine", "is_machine") and value:
            return True
        text = value.strip().lower() if isinstance(value, str) else ""
        if name in ("answered_by", "answeredby", "result", "status", "machine") and (
            text.startswith(_MACHINE) or text == "true"
        ):
            return True
    return False


def call_outcome(
    status: str,
    end_reason: str | None,
    duration_s: float | None,
    hung_up_early_secs: float,
    detection: Mapping[str, Any] | None = None,
) -> str | None:
    """The outcome of a call record, or None while the call is still under way (``dialing``/``active``)."""
    if status == "failed":
        return failure_outcome(end_reason)
    if status != "ended":
        return None
    if is_machine(detection):
        return VOICEMAIL
    reason = (end_reason or "").strip().lower()
    if reason.startswith(_BUSY) or reason.startswith(_NO_ANSWER):
        return failure_outcome(reason)  # a carrier's "ended" that was never answered
    seconds = duration_s or 0.0
    if reason.startswith(_LOST) and seconds < hung_up_early_secs:
        return FAILED
    return HUNG_UP_EARLY if seconds < hung_up_early_secs else ANSWERED


@dataclass(frozen=True)
class Decision:
    """What happens to the contact after an attempt: its new state, and when its next attempt is due."""

    state: str  # pending (retry), done, failed, dnc
    next_attempt_at: datetime | None = None


def rule(policy: RetryPolicy, outcome: str) -> RetryRule | None:
    """The policy's rule for ``outcome`` (None: never retried, e.g. answered)."""
    found = getattr(policy, outcome, None) if outcome in OUTCOMES else None
    return found if isinstance(found, RetryRule) else None


def decide(policy: RetryPolicy, outcome: str, earlier: Iterable[str | None], now: datetime) -> Decision:
    """The contact's next state after an attempt ended with ``outcome``; ``earlier`` are the outcomes of its
    previous attempts. A rule's ``count`` is the retries that outcome earns: the contact is tried again while
    fewer than ``count`` earlier attempts ended the same way, ``spacing_s`` after this one."""
    if outcome == DNC:
        return Decision("dnc")
    found = rule(policy, outcome)
    same = sum(1 for o in earlier if o == outcome)
    if found is not None and same < found.count:
        return Decision("pending", now + timedelta(seconds=found.spacing_s))
    return Decision("done" if outcome in REACHED else "failed")
