"""Contact import against the real SQLite and PostgreSQL: bad rows, duplicates, do-not-call, time zones, CSV
records cut anywhere by the stream; and 100k rows streamed through the HTTP route with bounded server memory."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import select

from parley.campaigns import contacts as importing
from parley.campaigns.schedule import CampaignSchedule, RetryPolicy
from parley.store.campaigns import CampaignRepo
from parley.store.db import Database
from parley.store.dnc import DncRepo
from parley.store.models_campaigns import CampaignContact
from tests.support.service import ROOT, running_service
from tests.support.store import db, new_tenant

__all__ = ["db"]
AGENT = yaml.safe_load((ROOT / "examples/agents/receptionist.yaml").read_text())
CSV = (
    "\ufeffPhone,first_name,Timezone,language,greeting,note\n"
    '+12025550101,Ada,,en-US,Hi Ada,"two\nlines, and a comma"\n'
    "020 7183 8750,Bob,,,,\n"  # no +: the region (GB) reads it
    "+1 (202) 555-0101,Ada again,,,,\n"  # the same number as row 2
    "12345,Eve,,,,\n"
    "+33612345678,Zoe,Mars/Base,,,\n"
    "+33612345679,Yan,Asia/Tokyo,,,\n"
    "+33612345680,Xi,,english please,,\n"
    "+12025550199,Dnc,,,,\n"
    "+12025550150,short\n"
    "\n"
)


async def chunked(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def _campaign(db: Database, tenant: uuid.UUID) -> uuid.UUID:
    async with db.session() as s:
        c = await CampaignRepo(s).create(
            tenant, name="t", agent_id=uuid.uuid4(), provider="sip", caller_id=None,
            schedule=CampaignSchedule().model_dump(mode="json"), retry=RetryPolicy().model_dump(mode="json"),
        )  # fmt: skip
        return c.id


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("size", [1, 7, 1 << 16])
async def test_csv_import_reports_every_row(db: Database, size: int) -> None:
    tenant = await new_tenant(db)
    campaign = await _campaign(db, tenant)
    async with db.session() as s:
        await DncRepo(s).add(tenant, "+12025550199", "asked")
    defaults = importing.Defaults(region="GB", timezone="Europe/Paris")
    importer = importing.Importer(tenant, campaign, defaults, importing.store_sink(db, tenant, campaign))
    report = await importing.import_csv(chunked(CSV.encode(), size), importer)
    assert (report.accepted, report.dnc, report.duplicates, report.error) == (4, 1, 1, None)
    assert {r["row"]: r["error"].split(" ")[0] for r in report.rejected} == {
        5: "not", 6: "unknown", 8: "not", 10: "expected"  # the record's number, the header being 1
    }  # fmt: skip
    async with db.session() as s:
        rows = {
            c.phone: c
            for c in (await s.scalars(select(CampaignContact).where(CampaignContact.campaign_id == campaign)))
        }
    ada = rows["+12025550101"]
    assert (ada.row, ada.timezone, ada.language, ada.greeting) == (2, "America/New_York", "en-US", "Hi Ada")
    assert ada.variables == {"first_name": "Ada", "note": "two\nlines, and a comma"}
    assert rows["+442071838750"].timezone == "Europe/London"
    assert rows["+33612345679"].timezone == "Asia/Tokyo"  # the column wins over the number
    assert rows["+12025550199"].state == "dnc" and ada.state == "pending"

    # a second upload: numbers already in the campaign are duplicates, not errors
    importer = importing.Importer(tenant, campaign, defaults, importing.store_sink(db, tenant, campaign))
    again = await importing.import_list([{"phone": "+12025550101"}, {"phone": "+12025550102", "x": 1}], importer)
    assert (again.accepted, again.duplicates, again.duplicate_rows[0]["of_row"]) == (1, 1, None)


@pytest.mark.asyncio(loop_scope="module")
async def test_bad_files(db: Database) -> None:
    tenant = await new_tenant(db)
    campaign = await _campaign(db, tenant)

    def importer(region: str | None = None) -> importing.Importer:
        defaults = importing.Defaults(region=region, timezone="UTC")
        return importing.Importer(tenant, campaign, defaults, importing.store_sink(db, tenant, campaign))

    with pytest.raises(importing.ImportError_, match="no phone column"):
        await importing.import_csv(chunked(b"name\nAda\n", 4), importer())
    with pytest.raises(importing.ImportError_, match="UTF-8"):
        await importing.import_csv(chunked(b"phone\n\xff\xfe\n", 4), importer())
    no_region = await importing.import_csv(chunked(b"to\n2025550101\n+12025550111\n", 3), importer())
    assert no_region.accepted == 1 and "no country" in no_region.rejected[0]["error"]
    unclosed = b'number\n+12025550112\n"+1202' + b"5" * (importing.MAX_RECORD_CHARS + 10)
    stopped = await importing.import_csv(chunked(unclosed, 4096), importer())
    assert stopped.accepted == 1 and stopped.error is not None and "longer" in stopped.error
    nul = await importing.import_csv(chunked(b"phone,x\n+12025550113,a\x00b\n", 64), importer())
    assert nul.accepted == 0 and "NUL" in nul.rejected[0]["error"]


AREAS = ("202", "212", "213", "305", "312", "415", "617", "646", "718", "773")  # 10 × 10 000 valid numbers


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _stored(c: httpx.Client, cid: str) -> int:
    return int(c.get(f"/v1/campaigns/{cid}/contacts", params={"limit": 1}).headers["x-total-count"])


def test_100k_rows_stream_through_the_route_in_bounded_memory(tmp_path: Path) -> None:
    """A generator body (chunked: no Content-Length). Halfway through it waits until the server has stored rows
    of the first half, which only a route that streams can do (one that buffers reads the whole body first);
    and the server's RSS grows by little (the seen-numbers set and one batch)."""
    rows = 100_000

    def body(c: httpx.Client, cid: str) -> Iterator[bytes]:
        yield b"phone,first_name,account\n"
        chunk: list[str] = []
        for i in range(rows):
            chunk.append(f"+1{AREAS[i // 10000]}555{i % 10000:04d},Name{i},{'x' * 20}\n")
            if len(chunk) == 2000:
                yield "".join(chunk).encode()
                chunk = []
            if i == rows // 2:
                deadline = time.monotonic() + 120
                while _stored(c, cid) < rows // 4:
                    assert time.monotonic() < deadline, "the route did not store rows before the body ended"
                    time.sleep(0.2)
        yield "".join(chunk).encode()

    with running_service(tmp_path / "svc", PARLEY_CAMPAIGNS_ENABLED="false") as service:
        key = service.create_key("bulk")
        with service.client(key) as c:
            agent = c.post("/v1/agents", json={**AGENT, "name": "bulk"}).json()
            made = c.post("/v1/campaigns", json={"name": "bulk", "agent_id": agent["id"], "provider": "sip"})
            cid = made.json()["id"]
            before = _rss_kb(service.pid)
            started = time.monotonic()
            r = httpx.post(f"{service.url}/v1/campaigns/{cid}/contacts", content=body(c, cid), timeout=600,
                           headers={"Authorization": f"Bearer {key}", "content-type": "text/csv"})  # fmt: skip
            elapsed = time.monotonic() - started
            assert r.status_code == 200, r.text
            after = _rss_kb(service.pid)
            report = r.json()
            assert (report["accepted"], report["rejected_count"], report["duplicates"]) == (rows, 0, 0)
            assert _stored(c, cid) == rows
        print(f"\n100k rows in {elapsed:.1f} s, RSS {before} -> {after} kB")
        assert after - before < 100_000


def test_columns_named_like_parley_variables_are_not_variables() -> None:
    """A column "_voicemail" or "_answered_by" cannot set what Parley itself puts on the call."""
    defaults = importing.Defaults(region="US", timezone="UTC")
    parsed = importing.parse_contact(
        {"phone": "+12025550101", "first_name": "Ada", "_voicemail": "x", "_answered_by": "human"}, 2, defaults
    )
    assert parsed["variables"] == {"first_name": "Ada"}
