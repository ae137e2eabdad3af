"""A call in text: caller lines go straight to the agent's real mind (its responder), replies come back as text.

No audio and no models but the LLM: each line enters as a final :class:`Transcript` with its end of turn, and a
text playout stands in for TTS and the speaker, reporting the whole reply as heard (:class:`AgentSpoke`), so the
responder commits its context exactly as after a played reply. Tool calls and routing arrive as call events,
actions as :class:`AgentAction` frames; both are kept per turn.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from parley.agent.context import Conversation
from parley.agent.document import AgentDocument
from parley.calls.knowledge import inline_document
from parley.calls.session import Services, _node_llms, _stage, build_responder
from parley.calls.turnlog import TurnLog
from parley.flows import classifier_for
from parley.pipeline.clock import FastClock
from parley.pipeline.frames import (
    AgentAction,
    AgentSpoke,
    Direction,
    EndOfTurn,
    EndReason,
    Frame,
    LLMDone,
    LLMText,
    ReplyDone,
    Transcript,
)
from parley.pipeline.pipeline import Pipeline, PipelineRunner
from parley.pipeline.processor import Processor
from parley.processors.turns import keypad_text, silence_text
from parley.services.llm.base import LLM
from parley.services.llm.base import registry as llm_registry
from parley.services.secrets import EnvSecrets, SecretSource
from parley.testing.expect import CallResult, TurnResult
from parley.tools.toolbox import Toolbox

ENDING = ("hang_up", "transfer")


@dataclass(frozen=True)
class Keys:
    """A caller turn that presses keypad keys."""

    digits: str


@dataclass(frozen=True)
class Silence:
    """A caller turn that says nothing: the flow's ``silence_timeout`` edge fires (as after ``secs`` on a call)."""

    secs: float = 8.0


SILENCE = Silence()
CallerInput = str | Keys | Silence
REPLY_TIMEOUT_S = 120.0  # a local model on a small CPU answers in seconds; this only stops a hung test


@dataclass
class MindOptions:
    """What a test sets on the agent's mind for one call: seeded call variables and mocked tool results."""

    variables: dict[str, Any] = field(default_factory=dict)
    tool_mocks: dict[str, Any] = field(default_factory=dict)


class TextPlayout(Processor):
    """The end of a text call: gathers each reply, reports it heard in full, and keeps the actions behind it."""

    def __init__(self) -> None:
        super().__init__(name="text-playout")
        self.replies: dict[int, str] = {}
        self.actions: dict[int, list[dict[str, Any]]] = {}
        self._pieces: dict[int, list[str]] = {}
        self._done: dict[int, asyncio.Event] = {}

    def done(self, turn_id: int) -> asyncio.Event:
        return self._done.setdefault(turn_id, asyncio.Event())

    async def process(self, frame: Frame, direction: Direction) -> None:
        if direction is Direction.UPSTREAM:
            await self.push(frame, direction)
        elif isinstance(frame, LLMText):
            self._pieces.setdefault(frame.turn_id, []).append(frame.text)
        elif isinstance(frame, LLMDone | ReplyDone):
            text = "".join(self._pieces.pop(frame.turn_id, [])).strip()
            self.replies[frame.turn_id] = text
            await self.push(AgentSpoke(turn_id=frame.turn_id, heard_text=text, t=self.clock.now()), Direction.UPSTREAM)
            self.done(frame.turn_id).set()
        elif isinstance(frame, AgentAction):
            if not frame.refused:
                entry = {"action": frame.action, "target": frame.target, "reason": frame.reason}
                self.actions.setdefault(frame.turn_id, []).append(entry)
        else:
            await self.push(frame, direction)


async def text_services(agent: AgentDocument, secrets: SecretSource | None = None) -> Services:
    """Services with only the LLM made: a text call needs no VAD, STT or TTS (their fields stay unset)."""
    source = secrets or EnvSecrets.from_settings()
    llm = cast(LLM, await _stage(agent.llm, "llm", llm_registry, source))  # a fallback chain where one is listed
    node_llms = await _node_llms(agent, source)
    await asyncio.gather(llm.prepare(), *(m.prepare() for m in node_llms.values()))
    intents = classifier_for(agent.flow) if agent.flow is not None else None
    if intents is not None:
        await intents.prepare()
    return Services(
        vad=cast(Any, None), stt=cast(Any, None), llm=llm, tts=cast(Any, None), intents=intents, node_llms=node_llms
    )


async def close_text_services(services: Services) -> None:
    """Close what :func:`text_services` made (only LLMs)."""
    await asyncio.gather(services.llm.aclose(), *(m.aclose() for m in services.node_llms.values()))


