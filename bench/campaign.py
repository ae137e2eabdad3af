"""The campaign scheduler's own cost: CPU per 100 calls a minute at 10k contacts, and its dial rate. Prints JSON.

A campaign of 10k contacts (four time zones, a calling window open in each) runs on the real scheduler and the
real database (SQLite, or PostgreSQL with ``--postgres``) with a fake instant dial. Between two ticks a "carrier"
step, not measured, writes each dialled call's record as answered and ended, so the next tick settles it as a
real call's would be. The clock is the scheduler's fast clock: a tick is one second of schedule, as
PARLEY_CAMPAIGN_TICK_S=1 makes it in production, and only the ticks' CPU time (``time.process_time``: every
thread, so SQLite's too) is counted. So ``cpu_pct_per_100_cpm`` is the share of one core the scheduler takes
per 100 calls a minute it dials (the target: under 1 %).

With ``--postgres`` the server's own CPU for the ticks' queries is counted too (``postgres_server_cpu_*``, from
``/proc`` of the bench database's backends). ``max_dial_rate_per_s`` is the flat-out case: no rate limit, a
1000-call concurrency limit, ticks back to back;
dials a wall-clock second, the fake carrier's writes included.

    .venv/bin/python bench/campaign.py [--contacts 10000] [--minutes 5] [--postgres] [--out file.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from datetime import time as dt_time
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert

from parley.calls.capacity import Capacity
from parley.calls.identity import CallTarget
from parley.campaigns.schedule import CallingWindow, CampaignSchedule, RetryPolicy
from parley.campaigns.scheduler import CampaignScheduler
from parley.campaigns.settings import CampaignSettings
from parley.logs import configure_logging
from parley.store.agents import AgentRepo
from parley.store.db import Database
from parley.store.models import Call, Tenant
from parley.store.models_campaigns import Campaign, CampaignContact
from parley.store.tenants import TenantRepo

ZONES = ("UTC", "Europe/London", "Europe/Paris", "Africa/Lagos")
START = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)  # Monday: 10:00-12:00 local in every zone above
WINDOW = CallingWindow(start=dt_time(8), end=dt_time(20))
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


class Carrier:
    """The fake dial (it only notes the call) and the carrier step that answers and ends every noted call."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.noted: list[tuple[CallTarget, uuid.UUID, str]] = []
        self.dials = 0

    async def dial(self, app: Any, target: CallTarget, provider: str, to: str, from_: str | None,
                   base_url: str | None = None, *, call_id: uuid.UUID | None = None,
                   variables: dict[str, str] | None = None, machine_detection: bool = False) -> Call:  # fmt: skip
        assert call_id is not None
        self.noted.append((target, call_id, to))
        self.dials += 1
        return Call(id=call_id)

    async def answer_all(self, now: datetime) -> None:
        noted, self.noted = self.noted, []
        if not noted:
            return
        rows = [{"id": call_id, "tenant_id": t.tenant_id, "agent_id": t.agent_id, "agent_version": t.agent_version,
                 "agent_name": t.agent_name, "transport": "sip", "status": "ended", "direction": "outbound",
                 "called": to, "started_at": now, "ended_at": now, "end_reason": "caller-hangup", "duration_s": 60.0}
                for t, call_id, to in noted]  # fmt: skip
        async with self.db.session() as s:
            await s.execute(insert(Call), rows)


async def setup(db: Database, contacts: int, schedule: CampaignSchedule) -> uuid.UUID:
    async with db.session() as s:
        tenant = (await TenantRepo(s).get_or_create(f"bench-{uuid.uuid4().hex[:8]}")).id
        agent = await AgentRepo(s).create(tenant, "bench-caller", {"name": "bench-caller", "system_prompt": "Hi."})
        campaign = Campaign(id=uuid.uuid4(), tenant_id=tenant, name="bench", agent_id=agent.id, provider="sip",
                            status="running", schedule=schedule.model_dump(mode="json"),
                            retry=RetryPolicy().model_dump(mode="json"), started_at=START)  # fmt: skip
        s.add(campaign)
        await s.flush()
        rows = [{"id": uuid.uuid4(), "tenant_id": tenant, "campaign_id": campaign.id, "row": i + 1,
                 "phone": f"+4420{i:08d}", "variables": {"first_name": f"P{i}"}, "timezone": ZONES[i % len(ZONES)],
                 "state": "pending", "attempts": 0, "updated_at": START} for i in range(contacts)]  # fmt: skip
        await s.execute(insert(CampaignContact), rows)
        return tenant


