"""A call's flow as the responder walks it: route each turn before the reply, then say, set and act as the
nodes say; the node's task prompt and tools shape the reply.

Routing happens inside the reply, which starts on the speculative transcript (during the end-of-turn silence), so a
confident embedding decision adds nothing to voice-to-voice. A speculative reply may be discarded (the caller talks
on): :meth:`FlowDriver.undo` puts the flow back where it was, so only turns the caller finished move the call.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import structlog

from parley.agent.context import Conversation
from parley.flows.engine import FlowState, Routing
from parley.services.llm.base import LLM, Message, Tool, ToolCall

log = structlog.get_logger(__name__)
MAX_ROUTING_TOKENS_CHARS = 200


@dataclass
class FlowStep:
    """What a routing decision asks of the reply: lines to say first, actions for after it, the record's event."""

    event: dict[str, Any] | None = None
    say: list[str] = field(default_factory=list)
    actions: list[tuple[str, str]] = field(default_factory=list)  # (hang_up | transfer | send_dtmf, target)
    calls: list[ToolCall] = field(default_factory=list)  # tools the flow runs itself (``call`` actions)


class FlowDriver:
    """One call's flow, its variables and the prompt it gives the conversation."""

    def __init__(
        self,
        state: FlowState,
        conversation: Conversation,
        variables: dict[str, Any],
        llms: Mapping[str, LLM] | None = None,
    ) -> None:
        self.state = state
        #: node name → the node's own LLM (its ``llm:`` override), created with the call's other services
        self.llms = dict(llms or {})
        self.conversation = conversation
        self.variables = variables
        self.base_prompt = conversation.system_prompt
        self._saved: dict[int, tuple[str, dict[str, Any]]] = {}
        self._apply_prompt()

    def start(self) -> FlowStep:
        """The start node's ``on_enter`` actions, at the call's start."""
        step = FlowStep()
        self._run_actions(self.state.start_actions, step)
        return step

    def speculate(self, text: str) -> None:
        self.state.speculate(text)

    async def on_turn(self, turn_id: int, text: str) -> FlowStep:
        self._saved[turn_id] = (self.state.name, dict(self.variables))
        return self._apply(turn_id, await self.state.on_turn(text, self.variables))

    async def on_event(self, turn_id: int, name: str, result: Any = None) -> FlowStep:
        return self._apply(turn_id, await self.state.on_event(name, self.variables, result))

    async def on_keypad(self, turn_id: int, digits: str, text: str) -> FlowStep:
        """A keypad turn: a single key routes by the node's ``dtmf:<digit>`` edge if it has one, else (and for
        longer entries) the turn's text is routed like speech."""
        if len(digits) == 1 and self.listens(f"dtmf:{digits}"):
            self._saved[turn_id] = (self.state.name, dict(self.variables))
            return await self.on_event(turn_id, f"dtmf:{digits}", digits)
        return await self.on_turn(turn_id, text)

    def listens(self, event: str) -> bool:
        """Whether the current node has an edge for ``event`` (``silence_timeout``, ``dtmf:1``)."""
        return any(getattr(e, "event", None) == event for e in self.state.node.edges)

    def llm(self, default: LLM) -> LLM:
        """The LLM that answers in the current node: its override, or ``default``."""
        return self.llms.get(self.state.name, default)

    def confirm(self, turn_id: int) -> None:
        self._saved.pop(turn_id, None)

    def undo(self, turn_id: int) -> None:
        """A discarded speculative reply's routing is taken back."""
        saved = self._saved.pop(turn_id, None)
        if saved is not None:
            self.state.name = saved[0]
            self.variables.clear()
            self.variables.update(saved[1])
            self._apply_prompt()

    def tools(self, all_tools: Sequence[Tool], built_in: Collection[str]) -> list[Tool]:
        """The node's tools (built-in actions are always offered: a caller may ask for a person anywhere)."""
        names = self.state.allowed_tools([t.name for t in all_tools if t.name not in built_in])
        return [t for t in all_tools if t.name in built_in or t.name in names]

    def _apply(self, turn_id: int, routing: Routing | None) -> FlowStep:
        step = FlowStep()
        if routing is None:
            return step
        step.event = routing.as_event(turn_id)
        self.variables.update(routing.updates)
        self._run_actions(routing.actions, step)
        self.conversation.keep_context(routing.context, routing.last_n)
        self._apply_prompt()
        log.info("flow_routed", turn_id=turn_id, **{k: v for k, v in step.event.items() if k not in ("type", "turn")})
        return step

    def _run_actions(self, actions: Sequence[Any], step: FlowStep) -> None:
        for action in actions:
            if action.say is not None:
                step.say.append(action.spoken(self.variables))
            elif action.set is not None:
                self.variables.update(action.values(self.variables))
            elif action.call is not None:
                step.calls.append(ToolCall(action.call, action.values(self.variables)))
            elif action.hang_up:
                step.actions.append(("hang_up", ""))
            elif action.transfer is not None:
                step.actions.append(("transfer", action.transfer))
            elif action.send_dtmf is not None:
                step.actions.append(("send_dtmf", action.send_dtmf))

    def _apply_prompt(self) -> None:
        self.conversation.system_prompt = self.state.system_prompt(self.base_prompt)


def llm_router(llm: LLM) -> Any:
    """``ask_llm`` for the flow engine: one short LLM call that picks among the candidate intents (a ``route``
    tool call where the model calls tools, else the candidate its answer names)."""

    async def ask(text: str, candidates: list[str]) -> str | None:
        tool = Tool(
            "route",
            "Choose what the caller wants.",
            {
                "type": "object",
                "properties": {"intent": {"type": "string", "enum": candidates}},
                "required": ["intent"],
            },
        )
        messages: list[Message] = [
            {"role": "system", "content": f"Which one does the caller want: {', '.join(candidates)}? Answer one word."},
            {"role": "user", "content": text},
        ]
        answer = ""
        async with aclosing(llm.stream(messages, [tool] if llm.supports_tools else [])) as stream:
            async for piece in stream:
                if isinstance(piece, ToolCall):
                    chosen = piece.arguments.get("intent")
                    return chosen if chosen in candidates else None
                answer += piece
                if len(answer) > MAX_ROUTING_TOKENS_CHARS:
                    break
        said = answer.lower()
        named = [c for c in candidates if c.lower() in said]
        log.debug("flow_llm_route", answer=json.dumps(answer[:80]), chosen=named[:1])
        return named[0] if len(named) == 1 else None

    return ask
