"""Post-call analysis: after a call is stored, an LLM reads its transcript and writes a summary, the document's
structured fields (checked against their JSON schema) and a success verdict against its criteria.

It runs in the background once the call's record is closed, so it never delays the call's end, and is bounded by
``analysis.timeout_secs``. A reply that is not JSON or fails the schema is asked for once more; a second failure is
stored as ``{"status": "failed", "reason": ...}`` and the call record is otherwise left as it was.
"""

from __future__ import annotations

import asyncio
import json
import uuid
import weakref
from typing import Any

import jsonschema
import structlog

from parley.agent.analysis_settings import AnalysisSettings, fields_schema
from parley.agent.document import AgentDocument
from parley.offload import off_loop
from parley.privacy.pii import PiiRedactor
from parley.services.llm.base import LLM, Message, ToolCall
from parley.services.llm.base import registry as llm_registry
from parley.services.secrets import SecretSource, resolve_provider_options
from parley.store.calls import CallRepo
from parley.store.db import Database
from parley.store.models import Turn, utcnow
from parley.webhooks import events as webhook_events

log = structlog.get_logger(__name__)

MAX_TRANSCRIPT_CHARS = 40_000  # the end of a longer call is kept: outcomes are usually there
MAX_REPLY_CHARS = 20_000
MAX_RUNNING = 4  # background analyses at once per process: a burst of ending calls queues, it does not pile up
_PENDING: set[asyncio.Task[None]] = set()
_SLOTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()

SYSTEM = (
    "You analyse a finished phone call between a caller and an AI agent. "
    "Reply with one JSON object only, no prose and no code fence."
)


def transcript_text(turns: list[Turn]) -> str:
    """The call as ``caller:`` / ``agent:`` lines (turn 0 is the greeting), its last characters if long."""
    lines: list[str] = []
    for t in turns:
        if t.turn > 0 and t.caller_text:
            lines.append(f"caller: {t.caller_text}")
        if t.agent_text:
            lines.append(f"agent: {t.agent_text}{' (interrupted)' if t.interrupted else ''}")
    text = "\n".join(lines) or "(nothing was said)"
    return text if len(text) <= MAX_TRANSCRIPT_CHARS else "…" + text[-MAX_TRANSCRIPT_CHARS:]


def reply_schema(settings: AnalysisSettings) -> dict[str, Any]:
    """The JSON the LLM must return: only the parts the settings ask for, each required."""
    props: dict[str, Any] = {}
    if settings.summary:
        props["summary"] = {"type": "string", "maxLength": 2000}
    if settings.fields:
        props["fields"] = fields_schema(settings.fields)
    if settings.success.strip():
        props["success"] = {"type": "boolean"}
        props["success_reason"] = {"type": "string", "maxLength": 500}
    return {"type": "object", "properties": props, "required": sorted(props)}


def prompt(settings: AnalysisSettings, transcript: str) -> str:
    parts = ["Return a JSON object matching this JSON schema:", json.dumps(reply_schema(settings))]
    if settings.summary:
        parts.append('"summary": two or three sentences on what the call was about and how it ended.')
    if settings.fields:
        parts.append('"fields": the values the schema names, taken from the call (leave out what was not said).')
    if settings.success.strip():
        parts.append(f'"success": whether the call met these criteria, "success_reason": one line why.\n'
                     f"Criteria: {settings.success}")  # fmt: skip
    parts.append(f"The call:\n{transcript}")
    return "\n\n".join(parts)


def parse_reply(text: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The reply's JSON object, checked against ``schema``; ValueError says what was wrong (for the retry)."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        raise ValueError("the reply holds no JSON object")
    try:
        data = json.loads(text[start : end + 1])
    except json.JSONDecodeError as exc:
        raise ValueError(f"the reply is not valid JSON: {exc.msg} at character {exc.pos}") from None
    if not isinstance(data, dict):
        raise ValueError("the reply is not a JSON object")
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(data))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top)"
        raise ValueError(f"the reply does not match the schema at {where}: {error.message[:200]}")
    return data


async def _ask(llm: LLM, messages: list[Message]) -> str:
    pieces: list[str] = []
    size = 0
    async for piece in llm.stream(messages):
        if isinstance(piece, ToolCall):
            continue
        pieces.append(piece)
        size += len(piece)
        if size > MAX_REPLY_CHARS:
            break
    return "".join(pieces)


