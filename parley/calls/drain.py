"""Drain: a worker told to stop (SIGTERM: a rolling release, a scale-down) cuts no call before it must.

It stops taking calls at once (readiness false, SIP OPTIONS and INVITEs 503, new sockets 1013, answer webhooks
503: :mod:`parley.calls.capacity`), lets the calls it holds go on for up to ``PARLEY_DRAIN_SECS``, then ends the
rest as ``worker-drain`` with a clean hang-up (the talk socket's end message, a BYE, the carrier's hang-up), and
waits until every call's record and recording are written: a :class:`~parley.calls.capacity.Slot` is released
only once its call's record is closed. Only then may the server close its connections and the app its database.

``parley serve`` runs this on SIGTERM before uvicorn's own shutdown (:class:`DrainingServer`); the app's lifespan
runs it again with no grace as a safety net for servers that stop otherwise.
"""

from __future__ import annotations

import asyncio
import signal
import time
from types import FrameType
from typing import Any

import structlog
import uvicorn

from parley.calls.capacity import CAPACITY, Capacity
from parley.calls.hangups import LIVE_CALLS, LiveCalls
from parley.calls.record_backlog import flush_pending

log = structlog.get_logger(__name__)

WORKER_DRAIN = "worker-drain"
FLUSH_S = 15.0  # after the deadline: how long ended calls get to write their records and recordings


async def drain(
    grace_s: float, capacity: Capacity = CAPACITY, calls: LiveCalls = LIVE_CALLS, flush_s: float = FLUSH_S
) -> dict[str, int]:
    """Stop taking calls, wait up to ``grace_s`` for the live ones, end the rest; what happened, counted."""
    capacity.start_drain()
    started = time.monotonic()
    at_start = capacity.in_use
    log.warning("drain_started", calls=at_start, grace_s=grace_s)
    while capacity.in_use and time.monotonic() - started < grace_s:  # noqa: ASYNC110 - a count, polled 10 a second
        await asyncio.sleep(0.1)
    ended = 0
    flush_until = time.monotonic() + flush_s
    while capacity.in_use and time.monotonic() < flush_until:
        ended += calls.end_all(WORKER_DRAIN)  # again each round: a call still loading its models registers late
        await asyncio.sleep(0.05)
    # records still waiting for a database that went away (parley.calls.record_backlog): the rest of the flush time
    unwritten = await flush_pending(max(0.0, flush_until - time.monotonic()))
    result = {"calls_at_start": at_start, "ended_by_drain": ended, "left": capacity.in_use, "unwritten": unwritten}
    log.warning("drain_done", seconds=round(time.monotonic() - started, 2), **result)
    return result


class DrainingServer(uvicorn.Server):
    """uvicorn, with SIGTERM draining calls before uvicorn's shutdown begins (which closes every connection, so
    every WebSocket call, then runs the app's lifespan shutdown that closes the database). The process then exits
    0. A second SIGTERM, or SIGINT (Ctrl+C), stops at once as uvicorn does."""

    def __init__(self, config: uvicorn.Config, grace_s: float) -> None:
        super().__init__(config)
        self.grace_s = grace_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain: asyncio.Task[Any] | None = None
        self._term = False

    async def serve(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGTERM or self._loop is None or self.should_exit:
            super().handle_exit(sig, frame)
            return
        if self._term:  # a second SIGTERM: stop now
            self.should_exit = True
            return
        self._term = True
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        async def run() -> None:
            try:
                await drain(self.grace_s)
            finally:
                self.should_exit = True  # uvicorn's main loop notices within a tick; no signal re-raised: exit 0

        self._drain = asyncio.get_running_loop().create_task(run(), name="drain")
