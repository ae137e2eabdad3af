"""A live call: a client's audio in, the agent's audio out, the call record written as it happens.

Transport-neutral: a transport hands :class:`LiveCall` an async iterator of PCM16
chunks and two callbacks (send agent audio, send a JSON event). Turns and events
reach the database while the call runs (one writer task, in order), and the
recording is uploaded to the blob store in parts during the call, so a client that
vanishes leaves a complete record with an end reason, and memory does not grow
with the call's length.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from parley.agent.document import AgentDocument
from parley.audio import FrameSplitter
from parley.calls.control import ActionUnsupported, CallControl
from parley.calls.recorder import BlobSink, StereoRecorder
from parley.calls.session import CallPipeline, Services, build_pipeline
from parley.calls.turnlog import TurnLog
from parley.pipeline.clock import Clock, RealClock
from parley.pipeline.frames import (
    DTMF,
    AgentAction,
    AgentSpoke,
    AudioIn,
    Direction,
    Frame,
    Interruption,
    StageTime,
    Transcript,
)
from parley.pipeline.pipeline import PipelineRunner
from parley.store.blobs import BlobStore
from parley.store.calls import CallRepo
from parley.store.db import Database

log = structlog.get_logger(__name__)

SendEvent = Callable[[dict[str, Any]], Awaitable[None]]
SendAudio = Callable[[bytes], Awaitable[None]]


@dataclass(frozen=True)
class CallTarget:
    """Who the call is for: the agent as stored (its version is recorded with the call)."""

    tenant_id: uuid.UUID
    agent_id: uuid.UUID
    agent_version: int
    agent_name: str
    document: AgentDocument


class CallRecordWriter:
    """Pipeline observer: turns, events and client notifications, in the order frames leave the pipeline."""

    def __init__(self, db: Database, tenant_id: uuid.UUID, call_id: uuid.UUID, turn_log: TurnLog, send: SendEvent):
        self._db = db
        self._tenant = tenant_id
        self._call = call_id
        self._log = turn_log
        self._send = send
        self._queue: asyncio.Queue[tuple[str, Any] | None] = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._drain(), name=f"call-record-{call_id}")
        self._eot: set[int] = set()
        self._final_sent: set[int] = set()

    def __call__(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, Transcript):
            self._event({"type": "transcript", "turn": frame.turn_id, "text": frame.text, "final": False})
            self._maybe_final(frame.turn_id)
        elif isinstance(frame, StageTime) and frame.stage == "end_of_turn":
            self._eot.add(frame.turn_id)
            self._maybe_final(frame.turn_id)
        elif isinstance(frame, Interruption) and type(frame) is Interruption:
            self._event({"type": "interruption", "t": round(frame.t, 3)})
        elif isinstance(frame, AgentSpoke) and direction is Direction.UPSTREAM:
            rec = self._log.turns.get(frame.turn_id)
            if rec is not None:
                record = rec.as_dict()
                self._queue.put_nowait(("turn", record))
                self._event(
                    {"type": "agent_text", "turn": frame.turn_id, "text": frame.heard_text,
                     "interrupted": frame.interrupted}
                )  # fmt: skip
                self._event(
                    {"type": "turn_metrics", "turn": frame.turn_id, "times": record["times"],
                     "voice_to_voice": record["voice_to_voice"]}
                )  # fmt: skip

    def _event(self, event: dict[str, Any]) -> None:
        self._queue.put_nowait(("event", event))

    def event(self, event: dict[str, Any]) -> None:
        """An event from outside the pipeline (DTMF, an action), written in order with the rest."""
        self._event(event)

    def _maybe_final(self, turn_id: int) -> None:
        rec = self._log.turns.get(turn_id)
        if turn_id in self._eot and rec is not None and "stt_final" in rec.times and turn_id not in self._final_sent:
            self._final_sent.add(turn_id)
            self._event({"type": "transcript", "turn": turn_id, "text": rec.caller_text, "final": True})
            self._queue.put_nowait(("turn", rec.as_dict()))

    async def _drain(self) -> None:
        """Writes what has queued up in one transaction (a turn ends with several records at once), then sends
        the events to the client in order."""
        done = False
        while not done:
            batch = [await self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            if batch[-1] is None:
                done = True
            items = [item for item in batch if item is not None]
            if not items:
                continue
            try:
                async with self._db.session() as s:
                    repo = CallRepo(s)
                    for kind, data in items:
                        if kind == "turn":
                            await repo.upsert_turn(
                                self._tenant, self._call, turn=data["turn"], caller_text=data["caller_text"],
                                agent_text=data["agent_text"], agent_text_generated=data["agent_text_generated"],
                                interrupted=data["interrupted"], times=data["times"],
                                voice_to_voice=data["voice_to_voice"], checked=True,
                            )  # fmt: skip
                        else:
                            t = float(data.get("t", 0.0))
                            await repo.add_event(self._tenant, self._call, t, data["type"], data, checked=True)
            except Exception:
                log.exception("call_record_write_failed", call_id=str(self._call), items=len(items))
            for kind, data in items:
                if kind == "event":
                    try:
                        await self._send(data)
                    except Exception:
                        log.exception("call_event_send_failed", call_id=str(self._call))

    async def aclose(self) -> None:
        self._queue.put_nowait(None)
        await self._task


@dataclass(frozen=True)
class CallInfo:
    """What the transport knows about the call, recorded with it."""

    caller: str | None = None
    called: str | None = None
    direction: str = "inbound"
    provider_call_id: str | None = None
    worker_id: str | None = None
    #: an outbound call's record, created when it was dialled ('dialing'); media makes it active
    call_id: uuid.UUID | None = None


async def _no_event(event: dict[str, Any]) -> None:
    return None


class LiveCall:
    """Runs one conversation between a connected client and an agent.

    ``sample_rate`` is the rate of the transport's audio (8000 for G.711 phone calls):
    the pipeline runs at it, so no audio is resampled per frame on the media path.
    """

    frame_ms = 20

    def __init__(
        self,
        target: CallTarget,
        services: Services,
        db: Database,
        blobs: BlobStore,
        transport: str,
        send_audio: SendAudio,
        send_event: SendEvent = _no_event,
        caller: str | None = None,
        clock: Clock | None = None,
        *,
        sample_rate: int = 16000,
        control: CallControl | None = None,
        info: CallInfo | None = None,
        continuous_output: bool = False,
        pace_input: bool = True,
    ) -> None:
        self.target = target
        self.services = services
        self.db = db
        self.blobs = blobs
        self.transport = transport
        self.info = info or CallInfo(caller=caller)
        self.caller = self.info.caller or caller
        self.sample_rate = sample_rate
        self.control = control or CallControl()
        #: RTP sends a packet every 20 ms (silence too); WebSocket carriers get agent speech only
        self.continuous_output = continuous_output
        self.pace_input = pace_input
        self._send_audio = send_audio
        self._send_event = send_event
        self._clock = clock
        self.call_id: uuid.UUID | None = None
        self._pipeline: CallPipeline | None = None
        self._runner: PipelineRunner | None = None
        self._writer: CallRecordWriter | None = None
        self._actions: set[asyncio.Task[None]] = set()
        self.started = asyncio.Event()
        self._end_reason: str | None = None

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
        if self._writer is not None:
            self._writer.event(event)

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
            self._spawn(self.control.clear())
        elif isinstance(frame, AgentAction) and direction is Direction.DOWNSTREAM:
            self._spawn(self._act(frame))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._actions.add(task)
        task.add_done_callback(self._actions.discard)

    async def _act(self, action: AgentAction) -> None:
        event: dict[str, Any] = {"type": "action", "action": action.action, "turn": action.turn_id,
                                 "t": round(self.now(), 3)}  # fmt: skip
        if action.target:
            event["target"] = action.target
        if action.reason:
            event["reason"] = action.reason
        if action.refused:
            event["result"] = f"not allowed: {action.refused}"
            self.record_event(event)
            return
        try:
            if action.action == "hang_up":
                await self.control.hang_up(action.reason or "agent-hangup")
                event["result"] = "done"
                self.record_event(event)
                await self.end("agent-hangup")
                return
            if action.action == "transfer":
                await self.control.transfer(action.target)
                event["result"] = "done"
                self.record_event(event)
                await self.end("transferred")
                return
            event["result"] = "unknown action"
        except ActionUnsupported as exc:
            event["result"] = f"unsupported: {exc}"
        except Exception as exc:
            log.exception("call_action_failed", action=action.action)
            event["result"] = f"failed: {exc}"
        self.record_event(event)

    async def run(self, audio_in: AsyncIterator[bytes]) -> str:
        """Hold the conversation until ``audio_in`` ends; returns the end reason."""
        t = self.target
        info = self.info
        async with self.db.session() as s:
            repo = CallRepo(s)
            call = None
            if info.call_id is not None:
                call = await repo.activate(t.tenant_id, info.call_id, info.worker_id, info.provider_call_id)
            if call is None:
                call = await repo.create(
                    t.tenant_id, t.agent_id, t.agent_version, t.agent_name, self.transport, caller=self.caller,
                    direction=info.direction, called=info.called, provider_call_id=info.provider_call_id,
                    worker_id=info.worker_id,
                )  # fmt: skip
        self.call_id = call_id = call.id
        key = f"{t.tenant_id}/{call_id}.wav"
        sink = BlobSink(await self.blobs.writer(key), self.sample_rate)
        recorder = StereoRecorder(sink, self.sample_rate, self.frame_ms)

        async def out(pcm: bytes, at: float, speech: bool) -> None:
            await recorder.agent(pcm, at, speech)
            if speech or self.continuous_output:
                await self._send_audio(pcm)

        call_pipeline = build_pipeline(
            t.document,
            self.services,
            out,
            self.sample_rate,
            played_frames=self.control.played_frames,
            idle_silence=self.continuous_output,
        )
        writer = CallRecordWriter(self.db, t.tenant_id, call_id, call_pipeline.turn_log, self._send_event)
        call_pipeline.pipeline.observers.extend([writer, self._observe])
        clock = self._clock or RealClock()
        runner = PipelineRunner(call_pipeline.pipeline, clock, self.sample_rate)
        self._pipeline, self._runner, self._writer = call_pipeline, runner, writer
        await self._send_event({"type": "call", "call_id": str(call_id), "sample_rate": self.sample_rate,
                                "agent_id": str(t.agent_id), "agent_version": t.agent_version})  # fmt: skip
        reason = "ended"
        status = "ended"

        async def feed() -> str:
            await runner.wait_started()
            self.started.set()
            splitter = FrameSplitter(self.sample_rate, self.frame_ms)
            k = 0
            async for chunk in audio_in:
                for frame in splitter.feed(chunk):
                    at = k * self.frame_ms / 1000
                    # a client that sends faster than real time (a file streamed at once) is paced back to
                    # the call clock, so audio time and stage times stay one timeline. Carriers send in real
                    # time: a burst from them is a backlog (audio that queued while the call started) and
                    # must be caught up at once, or every reply would come that much later for the rest
                    # of the call.
                    if self.pace_input and at > clock.now() + 0.1:
                        await clock.sleep_until(at - 0.1)
                    await recorder.caller(frame, at)
                    await call_pipeline.pipeline.queue(AudioIn(pcm=frame, sample_rate=self.sample_rate, t=at))
                    k += 1
            return "caller-hangup"

        feeder = asyncio.create_task(feed(), name=f"call-feed-{call_id}")
        run_task = asyncio.create_task(runner.run(), name=f"call-run-{call_id}")
        try:
            done, _ = await asyncio.wait({feeder, run_task}, return_when=asyncio.FIRST_COMPLETED)
            if feeder in done and run_task not in done:  # else the pipeline ended itself (agent hang-up)
                exc = feeder.exception()
                reason = "client-disconnected" if exc is not None else feeder.result()
                reason = self._end_reason or reason
                if exc is not None:
                    log.info("call_client_gone", call_id=str(call_id), error=repr(exc))
                await runner.end(reason)
                await run_task
            else:
                reason = self._end_reason or run_task.result().reason
        except asyncio.CancelledError:
            reason = "cancelled"
            raise
        except Exception as exc:
            reason, status = f"error: {exc}", "failed"
            log.exception("call_failed", call_id=str(call_id))
        finally:
            for task in (feeder, run_task, *self._actions):
                task.cancel()
            await asyncio.gather(feeder, run_task, *self._actions, return_exceptions=True)
            playout = call_pipeline.playout
            writer.event({"type": "media", "t": round(clock.now(), 3), "speech_frames_out": playout.speech_frames,
                          "late_frames": playout.late_frames,
                          "max_lateness_ms": round(1000 * playout.max_lateness, 1)})  # fmt: skip
            await writer.aclose()
            duration = await recorder.close()
            async with self.db.session() as s:
                await CallRepo(s).end(t.tenant_id, call_id, status, reason, duration, recording_key=key,
                                      recording_bytes=sink.size)  # fmt: skip
            log.info("call_ended", call_id=str(call_id), reason=reason, duration=round(duration, 2))
        return reason
