"""What a test call produced, turn by turn, and the checks on it: a fluent Python API and the YAML expectations.

``result.expect.next_turn().called_tool("book", day="Monday").replied(contains="Monday")`` raises an
:class:`AssertionError` that says what was expected and what the agent did; the YAML runner uses the same checks
and records each failure with its kind (``reply``, ``tool``, ...), so pass rates can be broken down by kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import re2

from parley.testing.scenarios import TextExpect, ToolExpect, TurnExpect


@dataclass
class TurnResult:
    """One caller turn as the agent handled it."""

    index: int  # 1-based caller turn
    heard: str = ""  # the caller's words as the agent got them (text mode: as written; audio: as transcribed)
    reply: str = ""  # what the caller heard of the agent's reply
    actions: list[dict[str, Any]] = field(default_factory=list)  # {"action", "target", "reason"}; refused left out
    events: list[dict[str, Any]] = field(default_factory=list)  # tool calls, routing, as on the call record
    voice_to_voice: float | None = None  # seconds (audio mode)
    interrupted: bool = False

    def tool_calls(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == "tool"]

    def nodes(self) -> list[str]:
        return [str(e.get("to")) for e in self.events if e.get("type") == "route"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "turn": self.index,
            "heard": self.heard,
            "reply": self.reply,
            "actions": self.actions,
            "events": self.events,
            "voice_to_voice": None if self.voice_to_voice is None else round(self.voice_to_voice, 3),
            "interrupted": self.interrupted,
        }


@dataclass
class CallResult:
    """A whole test call: the greeting and each caller turn."""

    greeting: str = ""
    turns: list[TurnResult] = field(default_factory=list)
    end_reason: str = ""
    errors: list[str] = field(default_factory=list)

    @property
    def expect(self) -> Expectations:
        return Expectations(self)


class Expectations:
    """Walks a call's turns in order: each :meth:`next_turn` checks the turn after the last one checked."""

    def __init__(self, result: CallResult) -> None:
        self.result = result
        self._next = 0

    def next_turn(self) -> TurnAssert:
        if self._next >= len(self.result.turns):
            raise AssertionError(f"expected turn {self._next + 1}, but the call had {len(self.result.turns)} turn(s)")
        self._next += 1
        return TurnAssert(self.result.turns[self._next - 1])

    def turn(self, n: int) -> TurnAssert:
        """Caller turn ``n`` (1-based)."""
        if not 1 <= n <= len(self.result.turns):
            raise AssertionError(f"no turn {n}: the call had {len(self.result.turns)} turn(s)")
        return TurnAssert(self.result.turns[n - 1])


def _text_problem(what: str, text: str, exp: TextExpect) -> str | None:
    low = text.lower()
    missing = [w for w in exp.contains if w.lower() not in low]
    if missing:
        return f"{what} should contain {missing!r}, got {text!r}"
    if exp.matches is not None and not re2.search(f"(?i){exp.matches}", text):
        return f"{what} should match /{exp.matches}/, got {text!r}"
    found = [w for w in exp.not_contains if w.lower() in low]
    if found:
        return f"{what} should not contain {found!r}, got {text!r}"
    return None


def _subset(want: Any, got: Any) -> bool:
    """``want`` is found in ``got``: dicts key by key (recursively), strings any case, anything else equal."""
    if isinstance(want, dict):
        return isinstance(got, dict) and all(k in got and _subset(v, got[k]) for k, v in want.items())
    if isinstance(want, str) and isinstance(got, str):
        return want.strip().lower() == got.strip().lower()
    return bool(want == got)


