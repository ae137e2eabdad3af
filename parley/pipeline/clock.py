"""Call time: a real clock for live calls and a fast clock for offline simulation.

Every stage stamps times from the call's clock, and everything that paces audio
(input feeders, playout) waits on it, so the same pipeline runs live or "as fast as
possible" with identical timestamps semantics.

The fast clock is a small discrete-event scheduler: when no work is in flight
(no queued data frame, no model call running) it jumps straight to the next
deadline; while work is in flight it runs at wall-clock speed, so model latency is
measured honestly in simulated time.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the call started."""
        ...

    async def sleep_until(self, t: float) -> None:
        """Wait until call time ``t``."""
        ...

    def hold(self) -> None:
        """Work started: time must flow at wall-clock speed until :meth:`release`."""
        ...

    def release(self) -> None: ...

    @contextmanager
    def busy(self) -> Iterator[None]: ...

    async def aclose(self) -> None: ...


class RealClock:
    """Wall-clock call time (monotonic)."""

    def __init__(self) -> None:
        self._t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self._t0

    async def sleep_until(self, t: float) -> None:
        delay = t - self.now()
        await asyncio.sleep(delay if delay > 0 else 0)

    def hold(self) -> None:
        pass

    def release(self) -> None:
        pass

    @contextmanager
    def busy(self) -> Iterator[None]:
        yield

    async def aclose(self) -> None:
        pass


class FastClock:
    """Simulated call time that skips idle waits and runs in real time while busy."""

    #: event-loop turns to let freshly woken work register itself before jumping
    _SETTLE_TURNS = 4

    def __init__(self) -> None:
        self._t0 = time.monotonic()
        self._skipped = 0.0
        self._busy = 0
        self._seq = itertools.count()
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._kick = asyncio.Event()
        self._driver: asyncio.Task[None] | None = None

    def now(self) -> float:
        return time.monotonic() - self._t0 + self._skipped

    async def sleep_until(self, t: float) -> None:
        if t <= self.now():
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (t, next(self._seq), fut))
        if self._driver is None or self._driver.done():
            self._driver = asyncio.get_running_loop().create_task(self._drive(), name="fast-clock")
        self._kick.set()
        await fut

    def hold(self) -> None:
        self._busy += 1

    def release(self) -> None:
        self._busy -= 1
        if self._busy <= 0:
            self._busy = 0
            self._kick.set()

    @contextmanager
    def busy(self) -> Iterator[None]:
        self.hold()
        try:
            yield
        finally:
            self.release()

    async def aclose(self) -> None:
        if self._driver is not None:
            self._driver.cancel()
            try:
                await self._driver
            except asyncio.CancelledError:
                pass
        for _, _, fut in self._sleepers:
            fut.cancel()
        self._sleepers.clear()

    def _wake_due(self) -> None:
        now = self.now()
        while self._sleepers and (self._sleepers[0][0] <= now or self._sleepers[0][2].done()):
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)

    async def _drive(self) -> None:
        while True:
            self._wake_due()
            if not self._sleepers:
                self._kick.clear()
                await self._kick.wait()
                continue
            for _ in range(self._SETTLE_TURNS):
                await asyncio.sleep(0)
            self._wake_due()
            if not self._sleepers:
                continue
            deadline = self._sleepers[0][0]
            if self._busy == 0:
                gap = deadline - self.now()
                if gap > 0:
                    self._skipped += gap
                continue
            self._kick.clear()
            try:
                await asyncio.wait_for(self._kick.wait(), timeout=max(0.0, deadline - self.now()))
            except TimeoutError:
                pass
