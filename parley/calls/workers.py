"""This worker among many: what the app's lifespan sets up for calls at start and takes down at the end.

At start: the call registry (Redis when configured, :mod:`parley.calls.registry`) joined and wired to the live
calls, and the admission cap configured (:mod:`parley.calls.capacity`). At the end: any call still live is ended
as ``worker-drain`` and written (``parley serve`` has drained on SIGTERM already; this is for every other way a
server stops), then the worker leaves the registry, all before the database closes.
"""

from __future__ import annotations

from dataclasses import dataclass

from parley.calls import live_bus
from parley.calls.capacity import CAPACITY, default_cap
from parley.calls.drain import drain
from parley.calls.hangups import LIVE_CALLS
from parley.calls.registry import CallRegistry, open_registry
from parley.config import Settings
from parley.store.blobs import BlobStore
from parley.store.db import Database


@dataclass
class Worker:
    registry: CallRegistry
    settings: Settings
    bus: live_bus.LiveBus | None = None


def cap_for(settings: Settings) -> int:
    """PARLEY_MAX_CALLS, else cores × PARLEY_CALLS_PER_CORE; 0 is no cap."""
    return settings.max_calls if settings.max_calls is not None else default_cap(settings.calls_per_core)


async def join(settings: Settings, db: Database, blobs: BlobStore) -> Worker:
    registry = open_registry(settings.redis_url, settings.worker_id, settings.registry_ttl_s)
    LIVE_CALLS.registry = registry
    CAPACITY.configure(cap_for(settings), lambda: registry.healthy)
    await registry.start(db, blobs)  # a Redis down at start-up: started anyway, refusing calls until it answers
    bus = live_bus.LiveBus(settings.redis_url, settings.worker_id, registry) if settings.redis_url else None
    if bus is not None:  # live events and hang-ups across workers over pub/sub (the database polls otherwise)
        await bus.start()
        live_bus.install(bus)
        LIVE_CALLS.bus_live = lambda: bus.listening
    return Worker(registry, settings, bus)


async def leave(worker: Worker) -> None:
    if CAPACITY.in_use:
        await drain(0.0)
    CAPACITY.start_drain()  # nothing more is taken while the rest shuts down
    if worker.bus is not None:
        LIVE_CALLS.bus_live = lambda: False
        live_bus.install(None)
        await worker.bus.stop()
    await worker.registry.stop()
    LIVE_CALLS.registry = None
