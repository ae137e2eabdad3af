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
    """

    def __init__(self, llm: LLM, conversation: Conversation) -> None:
        super().__init__()
        self.llm = llm
        self.conversation = conversation
        self._user_text: dict[int, str] = {}

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
            await self.cancel_spawned()
            self._user_text[frame.turn_id] = frame.text
            if frame.text.strip():
                self.spawn(self._reply(frame.turn_id, frame.text), f"reply-{frame.turn_id}")
            else:
                await self.push(ReplyDone(turn_id=frame.turn_id))
            return
        if isinstance(frame, AgentSpoke) and direction is Direction.UPSTREAM:
            user = self._user_text.pop(frame.turn_id, None)
            if user:
                self.conversation.add_turn(user, frame.heard_text)
        await self.push(frame, direction)

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
