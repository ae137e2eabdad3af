"""The ``flow:`` section of an agent document: nodes, typed edges, global nodes; checked whole at load.

Every mistake that would otherwise surface mid-call (an edge to a node that does not exist, a node no caller can
reach, a node that can strand the caller, two intents that compete in one place, an expression that cannot parse)
is a validation error naming the node, raised when the document loads.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from parley.agent.knowledge_settings import NodeCollections
from parley.flows.expressions import Expression, ExpressionError, Template

NODE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
EVENT = re.compile(r"^(tool_result:[A-Za-z][A-Za-z0-9_-]{0,63}|dtmf:[0-9*#A-D]|silence_timeout)$")
ContextPolicy = Literal["keep", "last_n", "summary", "none"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


ACTION_KINDS = ("say", "set", "hang_up", "transfer", "send_dtmf", "call")


class Action(_Strict):
    """One enter/exit action: exactly one of ``say``, ``set``, ``hang_up``, ``transfer``, ``send_dtmf``, ``call``.

    ``call`` runs one of the document's tools with ``arguments`` (templates over the call variables): a booking
    made from values the flow collected, without trusting a small model to write the tool call.
    """

    say: str | None = Field(None, min_length=1, max_length=1000)
    set: dict[str, str] | None = None
    hang_up: bool | None = None
    transfer: str | None = Field(None, min_length=1, max_length=200)
    send_dtmf: str | None = Field(None, pattern=r"^[0-9*#A-D]{1,32}$")
    call: str | None = Field(None, min_length=1, max_length=64)
    arguments: dict[str, str] = Field(default_factory=dict)
    _templates: dict[str, Template] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _one(self) -> Action:
        given = [k for k in ACTION_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"an action has exactly one of {', '.join(ACTION_KINDS)} (got {given or 'none'})")
        if self.arguments and self.call is None:
            raise ValueError("arguments belong to a call action")
        self._templates = {k: Template(v) for k, v in (self.set or self.arguments).items()}
        if self.say is not None:
            self._templates[""] = Template(self.say)
        return self

    def spoken(self, variables: dict[str, Any]) -> str:
        """A ``say`` action's line, its ``{{ }}`` parts rendered over ``variables``."""
        return str(self._templates[""].render(variables)) if self.say is not None else ""

    @property
    def kind(self) -> str:
        """Which action this is."""
        return next(k for k in ACTION_KINDS if getattr(self, k) is not None)

    def values(self, variables: dict[str, Any]) -> dict[str, Any]:
        """A ``set`` action's variables (or a ``call`` action's arguments), templates rendered over ``variables``."""
        return {k: t.render(variables) for k, t in self._templates.items() if k}


class _EdgeBase(_Strict):
    """What every edge has: its target, the context policy on the way, variables to extract.

    ``extract`` values are templates (``"{{ result['booking_id'] }}"``) over the call variables plus ``text`` (the
    caller's turn) and ``result`` (the tool result of a ``tool_result`` event).
    """

    to: str
    label: str | None = Field(None, max_length=100)
    context: ContextPolicy = "keep"
    last_n: int = Field(6, ge=1, le=100)
    extract: dict[str, str] = Field(default_factory=dict)
    _extract: dict[str, Template] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _templates(self) -> _EdgeBase:
        self._extract = {k: Template(v) for k, v in self.extract.items()}
        return self

    def extracted(self, variables: dict[str, Any]) -> dict[str, Any]:
        """The variables this edge extracts, rendered over ``variables`` (with ``text``/``result``)."""
        return {k: t.render(variables) for k, t in self._extract.items()}


class ExpressionEdge(_EdgeBase):
    type: Literal["expression"]
    when: str
    _expr: Expression | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _parse(self) -> ExpressionEdge:
        self._expr = Expression(self.when)
        return self

    def holds(self, variables: dict[str, Any]) -> bool:
        """Whether ``when`` is true over ``variables``."""
        return self._expr is not None and self._expr.truthy(variables)


