"""The processor: one small step of a call's pipeline.

System frames are handled the moment they are pushed (in the pusher's task), so an
interruption or the caller's audio never waits behind a long reply. Data frames
wait in the processor's queue and are handled in order by its own task; an
:class:`Interruption` cancels that task, drops what is queued and starts afresh.

Work that must not block the pusher (a model call) goes through :meth:`spawn`,
which tracks the task so that stopping the pipeline leaves nothing behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import structlog

from parley.pipeline.clock import Clock, RealClock
from parley.pipeline.frames import DataFrame, Direction, ErrorFrame, Frame, Interruption, SystemFrame

log = structlog.get_logger(__name__)


class Processor:
    """Base class: override :meth:`process`; call :meth:`push` to pass frames on."""

    def __init__(self, *, name: str | None = None) -> None:
        self.name = name or type(self).__name__
        self.clock: Clock = RealClock()
        self._next: Processor | None = None
        self._prev: Processor | None = None
        self._queue: asyncio.Queue[tuple[Frame, Direction]] = asyncio.Queue()
        self._data_task: asyncio.Task[None] | None = None
        self._spawned: set[asyncio.Task[Any]] = set()
        self._running = False

    # --- wiring -------------------------------------------------------------

    def link(self, nxt: Processor) -> Processor:
        self._next = nxt
        nxt._prev = self
        return nxt

    async def start(self, clock: Clock) -> None:
        self.clock = clock
        self._running = True
        self._data_task = asyncio.get_running_loop().create_task(self._run_queue(), name=f"{self.name}-data")
        await self.setup()

    async def stop(self) -> None:
        """Cancel everything this processor started and release its resources."""
        self._running = False
        await self._cancel_data_task()
        self._drain()
        await self.cancel_spawned()
        await self.cleanup()

    # --- hooks ---------------------------------------------------------------

    async def setup(self) -> None:
        """Open resources (called once, before the first frame)."""

    async def cleanup(self) -> None:
        """Release resources (called once, at stop)."""

    async def on_interruption(self) -> None:
        """Cancel in-flight work and forget buffered output. Queued data is already gone."""

    async def process(self, frame: Frame, direction: Direction) -> None:
        await self.push(frame, direction)

    # --- flow ----------------------------------------------------------------

    async def push(self, frame: Frame, direction: Direction = Direction.DOWNSTREAM) -> None:
        target = self._next if direction is Direction.DOWNSTREAM else self._prev
        if target is not None:
            await target.queue_frame(frame, direction)

    async def queue_frame(self, frame: Frame, direction: Direction = Direction.DOWNSTREAM) -> None:
        if isinstance(frame, SystemFrame):
            if isinstance(frame, Interruption) and direction is Direction.DOWNSTREAM:
                await self._interrupt()
            await self._handle(frame, direction)
        elif isinstance(frame, DataFrame):
            self.clock.hold()
            self._queue.put_nowait((frame, direction))
        else:  # pragma: no cover - a Frame must be one or the other
            raise TypeError(f"{type(frame).__name__} is neither a system nor a data frame")

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run ``coro`` beside the flow; the clock counts it as work in flight. A failure is reported
        upstream (:meth:`_guarded`), not only logged: work that ends in silence leaves the call waiting."""
        self.clock.hold()
        task = asyncio.get_running_loop().create_task(self._guarded(coro, name), name=f"{self.name}-{name}")
        self._spawned.add(task)

        def _done(t: asyncio.Task[Any]) -> None:
            self._spawned.discard(t)
            self.clock.release()

        task.add_done_callback(_done)
        return task

    async def _guarded(self, coro: Coroutine[Any, Any, Any], name: str) -> Any:
        """``coro``; if it raises, an :class:`ErrorFrame` naming the task and the error's type goes upstream
        (the message stays in the log: it may quote a URL or a key). Work that can fail in a way the call
        must answer (a reply) catches its own errors first and says so itself."""
        try:
            return await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("processor_task_failed", processor=self.name, task=name, error=repr(exc))
            await self.push(ErrorFrame(message=f"{self.name} {name}: {type(exc).__name__}"), Direction.UPSTREAM)
            return None

    async def cancel_spawned(self) -> None:
        tasks = [t for t in self._spawned if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # --- internals -------------------------------------------------------------

    async def _handle(self, frame: Frame, direction: Direction) -> None:
        try:
            await self.process(frame, direction)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("processor_failed", processor=self.name, frame=type(frame).__name__)
            await self.push(ErrorFrame(message=f"{self.name}: {exc}"), Direction.UPSTREAM)

    async def _run_queue(self) -> None:
        while True:
            frame, direction = await self._queue.get()
            try:
                await self._handle(frame, direction)
            finally:
                self.clock.release()

    async def _interrupt(self) -> None:
        if self._data_task is not None and self._data_task is not asyncio.current_task():
            await self._cancel_data_task()
            self._drain()
            if self._running:
                self._data_task = asyncio.get_running_loop().create_task(self._run_queue(), name=f"{self.name}-data")
        else:
            self._drain()
        await self.on_interruption()

    async def _cancel_data_task(self) -> None:
        task, self._data_task = self._data_task, None
        if task is None or task.done():
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    def _drain(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()
            self.clock.release()
