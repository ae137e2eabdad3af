"""The campaign scheduler against real SQLite and PostgreSQL, with a fast clock and a recording fake dial.

Each test runs ticks by hand (``run_once``: a tick, then its dials) while moving the clock, so hours of schedule
pass in a second and nothing waits on wall time. The end-to-end run over SIPp and two `parley serve` workers is
tests/test_campaigns_run.py.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, time, timedelta
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio
from sqlalchemy import delete, select, update

from parley.calls.capacity import Capacity
from parley.campaigns import dialing, queue
from parley.campaigns.schedule import CallingWindow, CampaignSchedule, RetryPolicy, RetryRule
from parley.campaigns.scheduler import CampaignScheduler
from parley.campaigns.settings import CampaignSettings
from parley.config import Settings
from parley.store.db import Database
from parley.store.models import Agent, Webhook, WebhookDelivery
from parley.store.models_campaigns import Campaign, CampaignContact, DoNotCall
from tests.support.campaigns import (
    FakeDial,
    FastClock,
    Person,
    attempts,
    campaign,
    contacts,
    drop_tenant,
    in_flight,
    new_agent,
    new_tenant,
    numbers,
    running_campaign,
)
from tests.support.store import db

__all__ = ["db"]
pytestmark = pytest.mark.asyncio(loop_scope="module")

MONDAY = datetime(2026, 6, 1, tzinfo=UTC)  # 00:00 UTC, Monday
ANY_TIME = CampaignSchedule(windows=[], max_calls_per_minute=6000, max_concurrent=50)


@pytest_asyncio.fixture(loop_scope="module")
async def tenant(db: Database) -> AsyncIterator[uuid.UUID]:
    """A tenant of its own per test, dropped after it (its campaigns with it: no other test's scheduler sees them)."""
    tenant_id = await new_tenant(db)
    yield tenant_id
    await drop_tenant(db, tenant_id)


def scheduler(
    db: Database, clock: FastClock, dial: FakeDial, tenant_max: int = 20, worker: str = "w1"
) -> CampaignScheduler:
    settings = CampaignSettings(campaign_tenant_max_concurrent=tenant_max)
    return CampaignScheduler(db, settings=settings, dial=dial, clock=clock, capacity=Capacity(), worker_id=worker)


async def run_until(
    sched: CampaignScheduler, clock: FastClock, done: Callable[[], Awaitable[bool]], step_s: float,
    max_ticks: int = 2000, each: Callable[[], Awaitable[None]] | None = None,
) -> int:  # fmt: skip
    """Ticks, moving the clock ``step_s`` after each, until ``done``; the ticks it took."""
    for ticks in range(1, max_ticks + 1):
        await sched.run_once()
        if each is not None:
            await each()
        if await done():
            return ticks
        clock.advance(step_s)
    raise AssertionError(f"not done after {max_ticks} ticks")


def completed(database: Database, campaign_id: uuid.UUID) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await campaign(database, campaign_id)).status == "completed"

    return check


async def test_windows_are_kept_in_each_contacts_time_zone(db: Database, tenant: uuid.UUID) -> None:
    zones = ["Asia/Tokyo", "Europe/Paris", "America/Los_Angeles", "America/New_York"]
    people = [Person(f"+1555100{i:04d}", zones[i % 4], {"first_name": f"P{i}"}) for i in range(11)]
    people.append(
        Person("+15551009999", "Europe/Paris", {"first_name": "Zoé", "_voicemail": "injected"}, "fr", "Bonjour")
    )
    schedule = CampaignSchedule(windows=[CallingWindow(start=time(9), end=time(11))], max_calls_per_minute=600,
                                max_concurrent=20)  # fmt: skip
    clock = FastClock(MONDAY - timedelta(hours=2))  # Sunday 22:00 UTC: no window is open anywhere yet
    dial = FakeDial(db, clock)
    cid = await running_campaign(db, tenant, await new_agent(db, tenant), people, schedule)
    await run_until(scheduler(db, clock, dial), clock, completed(db, cid), step_s=300)
    by_phone = {p.phone: p for p in people}
    assert sorted(d.to for d in dial.dialled) == sorted(by_phone)
    for d in dial.dialled:
        local = d.at.astimezone(ZoneInfo(by_phone[d.to].timezone))
        assert local.weekday() == 0 and 9 <= local.hour < 11, (d.to, local)  # Monday 09:00-11:00 local
        person = by_phone[d.to]
        overrides = {"_language": person.language, "_greeting": person.greeting} if person.language else {}
        assert d.variables == {"first_name": person.variables["first_name"], **overrides}  # no "_" column passes
    first = {by_phone[d.to].timezone: d.at for d in reversed(dial.dialled)}
    assert first["Asia/Tokyo"] == MONDAY  # 09:00 JST
    assert first["Europe/Paris"] == MONDAY + timedelta(hours=7)  # 09:00 CEST
    assert first["America/New_York"] == MONDAY + timedelta(hours=13)  # 09:00 EDT
    assert first["America/Los_Angeles"] == MONDAY + timedelta(hours=16)  # 09:00 PDT


