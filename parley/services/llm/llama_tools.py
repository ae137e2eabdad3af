"""Tool calls from the embedded model: its chat template offers the tools, the reply is split into text and calls.

Qwen2.5's template lists the tools in the system turn and the model answers a call as
``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``. The reply streams as it comes: only text that
could be the start of ``<tool_call>`` (a few characters, usually none: it is one token) or a reply that opens
with ``{`` (a call written without its tags) is held back, so a reply without a call gets no added latency
and the caller never hears JSON read aloud.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from parley.services.llm.base import Tool, ToolCall

log = logging.getLogger("parley.services.llm.llama")
OPEN, CLOSE = "<tool_call>", "</tool_call>"


def tool_specs(tools: Sequence[Tool]) -> list[dict[str, Any]]:
    """The OpenAI function-calling shape that chat templates read (``tools`` in the template's context)."""
    return [
        {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
        for t in tools
    ]


def _held(text: str) -> int:
    """How many trailing characters of ``text`` could be the start of ``OPEN`` (and must wait for more)."""
    for k in range(min(len(OPEN) - 1, len(text)), 0, -1):
        if text.endswith(OPEN[:k]):
            return k
    return 0


def parse_call(text: str) -> ToolCall | None:
    """One call's JSON (``{"name": ..., "arguments": {...}}``), or None if it is not one."""
    try:
        value = json.loads(text.strip())
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not value["name"]:
        return None
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):  # some models write the arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except ValueError:
            arguments = {}
    return ToolCall(value["name"], arguments if isinstance(arguments, dict) else {})


class ToolCallSplitter:
    """Feed it the reply's pieces; it returns the text to speak now and keeps the calls for the end."""

    def __init__(self) -> None:
        self.calls: list[ToolCall] = []
        self._buf = ""
        self._in_call = False
        self._started = False  # some non-space text has been seen
        self._bare = False  # the reply opened with "{": a call without tags, or text after all (decided at the end)

    def feed(self, piece: str) -> str:
        self._buf += piece
        if not self._started:
            if not self._buf.strip():
                return ""
            self._started = True
            self._bare = self._buf.lstrip().startswith("{")
        if self._bare:
            return ""
        out: list[str] = []
        while True:
            if self._in_call:
                end = self._buf.find(CLOSE)
                if end < 0:
                    break
                self._call(self._buf[:end])
                self._buf, self._in_call = self._buf[end + len(CLOSE) :], False
                continue
            start = self._buf.find(OPEN)
            if start >= 0:
                out.append(self._buf[:start])
                self._buf, self._in_call = self._buf[start + len(OPEN) :], True
                continue
            keep = _held(self._buf)
            out.append(self._buf[: len(self._buf) - keep])
            self._buf = self._buf[len(self._buf) - keep :]
            break
        return "".join(out)

    def finish(self) -> str:
        """The text still held at the end of the reply (a call cut off by ``max_tokens`` is tried as it is)."""
        rest, self._buf = self._buf, ""
        if self._bare:
            call = parse_call(rest)
            if call is not None:
                self.calls.append(call)
                return ""
            return rest
        if self._in_call:
            self._call(rest)
            return ""
        return rest

    def _call(self, text: str) -> None:
        call = parse_call(text)
        if call is None:
            log.warning("llama: a tool call that is not JSON was dropped (%d chars)", len(text))
            return
        self.calls.append(call)
