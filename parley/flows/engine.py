"""One call's walk through a flow: which node it is in, and where each caller turn or event takes it.

A turn tries the current node's edges in order; the global nodes' intent edges come before the node's first
``always`` edge (the fallback), so "talk to a person" works everywhere. The turn is classified at most once per
node (not at all if :meth:`FlowState.speculate` already did it for the same text); an ambiguous classification asks
the injected ``ask_llm`` once, chatter ("ok", "thanks") asks nobody. On entering a node its ``expression`` edges are
checked at once, and a node with neither prompt nor intents (an announcement, a router) follows its ``always``
edge at once; a node with a prompt is where the LLM answers this turn. When a turn leaves by an ``always`` edge, the
same text is routed again in the node it lands in. All of it at most ``max_hops`` times per turn: a cycle stops
with an error on the routing, not a hang. An edge to the node itself means "stay".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from parley.flows.config import (
    Action,
    AlwaysEdge,
    Edge,
    EventEdge,
    ExpressionEdge,
    FlowConfig,
    IntentEdge,
    NodeConfig,
)
from parley.flows.intents import IntentClassifier, IntentResult

AskLlm = Callable[[str, list[str]], Awaitable[str | None]]
MAX_HOPS = 5
log = structlog.get_logger(__name__)


@dataclass
class Routing:
    """One routing decision: how it was made, where it goes, what to run and how to carry the context."""

    method: str  # expression | embedding | llm | event | always
    confidence: float
    edge: int
    label: str
    from_node: str
    to_node: str
    elapsed_ms: float
    actions: list[Action] = field(default_factory=list)
    context: str = "keep"
    last_n: int = 6
    updates: dict[str, Any] = field(default_factory=dict)
    path: list[str] = field(default_factory=list)
    error: str | None = None

    def as_event(self, turn_id: int | str) -> dict[str, Any]:
        """The turn event recorded on the call."""
        event: dict[str, Any] = {
            "type": "route", "turn": turn_id, "method": self.method, "confidence": round(self.confidence, 3),
            "edge": self.label, "from": self.from_node, "to": self.to_node, "ms": round(self.elapsed_ms, 2),
        }  # fmt: skip
        if self.error:
            event["error"] = self.error
        return event


@dataclass
class _Hit:
    edge: Edge
    index: int
    method: str
    confidence: float


class FlowState:
    """The flow state of one call. ``ask_llm(text, candidates)`` settles ambiguous intents (None: undecided)."""

    def __init__(
        self, flow: FlowConfig, classifier: IntentClassifier | None, ask_llm: AskLlm | None = None,
        max_hops: int = MAX_HOPS,
    ) -> None:  # fmt: skip
        self.flow = flow
        self.classifier = classifier
        self.ask_llm = ask_llm
        self.max_hops = max_hops
        self.name = flow.start
        self._speculated: tuple[str, str, asyncio.Task[IntentResult]] | None = None

    @property
    def node(self) -> NodeConfig:
        """The current node's configuration (its name is :attr:`name`)."""
        return self.flow.nodes[self.name]

    @property
    def start_actions(self) -> list[Action]:
        """The start node's ``on_enter`` actions, run when the call begins."""
        return list(self.flow.nodes[self.flow.start].on_enter)

    def system_prompt(self, base: str) -> str:
        """``base`` with the current node's task prompt added."""
        return f"{base}\n\n{self.node.prompt}".strip() if self.node.prompt else base

    def allowed_tools(self, all_names: list[str]) -> list[str]:
        """The tools the LLM may call in this node (``tools: null``: all of them)."""
        allowed = self.node.tools
        return list(all_names) if allowed is None else [n for n in all_names if n in allowed]

    def _pool(self) -> list[str]:
        own = [e.intent for e in self.node.edges if isinstance(e, IntentEdge)]
        return own + [e.intent for g, e in self.flow.global_edges() if g != self.name]

    def speculate(self, text: str) -> None:
        """Classify a speculative transcript now (during the end-of-turn silence); the same final text reuses it."""
        if self.classifier is None or not text.strip() or not self._pool():
            return
        if self._speculated and self._speculated[:2] == (self.name, text):
            return
        task = asyncio.get_running_loop().create_task(self.classifier.classify(text, self._pool()))
        self._speculated = (self.name, text, task)

    async def _classify(self, text: str) -> IntentResult | None:
        if self.classifier is None:
            return None
        spec = self._speculated
        if spec and spec[:2] == (self.name, text):
            return await spec[2]
        return await self.classifier.classify(text, self._pool())

    async def _decide_intent(self, text: str, ask: bool = True) -> tuple[str | None, str, float]:
        result = await self._classify(text)
        if result is None:
            return None, "embedding", 0.0
        if result.intent is not None:
            return result.intent, "embedding", result.score
        if result.chatter or self.ask_llm is None or not ask or not result.candidates:
            return None, "llm", 0.0
        try:
            chosen = await self.ask_llm(text, [name for name, _ in result.candidates])
        except Exception as exc:  # a failed routing call leaves the caller where they are; the call goes on
            log.warning("flow.ask_llm_failed", node=self.name, error=type(exc).__name__)
            chosen = None
        return (chosen, "llm", 1.0) if chosen in self._pool() else (None, "llm", 0.0)

    async def _first_hit(self, text: str, variables: dict[str, Any], ask: bool = True) -> tuple[_Hit, str] | None:
        decided: tuple[str | None, str, float] | None = None
        for i, edge in enumerate(self.node.edges):
            if isinstance(edge, ExpressionEdge) and edge.holds(variables):
                return _Hit(edge, i, "expression", 1.0), self.name
            if decided is None and self._pool() and isinstance(edge, IntentEdge | AlwaysEdge):
                decided = await self._decide_intent(text, ask)
            if isinstance(edge, IntentEdge) and decided and decided[0] == edge.intent:
                return _Hit(edge, i, decided[1], decided[2]), self.name
            if isinstance(edge, AlwaysEdge):
                return self._global_hit(decided) or (_Hit(edge, i, "always", 1.0), self.name)
        if decided is None and self._pool():
            decided = await self._decide_intent(text, ask)
        return self._global_hit(decided)

    def _global_hit(self, decided: tuple[str | None, str, float] | None) -> tuple[_Hit, str] | None:
        if not decided or decided[0] is None:
            return None
        for owner, edge in self.flow.global_edges():
            if owner != self.name and edge.intent == decided[0] and edge.to != self.name:  # not "go where you are"
                index = next(i for i, e in enumerate(self.flow.nodes[owner].edges) if e is edge)
                return _Hit(edge, index, decided[1], decided[2]), owner
        return None

    async def on_turn(self, text: str, variables: dict[str, Any]) -> Routing | None:
        """Route a final caller turn; None when the call stays in its node."""
        start = time.perf_counter()
        scope = {**variables, "text": text}
        found = await self._first_hit(text, scope)
        routing = await self._transition(found, scope, start, text) if found else None
        self._speculated = None
        return routing

    async def on_event(self, name: str, variables: dict[str, Any], result: Any = None) -> Routing | None:
        """Route a tool result (``tool_result:<tool>``), a key (``dtmf:<digit>``) or ``silence_timeout``."""
        start = time.perf_counter()
        scope = {**variables, "result": result}
        for i, edge in enumerate(self.node.edges):
            if isinstance(edge, EventEdge) and edge.event == name and edge.holds(scope):
                return await self._transition((_Hit(edge, i, "event", 1.0), self.name), scope, start, None)
        return None

    async def _transition(
        self, found: tuple[_Hit, str], scope: dict[str, Any], start: float, text: str | None
    ) -> Routing | None:
        """Move along the hit edge, then keep going while the new node passes the turn on (bounded)."""
        hit, owner = found
        origin = self.name
        if hit.edge.to == origin:
            return None
        routing = Routing(
            hit.method, hit.confidence, hit.index, hit.edge.label or f"{owner}[{hit.index}]", origin, origin, 0.0,
            context=hit.edge.context, last_n=hit.edge.last_n, path=[origin],
        )  # fmt: skip
        edge: Edge | None = hit.edge
        while edge is not None:
            if len(routing.path) > self.max_hops:
                trail = " > ".join(routing.path)
                routing.error = f"flow loop: more than {self.max_hops} transitions in one turn ({trail})"
                break
            self._move(edge, scope, routing)
            edge = await self._after(edge, text, scope)
        routing.elapsed_ms = (time.perf_counter() - start) * 1000
        return routing

    def _move(self, edge: Edge, scope: dict[str, Any], routing: Routing) -> None:
        updates = edge.extracted(scope)
        scope.update(updates)
        routing.updates.update(updates)
        actions = self.node.on_exit + self.flow.nodes[edge.to].on_enter
        for action in actions:
            if action.set is not None:
                values = action.values(scope)
                scope.update(values)
                routing.updates.update(values)
        routing.actions += actions
        self.name = routing.to_node = edge.to
        routing.path.append(edge.to)

    async def _after(self, previous: Edge, text: str | None, scope: dict[str, Any]) -> Edge | None:
        """The edge taken on entering a node, if any.

        After an ``always`` fallback the same caller turn is routed again in the new node (its embedding is cached;
        the LLM is not asked twice). Otherwise the new node's expression edges are checked at once, and a node with
        no prompt and nothing to wait for from the caller (an announcement or a router) also follows its ``always``
        edge at once.
        """
        if isinstance(previous, AlwaysEdge) and text is not None:
            found = await self._first_hit(text, scope, ask=False)
            edge = found[0].edge if found else None
        else:
            edge = next((e for e in self.node.edges if self._passes_on(e, scope)), None)
        return None if edge is None or edge.to == self.name else edge

    def _passes_on(self, edge: Edge, scope: dict[str, Any]) -> bool:
        if isinstance(edge, ExpressionEdge):
            return edge.holds(scope)
        waits = bool(self.node.prompt) or any(_waits_for_caller(e) for e in self.node.edges)
        return isinstance(edge, AlwaysEdge) and not waits


def _waits_for_caller(edge: Edge) -> bool:
    """An edge only the caller can take: an intent, a key, a silence (a node with one waits for the caller)."""
    if isinstance(edge, IntentEdge):
        return True
    return isinstance(edge, EventEdge) and not edge.event.startswith("tool_result:")
