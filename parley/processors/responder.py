"""The agent's turn: caller text in, the LLM's reply streamed out, context kept as heard; actions checked here."""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from typing import Any

import structlog

from parley.agent.context import Conversation
from parley.agent.document import DEFAULT_FALLBACK_LINE, ActionSettings
from parley.pipeline.frames import (
    DTMF,
    AgentAction,
    AgentSpoke,
    CallEvent,
    Direction,
    EndOfTurn,
    FailedStage,
    Frame,
    LLMDone,
    LLMText,
    ReplyDone,
    ReplyFailed,
    Stage,
    StageTime,
    StartFrame,
    Transcript,
    TurnResumed,
)
from parley.pipeline.processor import Processor
from parley.processors.flow_steps import FlowDriver, FlowStep
from parley.processors.knowledge_lookup import KnowledgeLookup
from parley.processors.tool_use import ToolUse
from parley.redact import redact_text
from parley.services.fallback.chain import drain_events
from parley.services.llm.base import LLM, Message, Tool, ToolCall
from parley.tools.runner import ToolOutcome, exchange_messages

log = structlog.get_logger(__name__)

GREETING_TURN = 0
BUILT_IN_ACTIONS = frozenset(("hang_up", "transfer", "send_dtmf"))
MAX_ACTIONS_PER_REPLY = 4  # a model that loops on tool calls must not flood the call record


