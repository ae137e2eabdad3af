"""A call's variables (a campaign contact's columns, ``POST /v1/calls``' ``variables``) and what they change.

They are stored on the call record when it is dialled and read back when its media starts: ``{{ name }}``
placeholders in the agent's ``system_prompt`` and ``greeting`` are filled from them (lookup only, the syntax of
:mod:`parley.tools.templates`: no expressions), and the tools' templates see them as they see ``caller``.
A name no variable has renders empty and is logged once per call.

Keys starting with ``_`` are Parley's own, never shown to tools: ``_language`` and ``_greeting`` override the
agent's for this call (a contact's ``language``/``greeting`` columns), ``_voicemail`` is the message to leave
when a machine answers, ``_answered_by`` is what the carrier's answering-machine detection said (written by its
webhook, :mod:`parley.telephony.amd`). A call answered by a machine speaks ``_voicemail`` instead of the
greeting, cannot be interrupted while it does, and hangs up after it (at once when there is no message).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import structlog
from pydantic import Field, StringConstraints

from parley.agent.document import AgentDocument
from parley.tools.templates import PLACEHOLDER, lookup, render_text

log = structlog.get_logger(__name__)

LANGUAGE, GREETING, VOICEMAIL, ANSWERED_BY = "_language", "_greeting", "_voicemail", "_answered_by"
MACHINE, HUMAN, UNKNOWN = "machine", "human", "unknown"
_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")  # AgentDocument.language's pattern

#: what an API client may give as a call's variables: names as placeholders spell them, bounded text values
VariableName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
CallVariables = Annotated[
    dict[VariableName, Annotated[str, Field(max_length=2000)]],
    Field(max_length=200, description="call variables: {{ name }} in the agent's prompt, greeting and tools"),
]


def campaign_variables(
    columns: Mapping[str, str],
    *,
    language: str | None = None,
    greeting: str | None = None,
    voicemail: str | None = None,
) -> dict[str, str]:
    """A contact's call variables: its columns, with its overrides and the campaign's voicemail message."""
    out = {k: str(v) for k, v in columns.items() if not k.startswith("_")}
    for key, value in ((LANGUAGE, language), (GREETING, greeting), (VOICEMAIL, voicemail)):
        if value:
            out[key] = value
    return out


def public(variables: Mapping[str, Any]) -> dict[str, Any]:
    """What the agent's tools and templates see: every variable but Parley's own (``_``-prefixed)."""
    return {k: v for k, v in variables.items() if not k.startswith("_")}


@dataclass(frozen=True)
class CallPlan:
    """What this call runs: the agent's document for it, and whether it only leaves a voicemail."""

    document: AgentDocument
    voicemail: bool = False


def answered_by_machine(variables: Mapping[str, Any]) -> bool:
    return str(variables.get(ANSWERED_BY, "")) == MACHINE


def plan_call(
    document: AgentDocument, stored: Mapping[str, Any], namespace: Mapping[str, Any], call_id: uuid.UUID
) -> CallPlan:
    """The document with this call's overrides and placeholders filled. ``stored`` is the record's variables
    (with Parley's own keys), ``namespace`` what the placeholders may name."""
    update: dict[str, Any] = {}
    language = str(stored.get(LANGUAGE, ""))
    if language and _LANGUAGE.fullmatch(language):
        update["language"] = language
    greeting = str(stored.get(GREETING) or document.greeting)
    voicemail = answered_by_machine(stored)
    if voicemail:  # the machine hears the message whole, then the call ends: no flow, no barge-in
        greeting = str(stored.get(VOICEMAIL, ""))
        update["flow"] = None
        update["interruptions"] = document.interruptions.model_copy(update={"during_greeting": False})
    values = dict(namespace)
    text = f"{document.system_prompt}\n{greeting}"
    missing = {m.group(1) for m in PLACEHOLDER.finditer(text) if lookup(values, m.group(1)) is None}
    if missing:
        log.info("call_variables_missing", call_id=str(call_id), names=sorted(missing)[:20])
    update["system_prompt"] = render_text(document.system_prompt, values)
    update["greeting"] = render_text(greeting, values)
    return CallPlan(document.model_copy(update=update), voicemail)