async def analyse(llm: LLM, settings: AnalysisSettings, transcript: str) -> dict[str, Any]:
    """One analysis: asked, checked, asked once more with the problem named; a failed result after that."""
    schema, question = reply_schema(settings), prompt(settings, transcript)
    problem = ""
    for attempt in range(2):
        content = question if not attempt else f"{question}\n\nYour previous reply was refused: {problem}. Try again."
        messages: list[Message] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": content}]
        try:
            data = parse_reply(await _ask(llm, messages), schema)
        except ValueError as exc:
            problem = str(exc)
            continue
        return {"status": "done", **data}
    return {"status": "failed", "reason": f"after a retry, {problem}"}


async def _llm_for(document: AgentDocument, settings: AnalysisSettings, secrets: SecretSource) -> tuple[str, LLM]:
    """The analysis LLM (the agent's own unless ``analysis.llm`` names one), its secrets resolved."""
    choice = settings.llm or document.llm
    where = "analysis.llm" if settings.llm is not None else "llm"
    options = await resolve_provider_options(llm_registry, choice.provider, choice.options, secrets, where)
    llm = await off_loop(llm_registry.create, choice.provider, options)
    await llm.prepare()
    return choice.provider, llm


async def run_analysis(
    db: Database,
    tenant_id: uuid.UUID,
    call_id: uuid.UUID,
    document: AgentDocument,
    settings: AnalysisSettings,
    secrets: SecretSource,
) -> dict[str, Any] | None:
    """Analyses the stored call and stores the result on it (None: not this tenant's call)."""
    async with db.session() as s:
        turns = await CallRepo(s).turns(tenant_id, call_id)
    provider = (settings.llm or document.llm).provider
    try:
        async with asyncio.timeout(settings.timeout_secs):
            provider, llm = await _llm_for(document, settings, secrets)
            try:
                result = await analyse(llm, settings, transcript_text(turns))
            finally:
                await llm.aclose()
    except TimeoutError:
        result = {"status": "failed", "reason": f"the analysis took over {settings.timeout_secs:g} s"}
    except Exception as exc:  # a provider that cannot start or answer: recorded, the call stays as it is
        log.warning("call_analysis_failed", call_id=str(call_id), error=type(exc).__name__)
        result = {"status": "failed", "reason": f"the analysis LLM failed: {str(exc)[:300]}"}
    result = {**result, "provider": provider, "analysed_at": utcnow().isoformat()}
    result = PiiRedactor(document.privacy.redact).value(result)  # the agent's privacy rules hold for analysis too
    async with db.session() as s:
        stored = await CallRepo(s).set_analysis(tenant_id, call_id, result)
        if stored:  # the webhook outbox row, with the result it reports
            await webhook_events.call_analyzed(s, tenant_id, call_id, result)
    return result if stored else None


def start_after_call(db: Database, tenant_id: uuid.UUID, call_id: uuid.UUID, document: AgentDocument) -> None:
    """Runs the document's analysis in the background (nothing when it has none): the call's end never waits."""
    settings = document.analysis
    if settings is None or not settings.wants_anything():
        return
    from parley.config import Settings
    from parley.store.credentials import TenantSecrets

    secrets = TenantSecrets(db, Settings(), tenant_id)  # the service's own configuration, as `parley serve` reads it
    start_analysis(db, tenant_id, call_id, document, settings, secrets)


def start_analysis(
    db: Database,
    tenant_id: uuid.UUID,
    call_id: uuid.UUID,
    document: AgentDocument,
    settings: AnalysisSettings,
    secrets: SecretSource,
) -> None:
    """:func:`run_analysis` in the background, within the process's limit of analyses at once."""
    coro = run_analysis(db, tenant_id, call_id, document, settings, secrets)
    task = asyncio.get_running_loop().create_task(_logged(coro, call_id), name=f"call-analysis-{call_id}")
    _PENDING.add(task)
    task.add_done_callback(_PENDING.discard)


async def _logged(coro: Any, call_id: uuid.UUID) -> None:
    slots = _SLOTS.setdefault(asyncio.get_running_loop(), asyncio.Semaphore(MAX_RUNNING))
    try:
        async with slots:
            await coro
    except Exception:
        log.exception("call_analysis_not_stored", call_id=str(call_id))


async def drain() -> None:
    """Waits for the analyses started so far (tests; a shutdown that wants them finished)."""
    loop = asyncio.get_running_loop()
    while tasks := [t for t in _PENDING if t.get_loop() is loop]:
        await asyncio.gather(*tasks, return_exceptions=True)
