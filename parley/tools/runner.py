"""Calling one tool for the LLM: check the arguments, keep the deadline, turn any failure into an outcome.

Whatever a tool does (answers, raises, hangs, is unknown to this agent, is given arguments that fail its schema),
the runner returns a :class:`ToolOutcome`: what the LLM is told (the result, or ``{"error": kind}`` so it can
tell the caller), the event for the call record (arguments and result redacted and bounded), and the variables the
tool set. Nothing here raises but cancellation.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import structlog
from jsonschema import Draft202012Validator

from parley.redact import redact_text, redact_value
from parley.services.llm.base import Message, ToolCall
from parley.tools.base import AgentTool, SideEffect, ToolContext, ToolError

log = structlog.get_logger(__name__)

MAX_RESULT_CHARS = 4_000  # what the LLM reads of a result: a small model's context is short
MAX_EVENT_CHARS = 2_000
DEADLINE_GRACE_S = 0.5  # a tool that keeps its own deadline gets to report it before the runner cuts it off


@dataclass
class ToolOutcome:
    """One tool call's end: ``error`` is "" on success, else a short kind (``timeout``, ``bad-arguments`` ...)."""

    call: ToolCall
    side_effect: SideEffect
    content: Any
    error: str = ""
    duration_ms: float = 0.0
    variables: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.error

    def result_text(self) -> str:
        """The result as the LLM reads it: JSON, bounded."""
        body = self.content if self.ok else {"error": self.error}
        text = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False, default=str)
        return text if len(text) <= MAX_RESULT_CHARS else text[:MAX_RESULT_CHARS] + " …(truncated)"

    def event(self, turn_id: int, t: float) -> dict[str, Any]:
        """The call record's ``tool`` event; secrets masked, sizes bounded."""
        event: dict[str, Any] = {
            "type": "tool",
            "turn": turn_id,
            "tool": self.call.name,
            "arguments": redact_value(self.call.arguments, MAX_EVENT_CHARS),
            "side_effect": str(self.side_effect),
            "ok": self.ok,
            "duration_ms": round(self.duration_ms, 1),
            "t": round(t, 3),
        }
        if self.ok:
            event["result"] = redact_value(self.content, MAX_EVENT_CHARS)
            if isinstance(self.content, dict) and isinstance(self.content.get("citations"), list):
                event["citations"] = self.content["citations"]  # a knowledge search's: kept whole for the turn
        else:
            event["error"] = self.error
        return event


def exchange_messages(outcomes: list[ToolOutcome], text: str = "") -> list[Message]:
    """The history of one tool step: the assistant's calls (after the ``text`` it said first), then each result."""
    calls = [
        {
            "id": o.call.id,
            "type": "function",
            "function": {"name": o.call.name, "arguments": json.dumps(o.call.arguments, ensure_ascii=False)},
        }
        for o in outcomes
    ]
    messages: list[Message] = [{"role": "assistant", "content": text, "tool_calls": calls}]
    messages += [{"role": "tool", "tool_call_id": o.call.id, "content": o.result_text()} for o in outcomes]
    return messages


class ToolRunner:
    """Runs the calls an LLM makes against one call's tools."""

    def __init__(self, tools: dict[str, AgentTool]) -> None:
        self.tools = tools
        self._validators = {name: Draft202012Validator(t.parameters) for name, t in tools.items()}

    def side_effect(self, name: str) -> SideEffect:
        tool = self.tools.get(name)
        return tool.side_effect if tool is not None else SideEffect.READ

    async def run(self, call: ToolCall, context: ToolContext, allowed: Collection[str] | None = None) -> ToolOutcome:
        """Run ``call``; ``allowed`` (a flow node's tools) refuses the others as ``not-allowed``."""
        tool = self.tools.get(call.name)
        if tool is None:
            log.warning("tool_unknown", tool=call.name[:64])
            return ToolOutcome(call, SideEffect.READ, None, error="unknown-tool")
        if allowed is not None and call.name not in allowed:
            log.warning("tool_not_allowed_here", tool=call.name)
            return ToolOutcome(call, tool.side_effect, None, error="not-allowed")
        problem = self._argument_problem(call)
        if problem:
            log.warning("tool_bad_arguments", tool=call.name, problem=problem)
            return ToolOutcome(call, tool.side_effect, None, error="bad-arguments")
        started = time.perf_counter()
        outcome = await self._call(tool, call, context)
        outcome.duration_ms = (time.perf_counter() - started) * 1000
        if outcome.ok:
            context.variables.update(outcome.variables)
        log.info("tool_called", tool=call.name, ok=outcome.ok, error=outcome.error, ms=round(outcome.duration_ms))
        return outcome

    def _argument_problem(self, call: ToolCall) -> str:
        error = next(iter(self._validators[call.name].iter_errors(call.arguments)), None)
        if error is None:
            return ""
        where = "/".join(str(p) for p in error.absolute_path) or "arguments"
        return redact_text(f"{where}: {error.message}"[:300])

    async def _call(self, tool: AgentTool, call: ToolCall, context: ToolContext) -> ToolOutcome:
        try:
            async with asyncio.timeout(tool.deadline_s + DEADLINE_GRACE_S):
                result = await tool.run(dict(call.arguments), context)
        except TimeoutError:
            return ToolOutcome(call, tool.side_effect, None, error="timeout")
        except ToolError as exc:
            log.warning("tool_failed", tool=call.name, kind=exc.kind, detail=redact_text(str(exc)[:300]))
            return ToolOutcome(call, tool.side_effect, None, error=exc.kind)
        except Exception as exc:  # a tool's bug: the call goes on, the log says where
            log.error("tool_crashed", tool=call.name, error=type(exc).__name__, detail=redact_text(str(exc)[:300]))
            return ToolOutcome(call, tool.side_effect, None, error="failed")
        return ToolOutcome(call, tool.side_effect, result.content, variables=dict(result.variables))
