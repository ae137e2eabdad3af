"""A model-free LLM: fixed replies picked by keyword or regex rules.

For tests, demos and the load benchmark, where a model's cost and randomness must
not hide what is being measured. It streams its reply in pieces like a model would
(optionally after ``delay_ms``, a stand-in for time to first token) and asks for the
rule's action after the text, as a model calling a tool would. No model, no threads.

Rules come from tenants' documents, so their regular expressions run on RE2 (linear time in the
text, whatever the pattern: ``(a+)+$`` cannot backtrack for seconds), and every part of a rule is
bounded in size.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
from collections.abc import AsyncGenerator, Sequence
from typing import Annotated, Any, Literal

import re2
from pydantic import Field, field_validator

from parley.services.llm.base import LLM, Message, Tool, ToolCall, registry
from parley.services.registry import ProviderOptions

MAX_RULES = 100
MAX_PATTERN_CHARS = 500
MAX_KEYWORDS = 50
MAX_KEYWORD_CHARS = 100
MAX_REPLY_CHARS = 2_000
MAX_HEARD_CHARS = 4_000  # of the caller's words, only this much is matched (a turn is far shorter)
_PATTERN_MEMORY = 1 << 20  # bytes RE2 may use for one pattern (beyond it, it searches slower, still linearly)
_NOT_WORD = r"[^\pL\pN_]"  # RE2 has no look-around: a keyword's neighbours are matched instead


def _options(ignore_case: bool = True) -> Any:
    options = re2.Options()
    options.case_sensitive = not ignore_case
    options.log_errors = False  # a bad pattern is the document's error, not the server's log line
    options.max_mem = _PATTERN_MEMORY
    return options


@functools.lru_cache(maxsize=256)
def compile_pattern(pattern: str) -> Any:
    """``pattern`` compiled by RE2 (searched in linear time), any case; ``ValueError`` says why not.

    Compiled once per process and shared by every call of the agent (RE2 objects are thread-safe)."""
    try:
        return re2.compile(pattern, _options())
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ValueError(
            f"not a valid regular expression in RE2 syntax, which has no look-around or back-references: {reason[:100]}"
        ) from None


class CannedRule(ProviderOptions):
    """``match``: keywords (any of them, whole words, any case) or one regular expression (searched, any case,
    RE2 syntax)."""

    match: list[str] | str
    reply: str = Field("", max_length=MAX_REPLY_CHARS)
    action: Literal["hang_up", "transfer"] | None = None
    target: str | None = Field(None, max_length=256)  # transfer: a transfer_targets name or a number/URI
    reason: str = Field("", max_length=200)
    #: an agent tool to call after the reply (a document's ``tools:`` name), with fixed ``arguments``
    tool: str | None = Field(None, max_length=64)
    arguments: dict[str, Any] = Field(default_factory=dict)
    #: said once the tool has answered; ``{field}`` / ``{a.b}`` take values from its JSON result
    after_tool: str = Field("", max_length=MAX_REPLY_CHARS)

    @field_validator("match")
    @classmethod
    def _valid_match(cls, v: list[str] | str) -> list[str] | str:
        if isinstance(v, str):
            if len(v) > MAX_PATTERN_CHARS:
                raise ValueError(f"a regular expression has at most {MAX_PATTERN_CHARS} characters, not {len(v)}")
            compile_pattern(v)
            return v
        if not v or not all(k.strip() for k in v):
            raise ValueError("keywords must be a non-empty list of non-blank words")
        if len(v) > MAX_KEYWORDS:
            raise ValueError(f"at most {MAX_KEYWORDS} keywords per rule, not {len(v)}")
        if any(len(k) > MAX_KEYWORD_CHARS for k in v):
            raise ValueError(f"a keyword has at most {MAX_KEYWORD_CHARS} characters")
        return v

    def pattern(self) -> Any:
        """The compiled RE2 pattern: the regular expression, or the keywords as whole words."""
        if isinstance(self.match, str):
            return compile_pattern(self.match)
        words = "|".join(re.escape(k.strip()) for k in self.match)
        return compile_pattern(rf"(?:^|{_NOT_WORD})(?:{words})(?:{_NOT_WORD}|$)")


@registry.register("canned")
class CannedLLM(LLM):
    """Answers the last user message with the first rule that matches it, else ``default``."""

    supports_tools = True  # its rules name the actions; the responder checks them like a model's tool calls

    class Options(ProviderOptions):
        rules: list[CannedRule] = Field(default_factory=list, max_length=MAX_RULES)
        default: str = Field("I see.", max_length=MAX_REPLY_CHARS)
        words_per_piece: Annotated[int, Field(ge=1, le=100)] = 3
        delay_ms: Annotated[float, Field(ge=0, le=60_000)] = 0.0

    def __init__(self, options: Options) -> None:
        self.options = options
        self._rules = [(rule, rule.pattern()) for rule in options.rules]

    def answer(self, text: str) -> tuple[str, ToolCall | None]:
        """The reply to ``text`` and the action (or tool call) after it, if any."""
        text = text[:MAX_HEARD_CHARS]
        for rule, pattern in self._rules:
            if pattern.search(text):
                return rule.reply, _action(rule)
        return self.options.default, None

    def after_tool(self, messages: list[Message]) -> str | None:
        """The reply to a tool's result (the last message), from the rule that called that tool."""
        if not messages or messages[-1]["role"] != "tool" or len(messages) < 2:
            return None
        calls = next((m.get("tool_calls") for m in reversed(messages) if m["role"] == "assistant"), None) or []
        name = calls[-1]["function"]["name"] if calls else ""
        rule = next((r for r, _ in self._rules if r.tool == name), None)
        if rule is None:
            return None
        try:
            result = json.loads(messages[-1]["content"])
        except ValueError:
            result = messages[-1]["content"]
        return _fill(rule.after_tool, result)

    async def stream(self, messages: list[Message], tools: Sequence[Tool] = ()) -> AsyncGenerator[str | ToolCall, None]:
        last = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        after = self.after_tool(messages)
        reply, action = (after, None) if after is not None else self.answer(last)
        if self.options.delay_ms:
            await asyncio.sleep(self.options.delay_ms / 1000)
        words = re.findall(r"\s*\S+", reply)
        n = self.options.words_per_piece
        for i in range(0, len(words), n):
            yield "".join(words[i : i + n])
            await asyncio.sleep(0)  # a piece at a time, like a model: a barge-in can stop it between pieces
        if action is not None:
            yield action


def _fill(template: str, result: Any) -> str:
    """``template`` with ``{field}`` / ``{a.b}`` replaced from ``result`` (no ``str.format``: no attribute access)."""

    def value(m: re.Match[str]) -> str:
        v: Any = result
        for key in m.group(1).split("."):
            v = v.get(key) if isinstance(v, dict) else None
        return "" if v is None else str(v)

    return re.sub(r"\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\}", value, template)


def _action(rule: CannedRule) -> ToolCall | None:
    if rule.tool:
        return ToolCall(rule.tool, dict(rule.arguments))
    if rule.action == "hang_up":
        return ToolCall("hang_up", {"reason": rule.reason} if rule.reason else {})
    if rule.action == "transfer":
        args = {"target": rule.target} if rule.target else {}
        return ToolCall("transfer", {**args, "reason": rule.reason} if rule.reason else args)
    return None
