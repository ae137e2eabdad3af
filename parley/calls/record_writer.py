"""A live call's record, written as the call happens: its row, its turns and events, its recording.

Turns and events reach the database while the call runs (one writer task, in order), and the recording is
uploaded to the blob store in parts during the call, so a client that vanishes leaves a complete record with
an end reason, and memory does not grow with the call's length. A database outage mid-call loses nothing: the
writes wait in the call's :class:`~parley.calls.record_backlog.RecordBacklog` and are written when it returns.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from parley.agent.document import AgentDocument
from parley.calls.analysis import start_after_call
from parley.calls.identity import CallInfo, CallTarget
from parley.calls.memory import start_after_call as remember_after_call
from parley.calls.record_backlog import RecordBacklog
from parley.calls.recorder import BlobSink, StereoRecorder
from parley.calls.turnlog import TurnLog, error_event
from parley.pipeline.frames import (
    AgentSpoke,
    CallEvent,
    Direction,
    Frame,
    Interruption,
    ReplyFailed,
    Stage,
    StageTime,
    Transcript,
)
from parley.privacy.pii import PiiRedactor
from parley.store.blobs import BlobStore
from parley.store.calls import CallRepo, CallStatus
from parley.store.db import Database
from parley.store.models import Call
from parley.webhooks import events as webhook_events

log = structlog.get_logger(__name__)

SendEvent = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class CallStore:
    """Where live calls are recorded: rows in the database, recordings in the blob store."""

    db: Database
    blobs: BlobStore


class CallRecordWriter:
    """Pipeline observer: turns, events and client notifications, in the order frames leave the pipeline."""

    def __init__(
        self,
        backlog: RecordBacklog,
        tenant_id: uuid.UUID,
        call_id: uuid.UUID,
        turn_log: TurnLog,
        send: SendEvent,
        redact: PiiRedactor | None = None,
    ):
        self._backlog = backlog  # writes at once, or in order once the database is back
        #: the agent's privacy rules: what is stored is masked (the live client still gets what was said)
        self._redact = redact if redact else None
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
        elif isinstance(frame, StageTime) and frame.stage == Stage.END_OF_TURN:
            self._eot.add(frame.turn_id)
            self._maybe_final(frame.turn_id)
        elif isinstance(frame, Interruption) and type(frame) is Interruption:
            self._event({"type": "interruption", "t": round(frame.t, 3)})
        elif isinstance(frame, CallEvent):  # a tool call, a routing decision
            self._event(frame.event)
        elif isinstance(frame, ReplyFailed):  # a reply that ended at a model failure: which stage, what was said
            self._event(error_event(frame))
        elif isinstance(frame, AgentSpoke) and direction is Direction.UPSTREAM:
            rec = self._log.turns.get(frame.turn_id)
            if rec is not None:
                record = rec.as_dict()
                self._queue.put_nowait(("turn", record))
                self._event(
                    {
                        "type": "agent_text",
                        "turn": frame.turn_id,
                        "text": frame.heard_text,
                        "interrupted": frame.interrupted,
                    }
                )
                self._event(
                    {
                        "type": "turn_metrics",
                        "turn": frame.turn_id,
                        "times": record["times"],
                        "voice_to_voice": record["voice_to_voice"],
                    }
                )

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
            await self._write(items)
            for kind, data in items:
                if kind == "event":
                    try:
                        await self._send(data)
                    except Exception:
                        log.exception("call_event_send_failed", call_id=str(self._call))

    async def _write(self, items: list[tuple[str, Any]]) -> None:
        if self._redact is not None:
            items = [(kind, self._redact.value(data)) for kind, data in items]
        await self._backlog.submit(partial(self._store, items), len(items))

    async def _store(self, items: list[tuple[str, Any]], s: AsyncSession) -> None:
        repo = CallRepo(s)
        for kind, data in items:
            if kind == "turn":
                await repo.upsert_turn(
                    self._tenant,
                    self._call,
                    turn=data["turn"],
                    caller_text=data["caller_text"],
                    agent_text=data["agent_text"],
                    agent_text_generated=data["agent_text_generated"],
                    interrupted=data["interrupted"],
                    times=data["times"],
                    voice_to_voice=data["voice_to_voice"],
                    checked=True,
                    citations=data.get("citations"),
                )
            else:
                t = float(data.get("t", 0.0))
                await repo.add_event(self._tenant, self._call, t, data["type"], data, checked=True)

    async def aclose(self) -> None:
        self._queue.put_nowait(None)
        await self._task


class CallRecord:
    """One live call's record from its row's creation to its end: the recording and the writer go with it."""

    def __init__(
        self,
        store: CallStore,
        tenant_id: uuid.UUID,
        call_id: uuid.UUID,
        sink: BlobSink | DiscardSink,
        key: str | None,
        recorder: StereoRecorder,
    ) -> None:
        self.store = store
        self.tenant_id = tenant_id
        self.call_id = call_id
        self.recorder = recorder
        self._sink = sink
        self._key = key
        self._writer: CallRecordWriter | None = None
        self.backlog = RecordBacklog(store.db, call_id)  # the record's writes, kept through a database outage
        #: the agent document whose ``analysis`` runs once the record is closed (set by :meth:`open`)
        self.document: AgentDocument | None = None
        self.agent_id: uuid.UUID | None = None  # for the webhook events (set by :meth:`open`)
        self.user_id: str | None = None  # whose memory the call's end updates, when a client gave one
        #: what the record was dialled with (a campaign contact's columns; parley.calls.variables)
        self.variables: dict[str, Any] = {}

    @classmethod
    async def open(
        cls, store: CallStore, target: CallTarget, transport: str, info: CallInfo, sample_rate: int, frame_ms: int
    ) -> CallRecord:
        """The call's row (an outbound dial's, made active, or a new one) and its recording, started."""
        t = target
        async with store.db.session() as s:
            repo = CallRepo(s)
            call = None
            if info.call_id is not None:
                call = await repo.activate(t.tenant_id, info.call_id, info.worker_id, info.provider_call_id)
            if call is None:
                call = await repo.create(
                    t.tenant_id,
                    t.agent_id,
                    t.agent_version,
                    t.agent_name,
                    transport,
                    caller=info.caller,
                    direction=info.direction,
                    called=info.called,
                    provider_call_id=info.provider_call_id,
                    worker_id=info.worker_id,
                )
            # the webhook outbox row, in the same transaction: the call never waits on a receiver
            await webhook_events.call_started(s, t.tenant_id, call.id, t.agent_id, _started_data(call))
        sink: BlobSink | DiscardSink
        key: str | None
        if t.document is not None and t.document.privacy.recording == "drop":
            key, sink = None, DiscardSink()  # the policy: the call's audio is never written anywhere
        else:
            key = f"{t.tenant_id}/{call.id}.wav"
            sink = BlobSink(await store.blobs.writer(key), sample_rate)
        record = cls(store, t.tenant_id, call.id, sink, key, StereoRecorder(sink, sample_rate, frame_ms))
        record.document = t.document
        record.agent_id = t.agent_id
        record.user_id = info.user_id
        record.variables = dict(call.variables or {})
        return record

    def writer(self, turn_log: TurnLog, send: SendEvent) -> CallRecordWriter:
        """The observer that writes the call's turns and events as they happen (one per record)."""
        redact = PiiRedactor(self.document.privacy.redact) if self.document is not None else None
        self._writer = CallRecordWriter(self.backlog, self.tenant_id, self.call_id, turn_log, send, redact)
        return self._writer

    def _analysed(self) -> bool:
        settings = self.document.analysis if self.document is not None else None
        return settings is not None and settings.wants_anything()

    def event(self, event: dict[str, Any]) -> None:
        """Adds an event to the record, in order with the pipeline's (dropped before the writer exists)."""
        if self._writer is not None:
            self._writer.event(event)

    async def close(self, status: CallStatus, reason: str) -> float:
        """Flush the events, finish the recording, end the row; returns the call's duration.

        With the database away, the row's end waits in the backlog behind the call's turns and events (the
        call is over for its caller at once); the analysis and memory start once it is written."""
        if self._writer is not None:
            await self._writer.aclose()
        duration = await self.recorder.close()
        end = partial(self._end, status, reason, duration, self._sink.size if self._key is not None else None)
        await self.backlog.submit(end, after=self._after_end, essential=True)
        return duration

    async def _end(
        self, status: CallStatus, reason: str, duration: float, recording_bytes: int | None, s: AsyncSession
    ) -> None:
        repo = CallRepo(s)
        await repo.end(self.tenant_id, self.call_id, status, reason, duration, self._key, recording_bytes)
        ended = {"status": str(status), "reason": reason, "duration_s": round(duration, 3)}
        await webhook_events.call_ended(s, self.tenant_id, self.call_id, self.agent_id, ended)
        if self._analysed():  # kept with the row's end: a restart before it is stored resumes it
            await repo.set_analysis(self.tenant_id, self.call_id, {"status": "pending"})

    def _after_end(self) -> None:
        if self.document is not None:  # in the background: the call's end does not wait for it
            start_after_call(self.store.db, self.tenant_id, self.call_id, self.document)
            remember_after_call(self.store.db, self.tenant_id, self.call_id, self.document, self.user_id)


class DiscardSink:
    """A recording sink that keeps nothing (``privacy.recording: drop``)."""

    size = 0

    async def write(self, pcm: bytes) -> None:
        return None

    async def close(self, data_bytes: int) -> None:
        return None


def _started_data(call: Call) -> dict[str, Any]:
    """What ``call.started`` says of the call."""
    return {
        "direction": call.direction,
        "transport": call.transport,
        "caller": call.caller,
        "called": call.called,
        "agent_version": call.agent_version,
        "started_at": call.started_at.isoformat(),
    }