async def test_never_more_in_flight_than_max_concurrent(db: Database, tenant: uuid.UUID) -> None:
    clock = FastClock(MONDAY)
    dial = FakeDial(db, clock, script=lambda to, n: "hold")
    schedule = CampaignSchedule(windows=[], max_calls_per_minute=6000, max_concurrent=3)
    cid = await running_campaign(db, tenant, await new_agent(db, tenant), [Person(p) for p in numbers(20)], schedule)
    peaks: list[int] = []

    async def measure_then_hang_up() -> None:
        peaks.append(await in_flight(db, [cid]))
        if len(peaks) % 2 == 0:
            await dial.end_held()

    await run_until(scheduler(db, clock, dial), clock, completed(db, cid), step_s=1, each=measure_then_hang_up)
    assert max(peaks) == 3 and len(dial.dialled) == 20
    assert {c.state for c in (await contacts(db, cid)).values()} == {"done"}


async def test_the_per_minute_rate_is_a_sliding_window_spread_out(db: Database, tenant: uuid.UUID) -> None:
    clock = FastClock(MONDAY)
    dial = FakeDial(db, clock)
    schedule = CampaignSchedule(windows=[], max_calls_per_minute=6, max_concurrent=50)
    await running_campaign(db, tenant, await new_agent(db, tenant), [Person(p) for p in numbers(30)], schedule)
    sched = scheduler(db, clock, dial)
    for _ in range(300):  # five minutes, a tick a second
        await sched.run_once()
        clock.advance(1)
    times = [d.at for d in dial.dialled]
    assert len(times) == 30  # 6 a minute for 5 minutes: the rate is reached, not just respected
    for t in times:
        assert sum(1 for u in times if t - timedelta(seconds=60) < u <= t) <= 6
        assert sum(1 for u in times if t - timedelta(seconds=10) < u <= t) <= 1  # ceil(6 / 6) per 10 s


async def test_a_fast_rate_is_spread_over_each_second(db: Database, tenant: uuid.UUID) -> None:
    clock = FastClock(MONDAY)
    dial = FakeDial(db, clock)
    schedule = CampaignSchedule(windows=[], max_calls_per_minute=120, max_concurrent=50)
    await running_campaign(db, tenant, await new_agent(db, tenant), [Person(p) for p in numbers(60)], schedule)
    sched = scheduler(db, clock, dial)
    for _ in range(20):
        await sched.run_once()
        clock.advance(1)
    per_tick = [sum(1 for d in dial.dialled if d.at == MONDAY + timedelta(seconds=i)) for i in range(20)]
    assert per_tick == [2] * 20  # 120 a minute: two a second, never 20 at once


