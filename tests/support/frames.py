"""Run frames through processors and get back what came out (modelled on pipecat's ``tests/utils.run_test``).

``await run_frames([TurnTaker(...)], [AudioIn(...), Upstream(AgentSpoke(...)), Wait(0.1), ...])`` builds a real
pipeline around the processors, starts it with a runner (``StartFrame`` at ``sample_rate``), sends each item in
order: a frame goes in at the head, downstream; ``Upstream(frame)`` goes in at the tail, upstream; ``Wait(s)``
pauses. Then it waits until no data frame is queued and no spawned task is running, and stops the pipeline:
with an ``EndFrame(reason=end)`` through every processor, or by cancelling it (``end=None``). ``Ran.down``
holds the frames that left the tail, ``Ran.up`` those that left the head (the helper's own StartFrame and
EndFrame left out).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

from parley.pipeline.clock import Clock, RealClock
from parley.pipeline.frames import Direction, EndFrame, ErrorFrame, Frame, StartFrame
from parley.pipeline.pipeline import Pipeline, PipelineRunner
from parley.pipeline.processor import Processor

F = TypeVar("F", bound=Frame)


@dataclass(frozen=True)
class Upstream:
    """A frame sent from the far end (the transport's side), as the playout reports ``AgentSpoke``."""

    frame: Frame


@dataclass(frozen=True)
class Wait:
    secs: float


Send = Frame | Upstream | Wait


@dataclass
class Ran:
    down: list[Frame] = field(default_factory=list)
    up: list[Frame] = field(default_factory=list)
    errors: list[ErrorFrame] = field(default_factory=list)
    end: EndFrame | None = None

    def of(self, kind: type[F], direction: Direction = Direction.DOWNSTREAM) -> list[F]:
        """The frames of ``kind`` that came out going ``direction``."""
        return [f for f in (self.down if direction is Direction.DOWNSTREAM else self.up) if isinstance(f, kind)]


class CountingClock:
    """A clock that counts work in flight (queued data frames, spawned tasks), so the helper knows when all is quiet."""

    def __init__(self, inner: Clock | None = None) -> None:
        self.inner = inner or RealClock()
        self.in_flight = 0

    def now(self) -> float:
        return self.inner.now()

    async def sleep_until(self, t: float) -> None:
        await self.inner.sleep_until(t)

    def hold(self) -> None:
        self.in_flight += 1
        self.inner.hold()

    def release(self) -> None:
        self.in_flight -= 1
        self.inner.release()

    @contextmanager
    def busy(self) -> Iterator[None]:
        self.hold()
        try:
            yield
        finally:
            self.release()

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def quiet(self, limit_s: float) -> None:
        """Return once nothing has been in flight for a few loop turns; fail after ``limit_s`` seconds."""
        loop = asyncio.get_running_loop()
        deadline, calm = loop.time() + limit_s, 0
        while calm < 3:
            calm = calm + 1 if self.in_flight == 0 else 0
            if loop.time() > deadline:
                raise AssertionError(f"the pipeline was still busy after {limit_s} s ({self.in_flight} in flight)")
            await asyncio.sleep(0 if calm else 0.005)


class _Inlet(Processor):
    """The helper's last processor: the point where ``Upstream`` frames enter."""


async def run_frames(
    processors: Processor | Sequence[Processor],
    frames: Sequence[Send],
    *,
    sample_rate: int = 16000,
    clock: Clock | None = None,
    end: str | None = "ended",
    limit_s: float = 60.0,
) -> Ran:
    """Send ``frames`` through ``processors`` in a real pipeline; what came out at each end."""
    ran = Ran()

    def observe(frame: Frame, direction: Direction) -> None:
        if isinstance(frame, StartFrame | EndFrame):
            return
        (ran.down if direction is Direction.DOWNSTREAM else ran.up).append(frame)

    inlet = _Inlet()
    chain = [processors] if isinstance(processors, Processor) else list(processors)
    pipeline = Pipeline([*chain, inlet], observers=[observe])
    counting = CountingClock(clock)
    runner = PipelineRunner(pipeline, counting, sample_rate=sample_rate)
    task = asyncio.create_task(runner.run())
    try:
        await runner.wait_started()
        for item in frames:
            if isinstance(item, Wait):
                await asyncio.sleep(item.secs)
            elif isinstance(item, Upstream):
                await inlet.push(item.frame, Direction.UPSTREAM)
            else:
                await pipeline.queue(item)
        await counting.quiet(limit_s)
        if end is not None:
            await runner.end(end)
        else:
            runner.cancel()
        ran.end = await asyncio.wait_for(task, limit_s)
    finally:
        if not task.done():
            runner.cancel()
            await asyncio.gather(task, return_exceptions=True)
    ran.errors = list(pipeline.errors)
    return ran
