"""The campaign scheduler every ``parley serve`` worker runs: one loop, a tick a second (PARLEY_CAMPAIGN_TICK_S).

Each tick, for the campaigns it watches (:func:`parley.campaigns.queue.watched`):

1. settles attempts whose call record has ended (outcome, then a retry or a final state), and attempts that were
   lost: no call record after ``campaign_lost_after_s``, or one still ``dialing`` after
   ``campaign_stale_dialing_s`` (``dial_lost``; the attempt is never dialled again, a retry is a new attempt);
2. pauses a campaign whose agent was deleted (``agent deleted``), ends one past its ``end_at``;
3. claims due contacts whose local time is inside a calling window, within every limit (:mod:`.pacing`), and
   dials them outside the transaction; a dial that raises fails its attempt at once;
4. completes a campaign with nothing left to dial, and queues ``campaign.completed`` in the same transaction.

The database is the queue, shared by every worker (:mod:`.queue`); a worker that drains claims nothing more.
The clock and the dial are parameters, so tests run days of schedule in seconds against a recording fake.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from pydantic import ValidationError
from sqlalchemy import select

from parley.calls.capacity import CAPACITY, Capacity
from parley.calls.identity import CallTarget
from parley.campaigns import dialing, outcomes, pacing, queue, windows
from parley.campaigns.dialing import detects_machines as detects
from parley.campaigns.schedule import CampaignSchedule, RetryPolicy
from parley.campaigns.settings import CampaignSettings
from parley.store.db import Database
from parley.store.models import Agent, utcnow
from parley.store.models_campaigns import Campaign
from parley.store.outage import OutageLog
from parley.webhooks.store import enqueue

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]
Preflight = Callable[[str], str | None]
ZONES_TTL_TICKS = 30  # how many ticks a campaign's set of pending time zones is trusted
AGENT_CHECK_TICKS = 5  # how often the campaigns' agents are looked up again (deleted, edited)
COMPLETE_CHECK_TICKS = 5  # how often a campaign that claimed nothing is checked for completion anyway
COMPLETED = "campaign.completed"


@dataclass
class TickReport:
    settled: int = 0
    lost: int = 0
    claimed: int = 0
    dnc: int = 0
    completed: int = 0
    paused: int = 0


@dataclass
class _Parsed:
    raw: tuple[Any, Any]
    schedule: CampaignSchedule
    retry: RetryPolicy


@dataclass
class _Zones:
    at: int
    version: datetime | None
    zones: list[str] = field(default_factory=list)


class CampaignScheduler:
    """One per process; any number of processes share the database."""

    def __init__(
        self,
        db: Database,
        *,
        app: Any = None,
        settings: CampaignSettings | None = None,
        dial: dialing.DialFn | None = None,
        clock: Clock = utcnow,
        capacity: Capacity = CAPACITY,
        worker_id: str | None = None,
        base_url: str | None = None,
        preflight: Preflight | None = None,
    ) -> None:
        self.db, self.app, self.clock, self.capacity = db, app, clock, capacity
        self.settings = settings or CampaignSettings()
        self.dial = dial or dialing.default_dial()
        self.worker_id = worker_id or f"campaigns:{uuid.uuid4().hex[:8]}"
        self.base_url = base_url
        self.preflight = preflight or (lambda provider: dialing.problem(app, provider))
        self.postgres = not db.is_sqlite
        self._task: asyncio.Task[None] | None = None
        self._dials: set[asyncio.Task[None]] = set()
        self._dialing: set[uuid.UUID] = set()  # attempts whose dial is under way here
        self._parsed: dict[uuid.UUID, _Parsed] = {}
        self._zones: dict[uuid.UUID, _Zones] = {}
        self._targets: dict[uuid.UUID, tuple[int, CallTarget]] = {}
        self._paced: dict[uuid.UUID, tuple[Any, datetime]] = {}  # campaign: (its schedule, no room before)
        self._ticks = 0
        self._agents_at = -AGENT_CHECK_TICKS

    # --- the loop -------------------------------------------------------------------------------------------

    def start(self) -> CampaignScheduler:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="campaign-scheduler")
        return self

    async def stop(self, dial_grace_s: float = 10.0) -> None:
        """Stops claiming; dials under way get ``dial_grace_s`` to return (their attempts are committed either
        way: one cut short is settled later as its call record says, or as ``dial_lost``)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._dials:
            await asyncio.wait(set(self._dials), timeout=dial_grace_s)
        for task in list(self._dials):
            task.cancel()
        await asyncio.gather(*self._dials, return_exceptions=True)

    async def _run(self) -> None:
        outage = OutageLog("campaign_tick")
        while True:
            started = time.monotonic()
            try:
                await self.tick()
                outage.ok()
            except Exception as exc:
                outage.failed(exc)
            await asyncio.sleep(max(0.0, self.settings.campaign_tick_s - (time.monotonic() - started)))

    async def run_once(self) -> TickReport:
        """One tick, then waits for its dials (tests, the bench)."""
        report = await self.tick()
        await self.dials_done()
        return report

    async def dials_done(self) -> None:
        while self._dials:
            await asyncio.gather(*list(self._dials), return_exceptions=True)

    # --- a tick ---------------------------------------------------------------------------------------------

    async def tick(self) -> TickReport:
        now, report = self.clock(), TickReport()
        self._ticks += 1
        async with self.db.session() as s:
            campaigns, flights = await queue.watched(s)
        campaigns = await self._readable(campaigns, now, report)
        if not campaigns:
            return report
        by_id = {c.id: c for c in campaigns}
        flights = [f for f in flights if f.campaign_id in by_id]
        live = await self._reconcile(by_id, flights, now, report)
        running = [c for c in campaigns if c.status == "running"]
        ringing = sum(1 for f in flights if f.worker_id == self.worker_id and f.call_status in (None, "dialing"))
        targets = await self._agents(running, now, report)
        for campaign in running:
            if campaign.id not in targets:
                continue
            try:
                ringing += await self._campaign(campaign, targets[campaign.id], live.get(campaign.id, 0), ringing,
                                                now, report)  # fmt: skip
            except Exception:  # one campaign's failure (a deadlock, a bad row) does not stop the others
                log.exception("campaign_claim_failed", campaign=str(campaign.id))
        return report

    async def _readable(self, campaigns: list[Campaign], now: datetime, report: TickReport) -> list[Campaign]:
        """The campaigns whose stored schedule and retry policy still validate; a running one that does not (a
        row edited by hand, a schema change) is paused with the reason instead of failing every tick."""
        out: list[Campaign] = []
        for campaign in campaigns:
            try:
                self.parsed(campaign)
            except ValidationError as exc:
                reason = f"invalid schedule or retry policy: {str(exc).splitlines()[0]}"[:300]
                async with self.db.session() as s:
                    if await queue.set_status(s, campaign.id, now, "paused", reason):
                        report.paused += 1
                log.warning("campaign_unreadable", campaign=str(campaign.id), error=str(exc)[:300])
                continue
            out.append(campaign)
        return out

    def parsed(self, campaign: Campaign) -> _Parsed:
        raw = (campaign.schedule, campaign.retry)
        cached = self._parsed.get(campaign.id)
        if cached is None or cached.raw != raw:
            cached = _Parsed(raw, CampaignSchedule.model_validate(campaign.schedule or {}),
                             RetryPolicy.model_validate(campaign.retry or {}))  # fmt: skip
            self._parsed[campaign.id] = cached
        return cached

    async def _reconcile(
        self, by_id: dict[uuid.UUID, Campaign], flights: list[queue.InFlight], now: datetime, report: TickReport
    ) -> dict[uuid.UUID, int]:
        """Settles what has ended or was lost; the attempts still under way, by campaign."""
        ended: list[queue.InFlight] = []
        lost: list[queue.InFlight] = []
        live: dict[uuid.UUID, int] = {}
        for f in flights:
            if f.call_status in ("ended", "failed"):
                ended.append(f)
            elif self._lost(f, now):
                lost.append(f)
            else:
                live[f.campaign_id] = live.get(f.campaign_id, 0) + 1
        if not ended and not lost:
            return live
        lost_ids = {f.attempt_id for f in lost}
        async with self.db.session() as s:
            detected = [f.call_id for f in ended if f.call_status == "ended" and detects(by_id[f.campaign_id])]
            machines = await queue.detections(s, detected)
            items: list[queue.Settling] = []
            for f in ended + lost:
                campaign = by_id[f.campaign_id]
                parsed = self.parsed(campaign)
                outcome = outcomes.DIAL_LOST
                if f.attempt_id not in lost_ids:
                    early = parsed.schedule.hung_up_early_secs
                    found = outcomes.call_outcome(str(f.call_status), f.end_reason, f.duration_s, early,
                                                  machines.get(f.call_id))  # fmt: skip
                    outcome = found or outcomes.FAILED
                items.append(queue.Settling(f, outcome, parsed.retry, campaign.status == "cancelled",
                                            self._ended(parsed.schedule, now)))  # fmt: skip
            settled = await queue.settle(s, items, now)
        report.settled += len(settled)
        report.lost += len(lost)
        if lost:
            log.warning("campaign_attempts_lost", attempts=[str(f.attempt_id) for f in lost][:20], count=len(lost))
        return live

    def _lost(self, f: queue.InFlight, now: datetime) -> bool:
        """No call record long after the attempt began (and no dial of it under way here), or one that still
        rings long after any carrier's ring timeout."""
        age = (now - f.started_at).total_seconds()
        if f.call_status is None:
            return f.attempt_id not in self._dialing and age > self.settings.campaign_lost_after_s
        return f.call_status == "dialing" and age > self.settings.campaign_stale_dialing_s

    @staticmethod
    def _ended(schedule: CampaignSchedule, now: datetime) -> bool:
        return schedule.end_at is not None and now >= schedule.end_at

    async def _agents(self, running: list[Campaign], now: datetime, report: TickReport) -> dict[uuid.UUID, CallTarget]:
        """Each running campaign's agent as a call target; campaigns that cannot dial are paused with the reason."""
        if not running:
            return {}
        fresh = self._ticks - self._agents_at < AGENT_CHECK_TICKS
        if fresh and all(c.id in self._targets for c in running):
            return {c.id: self._targets[c.id][1] for c in running}
        self._agents_at = self._ticks
        out: dict[uuid.UUID, CallTarget] = {}
        async with self.db.session() as s:
            versions = dict((await s.execute(
                select(Agent.id, Agent.version).where(Agent.id.in_({c.agent_id for c in running}))
            )).all())  # fmt: skip
            for campaign in running:
                cached = self._targets.get(campaign.id)
                version = versions.get(campaign.agent_id)
                problem: str | None = None
                if version is not None and cached is not None and cached[0] == version:
                    out[campaign.id] = cached[1]
                    continue
                found = await dialing.target(s, campaign) if version is not None else dialing.AGENT_DELETED
                if isinstance(found, str):
                    problem = found
                else:
                    problem = self.preflight(campaign.provider)
                    self._targets[campaign.id] = (found.agent_version, found)
                    out[campaign.id] = found
                if problem is not None:
                    out.pop(campaign.id, None)
                    self._targets.pop(campaign.id, None)
                    if await queue.set_status(s, campaign.id, now, "paused", problem):
                        report.paused += 1
                        log.warning("campaign_paused", campaign=str(campaign.id), reason=problem)
        return out

    def _worker_free(self, ringing: int) -> int:
        cap = self.capacity
        return pacing.worker_free(cap.limit, cap.in_use, ringing, cap.draining)

    async def _zones_open(self, campaign: Campaign, schedule: CampaignSchedule, now: datetime) -> list[str] | None:
        """The zones of the campaign's contacts (waiting or being dialled: both may be claimed next) with a window
        open now; None: no windows, any time. Refreshed when the campaign changes (a resume after an upload) and
        every ZONES_TTL_TICKS; a zone not yet seen is simply not claimed until then, never called out of hours."""
        if not schedule.windows:
            return None
        cached = self._zones.get(campaign.id)
        if cached is None or self._ticks - cached.at >= ZONES_TTL_TICKS or cached.version != campaign.updated_at:
            async with self.db.session() as s:
                cached = _Zones(self._ticks, campaign.updated_at, await queue.pending_zones(s, campaign.id))
            self._zones[campaign.id] = cached
        return windows.open_zones(schedule.windows, cached.zones, now)

    async def _campaign(
        self, campaign: Campaign, target: CallTarget, live: int, ringing: int, now: datetime, report: TickReport
    ) -> int:
        """Ends, claims for and completes one running campaign; how many contacts it claimed."""
        parsed = self.parsed(campaign)
        schedule = parsed.schedule
        start = schedule.start_at or campaign.started_at
        if start is not None and now < start:
            return 0
        claimed = queue.Claimed([], 0, True)
        async with self.db.session() as s:
            if self._ended(schedule, now):
                await queue.end_remaining(s, campaign.id, now)
            elif live >= schedule.max_concurrent or not self._worker_free(ringing) or self._rate_bound(campaign, now):
                claimed = queue.Claimed([])  # full as last counted (other workers only fill it more): no query
            else:
                zones = await self._zones_open(campaign, schedule, now)
                limits = pacing.Limits(schedule.max_concurrent, schedule.max_calls_per_minute,
                                       self.settings.campaign_tenant_max_concurrent)  # fmt: skip
                claimed = await queue.claim(s, campaign, now, limits, self._worker_free(ringing), zones,
                                            self.worker_id, self.postgres)  # fmt: skip
                report.claimed += len(claimed.claims)
                report.dnc += claimed.dnc
                if claimed.paced_until is not None:
                    self._paced[campaign.id] = (campaign.schedule, claimed.paced_until)
            look = claimed.exhausted or self._ticks % COMPLETE_CHECK_TICKS == 0
            if not claimed.claims and not live and look and not await queue.unfinished(s, campaign.id):
                await self._complete(s, campaign, now, report)
        claims = claimed.claims
        for claim in claims:
            self._start_dial(campaign, target, claim, parsed.retry)
        return len(claims)

    def _rate_bound(self, campaign: Campaign, now: datetime) -> bool:
        """Whether the campaign's per-minute rate, as last counted, allows no dial yet (a schedule edit resets it)."""
        paced = self._paced.get(campaign.id)
        if paced is None or paced[0] != campaign.schedule or now >= paced[1]:
            self._paced.pop(campaign.id, None)
            return False
        return True

    async def _complete(self, s: Any, campaign: Campaign, now: datetime, report: TickReport) -> None:
        if not await queue.set_status(s, campaign.id, now, "completed"):
            return
        summary = await queue.counts(s, campaign.id)
        data = {"campaign_id": str(campaign.id), "name": campaign.name, "agent_id": str(campaign.agent_id),
                "completed_at": now.isoformat(), **summary}  # fmt: skip
        await enqueue(s, campaign.tenant_id, COMPLETED, data, agent_id=campaign.agent_id)
        report.completed += 1
        self._zones.pop(campaign.id, None)
        log.info("campaign_completed", campaign=str(campaign.id), **summary)

    # --- dials ----------------------------------------------------------------------------------------------

    def _start_dial(self, campaign: Campaign, target: CallTarget, claim: queue.Claim, retry: RetryPolicy) -> None:
        self._dialing.add(claim.attempt_id)
        task = asyncio.get_running_loop().create_task(self._dial(campaign, target, claim, retry))
        self._dials.add(task)
        task.add_done_callback(self._dials.discard)

    async def _dial(self, campaign: Campaign, target: CallTarget, claim: queue.Claim, retry: RetryPolicy) -> None:
        try:
            problem = await dialing.place(self.dial, self.app, campaign, target, claim, self.base_url)
            if problem is None:
                return
            now = self.clock()
            flight = queue.InFlight(claim.attempt_id, campaign.id, claim.contact_id, claim.call_id, self.worker_id,
                                    now, None, problem, None)  # fmt: skip
            ended = self._ended(self.parsed(campaign).schedule, now)
            async with self.db.session() as s:
                await queue.settle(s, [queue.Settling(flight, outcomes.FAILED, retry, False, ended)], now)
        except Exception:
            log.exception("campaign_dial_settle_failed", attempt=str(claim.attempt_id))
        finally:
            self._dialing.discard(claim.attempt_id)
