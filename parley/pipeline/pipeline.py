"""A pipeline links processors in order; the runner starts, ends and cancels it.

The runner owns the life of every task the pipeline made: when :meth:`PipelineRunner.run`
returns (normally, by cancellation or by error) no processor task is left running.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import structlog

from parley.pipeline.clock import Clock, RealClock
from parley.pipeline.frames import Direction, EndFrame, EndReason, ErrorFrame, Frame, StartFrame
from parley.pipeline.processor import Processor

log = structlog.get_logger(__name__)


class _Head(Processor):
    """Entry point; collects frames that travel all the way upstream."""

    def __init__(self, pipeline: Pipeline) -> None:
        super().__init__(name="head")
        self._pipeline = pipeline

    async def process(self, frame: Frame, direction: Direction) -> None:
        if direction is Direction.UPSTREAM:
            self._pipeline._observe(frame, direction)
            self._pipeline._upstream(frame)
        else:
            await self.push(frame, direction)


class _Tail(Processor):
    """Exit point; notices the EndFrame that finishes the call."""

    def __init__(self, pipeline: Pipeline) -> None:
        super().__init__(name="tail")
        self._pipeline = pipeline

    async def process(self, frame: Frame, direction: Direction) -> None:
        if direction is Direction.UPSTREAM:
            await self.push(frame, direction)
            return
        self._pipeline._observe(frame, direction)
        if isinstance(frame, EndFrame):
            self._pipeline._ended(frame)


Observer = Callable[[Frame, Direction], None]


class Pipeline:
    """Processors linked head to tail; frames enter at the head with :meth:`queue`.

    Observers see every frame that leaves the pipeline at either end (stage times,
    transcripts, what the caller heard): that is how the call record is written as
    the call happens, without a processor knowing about storage.
    """

    def __init__(self, processors: Sequence[Processor], observers: Sequence[Observer] = ()) -> None:
        self.processors = list(processors)
        self.observers = list(observers)
        self._head = _Head(self)
        self._tail = _Tail(self)
        node: Processor = self._head
        for p in self.processors:
            node = node.link(p)
        node.link(self._tail)
        self.end_frame: EndFrame | None = None
        self.errors: list[ErrorFrame] = []
        self._done = asyncio.Event()

    @property
    def all(self) -> list[Processor]:
        return [self._head, *self.processors, self._tail]

    async def queue(self, frame: Frame) -> None:
        await self._head.queue_frame(frame, Direction.DOWNSTREAM)

    def _observe(self, frame: Frame, direction: Direction) -> None:
        for observer in self.observers:
            try:
                observer(frame, direction)
            except Exception:
                log.exception("observer_failed", observer=repr(observer))

    def _upstream(self, frame: Frame) -> None:
        if isinstance(frame, ErrorFrame):
            self.errors.append(frame)
            log.warning("pipeline_error", message=frame.message)

    def _ended(self, frame: EndFrame) -> None:
        if self.end_frame is None:
            self.end_frame = frame
        self._done.set()


class PipelineRunner:
    """Runs one pipeline to its end; ``cancel()`` stops it from outside."""

    def __init__(self, pipeline: Pipeline, clock: Clock | None = None, sample_rate: int = 16000) -> None:
        self.pipeline = pipeline
        self.clock = clock or RealClock()
        self.sample_rate = sample_rate
        self._started = asyncio.Event()
        self._cancel = asyncio.Event()

    async def wait_started(self) -> None:
        await self._started.wait()

    async def run(self) -> EndFrame:
        started: list[Processor] = []
        try:
            for p in reversed(self.pipeline.all):
                await p.start(self.clock)
                started.append(p)
            await self.pipeline.queue(StartFrame(sample_rate=self.sample_rate))
            self._started.set()
            done = asyncio.ensure_future(self.pipeline._done.wait())
            cancelled = asyncio.ensure_future(self._cancel.wait())
            try:
                await asyncio.wait({done, cancelled}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for f in (done, cancelled):
                    f.cancel()
                await asyncio.gather(done, cancelled, return_exceptions=True)
            if self.pipeline.end_frame is None:
                self.pipeline.end_frame = EndFrame(reason=EndReason.CANCELLED)
            return self.pipeline.end_frame
        finally:
            for p in reversed(started):
                try:
                    await p.stop()
                except Exception:
                    log.exception("processor_stop_failed", processor=p.name)
            await self.clock.aclose()

    def cancel(self) -> None:
        self._cancel.set()

    async def end(self, reason: str = EndReason.ENDED) -> None:
        """End gracefully: the EndFrame flows through every processor first."""
        await self.pipeline.queue(EndFrame(reason=reason))
