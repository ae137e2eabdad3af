"""One call's tools: built from the document's ``tools:`` entries, opened before the first turn, closed at the end.

An entry that cannot be made (a secret missing, an MCP server that does not answer) does not stop the call: it is
left out and reported as a ``tool_unavailable`` problem, which the call records as an event, so the caller still
gets an agent that can talk (and say it cannot check just now). ``mocks`` replace tools by fixed results, for
``parley test`` scenarios: the schema the LLM sees stays the real tool's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from parley.redact import redact_text
from parley.services.llm.base import Tool
from parley.services.secrets import SecretSource
from parley.tools.base import AgentTool, SideEffect, ToolContext, ToolError, ToolResult
from parley.tools.config import ToolConfigBase

log = structlog.get_logger(__name__)
OPEN_TIMEOUT_S = 10.0


class MockTool(AgentTool):
    """A tool that answers with a fixed result (a test's stand-in for a real one)."""

    def __init__(
        self, name: str, result: Any, *, description: str = "", parameters: dict[str, Any] | None = None
    ) -> None:
        self.name, self.result = name, result
        self.description = description or f"{name} (mocked)"
        self.parameters = parameters or {"type": "object", "properties": {}}

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        return ToolResult(self.result)


@dataclass
class Toolbox:
    tools: dict[str, AgentTool] = field(default_factory=dict)
    #: entries left out, as call events: ``{"type": "tool_unavailable", "tool", "error"}``
    problems: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    async def open(
        cls,
        configs: Iterable[ToolConfigBase],
        secrets: SecretSource,
        mocks: Mapping[str, Any] | None = None,
        extra: Iterable[AgentTool] = (),
    ) -> Toolbox:
        """Make and open every entry's tools (in parallel: MCP servers start at once); ``extra`` tools join as they
        are (Python API users)."""
        box = cls()
        made = await asyncio.gather(*(box._make(c, secrets) for c in configs))
        for tools in made:
            for tool in tools:
                box._add(tool)
        for tool in extra:
            box._add(tool)
        for name, result in (mocks or {}).items():
            real = box.tools.get(name)
            mock = MockTool(name, result)
            if real is not None:
                mock.description, mock.parameters = real.description, real.parameters
                mock.side_effect = real.side_effect
                await real.aclose()
            box.tools[name] = mock
        return box

    def _add(self, tool: AgentTool) -> None:
        if tool.name in self.tools:
            self.problems.append({"type": "tool_unavailable", "tool": tool.name, "error": "duplicate-name"})
            return
        self.tools[tool.name] = tool

    async def _make(self, config: ToolConfigBase, secrets: SecretSource) -> list[AgentTool]:
        try:
            async with asyncio.timeout(OPEN_TIMEOUT_S):
                tools = await config.create(secrets)
                await asyncio.gather(*(t.open() for t in tools))
            return tools
        except Exception as exc:  # any failure leaves the entry out; the call goes on without it
            kind = exc.kind if isinstance(exc, ToolError) else "timeout" if isinstance(exc, TimeoutError) else "failed"
            log.warning("tool_unavailable", tool=config.name, error=kind, detail=redact_text(str(exc)[:300]))
            self.problems.append({"type": "tool_unavailable", "tool": config.name, "error": kind})
            return []

    def specs(self, allowed: Iterable[str] | None = None) -> list[Tool]:
        """The tools the LLM is offered (all, or only ``allowed`` names: a flow node's)."""
        names = self.tools if allowed is None else [n for n in allowed if n in self.tools]
        return [self.tools[n].spec() for n in names]

    def side_effect(self, name: str) -> SideEffect:
        tool = self.tools.get(name)
        return tool.side_effect if tool is not None else SideEffect.READ

    async def aclose(self) -> None:
        await asyncio.gather(*(t.aclose() for t in self.tools.values()), return_exceptions=True)
