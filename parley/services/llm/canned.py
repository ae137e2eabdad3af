"""A model-free LLM: fixed replies picked by keyword or regex rules.

For tests, demos and the load benchmark, where a model's cost and randomness must
not hide what is being measured. It streams its reply in pieces like a model would
(optionally after ``delay_ms``, a stand-in for time to first token) and asks for the
rule's action after the text, as a model calling a tool would. No model, no threads.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator, Sequence
from typing import Annotated, Literal

from pydantic import Field, field_validator

from parley.services.llm.base import LLM, Message, Tool, ToolCall, registry
from parley.services.registry import ProviderOptions


class CannedRule(ProviderOptions):
    """``match``: keywords (any of them, whole words, any case) or one regular expression (searched, any case)."""

    match: list[str] | str
    reply: str = ""
    action: Literal["hang_up", "transfer"] | None = None
    target: str | None = None  # transfer: a name from the agent's transfer_targets or a number/URI
    reason: str = ""

    @field_validator("match")
    @classmethod
    def _valid_match(cls, v: list[str] | str) -> list[str] | str:
        if isinstance(v, str):
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
            return v
        if not v or not all(k.strip() for k in v):
            raise ValueError("keywords must be a non-empty list of non-blank words")
        return v

    def pattern(self) -> re.Pattern[str]:
        if isinstance(self.match, str):
            return re.compile(self.match, re.IGNORECASE)
        words = "|".join(re.escape(k.strip()) for k in self.match)
        return re.compile(rf"(?<!\w)(?:{words})(?!\w)", re.IGNORECASE)


@registry.register("canned")
class CannedLLM(LLM):
    """Answers the last user message with the first rule that matches it, else ``default``."""

    supports_tools = True  # its rules name the actions; the responder checks them like a model's tool calls

    class Options(ProviderOptions):
        rules: list[CannedRule] = Field(default_factory=list)
        default: str = "I see."
        words_per_piece: Annotated[int, Field(ge=1, le=100)] = 3
        delay_ms: Annotated[float, Field(ge=0, le=60_000)] = 0.0

    def __init__(self, options: Options) -> None:
        self.options = options
        self._rules = [(rule, rule.pattern()) for rule in options.rules]

    def answer(self, text: str) -> tuple[str, ToolCall | None]:
        """The reply to ``text`` and the action after it, if any."""
        for rule, pattern in self._rules:
            if pattern.search(text):
                return rule.reply, _action(rule)
        return self.options.default, None

    async def stream(self, messages: list[Message], tools: Sequence[Tool] = ()) -> AsyncGenerator[str | ToolCall, None]:
        last = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        reply, action = self.answer(last)
        if self.options.delay_ms:
            await asyncio.sleep(self.options.delay_ms / 1000)
        words = re.findall(r"\s*\S+", reply)
        n = self.options.words_per_piece
        for i in range(0, len(words), n):
            yield "".join(words[i : i + n])
            await asyncio.sleep(0)  # a piece at a time, like a model: a barge-in can stop it between pieces
        if action is not None:
            yield action


def _action(rule: CannedRule) -> ToolCall | None:
    if rule.action == "hang_up":
        return ToolCall("hang_up", {"reason": rule.reason} if rule.reason else {})
    if rule.action == "transfer":
        args = {"target": rule.target} if rule.target else {}
        return ToolCall("transfer", {**args, "reason": rule.reason} if rule.reason else args)
    return None