def _responder(agent: AgentDocument, services: Services, conversation: Conversation, mind: MindOptions) -> Processor:
    """The real responder, with the test's call variables."""
    return build_responder(agent, services, conversation, dict(mind.variables))


async def with_tools(agent: AgentDocument, services: Services, mind: MindOptions) -> tuple[Services, Toolbox]:
    """The shared models with a toolbox of this call's own, the test's mocks in place of the named tools (a mock
    of a tool the document lacks joins as a tool of its own). The toolbox must be closed."""
    box = await Toolbox.open(agent.tools, EnvSecrets.from_settings(), mind.tool_mocks)
    return dataclasses.replace(services, tools=box), box


class TextCall:
    """One text call, turn by turn: :meth:`say` a line, get the agent's turn back (a simulated caller needs that)."""

    def __init__(self, agent: AgentDocument, services: Services, mind: MindOptions | None = None) -> None:
        agent = inline_document(agent, services.knowledge)  # as a live call's pipeline does
        conversation = Conversation(agent.system_prompt, agent.max_history_turns, agent.greeting)
        self.playout = TextPlayout()
        self.log = TurnLog()
        responder = _responder(agent, services, conversation, mind or MindOptions())
        self.pipeline = Pipeline([responder, self.playout], observers=[self.log])
        self.clock = FastClock()
        self.runner = PipelineRunner(self.pipeline, self.clock)
        self.result = CallResult()
        self.ended = False  # the agent hung up or transferred
        self._running: asyncio.Task[Any] | None = None

    async def start(self) -> str:
        """Start the call; the greeting."""
        self._running = asyncio.create_task(self.runner.run(), name="text-call")
        await self.runner.wait_started()
        await asyncio.wait_for(self.playout.done(0).wait(), REPLY_TIMEOUT_S)
        self.result.greeting = self.playout.replies.get(0, "")
        return self.result.greeting

    async def say(self, line: CallerInput) -> TurnResult:
        """One caller turn, answered: the reply, its actions and events. ``line`` is words, :class:`Keys` pressed
        or :data:`SILENCE` (the turn the turn taker makes when the caller says nothing)."""
        turn_id = len(self.result.turns) + 1
        now = self.clock.now()
        if isinstance(line, Keys):
            frame = Transcript(turn_id=turn_id, text=keypad_text(line.digits), t=now, keypad=line.digits)
        elif isinstance(line, Silence):
            frame = Transcript(turn_id=turn_id, text=silence_text(line.secs), t=now, event="silence_timeout")
        else:
            frame = Transcript(turn_id=turn_id, text=line, t=now)
        line = frame.text
        await self.pipeline.queue(frame)
        await self.pipeline.queue(EndOfTurn(turn_id=turn_id, t=now))
        await asyncio.wait_for(self.playout.done(turn_id).wait(), REPLY_TIMEOUT_S)
        await self.clock.sleep_until(self.clock.now() + 0.05)  # the reply's actions and events (no wait when idle)
        record = self.log.turns.get(turn_id)
        turn = TurnResult(
            index=turn_id,
            heard=line,
            reply=self.playout.replies.get(turn_id, ""),
            actions=self.playout.actions.get(turn_id, []),
            events=list(record.events) if record else [],
        )
        self.result.turns.append(turn)
        self.ended = any(a["action"] in ENDING for a in turn.actions)
        return turn

    async def close(self) -> CallResult:
        """End the call (gracefully, then by force) and return it."""
        if self._running is None:
            return self.result
        try:
            if not self._running.done():
                await self.runner.end(EndReason.AGENT_HANGUP if self.ended else EndReason.INPUT_ENDED)
                end = await asyncio.wait_for(asyncio.shield(self._running), REPLY_TIMEOUT_S)
                self.result.end_reason = str(end.reason)
        finally:
            self.runner.cancel()
            await asyncio.gather(self._running, return_exceptions=True)
        self.result.errors = [e.message for e in self.pipeline.errors]
        return self.result


async def run_text_call(
    agent: AgentDocument, lines: Sequence[CallerInput], services: Services, mind: MindOptions | None = None
) -> CallResult:
    """Say ``lines`` to the agent one turn at a time, each after the previous reply, until it ends the call."""
    mind = mind or MindOptions()
    own, box = await with_tools(agent, services, mind)
    call = TextCall(agent, own, mind)
    try:
        await call.start()
        for line in lines:
            await call.say(line)
            if call.ended:
                break  # the agent hung up or transferred: the caller has no one left to talk to
    finally:
        result = await call.close()
        if box is not None:
            await box.aclose()
    return result
