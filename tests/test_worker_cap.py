"""The hard per-worker call cap (PARLEY_MAX_CALLS): at twice the cap, real talk calls past it are refused at once
with 1013 and the reason, the admitted ones talk on undisturbed, readiness is false while full, and a slot freed
is a call taken again."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from .support.service import Service, running_service
from .support.worker_calls import hang_up, make_agent, readyz, start_calls

CAP = 4


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("worker-cap"), PARLEY_MAX_CALLS=str(CAP)) as svc:
        yield svc


def test_twice_the_cap(service: Service, key: str) -> None:
    agent_id = make_agent(service, key)
    assert readyz(service)[0] == 200

    async def scenario() -> None:
        callers, tasks = await start_calls(service, key, agent_id, 2 * CAP)
        admitted = [c for c in callers if c.call_id is not None]
        refused = [c for c in callers if c.refused is not None]
        assert len(admitted) == CAP and len(refused) == CAP, [(c.call_id, c.refused) for c in callers]
        for c in refused:
            assert c.refused is not None and c.refused[0] == 1013 and "busy" in c.refused[1], c.refused
            assert "limit of 4 calls" in c.refused[1]
            assert c.refused_after_s is not None and c.refused_after_s < 1.0, c.refused_after_s
        status, body = readyz(service)
        assert status == 503 and body["not_ready"] == ["capacity"], body
        assert body["calls"] == {"in_use": CAP, "limit": CAP, "draining": False}
        await asyncio.sleep(3)  # the admitted calls talk on
        one = admitted[0]
        await hang_up([one], [tasks[callers.index(one)]])
        assert one.end_reason == "caller-hangup"
        # a freed slot takes a call again
        more, more_tasks = await start_calls(service, key, agent_id, 1)
        assert more[0].call_id is not None, more[0].refused
        rest = [c for c in admitted[1:]] + more
        rest_tasks = [tasks[callers.index(c)] for c in admitted[1:]] + more_tasks
        await hang_up(rest, rest_tasks)
        await asyncio.gather(*tasks)
        for c in admitted:
            assert c.frames > 100, c  # 20 ms frames: more than 2 s of the greeting heard
            assert c.max_gap_s < 0.5, c.max_gap_s
            assert c.end_reason == "caller-hangup" and c.closed is None, c

    asyncio.run(scenario())
    status, body = readyz(service)
    assert status == 200 and body["calls"]["in_use"] == 0, body