class IntentEdge(_EdgeBase):
    type: Literal["intent"]
    intent: str = Field(min_length=1, max_length=64)
    examples: list[Annotated[str, Field(min_length=1, max_length=300)]] = Field(min_length=1, max_length=100)


class EventEdge(_EdgeBase):
    """``tool_result:<tool>``, ``dtmf:<digit>`` or ``silence_timeout``; ``when`` optionally checks the result."""

    type: Literal["event"]
    event: str
    when: str | None = None
    _expr: Expression | None = PrivateAttr(None)

    @field_validator("event")
    @classmethod
    def _event(cls, v: str) -> str:
        if not EVENT.match(v):
            raise ValueError(f"event {v!r} is not tool_result:<tool>, dtmf:<digit> or silence_timeout")
        return v

    @model_validator(mode="after")
    def _parse(self) -> EventEdge:
        self._expr = Expression(self.when) if self.when else None
        return self

    def holds(self, variables: dict[str, Any]) -> bool:
        """Whether the optional ``when`` is true (no ``when``: always)."""
        return self._expr is None or self._expr.truthy(variables)


class AlwaysEdge(_EdgeBase):
    type: Literal["always"]


Edge = Annotated[ExpressionEdge | IntentEdge | EventEdge | AlwaysEdge, Field(discriminator="type")]


class LlmOverride(_Strict):
    """A node's own LLM (e.g. a larger model for the booking node)."""

    provider: str = Field(min_length=1, max_length=64)
    options: dict[str, Any] = Field(default_factory=dict)


class NodeConfig(_Strict):
    """One node: its task prompt, its tools, its actions, its edges (tried in order, ``always`` last-resort)."""

    prompt: str = Field("", max_length=8000)
    tools: list[str] | None = None
    #: knowledge-base collections while this node is current (None: the document's; []: no retrieval here)
    knowledge: NodeCollections | None = None
    llm: LlmOverride | None = None
    on_enter: list[Action] = Field(default_factory=list)
    on_exit: list[Action] = Field(default_factory=list)
    edges: list[Edge] = Field(default_factory=list)
    terminal: bool = False


class IntentSettings(_Strict):
    """When the embedding classifier decides alone; below either bar the LLM is asked (measured in tests)."""

    threshold: float = Field(0.85, ge=0, le=1)
    margin: float = Field(0.012, ge=0, le=1)


class FlowConfig(_Strict):
    """The document's ``flow:``: where a call starts, its nodes, and the nodes reachable from anywhere."""

    start: str
    nodes: dict[str, NodeConfig] = Field(min_length=1)
    global_nodes: list[str] = Field(default_factory=list)
    intents: IntentSettings = Field(default_factory=IntentSettings)
    silence_timeout_secs: float = Field(
        8.0, ge=1, le=120, description="caller silence after the agent spoke that fires a silence_timeout edge"
    )

    @model_validator(mode="after")
    def _check(self) -> FlowConfig:
        for name in self.nodes:
            if not NODE_NAME.match(name):
                raise ValueError(f"node {name!r}: a name is a letter then letters, digits, '_' or '-'")
        if self.start not in self.nodes:
            raise ValueError(f"start: unknown node {self.start!r}")
        for name in self.global_nodes:
            _global_entry(self, name)
        for name, node in self.nodes.items():
            _check_node(self, name, node)
        _check_reachable(self)
        _check_always_cycles(self)
        return self

    def listens_to_silence(self) -> bool:
        """Whether any node has a ``silence_timeout`` edge (the turn taker then watches the caller's silence)."""
        return any(getattr(e, "event", None) == "silence_timeout" for n in self.nodes.values() for e in n.edges)

    def check_tools(self, tool_names: set[str]) -> None:
        """Raise ValueError naming the node whose ``tools`` names a tool the document does not declare."""
        for name, node in self.nodes.items():
            called = {a.call for a in (*node.on_enter, *node.on_exit) if a.call is not None}
            unknown = sorted((set(node.tools or ()) | called) - tool_names)
            if unknown:
                raise ValueError(f"node {name!r}: unknown tools {unknown} (the document's tools: {sorted(tool_names)})")

    def global_edges(self) -> list[tuple[str, IntentEdge]]:
        """(global node, intent edge) pairs: every intent edge of a global node, tried from any node."""
        return [(g, e) for g in self.global_nodes for e in self.nodes[g].edges if isinstance(e, IntentEdge)]

    def all_intents(self) -> dict[str, list[str]]:
        """Every intent name in the flow with its examples (one intent may appear on several edges)."""
        out: dict[str, list[str]] = {}
        for node in self.nodes.values():
            for edge in node.edges:
                if isinstance(edge, IntentEdge):
                    out.setdefault(edge.intent, [])
                    out[edge.intent] += [x for x in edge.examples if x not in out[edge.intent]]
        return out