def _process_cpu(pid: int) -> float | None:
    """user + system CPU seconds of process ``pid`` (None: not visible here, e.g. a server in a container)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:  # procfs: never blocks
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ServerCpu:
    """PostgreSQL's own CPU in the bench database's backends (``/proc``, 10 ms clock ticks: only the sum over
    many ticks means anything), read just before and after each tick so the carrier step is left out."""

    def __init__(self, admin: Any, name: str) -> None:
        self.admin, self.name = admin, name
        self.seconds = 0.0
        self._before: dict[int, float] = {}

    async def _read(self) -> dict[int, float]:
        rows = await self.admin.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", self.name)
        out: dict[int, float] = {}
        for row in rows:
            seconds = _process_cpu(row["pid"])
            if seconds is not None:
                out[row["pid"]] = seconds
        return out

    async def before(self) -> None:
        self._before = await self._read()

    async def after(self) -> None:
        after = await self._read()
        self.seconds += sum(cpu - self._before.get(pid, 0.0) for pid, cpu in after.items())


async def phase(
    db: Database, contacts: int, per_minute: int, concurrent: int, minutes: float, server: ServerCpu | None = None
) -> dict[str, Any]:
    """One campaign at ``per_minute``: ticks of one schedule second, the ticks' CPU counted."""
    schedule = CampaignSchedule(windows=[WINDOW], max_calls_per_minute=per_minute, max_concurrent=concurrent)
    tenant = await setup(db, contacts, schedule)
    now = START
    carrier = Carrier(db)
    settings = CampaignSettings(campaign_tenant_max_concurrent=10_000)
    sched = CampaignScheduler(db, settings=settings, dial=carrier.dial, clock=lambda: now, capacity=Capacity(),
                              worker_id="bench")  # fmt: skip
    cpu = 0.0
    ticks = 0
    server_at_start = server.seconds if server else 0.0
    wall = time.perf_counter()
    while ticks < minutes * 60 and carrier.dials < contacts:
        if server is not None:
            await server.before()
        started = time.process_time()
        await sched.run_once()
        cpu += time.process_time() - started
        if server is not None:
            await server.after()
        ticks += 1
        await carrier.answer_all(now)
        now += timedelta(seconds=1)
    wall = time.perf_counter() - wall
    async with db.session() as s:
        await s.execute(delete(Tenant).where(Tenant.id == tenant))
    sim_minutes = ticks / 60
    rate = carrier.dials / sim_minutes
    cpu_pct = 100 * cpu / ticks  # a tick is one second of schedule
    extra: dict[str, Any] = {}
    if server is not None:
        server_pct = 100 * (server.seconds - server_at_start) / ticks
        per_100 = round(server_pct / (rate / 100), 4) if rate else None
        extra = {"postgres_server_cpu_pct_of_a_core": round(server_pct, 3)}
        extra["postgres_server_cpu_pct_per_100_cpm"] = per_100
    return {
        "limit_per_minute": per_minute,
        "dials": carrier.dials,
        "schedule_minutes": round(sim_minutes, 2),
        "dial_rate_per_minute": round(rate, 1),
        "scheduler_cpu_s": round(cpu, 3),
        "cpu_ms_per_tick": round(1000 * cpu / ticks, 3),
        "cpu_pct_of_a_core": round(cpu_pct, 3),
        "cpu_pct_per_100_cpm": round(cpu_pct / (rate / 100), 4) if rate else None,
        "max_dial_rate_per_s": round(carrier.dials / wall, 1),
        **extra,
    }


async def database(postgres: bool, tmp: Path) -> tuple[Database, Any]:
    if not postgres:
        db = Database(f"sqlite+aiosqlite:///{tmp / 'bench.db'}")
        await db.migrate()
        return db, None
    import asyncpg

    name = f"parley_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    db = Database(f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}")
    await db.migrate()
    return db, (admin, name)


async def run(contacts: int, minutes: float, postgres: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        db, pg = await database(postgres, Path(tmp))
        try:
            server = ServerCpu(*pg) if pg is not None else None
            phases = [await phase(db, contacts, rate, 50, minutes, server) for rate in (100, 600)]
            phases.append(await phase(db, contacts, 6000, 1000, minutes, server))  # flat out: the whole list
        finally:
            await db.close()
            if pg is not None:
                admin, name = pg
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                await admin.close()
    return {
        "bench": "campaign",
        "database": "postgresql" if postgres else "sqlite",
        "contacts": contacts,
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "target": "scheduler under 1 % of a core per 100 calls a minute",
        "phases": phases,
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--minutes", type=float, default=5.0, help="schedule minutes per rate (at most)")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL at 127.0.0.1:5432 instead of SQLite")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    configure_logging(level="warning")
    result = asyncio.run(run(args.contacts, args.minutes, args.postgres))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
