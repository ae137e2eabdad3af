"""Liveness and readiness, for a load balancer, Docker's HEALTHCHECK and Kubernetes' probes.

``GET /healthz``: the process answers (liveness: restart it when this fails). ``GET /readyz``: it should get new
calls: its database, Redis (when configured), blob store and embedded models answer, it is not draining, and it is
below its call cap (readiness: stop sending it calls when this fails, without restarting it). Both answer without
authentication (probes send none) and say nothing secret: each check is a word (``ok``, ``unreachable``…), never
an error text that could hold an address or a credential; the call counts they show are what a scraper sees.
Each check is bounded (:data:`CHECK_TIMEOUT_S`) so a probe answers within a second even when a backend hangs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import text

from parley import __version__
from parley.api.state import AppState
from parley.calls.capacity import CAPACITY

router = APIRouter(tags=["health"])

CHECK_TIMEOUT_S = 0.5
BLOB_CHECK_EVERY_S = 5.0  # a blob store probe is a network request (S3, Azure): at most this often
_PROBE_KEY = "parley-readyz-probe"

Check = Literal["ok", "unreachable", "not configured", "draining", "full"]


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str


class Calls(BaseModel):
    in_use: int = Field(description="calls this worker holds (admitted, still running or being written)")
    limit: int = Field(description="PARLEY_MAX_CALLS in effect; 0: no cap")
    draining: bool


class Readiness(BaseModel):
    ready: bool
    not_ready: list[str] = Field(description="the checks that failed; empty when ready")
    checks: dict[str, Check] = Field(description="database, redis, registry, blobs, models, drain, capacity")
    calls: Calls


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
async def healthz() -> Health:
    """No dependency is checked: a backend down is readiness' business, and must not get the process restarted."""
    return Health(version=__version__)


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness: this worker takes new calls",
    responses={503: {"model": Readiness, "description": "not ready: `not_ready` names what failed"}},
)
async def readyz(request: Request) -> JSONResponse:
    state: AppState = request.app.state.parley
    checks = await _backends(request, state)
    checks["drain"] = "draining" if CAPACITY.draining else "ok"
    checks["capacity"] = "full" if CAPACITY.limit and CAPACITY.in_use >= CAPACITY.limit else "ok"
    failed = [name for name, value in checks.items() if value not in ("ok", "not configured")]
    body = Readiness(
        ready=not failed,
        not_ready=failed,
        checks=checks,
        calls=Calls(in_use=CAPACITY.in_use, limit=CAPACITY.limit, draining=CAPACITY.draining),
    )
    return JSONResponse(
        body.model_dump(), status_code=200 if not failed else 503, headers={"Cache-Control": "no-store"}
    )


async def _backends(request: Request, state: AppState) -> dict[str, Check]:
    """The database, Redis, the call registry and the blob store, probed at once, each within the timeout."""
    worker = getattr(request.app.state, "worker", None)
    registry = worker.registry if worker is not None else None
    probes: dict[str, Awaitable[bool]] = {"database": _database(state), "blobs": _blobs(request, state)}
    if state.settings.redis_url:
        probes["redis"] = registry.check() if registry is not None else _false()
    results = await asyncio.gather(*(_bounded(p) for p in probes.values()))
    checks: dict[str, Check] = {n: ("ok" if ok else "unreachable") for n, ok in zip(probes, results, strict=True)}
    checks.setdefault("redis", "not configured")
    # the registry's own view (its last heartbeat): new calls are refused while it is stale, even if a ping passes
    checks["registry"] = "ok" if registry is not None and registry.healthy else "unreachable"
    checks["models"] = "ok"  # the app answers only once AppState.open has warmed them (a failed stage is disabled)
    return checks


async def _false() -> bool:
    return False


async def _bounded(probe: Awaitable[bool]) -> bool:
    try:
        return await asyncio.wait_for(probe, CHECK_TIMEOUT_S)
    except Exception:
        return False


async def _database(state: AppState) -> bool:
    async with state.db.session() as s:
        await s.execute(text("SELECT 1"))
    return True


async def _blobs(request: Request, state: AppState) -> bool:
    """The blob store answers a size query for an absent key (a HEAD on S3), remembered for a few seconds."""
    cached: tuple[float, bool] | None = getattr(request.app.state, "readyz_blobs", None)
    if cached is not None and time.monotonic() - cached[0] < BLOB_CHECK_EVERY_S:
        return cached[1]
    try:
        await state.blobs.size(_PROBE_KEY)
        ok = True
    except Exception:
        ok = False
    request.app.state.readyz_blobs = (time.monotonic(), ok)
    return ok
