"""The ``langchain`` LLM provider: any LangChain Runnable or LangGraph graph, named by import path, answers the caller.

The graph receives the whole conversation as heard and its tokens stream into the sentence chunker and TTS like a
built-in model's. A graph is run with ``stream_mode="messages"``, so each token comes with the node that produced
it: only the nodes in ``speak_nodes`` are spoken (a router's JSON is not: livekit/agents #2836), and tool-call
chunks never are. Barge-in closes this generator, which closes the graph's stream, which cancels its running nodes
(and so their HTTP streams) instead of letting them talk to nobody.

The graph is code the operator installed, so a document may only name modules the operator listed in
``PARLEY_LANGCHAIN_ALLOW`` (importing any module, or calling any zero-argument function, would be code execution
for whoever can upload a document). The graph has its own tools, hence ``supports_tools = False``.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

from pydantic import Field

from parley.services.llm.base import LLM, LLMError, Message, Tool, ToolCall, registry
from parley.services.registry import ProviderOptions

try:
    from langchain_core.messages import (
        AIMessage,
        BaseMessage,
        BaseMessageChunk,
        HumanMessage,
        SystemMessage,
        ToolMessage,
    )
    from langchain_core.runnables import Runnable
except ModuleNotFoundError as exc:  # the extra is not installed: say so when a document asks for the provider
    _MISSING: str | None = exc.name
else:
    _MISSING = None

log = logging.getLogger(__name__)

EXTRA_HINT = "pip install 'parley[langchain]'"
ALLOW_SETTING = "PARLEY_LANGCHAIN_ALLOW"  # comma-separated modules (with their submodules) documents may name
IMPORT_PATH = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"

_TASK_NOTE = re.compile(r"During task with name '([^']{1,200})'")  # LangGraph's note on a node's exception


@registry.register("langchain")
class LangChainLLM(LLM):
    """Runs one Runnable per call; each :meth:`stream` is one run of it over the conversation so far."""

    supports_tools = False

    class Options(ProviderOptions):
        runnable: str = Field(pattern=IMPORT_PATH, max_length=300)  # "pkg.module:attr": a Runnable or a factory
        # LangGraph nodes whose AI tokens are spoken; None: every node's (tool calls are never spoken)
        speak_nodes: list[str] | None = None
        # None: a graph gets {"messages": [...]}, a plain Runnable the message list; a name wraps it in {name: [...]}
        input_key: str | None = Field(None, min_length=1, max_length=64)
        config: dict[str, Any] = Field(default_factory=dict)  # the RunnableConfig (configurable, recursion_limit)

    def __init__(self, options: Options) -> None:
        self.options = options
        if _MISSING is not None:
            raise LLMError(f"langchain: the provider needs the langchain extra ({EXTRA_HINT}; missing {_MISSING})")
        self._runnable = load_runnable(options.runnable)
        self._is_graph = _is_graph(self._runnable)
        self._speak = frozenset(options.speak_nodes) if options.speak_nodes is not None else None
        log.debug("langchain llm: runnable=%s graph=%s", options.runnable, self._is_graph)

    def _input(self, messages: list[Message]) -> Any:
        converted = to_langchain(messages)
        key = self.options.input_key or ("messages" if self._is_graph else None)
        return {key: converted} if key else converted

    async def stream(self, messages: list[Message], tools: Sequence[Tool] = ()) -> AsyncGenerator[str | ToolCall, None]:
        config: Any = self.options.config or None
        if self._is_graph:
            source: AsyncIterator[Any] = self._runnable.astream(self._input(messages), config, stream_mode="messages")
        else:
            source = self._runnable.astream(self._input(messages), config)
        node = ""
        try:
            async for item in source:
                if self._is_graph:
                    chunk, metadata = item if isinstance(item, tuple) and len(item) == 2 else (item, {})
                    node = str(metadata.get("langgraph_node", "")) if isinstance(metadata, dict) else ""
                    text = self._spoken(chunk, metadata)
                else:
                    text = _text(item) if isinstance(item, str | BaseMessage) else ""
                if text:
                    yield text
        except LLMError:
            raise
        except Exception as exc:  # the graph's own failure; its message may quote a key, so only its type
            node = _failed_node(exc) or node
            where = f" in node {node!r}" if node else ""
            log.warning("langchain llm: %s raised %s%s", self.options.runnable, type(exc).__name__, where)
            raise LLMError(f"langchain: {self.options.runnable} raised {type(exc).__name__}{where}") from None
        finally:
            # barge-in (aclose) or an error: close the graph's stream so its nodes are cancelled now
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()

    def _spoken(self, chunk: Any, metadata: Any) -> str:
        """The text of a graph's message event that the caller should hear ("" for the rest)."""
        if not isinstance(chunk, AIMessage | BaseMessageChunk) or isinstance(chunk, ToolMessage):
            return ""
        if getattr(chunk, "tool_call_chunks", None) or getattr(chunk, "tool_calls", None):
            return ""  # the model is calling a tool; the text that comes with it is its reasoning
        if self._speak is not None and not self._speak & _nodes(metadata):
            return ""
        return _text(chunk)


