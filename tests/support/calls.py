"""Read a call record as the conversation went: ``read_call(call).expect.next_turn().caller_said("parking")``.

Modelled on LiveKit Agents' ``RunResult.expect``. A record is the API's call detail (``GET /v1/calls/{id}``: turns
with ``turn``, ``caller_text``, ``agent_text``…, events with ``kind`` and ``data``), a simulated call's
``CallReport`` or its ``as_dict()``. Turn 0 is the greeting; "turns" are the caller's, in order. Texts match
case-insensitively, as parts of what was said; a failed expectation raises AssertionError with the whole call
written out, so the message shows what the call held instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

Texts = str | tuple[str, ...]


@dataclass(frozen=True)
class Turn:
    number: int
    caller_text: str = ""
    agent_text: str = ""
    interrupted: bool = False
    times: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        cut = " (interrupted)" if self.interrupted else ""
        return f"turn {self.number}: caller {self.caller_text!r} / agent {self.agent_text!r}{cut}"


@dataclass(frozen=True)
class Event:
    kind: str
    data: dict[str, Any]
    t: float | None = None

    def __str__(self) -> str:
        return f"{self.kind} {self.data}"


def _get(obj: Any, name: str, default: Any = None) -> Any:
    return obj.get(name, default) if isinstance(obj, Mapping) else getattr(obj, name, default)


def _turn(raw: Any) -> Turn:
    return Turn(int(_get(raw, "turn", 0)), _get(raw, "caller_text") or "", _get(raw, "agent_text") or "",
                bool(_get(raw, "interrupted", False)), dict(_get(raw, "times") or {}))  # fmt: skip


def _event(raw: Mapping[str, Any]) -> Event:
    if "kind" in raw:  # the API's {t, kind, data}
        return Event(str(raw["kind"]), dict(raw.get("data") or {}), raw.get("t"))
    data = {k: v for k, v in raw.items() if k != "type"}  # flattened {type, ...}
    return Event(str(raw["type"]), data, data.get("t"))


def _matches(text: str, texts: Texts) -> bool:
    wanted = (texts,) if isinstance(texts, str) else texts
    return any(w.lower() in text.lower() for w in wanted)


def _say(texts: Texts) -> str:
    return repr(texts) if isinstance(texts, str) else " or ".join(map(repr, texts))


class CallRecord:
    """One call's turns and events; ``expect`` reads them in order."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        turns = _get(raw, "turns") or []
        every = [_turn(t) for t in (turns.values() if isinstance(turns, Mapping) else turns)]
        greeting = _get(raw, "greeting")
        self.greeting = _turn(greeting) if greeting is not None else next((t for t in every if t.number == 0), None)
        self.turns = [t for t in every if t.number > 0]
        self.events = [_event(e) for e in _get(raw, "events") or []]

    @cached_property
    def expect(self) -> Expect:
        return Expect(self)

    def transcript(self) -> str:
        """The call written out, for failure messages."""
        lines = [f"greeting: agent {self.greeting.agent_text!r}" if self.greeting else "greeting: none"]
        lines += [str(t) for t in self.turns] or ["(no caller turns)"]
        lines += [f"event {e}" for e in self.events]
        return "\n".join(lines)


def read_call(raw: Any) -> CallRecord:
    return CallRecord(raw)


class Expect:
    """Cursors over the turns and the events: ``next_turn`` and ``next_event`` move on; ``contains_*`` search."""

    def __init__(self, call: CallRecord) -> None:
        self.call = call
        self._turn = 0
        self._event = 0

    def fail(self, message: str) -> AssertionError:
        return AssertionError(f"{message}\n--- the call ---\n{self.call.transcript()}")

    def greeting(self) -> TurnCheck:
        if self.call.greeting is None:
            raise self.fail("expected a greeting; the call had none")
        return TurnCheck(self, self.call.greeting)

    def next_turn(self) -> TurnCheck:
        if self._turn >= len(self.call.turns):
            raise self.fail(f"expected caller turn {self._turn + 1}; the call had {len(self.call.turns)}")
        self._turn += 1
        return TurnCheck(self, self.call.turns[self._turn - 1])

    def no_more_turns(self) -> None:
        if self._turn < len(self.call.turns):
            raise self.fail(f"expected no caller turn after {self._turn}; the call had {len(self.call.turns)}")

    def contains_turn(self, caller: Texts | None = None, agent: Texts | None = None) -> TurnCheck:
        """Some caller turn where the caller said ``caller`` and the agent said ``agent`` (either may be left out)."""
        for turn in self.call.turns:
            if (caller is None or _matches(turn.caller_text, caller)) and (
                agent is None or _matches(turn.agent_text, agent)
            ):
                return TurnCheck(self, turn)
        said = [f"the caller said {_say(caller)}"] if caller is not None else []
        said += [f"the agent said {_say(agent)}"] if agent is not None else []
        raise self.fail(f"expected a turn where {' and '.join(said) or 'anything happened'}; there was none")

    def next_event(self, kind: str) -> EventCheck:
        """The next ``kind`` event after the last one read."""
        for at in range(self._event, len(self.call.events)):
            if self.call.events[at].kind == kind:
                self._event = at + 1
                return EventCheck(self, self.call.events[at])
        raise self.fail(f"expected another {kind!r} event (after event {self._event}); there was none")

    def contains_event(self, kind: str, **data: Any) -> EventCheck:
        """Some ``kind`` event whose data holds ``data``."""
        for event in self.call.events:
            if event.kind == kind and all(event.data.get(k) == v for k, v in data.items()):
                return EventCheck(self, event)
        raise self.fail(f"expected a {kind!r} event with {data}; there was none")

    def only_event(self, kind: str) -> EventCheck:
        """The one ``kind`` event of the call (exactly one)."""
        found = [e for e in self.call.events if e.kind == kind]
        if len(found) != 1:
            raise self.fail(f"expected exactly one {kind!r} event; the call had {len(found)}")
        return EventCheck(self, found[0])


@dataclass
class TurnCheck:
    expect: Expect
    turn: Turn

    def caller_said(self, *texts: str) -> TurnCheck:
        """The caller's words hold one of ``texts`` (none given: the caller said something)."""
        if not self.turn.caller_text or (texts and not _matches(self.turn.caller_text, texts)):
            wanted = f"say {_say(texts)}" if texts else "say something"
            raise self.expect.fail(f"turn {self.turn.number}: expected the caller to {wanted}")
        return self

    def agent_replied(self, *texts: str) -> TurnCheck:
        """The agent said something the caller heard; with ``texts``, something that holds one of them."""
        if not self.turn.agent_text or (texts and not _matches(self.turn.agent_text, texts)):
            wanted = f"reply {_say(texts)}" if texts else "reply"
            raise self.expect.fail(f"turn {self.turn.number}: expected the agent to {wanted}")
        return self

    def was_interrupted(self, interrupted: bool = True) -> TurnCheck:
        if self.turn.interrupted is not interrupted:
            raise self.expect.fail(f"turn {self.turn.number}: expected interrupted={interrupted}")
        return self


@dataclass
class EventCheck:
    expect: Expect
    event: Event

    def has(self, **data: Any) -> EventCheck:
        """The event's data holds each ``key=value``."""
        wrong = {k: self.event.data.get(k) for k, v in data.items() if self.event.data.get(k) != v}
        if wrong:
            raise self.expect.fail(f"{self.event.kind!r} event: expected {data}, got {wrong}")
        return self