class Responder(Processor):
    """Starts a reply on each transcript (speculatively, before end of turn) and greets the caller first.

    The context is only written when the playout reports what the caller heard
    (:class:`AgentSpoke`), so a cut-off reply is remembered as far as it was played.
    When the agent said nothing at all for a turn (the caller talked on), the
    caller's words are carried into the next turn's message instead of being lost.

    Actions: the LLM's tool calls are checked against the document's ``actions``; each
    becomes an :class:`AgentAction` pushed after the reply's :class:`LLMDone`, so it
    travels behind the reply's audio and the playout releases it once the reply was
    heard (a disallowed one carries ``refused`` and is only recorded). A keypad digit
    mapped in ``actions.dtmf`` acts at once, without the LLM: its action belongs to
    the latest caller turn (the turn taker has already cut off any reply the caller
    was hearing; with interruptions disabled the action waits for that reply). Other
    digits become keypad turns in the turn taker and arrive here as transcripts, like
    speech.

    A failed LLM call ends its turn at once (:meth:`_failed`): an error travels up to the call record and the
    fallback line goes down in place of the rest of the reply, so the turn closes instead of staying owed.
    """

    def __init__(
        self,
        llm: LLM,
        conversation: Conversation,
        actions: ActionSettings | None = None,
        fallback_line: str = DEFAULT_FALLBACK_LINE,
        tool_use: ToolUse | None = None,
        startup_events: list[dict[str, Any]] | None = None,
        flow: FlowDriver | None = None,
        knowledge: KnowledgeLookup | None = None,
    ) -> None:
        super().__init__()
        self.llm = llm
        self.knowledge = knowledge  # retrieval from the knowledge base, started with the reply (mode auto/both)
        #: the document's flow: routes each turn before its reply, gives the node's prompt and tools
        self.flow = flow
        self._confirmed: set[int] = set()  # turns the turn detector ended (no longer speculative)
        #: the agent's own tools (HTTP, Python, MCP) beside its built-in actions; None: actions only
        self.tool_use = tool_use
        self._startup_events = startup_events or []
        self._turn_tools: dict[int, list[Message]] = {}  # each open turn's tool exchanges, for its history
        #: what the caller hears when the LLM fails mid-reply ("": the reply just ends)
        self.fallback_line = fallback_line.strip()
        self.conversation = conversation
        self.actions = actions or ActionSettings()
        self._tools = self.actions.tools() + ([t.spec() for t in tool_use.runner.tools.values()] if tool_use else [])
        if self._tools and not llm.supports_tools:
            log.warning(
                "llm_cannot_act",
                provider=getattr(llm, "provider_name", type(llm).__name__),
                actions=[t.name for t in self._tools],
            )
        self._turn = GREETING_TURN  # the latest caller turn a reply was started for
        self._user_text: dict[int, str] = {}  # what each open turn's reply answers (carry included)
        self._closed: set[int] = set()  # turns the playout has reported on
        self._carry = ""  # caller words no reply has answered yet
        self._synthetic: dict[int, tuple[str, str]] = {}  # turn → (keypad digits, event) of a non-speech turn

    async def process(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, StartFrame):
            await self.push(frame, direction)
            for event in self._startup_events:  # tools that could not be opened for this call
                await self.push(CallEvent(turn_id=GREETING_TURN, event=event), Direction.UPSTREAM)
            await self._greet()
            return
        if isinstance(frame, Transcript):
            await self.push(frame, direction)
            await self._on_transcript(frame)
            return
        if isinstance(frame, DTMF):
            await self.push(frame, direction)
            await self._on_dtmf(frame)
            return
        if isinstance(frame, EndOfTurn):
            self._confirm(frame.turn_id)
        if isinstance(frame, TurnResumed) and self.flow is not None and frame.turn_id not in self._confirmed:
            self.flow.undo(frame.turn_id)  # the caller talked on: that turn's routing is void, finished or not
        if isinstance(frame, AgentSpoke) and direction is Direction.UPSTREAM:
            self._closed.add(frame.turn_id)
            user = self._user_text.pop(frame.turn_id, None)
            tools = self._turn_tools.pop(frame.turn_id, [])
            if user and (frame.heard_text or tools):
                self.conversation.add_turn(user, frame.heard_text, tools)
                self._carry = ""
            elif user:
                self._carry = user
        await self.push(frame, direction)

    async def _on_transcript(self, frame: Transcript) -> None:
        text = frame.text.strip()
        if frame.turn_id in self._closed:  # a transcript that arrives after its turn was talked over
            self._carry = _join(self._carry, text)
            return
        await self.cancel_spawned()
        if not text:
            self._user_text.pop(frame.turn_id, None)
            await self.push(ReplyDone(turn_id=frame.turn_id))
            return
        if frame.event and (self.flow is None or not self.flow.listens(frame.event)):
            await self.push(ReplyDone(turn_id=frame.turn_id))  # a silence nobody routes: the agent waits on
            return
        if frame.keypad or frame.event:
            self._synthetic[frame.turn_id] = (frame.keypad, frame.event)
        self._user_text[frame.turn_id] = user = _join(self._carry, text)
        self._turn = max(self._turn, frame.turn_id)
        if self.flow is not None:
            self.flow.speculate(user)  # intent embedding during the end-of-turn silence
        if self.knowledge is not None and not (frame.keypad or frame.event):  # words, not keys or a silence
            self.knowledge.start(frame.turn_id, user, self.knowledge.collections(self.flow), self.clock)
        self.spawn(self._reply(frame.turn_id, user), f"reply-{frame.turn_id}")

    async def _greet(self) -> None:
        step = self.flow.start() if self.flow is not None else FlowStep()
        greeting = " ".join(x for x in (self.conversation.greeting, *step.say) if x)
        if not greeting:
            await self.push(ReplyDone(turn_id=GREETING_TURN))
            return
        await self.push(LLMText(turn_id=GREETING_TURN, text=greeting))
        await self.push(LLMDone(turn_id=GREETING_TURN))
        for action in self._flow_actions(GREETING_TURN, step):
            await self.push(action)

    def _confirm(self, turn_id: int) -> None:
        self._confirmed.add(turn_id)
        if self.tool_use is not None:
            self.tool_use.confirm(turn_id)
        if self.flow is not None:
            self.flow.confirm(turn_id)

    def _flow_actions(self, turn_id: int, step: FlowStep) -> list[AgentAction]:
        """A flow's own actions: the document names them, so they are allowed as a keypad mapping is."""
        reason = "flow"
        return [AgentAction(turn_id=turn_id, action=a, target=t, reason=reason) for a, t in step.actions]

    async def _route(self, turn_id: int, text: str, pieces: list[str], actions: list[AgentAction]) -> bool:
        """The flow's decision for this turn, before the reply: its event, lines, actions and tool calls.

        True when the flow has answered the turn itself (a ``call`` action whose result moved it on and spoke).
        """
        if self.flow is None:
            return False
        keypad, event = self._synthetic.pop(turn_id, ("", ""))
        if event:
            step = await self.flow.on_event(turn_id, event)
        elif keypad:
            step = await self.flow.on_keypad(turn_id, keypad, text)
        else:
            step = await self.flow.on_turn(turn_id, text)
        await self._take_step(turn_id, step, pieces, actions)
        if (event or keypad) and step.event is not None and step.event.get("method") == "event" and step.say:
            return True  # the node the key or the silence led to said its piece: no reply is owed on top
        if not step.calls or self.tool_use is None:
            return False
        outcomes, spoke = await self._run_tools(turn_id, step.calls, pieces, actions, flow_call=True)
        self._turn_tools.setdefault(turn_id, []).extend(exchange_messages(outcomes))
        if not all(o.ok for o in outcomes):
            await self._say(turn_id, pieces, self._recovery_line())
            return True
        return spoke

    async def _take_step(self, turn_id: int, step: FlowStep, pieces: list[str], actions: list[AgentAction]) -> None:
        if step.event is not None:
            await self.push(CallEvent(turn_id=turn_id, event=step.event), Direction.UPSTREAM)
        for line in step.say:
            await self._say(turn_id, pieces, line)
        actions.extend(self._flow_actions(turn_id, step))

    async def on_interruption(self) -> None:
        await self.cancel_spawned()

    async def cleanup(self) -> None:
        if self.knowledge is not None:
            self.knowledge.close()

    async def _on_dtmf(self, frame: DTMF) -> None:
        keypad = self.actions.keypad(frame.digit)
        if keypad is None:
            return  # the turn taker collects it into a keypad turn
        action, target, reason = keypad
        log.info("keypad_action", digit=frame.digit, action=action, turn_id=self._turn)
        await self.push(AgentAction(turn_id=self._turn, action=action, target=target, reason=reason))

    def _action(self, turn_id: int, call: ToolCall) -> AgentAction:
        action, target, reason, refused = self.actions.resolve(call)
        if refused:
            log.warning("agent_action_refused", turn_id=turn_id, action=action, why=refused)
        return AgentAction(turn_id=turn_id, action=action, target=target, reason=reason, refused=refused)

    async def _reply(self, turn_id: int, text: str) -> None:
        pieces: list[str] = []
        actions: list[AgentAction] = []
        steps = 0
        try:
            answered = await self._route(turn_id, text, pieces, actions)
            messages = self.conversation.messages_for(text)
            if self.knowledge is not None and not answered:  # its facts, before the caller's words
                emit = lambda e: self.push(CallEvent(turn_id=turn_id, event=e), Direction.UPSTREAM)  # noqa: E731
                messages = await self.knowledge.augment(turn_id, messages, self.flow, self.clock, emit)
            while not answered:
                step_start = len(pieces)
                calls = await self._generate(turn_id, messages, pieces, actions)
                if not calls:
                    break
                if steps == self._max_tool_steps():
                    log.warning("tool_steps_exhausted", turn_id=turn_id, steps=steps)
                    await self._say(turn_id, pieces, self._recovery_line())
                    break
                steps += 1
                outcomes, flow_spoke = await self._run_tools(turn_id, calls, pieces, actions)
                exchange = exchange_messages(outcomes, "".join(pieces[step_start:]).strip())
                messages = [*messages, *exchange]
                self._turn_tools.setdefault(turn_id, []).extend(exchange)
                if not all(o.ok for o in outcomes):  # a bounded, spoken recovery; the history tells the model
                    await self._say(turn_id, pieces, self._recovery_line())
                    break
                if flow_spoke:  # the flow's next node said what the result means: the model need not repeat it
                    break
        except asyncio.CancelledError:
            if self.flow is not None and turn_id not in self._confirmed:
                self.flow.undo(turn_id)  # a discarded speculative reply does not move the call
            # talked over mid-generation: the record keeps what was generated, beside what the caller heard
            cut = "".join(pieces).strip()
            await self.push(StageTime(turn_id=turn_id, stage=Stage.LLM_CUT, t=self.clock.now(), text=cut))
            raise
        except Exception as exc:
            await self._failed(turn_id, "".join(pieces).strip(), exc)
            return
        reply = "".join(pieces).strip()
        await self.push(StageTime(turn_id=turn_id, stage=Stage.LLM_DONE, t=self.clock.now(), text=reply))
        await self.push(LLMDone(turn_id=turn_id))
        for action in actions:  # behind the reply: carried out once the caller has heard it
            await self.push(action)

    async def _generate(
        self, turn_id: int, messages: list[Message], pieces: list[str], actions: list[AgentAction]
    ) -> list[ToolCall]:
        """One LLM pass: its text goes out as it comes; built-in actions are kept for after the reply; the
        agent's tool calls are returned to be run."""
        offered = self.flow.tools(self._tools, BUILT_IN_ACTIONS) if self.flow is not None else self._tools
        llm = self.flow.llm(self.llm) if self.flow is not None else self.llm
        try:
            return await self._stream(turn_id, llm, messages, offered, pieces, actions)
        finally:
            for event in drain_events(llm):  # a fallback chain's switches and errors, for the turn's record
                await self.push(CallEvent(turn_id=turn_id, event=event), Direction.UPSTREAM)

    async def _stream(
        self,
        turn_id: int,
        llm: LLM,
        messages: list[Message],
        offered: list[Tool],
        pieces: list[str],
        actions: list[AgentAction],
    ) -> list[ToolCall]:
        calls: list[ToolCall] = []
        first = True
        tools = self.tool_use.runner.tools if self.tool_use is not None else {}
        async with aclosing(llm.stream(messages, offered)) as stream:
            async for piece in stream:
                if isinstance(piece, ToolCall):
                    if piece.name in tools or (tools and piece.name not in BUILT_IN_ACTIONS):
                        calls.append(piece)  # an unknown name is the runner's "unknown-tool", spoken about
                    elif len(actions) < MAX_ACTIONS_PER_REPLY:
                        actions.append(self._action(turn_id, piece))
                    continue
                if not pieces:
                    await self.push(StageTime(turn_id=turn_id, stage=Stage.LLM_FIRST_TOKEN, t=self.clock.now()))
                elif first and not pieces[-1][-1:].isspace() and not piece[:1].isspace():
                    piece = f" {piece}"  # a pass after a tool step goes on after the words already said
                first = False
                pieces.append(piece)
                await self.push(LLMText(turn_id=turn_id, text=piece))
        return calls[:MAX_ACTIONS_PER_REPLY]

    async def _run_tools(
        self,
        turn_id: int,
        calls: list[ToolCall],
        pieces: list[str],
        actions: list[AgentAction],
        flow_call: bool = False,
    ) -> tuple[list[ToolOutcome], bool]:
        """One tool step; each result that came back may move the flow (``tool_result:<tool>`` edges). Returns the
        outcomes and whether the flow said something of its own about them."""
        assert self.tool_use is not None

        async def say(line: str) -> None:
            await self._say(turn_id, pieces, line)

        async def record(outcome: ToolOutcome) -> None:
            await self.push(
                CallEvent(turn_id=turn_id, event=outcome.event(turn_id, self.clock.now())), Direction.UPSTREAM
            )

        offered = None  # the flow's own calls are the document's choice; the model's are held to the node's tools
        if self.flow is not None and not flow_call:
            offered = {t.name for t in self.flow.tools(self._tools, BUILT_IN_ACTIONS)}
        outcomes = await self.tool_use.run_step(turn_id, calls, say, record, offered)
        spoke = False
        if self.flow is not None:
            for outcome in outcomes:
                if outcome.ok:
                    step = await self.flow.on_event(turn_id, f"tool_result:{outcome.call.name}", outcome.content)
                    await self._take_step(turn_id, step, pieces, actions)
                    spoke = spoke or bool(step.say)
        return outcomes, spoke

    async def _say(self, turn_id: int, pieces: list[str], line: str) -> None:
        """A line of Parley's own inside the reply (a filler, the recovery line), spoken like the model's text."""
        if not line:
            return
        text = f" {line}" if pieces else line
        if not pieces:
            await self.push(StageTime(turn_id=turn_id, stage=Stage.LLM_FIRST_TOKEN, t=self.clock.now()))
        pieces.append(text)
        await self.push(LLMText(turn_id=turn_id, text=text))

    def _max_tool_steps(self) -> int:
        return self.tool_use.settings.max_tool_steps if self.tool_use is not None else 0

    def _recovery_line(self) -> str:
        return self.tool_use.settings.recovery_line if self.tool_use is not None else ""

    async def _failed(self, turn_id: int, generated: str, exc: Exception) -> None:
        """The LLM raised: the turn ends now, visibly. The caller hears the fallback line after whatever was
        already said, the call record gets an error event, and the turn closes like any reply (no actions:
        the model's wish to act is not trusted from a reply that broke off)."""
        error = type(exc).__name__
        detail = redact_text(str(exc)[:500])
        log.error("reply_failed", stage=FailedStage.LLM, turn_id=turn_id, error=error, detail=detail)
        now = self.clock.now()
        await self.push(StageTime(turn_id=turn_id, stage=Stage.LLM_FAILED, t=now, text=generated))
        failed = ReplyFailed(
            message=f"llm: {error}",
            turn_id=turn_id,
            stage=FailedStage.LLM,
            error=error,
            fallback=self.fallback_line,
            t=now,
        )
        await self.push(failed, Direction.UPSTREAM)
        if self.fallback_line:  # spoken by the TTS; if that fails too, the synthesizer reports it
            line = f" {self.fallback_line}" if generated else self.fallback_line  # after the words already said
            await self.push(LLMText(turn_id=turn_id, text=line))
        await self.push(LLMDone(turn_id=turn_id))


def _join(a: str, b: str) -> str:
    return f"{a} {b}".strip()