async def test_the_tenant_limit_holds_across_its_campaigns(db: Database, tenant: uuid.UUID) -> None:
    clock = FastClock(MONDAY)
    dial = FakeDial(db, clock, script=lambda to, n: "hold")
    agent = await new_agent(db, tenant)
    schedule = CampaignSchedule(windows=[], max_calls_per_minute=6000, max_concurrent=3)
    ids = [await running_campaign(db, tenant, agent, [Person(p) for p in numbers(9, prefix)], schedule)
           for prefix in ("+1555", "+1666")]  # fmt: skip
    peaks: list[int] = []

    async def measure_then_hang_up() -> None:
        peaks.append(await in_flight(db, ids))
        await dial.end_held()

    async def both_done() -> bool:
        return all([await completed(db, i)() for i in ids])

    await run_until(scheduler(db, clock, dial, tenant_max=4), clock, both_done, step_s=1, each=measure_then_hang_up)
    assert max(peaks) == 4 and len(dial.dialled) == 18  # 3 + 1, never 3 + 3


async def test_retries_follow_each_outcomes_rule_and_spacing(db: Database, tenant: uuid.UUID) -> None:
    plan = {"+15550000001": ["busy", "busy", "answer"], "+15550000002": ["no-answer"] * 3,
            "+15550000003": ["raise", "raise"], "+15550000004": ["short"], "+15550000005": ["machine"],
            "+15550000006": ["decline", "answer"]}  # fmt: skip
    clock = FastClock(MONDAY)
    dial = FakeDial(db, clock, script=lambda to, n: plan[to][n - 1])
    retry = RetryPolicy(busy=RetryRule(count=2, spacing_s=600), no_answer=RetryRule(count=2, spacing_s=900),
                        failed=RetryRule(count=1, spacing_s=300))  # fmt: skip
    cid = await running_campaign(db, tenant, await new_agent(db, tenant), [Person(p) for p in plan], ANY_TIME,
                                 retry, voicemail={"detect": True, "message": "Call us back."})  # fmt: skip
    await run_until(scheduler(db, clock, dial), clock, completed(db, cid), step_s=60)
    final = await contacts(db, cid)
    got = {p: (c.state, c.outcome, c.attempts) for p, c in final.items()}
    assert got == {
        "+15550000001": ("done", "answered", 3),
        "+15550000002": ("failed", "no_answer", 3),
        "+15550000003": ("failed", "failed", 2),  # the dial raised: failed at once, retried once
        "+15550000004": ("done", "hung_up_early", 1),
        "+15550000005": ("done", "voicemail", 1),
        "+15550000006": ("done", "answered", 2),  # 603 Decline counts as busy
    }
    for phone, spacing in (("+15550000001", 600), ("+15550000002", 900), ("+15550000003", 300)):
        at = [d.at for d in dial.dialled if d.to == phone]
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(at)]
        assert all(spacing <= g <= spacing + 120 for g in gaps), (phone, gaps)  # settled a tick later at most
    assert all(d.machine_detection and d.variables == {"_voicemail": "Call us back."} for d in dial.dialled)
    outcomes = [a.outcome for a in await attempts(db, cid) if a.contact_id == final["+15550000001"].id]
    assert outcomes == ["busy", "busy", "answered"]


async def test_a_number_put_on_the_do_not_call_list_after_import_is_skipped(db: Database, tenant: uuid.UUID) -> None:
    clock = FastClock(MONDAY)
    dial = FakeDial(db, clock)
    cid = await running_campaign(db, tenant, await new_agent(db, tenant), [Person(p) for p in numbers(3)], ANY_TIME)
    async with db.session() as s:
        s.add(DoNotCall(tenant_id=tenant, phone=numbers(3)[1], reason="asked not to be called"))
    report = await scheduler(db, clock, dial).run_once()
    assert report.dnc == 1 and sorted(d.to for d in dial.dialled) == [numbers(3)[0], numbers(3)[2]]
    skipped = (await contacts(db, cid))[numbers(3)[1]]
    assert (skipped.state, skipped.outcome, skipped.attempts) == ("dnc", "dnc", 0)


