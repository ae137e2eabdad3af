"""PostgreSQL going away mid-call (issue 15): a real `parley serve` on a real PostgreSQL reached through a TCP
proxy the test cuts (every connection reset, new ones refused) and restores some seconds later.

Two talk calls are in progress when the database goes. The one that talks on keeps its media and its events
(turns answered, their transcripts and replies reach the caller during the outage); the one that hangs up
during the outage gets its end at once. When the database is back, both records are complete through the API:
every turn the callers were told of, the events, the end, and the recording's metadata and bytes."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import websockets

from .support.audio import noise, silence
from .support.service import Service, _admin_sql, running_service
from .support.tcp_cut import CuttableProxy, cuttable_proxy
from .support.worker_calls import make_agent, talk_url, wait_for

OUTAGE_S = 6.0
AGENT: dict[str, Any] = {
    "name": "db-outage",
    "system_prompt": "Canned replies.",
    "greeting": "Hello.",
    "vad": {"provider": "energy"},
    "turn": {"detector": "silence"},
    "stt": {"provider": "canned", "options": {"text": "what time do you open"}},
    "llm": {"provider": "canned", "options": {"default": "We open at nine."}},
    "tts": {"provider": "tone", "fallback": None},
    "interruptions": {"enabled": False},
}
#: one utterance: a second of loud noise (energy VAD: speech), then quiet for the reply
UTTERANCE = np.concatenate([noise(1.0, dbfs=-20), silence(3.0)]).astype("<i2").tobytes()
FRAME = 640


@pytest.fixture(scope="module")
def proxy() -> Iterator[CuttableProxy]:
    with cuttable_proxy("127.0.0.1", 5432) as p:
        yield p


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, proxy: CuttableProxy) -> Iterator[Service]:
    dbname = f"parley_outage_{secrets.token_hex(4)}"
    asyncio.run(_admin_sql(f"CREATE DATABASE {dbname}"))
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{proxy.port}/{dbname}"
    try:
        with running_service(tmp_path_factory.mktemp("db-outage"), PARLEY_DATABASE_URL=url) as svc:
            yield svc
    finally:
        asyncio.run(_admin_sql(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)"))


@dataclass
class Talker:
    """A caller that speaks, listens and speaks again until told to hang up, noting what it is told and when."""

    call_id: str | None = None
    replies: list[tuple[float, int]] = field(default_factory=list)  # (monotonic, turn) of each agent_text
    events: list[dict[str, Any]] = field(default_factory=list)
    end_reason: str | None = None
    ended_at: float = 0.0
    frames: int = 0
    started: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, url: str, headers: dict[str, str]) -> None:
        async with websockets.connect(url, additional_headers=headers, max_size=2**20, ping_interval=None) as ws:
            self.call_id = json.loads(await ws.recv())["call_id"]
            self.started.set()
            sender = asyncio.create_task(self._send(ws))
            try:
                async for message in ws:
                    if isinstance(message, bytes):
                        self.frames += 1
                        continue
                    event = json.loads(message)
                    self.events.append(event)
                    if event["type"] == "agent_text" and event["turn"] > 0:
                        self.replies.append((time.monotonic(), event["turn"]))
                    if event["type"] == "end":
                        self.end_reason, self.ended_at = event.get("reason"), time.monotonic()
                        return
            finally:
                sender.cancel()

    async def _send(self, ws: Any) -> None:
        start, k = time.monotonic(), 0
        while not self.stop.is_set():
            at = (k * FRAME) % len(UTTERANCE)
            await ws.send(UTTERANCE[at : at + FRAME])
            k += 1
            await asyncio.sleep(max(0.0, start + k * 0.02 - time.monotonic()))
        await ws.send(json.dumps({"type": "end"}))


async def _until(check: Any, within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def test_calls_outlive_a_database_outage(service: Service, key: str, proxy: CuttableProxy) -> None:
    agent_id = make_agent(service, key, AGENT)
    headers = {"Authorization": f"Bearer {key}"}
    stays, leaves = Talker(), Talker()

    async def scenario() -> tuple[float, float]:
        tasks = [asyncio.create_task(t.run(talk_url(service, agent_id), headers)) for t in (stays, leaves)]
        await asyncio.wait_for(asyncio.gather(stays.started.wait(), leaves.started.wait()), 60)
        await _until(lambda: len(stays.replies) >= 1 and len(leaves.replies) >= 1, 60, "a first reply on each call")
        proxy.cut()
        cut_at = time.monotonic()
        before = len(stays.replies)
        leaves.stop.set()  # hangs up while the database is away
        await _until(lambda: leaves.end_reason is not None, 15, "the end of the call hung up during the outage")
        assert leaves.ended_at - cut_at < 10, leaves.ended_at - cut_at
        await _until(lambda: len(stays.replies) >= before + 1, 30, "a reply during the outage")
        await asyncio.sleep(max(0.0, cut_at + OUTAGE_S - time.monotonic()))
        during = len(stays.replies) - before
        proxy.restore()
        back_at = time.monotonic()
        after = len(stays.replies)
        await _until(lambda: len(stays.replies) >= after + 1, 30, "a reply after the database returned")
        stays.stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        assert during >= 1, "no turn was answered while the database was away"
        return cut_at, back_at

    cut_at, back_at = asyncio.run(scenario())
    assert stays.end_reason == "caller-hangup" and leaves.end_reason == "caller-hangup", (stays, leaves)
    assert any(cut_at < t < back_at for t, _ in stays.replies), "the replies were held back during the outage"
    with service.client(key) as c:
        for talker in (stays, leaves):
            record = wait_for(lambda t=talker: _ended(c, t.call_id), 60, "the record written after the outage")
            _check_record(c, record, talker)
    log = service.log.read_text()
    assert "call_record_db_unavailable" in log and "call_record_db_back" in log
    assert "call_record_write_failed" not in log and "call_records_lost" not in log


def _ended(c: Any, call_id: str | None) -> dict[str, Any] | None:
    r = c.get(f"/v1/calls/{call_id}")
    if r.status_code != 200:
        return None
    body: dict[str, Any] = r.json()
    return body if body["status"] == "ended" else None


def _check_record(c: Any, record: dict[str, Any], talker: Talker) -> None:
    """Every turn the caller was answered in, every event it was sent, the end and the recording."""
    assert record["end_reason"] == "caller-hangup", record["end_reason"]
    told = {turn for _, turn in talker.replies}
    stored = {t["turn"] for t in record["turns"] if t["agent_text"]}
    assert told <= stored, (sorted(told), sorted(stored))
    kinds = [e["kind"] for e in record["events"]]
    sent = [e["type"] for e in talker.events if e["type"] in {"agent_text", "turn_metrics"}]
    for kind in set(sent):
        assert kinds.count(kind) == sent.count(kind), (kind, kinds.count(kind), sent.count(kind))
    assert "media" in kinds  # the call's last event, written with its end
    assert record["duration_s"] and record["duration_s"] > 1.5, record["duration_s"]
    audio = c.get(f"/v1/calls/{record['id']}/recording")
    assert audio.status_code == 200 and len(audio.content) == record["recording_bytes"], audio.status_code
    assert record["recording_bytes"] >= 44 + int(record["duration_s"] * 16_000) * 4 - 4 * 16_000
