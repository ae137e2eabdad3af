"""The agent's turn: caller text in, the LLM's reply streamed out, context kept as heard."""

from __future__ import annotations

from contextlib import aclosing

import structlog

from parley.agent.context import Conversation
from parley.pipeline.frames import (
    AgentSpoke,
    Direction,
    Frame,
    LLMDone,
    LLMText,
    ReplyDone,
    StageTime,
    StartFrame,
    Transcript,
)
from parley.pipeline.processor import Processor
from parley.services.llm.base import LLM

log = structlog.get_logger(__name__)

GREETING_TURN = 0


class Responder(Processor):
    """Starts a reply on each transcript (speculatively, before end of turn) and greets the caller first.

    The context is only written when the playout reports what the caller heard
    (:class:`AgentSpoke`), so a cut-off reply is remembered as far as it was played.
    When the agent said nothing at all for a turn (the caller talked on), the
    caller's words are carried into the next turn's message instead of being lost.
    """

    def __init__(self, llm: LLM, conversation: Conversation) -> None:
        super().__init__()
        self.llm = llm
        self.conversation = conversation
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
        self.spawn(self._reply(frame.turn_id, user), f"reply-{frame.turn_id}")

    async def on_interruption(self) -> None:
        await self.cancel_spawned()

    async def _reply(self, turn_id: int, text: str) -> None:
        messages = self.conversation.messages_for(text)
        pieces: list[str] = []
        async with aclosing(self.llm.stream(messages)) as stream:
            async for piece in stream:
                if not pieces:
                    await self.push(StageTime(turn_id=turn_id, stage="llm_first_token", t=self.clock.now()))
                pieces.append(piece)
                await self.push(LLMText(turn_id=turn_id, text=piece))
        reply = "".join(pieces).strip()
        await self.push(StageTime(turn_id=turn_id, stage="llm_done", t=self.clock.now(), text=reply))
        await self.push(LLMDone(turn_id=turn_id))


def _join(a: str, b: str) -> str:
    return f"{a} {b}".strip()