async def test_completion_queues_campaign_completed_once(db: Database, tenant: uuid.UUID) -> None:
    clock = FastClock(MONDAY)
    dial = FakeDial(db, clock, script=lambda to, n: "busy" if to.endswith("1") else "answer")
    async with db.session() as s:
        s.add(Webhook(tenant_id=tenant, url="https://hooks.example.com/x", events=["campaign.completed"],
                      ciphertext="unused"))  # fmt: skip
    retry = RetryPolicy(busy=RetryRule(count=0))
    cid = await running_campaign(db, tenant, await new_agent(db, tenant), [Person(p) for p in numbers(4)], ANY_TIME,
                                 retry)  # fmt: skip
    sched = scheduler(db, clock, dial)
    await run_until(sched, clock, completed(db, cid), step_s=1)
    for _ in range(3):
        await sched.run_once()  # a completed campaign is not completed again
    done = await campaign(db, cid)
    assert done.completed_at is not None and done.completed_at <= clock.now
    async with db.session() as s:
        rows = list(await s.scalars(select(WebhookDelivery).where(WebhookDelivery.tenant_id == tenant)))
    assert [r.event_type for r in rows] == ["campaign.completed"]
    data = rows[0].payload["data"]
    assert data["campaign_id"] == str(cid)
    assert data["states"] == {"done": 3, "failed": 1} and data["outcomes"] == {"answered": 3, "busy": 1}


async def test_a_lost_attempt_is_reconciled_and_never_dialled_again(db: Database, tenant: uuid.UUID) -> None:
    clock = FastClock(MONDAY)
    dial = FakeDial(db, clock, script=lambda to, n: "ring" if to.endswith("1") else "answer")
    cid = await running_campaign(db, tenant, await new_agent(db, tenant), [Person(p) for p in numbers(2)], ANY_TIME)
    crashed = await campaign(db, cid)
    async with db.session() as s:  # a worker claims +15550000000, commits its attempt, and dies before dialing
        claims = (await queue.claim(s, crashed, clock(), _limits(1), 1, None, "dead-worker", not db.is_sqlite)).claims
    assert [c.phone for c in claims] == [numbers(2)[0]]
    sched = scheduler(db, clock, dial)
    await run_until(sched, clock, completed(db, cid), step_s=30, max_ticks=100)
    first, *rest = [a for a in await attempts(db, cid) if a.contact_id == claims[0].contact_id]
    assert (first.number, first.call_id, first.outcome) == (1, claims[0].call_id, "dial_lost")
    assert [(a.number, a.outcome) for a in rest] == [(2, "answered")]  # the retry is a new attempt
    assert claims[0].call_id not in {d.call_id for d in dial.dialled}  # attempt 1 was never dialled
    ringing = [a for a in await attempts(db, cid) if a.contact_id != claims[0].contact_id]
    assert [a.outcome for a in ringing] == ["dial_lost", "dial_lost"]  # still 'dialing' past 300 s, twice
    assert dial.times(numbers(2)[0]) == 1


def _limits(n: int) -> queue.pacing.Limits:
    return queue.pacing.Limits(max_concurrent=n, max_calls_per_minute=60, tenant_max_concurrent=20)


async def test_a_deleted_agent_pauses_the_campaign(db: Database, tenant: uuid.UUID) -> None:
    clock = FastClock(MONDAY)
    dial = FakeDial(db, clock)
    agent = await new_agent(db, tenant)
    cid = await running_campaign(db, tenant, agent, [Person(p) for p in numbers(2)], ANY_TIME)
    async with db.session() as s:
        await s.execute(delete(Agent).where(Agent.id == agent))
    report = await scheduler(db, clock, dial).run_once()
    paused = await campaign(db, cid)
    assert (report.paused, paused.status, paused.status_reason, dial.dialled) == (1, "paused", "agent deleted", [])