def _global_entry(flow: FlowConfig, name: str) -> None:
    if name not in flow.nodes:
        raise ValueError(f"global_nodes: unknown node {name!r}")
    if not any(isinstance(e, IntentEdge) for e in flow.nodes[name].edges):
        raise ValueError(f"node {name!r}: a global node needs at least one intent edge (tried from every node)")


def _check_node(flow: FlowConfig, name: str, node: NodeConfig) -> None:
    for i, edge in enumerate(node.edges):
        if edge.to not in flow.nodes:
            raise ValueError(f"node {name!r}: edge {i} goes to unknown node {edge.to!r}")
    if not node.terminal and not any(isinstance(e, AlwaysEdge) for e in node.edges):
        what = "has no outgoing edge" if not node.edges else "has only conditional edges"
        raise ValueError(f"node {name!r} {what}: add an 'always' edge as the fallback or mark it terminal: true")
    seen: dict[str, str] = {}
    own = [(name, e) for e in node.edges if isinstance(e, IntentEdge)]
    for owner, edge in own + [ge for ge in flow.global_edges() if ge[0] != name]:
        if edge.intent in seen:
            raise ValueError(
                f"node {name!r}: intent {edge.intent!r} is reachable twice here "
                f"(from node {seen[edge.intent]!r} and node {owner!r})"
            )
        seen[edge.intent] = owner


def _check_reachable(flow: FlowConfig) -> None:
    roots = [flow.start] + [e.to for _g, e in flow.global_edges()] + list(flow.global_nodes)
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += [e.to for e in flow.nodes[name].edges]
    for name in flow.nodes:
        if name not in seen:
            raise ValueError(f"node {name!r} is unreachable: no edge leads to it from start or a global node")


def _check_always_cycles(flow: FlowConfig) -> None:
    """A cycle of nodes that each leave at once (first edge ``always``, no prompt or intent to wait on) never stops."""

    def passes(name: str) -> str | None:
        node = flow.nodes[name]
        if not node.edges or not isinstance(node.edges[0], AlwaysEdge):
            return None
        if node.prompt or any(isinstance(e, IntentEdge) for e in node.edges) or node.edges[0].to == name:
            return None
        return node.edges[0].to

    for start in flow.nodes:
        trail = [start]
        nxt = passes(start)
        while nxt is not None and nxt not in trail:
            trail.append(nxt)
            nxt = passes(nxt)
        if nxt == start:
            raise ValueError(f"node {start!r}: a cycle of always edges never stops ({' > '.join([*trail, start])})")


__all__ = [
    "Action", "AlwaysEdge", "ContextPolicy", "Edge", "EventEdge", "ExpressionEdge", "ExpressionError", "FlowConfig",
    "IntentEdge", "IntentSettings", "LlmOverride", "NodeConfig",
]  # fmt: skip