class TurnAssert:
    """Checks on one turn; each returns ``self`` so checks chain, and raises :class:`AssertionError` on failure."""

    def __init__(self, turn: TurnResult) -> None:
        self.turn = turn

    def _fail(self, message: str) -> AssertionError:
        return AssertionError(f"turn {self.turn.index}: {message}")

    def heard(self, contains: str | list[str] | None = None, matches: str | None = None) -> TurnAssert:
        exp = TextExpect(contains=_listed(contains), matches=matches)
        return self._text("heard", self.turn.heard, exp)

    def replied(
        self,
        contains: str | list[str] | None = None,
        matches: str | None = None,
        not_contains: str | list[str] | None = None,
    ) -> TurnAssert:
        exp = TextExpect(contains=_listed(contains), matches=matches, not_contains=_listed(not_contains))
        return self._text("reply", self.turn.reply, exp)

    def _text(self, what: str, text: str, exp: TextExpect) -> TurnAssert:
        problem = _text_problem(what, text, exp)
        if problem:
            raise self._fail(problem)
        return self

    def called_tool(self, name: str, **arguments: Any) -> TurnAssert:
        calls = self.turn.tool_calls()
        named = [c for c in calls if c.get("tool") == name]
        if not named:
            raise self._fail(f"expected a call to tool {name!r}, got {[c.get('tool') for c in calls]!r}")
        if not any(_subset(arguments, c.get("arguments") or {}) for c in named):
            got = [c.get("arguments") for c in named]
            raise self._fail(f"tool {name!r} was called with {got!r}, expected at least {arguments!r}")
        return self

    def routed_to(self, node: str) -> TurnAssert:
        if node not in self.turn.nodes():
            raise self._fail(f"expected the flow to move to node {node!r}, it moved to {self.turn.nodes()!r}")
        return self

    def acted(self, action: str, target: str | None = None) -> TurnAssert:
        done = [a for a in self.turn.actions if a.get("action") == action]
        if not done or (target is not None and not any(a.get("target") == target for a in done)):
            got = [(a.get("action"), a.get("target")) for a in self.turn.actions]
            raise self._fail(f"expected action {action!r}{f' to {target!r}' if target else ''}, got {got!r}")
        return self

    def sent_dtmf(self, digits: str) -> TurnAssert:
        return self.acted("send_dtmf", digits)

    def silent_for(self, ms: float) -> TurnAssert:
        """The agent said nothing, or started speaking only after ``ms`` from the end of the caller's speech."""
        v2v = self.turn.voice_to_voice
        if self.turn.reply and (v2v is None or v2v * 1000 < ms):
            when = "at once (text mode)" if v2v is None else f"after {v2v * 1000:.0f} ms"
            raise self._fail(f"expected {ms:.0f} ms of silence, the agent spoke {when}: {self.turn.reply!r}")
        return self

    def barged_in(self, expected: bool = True) -> TurnAssert:
        if self.turn.interrupted != expected:
            raise self._fail(f"expected the reply {'to be' if expected else 'not to be'} talked over")
        return self


@dataclass
class Failure:
    """One unmet expectation (``turn`` 0: the scenario as a whole)."""

    kind: str
    message: str
    turn: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "turn": self.turn, "message": self.message}


def check_turn(turn: TurnResult, exp: TurnExpect) -> list[Failure]:
    """Every expectation of ``exp`` on ``turn``; one :class:`Failure` for each that is not met."""
    a = TurnAssert(turn)
    checks: list[tuple[str, Any]] = []
    if exp.heard is not None:
        checks.append(("heard", lambda h=exp.heard: a._text("heard", turn.heard, h)))
    if exp.reply is not None:
        checks.append(("reply", lambda r=exp.reply: a._text("reply", turn.reply, r)))
    if exp.tool is not None:
        checks.append(("tool", lambda t=exp.tool: _tool(a, t)))
    if exp.node is not None:
        checks.append(("node", lambda: a.routed_to(exp.node or "")))
    if exp.action is not None:
        checks.append(("action", lambda: a.acted(exp.action or "")))
    if exp.dtmf is not None:
        checks.append(("dtmf", lambda: a.sent_dtmf(exp.dtmf or "")))
    if exp.silence_ms is not None:
        checks.append(("silence", lambda: a.silent_for(exp.silence_ms or 0.0)))
    if exp.barge_in is not None:
        checks.append(("barge_in", lambda: a.barged_in(bool(exp.barge_in))))
    failures = []
    for kind, check in checks:
        try:
            check()
        except AssertionError as exc:
            failures.append(Failure(kind, str(exc), turn.index))
    return failures


def _listed(v: str | list[str] | None) -> list[str]:
    return [] if v is None else [v] if isinstance(v, str) else list(v)


def _tool(a: TurnAssert, t: ToolExpect) -> None:
    a.called_tool(t.name, **t.arguments)
