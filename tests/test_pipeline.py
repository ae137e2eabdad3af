"""The pipeline core: priorities, interruptions, the runner's clean stop, the fast clock."""

from __future__ import annotations

import asyncio
import threading

import pytest

from parley.pipeline.clock import FastClock, RealClock
from parley.pipeline.frames import (
    AudioIn,
    Direction,
    EndFrame,
    ErrorFrame,
    Frame,
    Interruption,
    LLMText,
    StartFrame,
)
from parley.pipeline.pipeline import Pipeline, PipelineRunner
from parley.pipeline.processor import Processor

from .support.frames import run_frames


class Slow(Processor):
    """Takes 50 ms per data frame, like a model would."""

    def __init__(self) -> None:
        super().__init__()
        self.handled: list[str] = []

    async def process(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, LLMText):
            await asyncio.sleep(0.05)
            self.handled.append(frame.text)
        await self.push(frame, direction)


class Collect(Processor):
    def __init__(self) -> None:
        super().__init__()
        self.frames: list[Frame] = []
        self.upstream: list[Frame] = []

    async def process(self, frame: Frame, direction: Direction) -> None:
        (self.frames if direction is Direction.DOWNSTREAM else self.upstream).append(frame)
        await self.push(frame, direction)


class Boom(Processor):
    async def process(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, LLMText) and frame.text == "boom":
            raise RuntimeError("kaput")
        await self.push(frame, direction)


async def _run(pipeline: Pipeline, clock: RealClock | FastClock | None = None) -> tuple[PipelineRunner, asyncio.Task]:
    runner = PipelineRunner(pipeline, clock)
    task = asyncio.create_task(runner.run())
    await runner.wait_started()
    return runner, task


async def test_system_frames_overtake_queued_data() -> None:
    slow, sink = Slow(), Collect()
    runner, task = await _run(Pipeline([slow, sink]))
    for i in range(5):
        await runner.pipeline.queue(LLMText(text=str(i)))
    await runner.pipeline.queue(AudioIn(pcm=b"\0\0", t=1.0))
    kinds = [type(f).__name__ for f in sink.frames]
    assert kinds == ["StartFrame", "AudioIn"], "caller audio must not wait behind queued text"
    await asyncio.sleep(0.4)
    assert [f.text for f in sink.frames if isinstance(f, LLMText)] == ["0", "1", "2", "3", "4"]
    await runner.end()
    assert (await task).reason == "ended"


async def test_interruption_drops_queued_data_and_cancels_work_in_flight() -> None:
    slow, sink = Slow(), Collect()
    runner, task = await _run(Pipeline([slow, sink]))
    for i in range(10):
        await runner.pipeline.queue(LLMText(text=str(i)))
    await asyncio.sleep(0.075)  # "0" done, "1" in flight
    await runner.pipeline.queue(Interruption())
    await asyncio.sleep(0.2)
    assert slow.handled == ["0"]
    assert any(isinstance(f, Interruption) for f in sink.frames)
    # the processor keeps working after an interruption
    await runner.pipeline.queue(LLMText(text="after"))
    await asyncio.sleep(0.1)
    assert slow.handled == ["0", "after"]
    await runner.end()
    await task


async def test_runner_cancel_leaves_no_task_or_thread_behind() -> None:
    threads_before = set(threading.enumerate())
    tasks_before = asyncio.all_tasks()
    slow, sink = Slow(), Collect()
    runner, task = await _run(Pipeline([slow, Collect(), sink]))
    for i in range(20):
        await runner.pipeline.queue(LLMText(text=str(i)))
    slow.spawn(asyncio.sleep(30), "long")
    runner.cancel()
    end = await asyncio.wait_for(task, 2)
    assert end.reason == "cancelled"
    leftover = {t for t in asyncio.all_tasks() - tasks_before if not t.done()}
    assert leftover == set(), leftover
    assert set(threading.enumerate()) <= threads_before


async def test_end_frame_reaches_every_processor_in_order() -> None:
    a, b = Collect(), Collect()
    ran = await run_frames([a, b], [], end="hangup")
    assert ran.end is not None and ran.end.reason == "hangup"
    assert isinstance(a.frames[0], StartFrame) and isinstance(a.frames[-1], EndFrame)
    assert isinstance(b.frames[-1], EndFrame)


async def test_processor_error_is_reported_upstream_and_the_call_goes_on() -> None:
    head, sink = Collect(), Collect()
    ran = await run_frames([head, Boom(), sink], [LLMText(text="boom"), LLMText(text="fine")])
    assert [type(f) for f in head.upstream] == [ErrorFrame]
    assert "kaput" in ran.errors[0].message
    assert [f.text for f in sink.frames if isinstance(f, LLMText)] == ["fine"]


async def test_fast_clock_skips_idle_time_but_not_work() -> None:
    clock = FastClock()
    loop = asyncio.get_running_loop()
    w0 = loop.time()
    await clock.sleep_until(10.0)  # idle: jumps
    assert clock.now() == pytest.approx(10.0, abs=0.05)
    assert loop.time() - w0 < 0.5

    async def work() -> None:
        with clock.busy():
            await asyncio.sleep(0.3)

    w1 = loop.time()
    job = asyncio.create_task(work())
    await asyncio.sleep(0)
    await clock.sleep_until(10.2)  # busy: must wait in real time
    assert loop.time() - w1 >= 0.18
    await job
    await clock.sleep_until(20.0)
    assert clock.now() == pytest.approx(20.0, abs=0.05)
    await clock.aclose()


async def test_fast_clock_wakes_sleepers_in_deadline_order() -> None:
    clock = FastClock()
    order: list[float] = []

    async def sleeper(t: float) -> None:
        await clock.sleep_until(t)
        order.append(round(clock.now(), 2))

    await asyncio.gather(*(sleeper(t) for t in (3.0, 1.0, 2.0)))
    assert order == [1.0, 2.0, 3.0]
    await clock.aclose()