def load_runnable(path: str) -> Any:
    """The Runnable at ``path`` ("pkg.module:attr"), calling it first if it is a zero-argument factory."""
    module_name, _, attr = path.partition(":")
    if not _allowed(module_name):
        raise LLMError(
            f"langchain: module {module_name!r} is not listed in {ALLOW_SETTING}; the operator lists the modules "
            "whose graphs agent documents may run"
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        missing = f" (missing {exc.name})" if exc.name and exc.name != module_name else ""
        raise LLMError(f"langchain: cannot import {module_name!r} for runnable {path!r}{missing}") from None
    except Exception as exc:  # the module ran and failed
        raise LLMError(f"langchain: importing {module_name!r} raised {type(exc).__name__}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise LLMError(f"langchain: {module_name!r} has no attribute {attr!r} (runnable {path!r})")
        obj = getattr(obj, part)
    if not isinstance(obj, Runnable) and callable(obj):
        try:
            obj = obj()
        except Exception as exc:
            raise LLMError(f"langchain: factory {path!r} raised {type(exc).__name__}") from None
    if not isinstance(obj, Runnable):
        raise LLMError(f"langchain: {path!r} is a {type(obj).__name__}, not a Runnable or a LangGraph graph")
    return obj


def _allowed(module_name: str) -> bool:
    allowed = [m.strip() for m in os.environ.get(ALLOW_SETTING, "").split(",") if m.strip()]
    return any(module_name == m or module_name.startswith(m + ".") for m in allowed)


def _is_graph(runnable: Any) -> bool:
    """A LangGraph graph (compiled or remote) streams ``(chunk, metadata)`` pairs in "messages" mode."""
    try:
        from langgraph.pregel.protocol import PregelProtocol
    except ModuleNotFoundError:  # langchain-core alone: only plain Runnables
        return False
    return isinstance(runnable, PregelProtocol)


def _failed_node(exc: BaseException) -> str:
    """The node LangGraph says the exception came from (the innermost, in a subgraph), or ""."""
    for note in getattr(exc, "__notes__", None) or ():
        if m := _TASK_NOTE.match(str(note)):
            return m.group(1)
    return ""


def _nodes(metadata: Any) -> frozenset[str]:
    """The node that made a token, and the outer nodes around it when it ran in a subgraph."""
    if not isinstance(metadata, dict):
        return frozenset()
    names = {str(metadata.get("langgraph_node", ""))}
    namespace = str(metadata.get("langgraph_checkpoint_ns", ""))
    names.update(part.split(":", 1)[0] for part in namespace.split("|") if part)
    return frozenset(names - {""})


def _text(item: Any) -> str:
    """Text of a str, a message or its chunk; content blocks other than text (images, reasoning) are not spoken."""
    if isinstance(item, str):
        return item
    content = getattr(item, "content", "")
    if isinstance(content, str):
        return content
    return "".join(
        b if isinstance(b, str) else str(b.get("text", ""))
        for b in content
        if isinstance(b, str) or (isinstance(b, dict) and b.get("type") == "text")
    )


def to_langchain(messages: list[Message]) -> list[Any]:
    """Parley's OpenAI-shaped messages as LangChain messages (tool calls and their results included)."""
    out: list[Any] = []
    for m in messages:
        role, content = m.get("role"), m.get("content") or ""
        if role == "system":
            out.append(SystemMessage(content))
        elif role == "assistant":
            calls = [_tool_call(c) for c in m.get("tool_calls") or ()]
            out.append(AIMessage(content, tool_calls=[c for c in calls if c]))
        elif role == "tool":
            out.append(ToolMessage(content, tool_call_id=m.get("tool_call_id") or "unknown"))
        else:  # "user", and anything unknown is what the caller said
            out.append(HumanMessage(content))
    return out


def _tool_call(call: dict[str, Any]) -> dict[str, Any] | None:
    function = call.get("function") or {}
    name = function.get("name")
    if not name:
        return None
    try:
        args = json.loads(function.get("arguments") or "{}")
    except ValueError:
        args = {}
    return {"name": name, "args": args if isinstance(args, dict) else {}, "id": call.get("id"), "type": "tool_call"}
