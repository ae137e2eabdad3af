"""The agent's turn: caller text in, the LLM's reply streamed out, context kept as heard; actions checked here."""

from __future__ import annotations

import asyncio
from contextlib import aclosing

import structlog

from parley.agent.context import Conversation
from parley.agent.document import DEFAULT_FALLBACK_LINE, ActionSettings
from parley.pipeline.frames import (
    DTMF,
    AgentAction,
    AgentSpoke,
    Direction,
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
)
from parley.pipeline.processor import Processor
from parley.redact import redact_text
from parley.services.llm.base import LLM, ToolCall

log = structlog.get_logger(__name__)

GREETING_TURN = 0
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
    ) -> None:
        super().__init__()
        self.llm = llm
        #: what the caller hears when the LLM fails mid-reply ("": the reply just ends)
        self.fallback_line = fallback_line.strip()
        self.conversation = conversation
        self.actions = actions or ActionSettings()
        self._tools = self.actions.tools()
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

    async def process(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, StartFrame):
            await self.push(frame, direction)
            if self.conversation.greeting:
                await self.push(LLMText(turn_id=GREETING_TURN, text=self.conversation.greeting))
                await self.push(LLMDone(turn_id=GREETING_TURN))
            else:
                await self.push(ReplyDone(turn_id=GREETING_TURN))
            return
        if isinstance(frame, Transcript):
            await self.push(frame, direction)
            await self._on_transcript(frame)
            return
        if isinstance(frame, DTMF):
            await self.push(frame, direction)
            await self._on_dtmf(frame)
            return
        if isinstance(frame, AgentSpoke) and direction is Direction.UPSTREAM:
            self._closed.add(frame.turn_id)
            user = self._user_text.pop(frame.turn_id, None)
            if user and frame.heard_text:
                self.conversation.add_turn(user, frame.heard_text)
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
        self._user_text[frame.turn_id] = user = _join(self._carry, text)
        self._turn = max(self._turn, frame.turn_id)
        self.spawn(self._reply(frame.turn_id, user), f"reply-{frame.turn_id}")

    async def on_interruption(self) -> None:
        await self.cancel_spawned()

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
        messages = self.conversation.messages_for(text)
        pieces: list[str] = []
        actions: list[AgentAction] = []
        try:
            async with aclosing(self.llm.stream(messages, self._tools)) as stream:
                async for piece in stream:
                    if isinstance(piece, ToolCall):
                        if len(actions) < MAX_ACTIONS_PER_REPLY:
                            actions.append(self._action(turn_id, piece))
                        continue
                    if not pieces:
                        await self.push(StageTime(turn_id=turn_id, stage=Stage.LLM_FIRST_TOKEN, t=self.clock.now()))
                    pieces.append(piece)
                    await self.push(LLMText(turn_id=turn_id, text=piece))
        except asyncio.CancelledError:
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
