"""An offline phone call: a caller WAV in, the whole call out as a stereo WAV and a report.

The caller's recording starts once the agent's greeting has played (as a person on
the phone would wait), is fed in 20 ms frames at real time — or as fast as possible
with ``fast=True``, which keeps simulated time: idle waits are skipped, model work
still takes its real time — and is followed by silence until the agent has
answered the last turn.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from parley.agent.document import AgentDocument
from parley.audio import Audio, load_audio, resample, samples_per_frame, split_frames
from parley.calls.knowledge import CallKnowledge
from parley.calls.recorder import StereoRecorder
from parley.calls.session import CallPipeline, Services, build_pipeline, warm_for_call
from parley.calls.turnlog import TurnRecord
from parley.pipeline.clock import Clock, FastClock, RealClock
from parley.pipeline.frames import AudioIn, EndReason
from parley.pipeline.pipeline import PipelineRunner
from parley.services.secrets import EnvSecrets

log = structlog.get_logger(__name__)

CALL_RATE = 16000
FRAME_MS = 20


@dataclass
class CallReport:
    agent: str
    input: str
    output: str
    fast: bool
    duration: float
    caller_audio_offset: float
    end_reason: str
    greeting: TurnRecord | None
    turns: list[TurnRecord] = field(default_factory=list)
    #: the conversation as the LLM will see it next: replies as the caller heard them
    context: list[dict[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "input": self.input,
            "output": self.output,
            "fast": self.fast,
            "duration": round(self.duration, 3),
            "caller_audio_offset": round(self.caller_audio_offset, 3),
            "end_reason": self.end_reason,
            "greeting": self.greeting.as_dict() if self.greeting else None,
            "turns": [t.as_dict() for t in self.turns],
            "context": self.context,
            "errors": self.errors,
        }

    def write(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.as_dict(), indent=2) + "\n", encoding="utf-8")


def caller_pcm(audio: Audio) -> bytes:
    """The caller's audio as PCM16 mono at the call's rate."""
    mono = audio.mono()
    if audio.sample_rate != CALL_RATE:
        mono = resample(mono, audio.sample_rate, CALL_RATE)
    return np.asarray(mono, dtype="<i2").tobytes()


class _Caller:
    """The simulated caller's line: silence until the greeting has played, the recording, then silence until the
    agent has answered; each 20 ms frame at its call time, into the pipeline and the recording."""

    def __init__(
        self,
        agent: AgentDocument,
        call: CallPipeline,
        runner: PipelineRunner,
        recorder: StereoRecorder,
        max_tail_secs: float,
    ) -> None:
        self.agent = agent
        self.call = call
        self.runner = runner
        self.recorder = recorder
        self.max_tail_secs = max_tail_secs
        self.k = 0  # frames sent
        self.offset = 0.0  # call time at which the caller's recording starts

    async def _send(self, frame: bytes) -> None:
        t = self.k * (FRAME_MS / 1000)
        await self.runner.clock.sleep_until(t)
        await self.recorder.caller(frame, t)
        await self.call.pipeline.queue(AudioIn(pcm=frame, sample_rate=CALL_RATE, t=t))
        self.k += 1

    async def feed(self, pcm: bytes, wait_for_greeting: bool) -> None:
        await self.runner.wait_started()
        step = FRAME_MS / 1000
        turns = self.call.turns
        silence = bytes(samples_per_frame(CALL_RATE, FRAME_MS) * 2)
        if wait_for_greeting and self.agent.greeting:
            while turns.agent_busy and self.k * step < self.max_tail_secs:
                await self._send(silence)
            for _ in range(int(0.3 / step)):  # a breath before the caller speaks
                await self._send(silence)
        self.offset = self.k * step
        for frame in split_frames(pcm, CALL_RATE, FRAME_MS):
            await self._send(frame)
        end = self.k * step
        quiet_needed = self.agent.turn.end_of_turn_secs + 0.3
        quiet = 0.0
        while self.k * step - end < self.max_tail_secs:
            await self._send(silence)
            quiet = quiet + step if turns.idle else 0.0
            if quiet >= quiet_needed:
                break
        await self.runner.end(EndReason.INPUT_ENDED)


async def simulate_call(
    agent: AgentDocument,
    input_path: str | Path,
    output_path: str | Path,
    *,
    fast: bool = False,
    wait_for_greeting: bool = True,
    services: Services | None = None,
    max_tail_secs: float = 60.0,
    variables: Mapping[str, Any] | None = None,
    knowledge: CallKnowledge | None = None,
) -> CallReport:
    """Run one offline call; ``services`` may be shared between calls to skip model loading; ``variables`` seed
    the call's variables (``parley test``'s scenario values); ``knowledge``: the collections the agent searches
    (:func:`parley.knowledge.local.local_knowledge`; None: it answers without)."""
    pcm = caller_pcm(load_audio(input_path))
    own_services = services is None
    if services is None:
        services = await Services.create(agent, EnvSecrets.from_settings())  # the operator's own document
    if knowledge is not None:
        services = dataclasses.replace(services, knowledge=knowledge)
    await warm_for_call(agent, services)
    clock: Clock = FastClock() if fast else RealClock()
    recorder = StereoRecorder.to_file(output_path, CALL_RATE, FRAME_MS)
    call = build_pipeline(agent, services, recorder.agent, CALL_RATE, variables=variables)
    runner = PipelineRunner(call.pipeline, clock, CALL_RATE)
    caller = _Caller(agent, call, runner, recorder, max_tail_secs)
    feeder = asyncio.create_task(caller.feed(pcm, wait_for_greeting), name="caller-feed")
    try:
        end = await runner.run()
    finally:
        feeder.cancel()
        await asyncio.gather(feeder, return_exceptions=True)
        duration = await recorder.close()
        if own_services:
            await services.aclose()
    return CallReport(
        agent=agent.name,
        input=str(input_path),
        output=str(output_path),
        fast=fast,
        duration=duration,
        caller_audio_offset=caller.offset,
        end_reason=end.reason,
        greeting=call.turn_log.greeting,
        turns=call.turn_log.caller_turns(),
        context=[{"user": user, "assistant": heard} for user, heard in call.conversation.turns],
        errors=[e.message for e in call.pipeline.errors],
    )