async def test_past_end_at_the_rest_fail_and_the_campaign_completes(db: Database, tenant: uuid.UUID) -> None:
    clock = FastClock(MONDAY)
    dial = FakeDial(db, clock, script=lambda to, n: "busy")
    schedule = CampaignSchedule(windows=[], end_at=MONDAY + timedelta(minutes=30), max_calls_per_minute=1,
                                max_concurrent=1)  # fmt: skip
    no_retry = RetryPolicy(busy=RetryRule(count=0))
    cid = await running_campaign(db, tenant, await new_agent(db, tenant), [Person(p) for p in numbers(100)], schedule,
                                 no_retry)  # fmt: skip
    await run_until(scheduler(db, clock, dial), clock, completed(db, cid), step_s=60)
    assert clock.now >= MONDAY + timedelta(minutes=30) and 25 <= len(dial.dialled) <= 31
    final = (await contacts(db, cid)).values()
    assert sum(c.outcome == queue.CAMPAIGN_ENDED for c in final) == 100 - len({d.to for d in dial.dialled})
    assert {c.state for c in final} == {"failed"}


async def test_two_schedulers_racing_on_postgresql_never_claim_one_attempt_twice(
    db: Database, tenant: uuid.UUID
) -> None:
    if db.is_sqlite:
        pytest.skip("many workers share PostgreSQL; SQLite is one process's database")
    other = Database(db.url)
    clock = FastClock(MONDAY)
    dials = [FakeDial(db, clock, script=lambda to, n: "hold"), FakeDial(other, clock, script=lambda to, n: "hold")]
    schedule = CampaignSchedule(windows=[], max_calls_per_minute=6000, max_concurrent=10)
    cid = await running_campaign(db, tenant, await new_agent(db, tenant), [Person(p) for p in numbers(200)], schedule)
    pair = [scheduler(db, clock, dials[0], worker="a"), scheduler(other, clock, dials[1], worker="b")]
    try:
        for round_ in range(200):
            order = pair if round_ % 2 else pair[::-1]
            await asyncio.gather(*(s.run_once() for s in order))
            assert await in_flight(db, [cid]) <= 10
            for d in dials:
                await d.end_held()
            if await completed(db, cid)():
                break
            clock.advance(1)
    finally:
        await other.close()
    dialled = dials[0].dialled + dials[1].dialled
    assert len(dialled) == 200 and len({d.call_id for d in dialled}) == 200 and len({d.to for d in dialled}) == 200
    assert dials[0].dialled and dials[1].dialled  # both took part
    found = await attempts(db, cid)
    assert len(found) == 200 and {a.number for a in found} == {1}
    assert (await campaign(db, cid)).status == "completed"


async def test_a_test_call_dials_with_the_campaigns_agent_and_carrier(db: Database, tenant: uuid.UUID) -> None:
    clock = FastClock(MONDAY)
    dial = FakeDial(db, clock)
    agent = await new_agent(db, tenant)
    cid = await running_campaign(db, tenant, agent, [], ANY_TIME, voicemail={"detect": True, "message": "Hi."})
    found = await campaign(db, cid)
    call = await dialing.test_call(None, db, found, "+15557770000", dial=dial, variables={"first_name": "Ann"})
    assert call.called == "+15557770000" and call.direction == "outbound"
    assert [(d.to, d.provider, d.variables, d.machine_detection) for d in dial.dialled] == [
        ("+15557770000", "sip", {"first_name": "Ann", "_voicemail": "Hi."}, True)
    ]
    async with db.session() as s:
        s.add(DoNotCall(tenant_id=tenant, phone="+15557770001"))
    with pytest.raises(dialing.TestCallRefused, match="do-not-call"):
        await dialing.test_call(None, db, found, "+15557770001", dial=dial)
    async with db.session() as s:
        await s.execute(delete(Agent).where(Agent.id == agent))
    with pytest.raises(dialing.TestCallRefused, match="agent deleted"):
        await dialing.test_call(None, db, found, "+15557770000", dial=dial)
    assert len(dial.dialled) == 1 and await attempts(db, cid) == []


async def test_a_draining_or_full_worker_claims_nothing_more(db: Database, tenant: uuid.UUID) -> None:
    clock = FastClock(MONDAY)
    dial = FakeDial(db, clock, script=lambda to, n: "ring")
    cid = await running_campaign(db, tenant, await new_agent(db, tenant), [Person(p) for p in numbers(10)], ANY_TIME)
    sched = scheduler(db, clock, dial)
    sched.capacity.configure(limit=4)
    for _ in range(3):  # ringing calls have no slot yet, but will take one here: they count against the cap
        await sched.run_once()
        clock.advance(1)
    assert len(dial.dialled) == 4
    sched.capacity.configure(limit=100)
    sched.capacity.start_drain()
    for _ in range(3):
        await sched.run_once()
        clock.advance(1)
    assert len(dial.dialled) == 4 and await in_flight(db, [cid]) == 4


