"""A reply's tool steps: run the calls, fill silence only when a tool is slow, keep started work alive.

Why each rule:
* a filler line only after ``filler_delay_ms``: most tools answer sooner, and "One moment" before a fast answer
  is noise; it travels like reply text, so the playout's rules hold — nothing plays before the caller's turn is
  over, and a barge-in drops it;
* a started tool runs to its end even when its reply is talked over (``shield``): a half-sent booking request
  helps nobody; its result joins the history late (:meth:`Conversation.add_late`), so the next reply knows it;
* an ``irreversible`` tool waits for its turn to be confirmed (:class:`EndOfTurn`): a speculative reply to a
  caller who then talks on is discarded, and what it asked for must not happen (pipecat #4997 hung up on a
  caller this way).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Collection

import structlog

from parley.agent.context import Conversation
from parley.services.llm.base import ToolCall
from parley.tools.base import SideEffect, ToolContext
from parley.tools.config import ToolUseSettings
from parley.tools.runner import ToolOutcome, ToolRunner, exchange_messages

log = structlog.get_logger(__name__)

Say = Callable[[str], Awaitable[None]]
Record = Callable[[ToolOutcome], Awaitable[None]]


class ToolUse:
    """One call's tool runs, shared by its replies."""

    def __init__(
        self,
        runner: ToolRunner,
        conversation: Conversation,
        context: ToolContext,
        settings: ToolUseSettings,
    ) -> None:
        self.runner = runner
        self.conversation = conversation
        self.context = context
        self.settings = settings
        self._confirmed: dict[int, asyncio.Event] = {}
        self._running: set[asyncio.Task[ToolOutcome]] = set()
        self._unconfirmed: set[asyncio.Future[ToolOutcome]] = set()  # irreversible calls waiting for EndOfTurn

    def confirm(self, turn_id: int) -> None:
        """The turn detector ended turn ``turn_id``: its reply is no longer speculative."""
        self._confirmed.setdefault(turn_id, asyncio.Event()).set()

    async def run_step(
        self, turn_id: int, calls: list[ToolCall], say: Say, record: Record, allowed: Collection[str] | None = None
    ) -> list[ToolOutcome]:
        """Run one step's calls with fillers; ``allowed`` names the tools offered (a flow node's).

        A tool may speak its own progress (``await context.speak(...)``): it goes out like a filler, inside this
        reply (so never over the caller, and a barge-in drops it), and a tool that spoke needs no generic filler.
        """
        progress = _Progress(say)
        context = dataclasses.replace(self.context, say=progress.say)  # the same variables dict, this step's voice
        tasks = [self._start(turn_id, call, record, allowed, context) for call in calls]
        waiting = asyncio.ensure_future(asyncio.gather(*(asyncio.shield(t) for t in tasks)))
        fillers = [
            (self.settings.filler_delay_ms, self._filler(calls)),
            (self.settings.still_working_ms, self.settings.still_working_line),
        ]
        waited = 0.0
        try:
            for at_ms, line in fillers:
                done, _ = await asyncio.wait({waiting}, timeout=max(0.0, at_ms - waited) / 1000)
                waited = at_ms
                if done:
                    break
                if line and not progress.spoke:
                    await say(line)
            return list(await waiting)
        except asyncio.CancelledError:
            progress.closed = True  # the reply is gone: a tool still running has nobody to tell
            waiting.cancel()
            for task in tasks:
                if task in self._unconfirmed:  # an irreversible call of a discarded reply: never carried out
                    task.cancel()
                else:  # talked over: its result reaches the next reply when it comes
                    task.add_done_callback(self._late)
            raise

    def _filler(self, calls: list[ToolCall]) -> str:
        tool = self.runner.tools.get(calls[0].name)
        return (tool.filler if tool is not None and tool.filler else "") or self.settings.filler_line

    def _start(
        self, turn_id: int, call: ToolCall, record: Record, allowed: Collection[str] | None, context: ToolContext
    ) -> asyncio.Task[ToolOutcome]:
        task = asyncio.ensure_future(self._run(turn_id, call, record, allowed, context))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return task

    async def _run(
        self, turn_id: int, call: ToolCall, record: Record, allowed: Collection[str] | None, context: ToolContext
    ) -> ToolOutcome:
        confirmed = self._confirmed.setdefault(turn_id, asyncio.Event())
        if self.runner.side_effect(call.name) is SideEffect.IRREVERSIBLE and not confirmed.is_set():
            task = asyncio.current_task()
            assert task is not None
            self._unconfirmed.add(task)
            try:
                await confirmed.wait()
            finally:
                self._unconfirmed.discard(task)
        outcome = await self.runner.run(call, context, allowed)
        await record(outcome)
        return outcome

    def _late(self, task: asyncio.Task[ToolOutcome]) -> None:
        if task.cancelled() or task.exception() is not None:
            return
        self.conversation.add_late(exchange_messages([task.result()]))

    async def aclose(self) -> None:
        """The call ended: tools still waiting for a confirmation that will not come are dropped."""
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)


class _Progress:
    """A step's progress voice: what tools say goes into the reply until the reply is gone."""

    def __init__(self, say: Say) -> None:
        self._say = say
        self.spoke = False
        self.closed = False

    async def say(self, line: str) -> None:
        line = " ".join(line.split())[:300]
        if self.closed or not line:
            return
        self.spoke = True
        await self._say(line)
