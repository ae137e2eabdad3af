"""Rate limits in memory and in the real Redis at 127.0.0.1:6379, shared across instances and processes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from parley.store.ratelimit import RateDecision, RateLimiter

ROOT = Path(__file__).resolve().parents[1]
REDIS_URL = os.environ.get("PARLEY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


async def _require_redis() -> None:
    client = aioredis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception as e:
        pytest.fail(f"Redis is not reachable at {REDIS_URL} ({e}); start it or set PARLEY_TEST_REDIS_URL")
    finally:
        await client.aclose()


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[RateLimiter]:
    if request.param == "redis":
        await _require_redis()
    rl = RateLimiter(REDIS_URL if request.param == "redis" else None)
    yield rl
    await rl.aclose()


def _key() -> str:
    return f"test:{uuid.uuid4().hex}"  # unique per run, so leftovers in a shared Redis never interfere


async def test_allows_up_to_the_limit_then_refuses(limiter: RateLimiter) -> None:
    key = _key()
    decisions = [await limiter.hit(key, "3/minute") for _ in range(3)]
    assert [(d.allowed, d.remaining, d.limit) for d in decisions] == [(True, 2, 3), (True, 1, 3), (True, 0, 3)]
    assert all(d.retry_after == 0 for d in decisions)
    refused = await limiter.hit(key, "3/minute")
    assert refused == RateDecision(False, refused.retry_after, 0, 3)
    assert 1 <= refused.retry_after <= 60


async def test_keys_and_limits_are_independent(limiter: RateLimiter) -> None:
    a, b = _key(), _key()
    assert (await limiter.hit(a, "1/minute")).allowed
    assert not (await limiter.hit(a, "1/minute")).allowed
    assert (await limiter.hit(b, "1/minute")).allowed
    assert (await limiter.hit(a, "5/hour")).allowed  # another limit on the same key has its own window


async def test_window_moves_on(limiter: RateLimiter) -> None:
    key = _key()
    assert (await limiter.hit(key, "2/second")).allowed
    assert (await limiter.hit(key, "2/second")).allowed
    refused = await limiter.hit(key, "2/second")
    assert not refused.allowed and refused.retry_after == 1  # never less than 1 s: Retry-After is whole seconds
    await asyncio.sleep(1.05)
    assert (await limiter.hit(key, "2/second")).allowed


async def test_bad_limit_string_is_rejected() -> None:
    rl = RateLimiter(None)
    with pytest.raises(ValueError):
        await rl.hit(_key(), "lots/minute")
    await rl.aclose()


async def test_redis_limit_is_shared_between_instances() -> None:
    await _require_redis()
    first, second = RateLimiter(REDIS_URL), RateLimiter(REDIS_URL)
    key = _key()
    try:
        assert (await first.hit(key, "4/minute")).remaining == 3
        assert (await second.hit(key, "4/minute")).remaining == 2
        assert (await first.hit(key, "4/minute")).remaining == 1
        assert (await second.hit(key, "4/minute")).remaining == 0
        assert not (await first.hit(key, "4/minute")).allowed
        assert not (await second.hit(key, "4/minute")).allowed
    finally:
        await first.aclose()
        await second.aclose()


_CHILD = """
import asyncio, json, sys
from parley.store.ratelimit import RateLimiter

async def main() -> None:
    rl = RateLimiter(sys.argv[1])
    print(json.dumps([(await rl.hit(sys.argv[2], "5/minute")).allowed for _ in range(3)]))
    await rl.aclose()

asyncio.run(main())
"""


async def test_redis_limit_is_shared_between_processes() -> None:
    """Two worker processes, one budget: 5 allowed among the 3 + 3 hits, then this process is refused too."""
    await _require_redis()
    key = _key()
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", _CHILD, REDIS_URL, key, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT
        )
        for _ in range(2)
    ]
    results = []
    for proc in procs:
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        results += json.loads(out)
    assert sorted(results) == [False, True, True, True, True, True]
    rl = RateLimiter(REDIS_URL)
    try:
        assert not (await rl.hit(key, "5/minute")).allowed
    finally:
        await rl.aclose()


async def test_redis_going_away_refuses_clearly_and_a_restart_costs_no_request(tmp_path: Path) -> None:
    """A Redis that stops: each request is refused with RateLimitUnavailable (the API's 503 + Retry-After), never
    let through unlimited, never a raw connection error (a 500); after it restarts the very first request is
    counted again (the dead pooled connection is retried once on a fresh one)."""
    from parley.store.ratelimit import RateLimitUnavailable

    from .test_registry import RedisServer

    server = RedisServer(tmp_path)
    server.start()
    limiter = RateLimiter(server.url)
    try:
        assert (await limiter.hit("addr:x", "10/minute")).allowed
        server.stop()
        for _ in range(2):
            with pytest.raises(RateLimitUnavailable, match="unreachable"):
                await limiter.hit("addr:x", "10/minute")
        server.start()  # a fresh server, on the same port, with no counters
        decision = await limiter.hit("addr:x", "10/minute")
        assert decision.allowed and decision.remaining == 9
        server.stop()  # a restart between two requests: the pooled connection is dead, nobody noticed yet
        server.start()
        assert (await limiter.hit("addr:x", "10/minute")).allowed
    finally:
        await limiter.aclose()
        server.stop()