async def test_cancel_and_pause_let_calls_under_way_finish(db: Database, tenant: uuid.UUID) -> None:
    clock = FastClock(MONDAY)
    dial = FakeDial(db, clock, script=lambda to, n: "hold")
    retry = RetryPolicy(no_answer=RetryRule(count=2, spacing_s=0))
    agent = await new_agent(db, tenant)
    schedule = CampaignSchedule(windows=[], max_concurrent=2, max_calls_per_minute=600)
    paused_id, cancelled_id = [await running_campaign(db, tenant, agent, [Person(p) for p in numbers(4, prefix)],
                                                      schedule, retry) for prefix in ("+1555", "+1666")]  # fmt: skip
    sched = scheduler(db, clock, dial)
    await sched.run_once()
    assert await in_flight(db, [paused_id, cancelled_id]) == 4
    async with db.session() as s:  # what the API's pause and cancel do
        for cid, status in ((paused_id, "paused"), (cancelled_id, "cancelled")):
            found = await s.get(Campaign, cid)
            assert found is not None
            found.status = status
        waiting = (CampaignContact.campaign_id == cancelled_id, CampaignContact.state == "pending")
        await s.execute(update(CampaignContact).where(*waiting).values(state="cancelled"))
    await dial.end_held(failed="no-answer")
    for _ in range(3):
        await sched.run_once()
        clock.advance(1)
    assert len(dial.dialled) == 4 and await in_flight(db, [paused_id, cancelled_id]) == 0  # nothing new dialled
    paused = (await contacts(db, paused_id)).values()
    assert [c.state for c in paused] == ["pending"] * 4 and sum(c.outcome == "no_answer" for c in paused) == 2
    cancelled = (await contacts(db, cancelled_id)).values()
    assert [c.state for c in cancelled] == ["cancelled"] * 4  # the retry it earned is cancelled too
    assert (await campaign(db, paused_id)).status == "paused"
    assert (await campaign(db, cancelled_id)).status == "cancelled"


async def test_a_worker_that_cannot_dial_the_carrier_pauses_the_campaign_with_why(
    db: Database, tenant: uuid.UUID
) -> None:
    clock = FastClock(MONDAY)
    dial = FakeDial(db, clock)
    cid = await running_campaign(db, tenant, await new_agent(db, tenant), [Person(p) for p in numbers(2)], ANY_TIME)
    no_sip = SimpleNamespace(state=SimpleNamespace(parley=SimpleNamespace(settings=Settings()), sip=None))
    sched = CampaignScheduler(db, app=no_sip, dial=dial, clock=clock, capacity=Capacity(), worker_id="w")
    await sched.run_once()
    paused = await campaign(db, cid)
    assert (paused.status, dial.dialled) == ("paused", [])
    assert paused.status_reason == "the SIP endpoint is off (PARLEY_SIP_PORT=0 or its port is taken)"


async def test_a_campaign_whose_stored_schedule_no_longer_validates_is_paused(db: Database, tenant: uuid.UUID) -> None:
    clock = FastClock(MONDAY)
    dial = FakeDial(db, clock)
    cid = await running_campaign(db, tenant, await new_agent(db, tenant), [Person(p) for p in numbers(2)], ANY_TIME)
    async with db.session() as s:
        await s.execute(update(Campaign).where(Campaign.id == cid).values(schedule={"max_concurrent": 0}))
    report = await scheduler(db, clock, dial).run_once()
    paused = await campaign(db, cid)
    assert (report.paused, paused.status, dial.dialled) == (1, "paused", [])
    assert paused.status_reason is not None and paused.status_reason.startswith("invalid schedule")
