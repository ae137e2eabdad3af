"""A live call: a client's audio in, the agent's audio out, the call record written as it happens.

Transport-neutral: a transport hands :class:`LiveCall` an async iterator of PCM16 chunks and a
:class:`~parley.calls.line.CallLine` (its traits, how agent audio leaves, its controls, who hears the events).
The record itself is :mod:`parley.calls.record_writer`'s; the agent's actions are :mod:`parley.calls.actions`'.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import structlog

from parley.audio import FrameSplitter
from parley.calls.actions import carry_out
from parley.calls.hangups import LIVE_CALLS
from parley.calls.identity import CallInfo, CallTarget
from parley.calls.knowledge import call_knowledge
from parley.calls.line import CallLine
from parley.calls.memory import document_for_call
from parley.calls.record_writer import CallRecord, CallStore
from parley.calls.recorder import StereoRecorder
from parley.calls.session import CallPipeline, Services, build_pipeline, warm_for_call
from parley.calls.variables import CallPlan, plan_call, public
from parley.metrics import CallWatch
from parley.pipeline.clock import Clock, RealClock
from parley.pipeline.frames import (
    DTMF,
    AgentAction,
    AgentSpoke,
    AudioIn,
    Direction,
    EndReason,
    Frame,
    Interruption,
)
from parley.pipeline.pipeline import PipelineRunner
from parley.store.calls import CallStatus
from parley.tracing import call_trace

log = structlog.get_logger(__name__)


class LiveCall:
    """Runs one conversation between a connected client and an agent."""

    frame_ms = 20

    def __init__(
        self,
        target: CallTarget,
        services: Services,
        store: CallStore,
        line: CallLine,
        info: CallInfo | None = None,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.target = target
        self.services = services
        self.store = store
        self.line = line
        self.info = info or CallInfo()
        self.document = target.document  # the call's: with what is remembered about the caller (see run)
        self._clock = clock
        self.call_id: uuid.UUID | None = None
        self._pipeline: CallPipeline | None = None
        self._runner: PipelineRunner | None = None
        self._record: CallRecord | None = None
        self._actions: set[asyncio.Task[None]] = set()
        self.started = asyncio.Event()
        self._end_reason: str | None = None
        self.plan = CallPlan(target.document)  # the call's variables applied (see run)
        self._hung_up = False

    def now(self) -> float:
        return self._runner.clock.now() if self._runner is not None else 0.0

    async def dtmf(self, digit: str) -> None:
        """A keypad digit from the caller: recorded, and handed to the agent."""
        if self._pipeline is None or not self.started.is_set():
            return
        t = self.now()
        self.record_event({"type": "dtmf", "digit": digit, "t": round(t, 3)})
        await self._pipeline.pipeline.queue(DTMF(digit=digit, t=t))

    def record_event(self, event: dict[str, Any]) -> None:
        """Adds an event to the call record (and sends it to clients that listen for events)."""
        if self._record is not None:
            self._record.event(event)

    async def end(self, reason: str) -> None:
        """End the call from the transport's side (the far end hung up, a carrier said so, shutdown).

        The reason is kept: the transport usually closes the audio right after, and the call must be
        recorded with this reason, not as the caller hanging up."""
        if self._end_reason is None:
            self._end_reason = reason
        if self._runner is not None:
            await self._runner.end(reason)

    def _observe(self, frame: Frame, direction: Direction) -> None:
        """Transport actions triggered by frames leaving the pipeline: clear on barge-in, agent actions."""
        if isinstance(frame, Interruption) and type(frame) is Interruption:
            self._spawn(self.line.control.clear())
        elif isinstance(frame, AgentAction) and direction is Direction.DOWNSTREAM:
            self._spawn(self._act(frame))
        elif self.plan.voicemail and isinstance(frame, AgentSpoke) and direction is Direction.UPSTREAM:
            self._spawn(self._leave())  # the voicemail message (the greeting) has played to the machine

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._actions.add(task)
        task.add_done_callback(self._actions.discard)

    async def _act(self, action: AgentAction) -> None:
        event, ends = await carry_out(action, self.line.control, self.now())
        self.record_event(event)
        if ends is not None:
            await self.end(ends)

    async def _leave(self) -> None:
        """A machine answered: hang up (once) after the voicemail message, or at once without one."""
        if not self._hung_up:
            self._hung_up = True
            await self._act(AgentAction(turn_id=0, action="hang_up", reason="voicemail"))

    async def run(self, audio_in: AsyncIterator[bytes]) -> str:
        """Hold the conversation until ``audio_in`` ends; returns the end reason."""
        traits = self.line.traits
        record = await CallRecord.open(
            self.store, self.target, traits.name, self.info, traits.sample_rate, self.frame_ms
        )
        self.call_id = call_id = record.call_id
        # the call's variables in its prompt and greeting (before memory: what a caller said is never a template)
        t = self.target
        self.plan = plan_call(t.document, record.variables, self._variables(record), call_id)
        # what the agent remembers about this caller, read once here: no turn waits for it; the knowledge base warmed
        self.document, knowledge = await asyncio.gather(
            document_for_call(self.store.db, t.tenant_id, self.plan.document, self.info.caller, self.info.user_id),
            call_knowledge(t.document, t.tenant_id),
        )
        if knowledge is not None:
            self.services = dataclasses.replace(self.services, knowledge=knowledge)
        self._spawn(warm_for_call(self.document, self.services))  # beside the greeting: turn 1's LLM waits for it
        runner = self._prepare(record)
        await self.line.events.opened(call_id)
        feeder = asyncio.create_task(self._feed(runner, record.recorder, audio_in), name=f"call-feed-{call_id}")
        run_task = asyncio.create_task(runner.run(), name=f"call-run-{call_id}")
        LIVE_CALLS.add(self)  # an operator may end it now, from any worker (parley.calls.hangups)
        if self.plan.voicemail and not self.document.greeting:
            self._spawn(self._leave())  # a machine, and no message to leave
        self._watch.started()
        reason: str = EndReason.ENDED
        status = CallStatus.ENDED
        try:
            reason = await self._hold(runner, feeder, run_task)
        except asyncio.CancelledError:
            reason = EndReason.CANCELLED
            raise
        except Exception as exc:
            reason, status = f"error: {exc}", CallStatus.FAILED
            log.exception("call_failed", call_id=str(call_id))
        finally:
            LIVE_CALLS.discard(self)
            self._watch.ended(reason)
            await self._finish(record, runner, (feeder, run_task), status, reason)
        return reason

    def _variables(self, record: CallRecord) -> dict[str, Any]:
        """What the agent's tools may read of the call from its start (they add what they collect)."""
        info = self.info
        known = {"caller": info.caller, "called": info.called, "direction": info.direction}
        own = {"call_id": str(record.call_id), **{k: v for k, v in known.items() if v}}
        return {**public(record.variables), **own}  # a contact's column never passes for the call's own facts

    def _prepare(self, record: CallRecord) -> PipelineRunner:
        """The call's pipeline, its record's writer on it, and the runner that will drive it."""
        line, rate = self.line, self.line.traits.sample_rate

        async def out(pcm: bytes, at: float, speech: bool) -> None:
            await record.recorder.agent(pcm, at, speech)
            if speech or line.traits.continuous_output:
                await line.send_audio(pcm)

        call_pipeline = build_pipeline(
            self.document,
            self.services,
            out,
            rate,
            played_frames=line.control.played_frames,
            idle_silence=line.traits.continuous_output,
            variables=self._variables(record),
        )
        writer = record.writer(call_pipeline.turn_log, line.events.event)
        trace = call_trace(record.call_id, self.target.tenant_id, self.target.agent_name, line.traits.name, self.now)
        self._watch = CallWatch(line.traits.name, self.target.agent_name, call_pipeline.playout,
                                call_pipeline.turn_log, self.now, trace)  # fmt: skip
        call_pipeline.pipeline.observers.extend([writer, self._observe, *self._watch.observers])
        runner = PipelineRunner(call_pipeline.pipeline, self._clock or RealClock(), rate)
        self._pipeline, self._runner, self._record = call_pipeline, runner, record
        return runner

    async def _feed(self, runner: PipelineRunner, recorder: StereoRecorder, audio_in: AsyncIterator[bytes]) -> str:
        """The caller's audio into the pipeline and the recording, frame by frame, stamped with call time."""
        await runner.wait_started()
        self.started.set()
        rate, clock, pipeline = self.line.traits.sample_rate, runner.clock, runner.pipeline
        splitter = FrameSplitter(rate, self.frame_ms)
        k = 0
        async for chunk in audio_in:
            for frame in splitter.feed(chunk):
                at = k * self.frame_ms / 1000
                if self.line.traits.pace_input and at > clock.now() + 0.1:  # see TransportTraits.pace_input
                    await clock.sleep_until(at - 0.1)
                await recorder.caller(frame, at)
                await pipeline.queue(AudioIn(pcm=frame, sample_rate=rate, t=at))
                k += 1
        return "caller-hangup"

    async def _hold(self, runner: PipelineRunner, feeder: asyncio.Task[str], run_task: asyncio.Task[Any]) -> str:
        """Wait for the audio to end or the pipeline to end itself (an agent hang-up); the end reason."""
        done, _ = await asyncio.wait({feeder, run_task}, return_when=asyncio.FIRST_COMPLETED)
        if feeder in done and run_task not in done:
            exc = feeder.exception()
            reason = self._end_reason or ("client-disconnected" if exc is not None else feeder.result())
            if exc is not None:
                log.info("call_client_gone", call_id=str(self.call_id), error=repr(exc))
            await runner.end(reason)
            await run_task
            return reason
        return self._end_reason or run_task.result().reason

    async def _finish(
        self,
        record: CallRecord,
        runner: PipelineRunner,
        tasks: tuple[asyncio.Task[Any], ...],
        status: CallStatus,
        reason: str,
    ) -> None:
        """Stop everything the call started, then close its record with how the media went."""
        for task in (*tasks, *self._actions):
            task.cancel()
        await asyncio.gather(*tasks, *self._actions, return_exceptions=True)
        assert self._pipeline is not None  # _prepare ran before any task
        playout = self._pipeline.playout
        record.event(
            {
                "type": "media",
                "t": round(runner.clock.now(), 3),
                "speech_frames_out": playout.speech_frames,
                "late_frames": playout.late_frames,
                "max_lateness_ms": round(1000 * playout.max_lateness, 1),
            }
        )
        duration = await record.close(status, reason)
        log.info("call_ended", call_id=str(record.call_id), reason=reason, duration=round(duration, 2))
