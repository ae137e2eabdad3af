"""The API the web console reads (issue 14): /v1/me, analytics, version diff and restore, validate, and talking
to an unsaved draft, against a real `parley serve` on SQLite and on PostgreSQL, with real talk calls."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
import websockets

from parley.calls.synthetic_caller import speak

from .support.served import AGENT, CANNED_REPLY
from .support.service import Service, backend_env, running_service
from .test_api_talk import stream_call

DRAFT_GREETING = "Hello from the draft."
DRAFT_REPLY = "The draft says we open at eight."
BAD_ANALYTICS: list[dict[str, str]] = [
    {"tz": "Mars/Olympus"},
    {"tz": "../../etc/passwd"},
    {"since": "2020-01-01T00:00:00", "until": "2022-01-01T00:00:00"},  # more than 366 days
    {"since": "2030-01-01T00:00:00Z", "until": "2029-01-01T00:00:00Z"},
    {"since": "0001-01-01T00:00:00"},
]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def service(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with backend_env(request.param, request) as env, running_service(tmp_path_factory.mktemp("console"), **env) as svc:
        yield svc


def draft_of(doc: dict[str, Any]) -> dict[str, Any]:
    """The receptionist with another greeting and another answer to "hours"."""
    draft = copy.deepcopy(doc)
    draft["greeting"] = DRAFT_GREETING
    draft["llm"]["options"]["rules"][0]["reply"] = DRAFT_REPLY
    return draft


def ask_hours(service: Service, url: str) -> list[dict[str, Any]]:
    question = asyncio.run(speak("What are your opening hours?", "joe-quick"))
    pcm = np.concatenate([np.zeros(16000 * 3, np.int16), question, np.zeros(16000 * 6, np.int16)])
    events, _ = asyncio.run(stream_call(service.url.replace("http", "ws") + url, pcm))
    return events


def test_me_names_the_key_and_what_it_may_do(service: Service, key: str) -> None:
    with service.client(key) as c:
        me = c.get("/v1/me")
        assert me.status_code == 200, me.text
        body = me.json()
        assert body["role"] == "admin" and body["kind"] == "api_key" and body["subject"] == body["key_id"]
        assert "talk" in body["scopes"] and "keys" in body["scopes"]
        made = c.post("/v1/keys", json={"name": "console viewer", "role": "viewer", "scopes": ["calls:read"]}).json()
    with service.client(made["secret"]) as v:
        mine = v.get("/v1/me").json()
    assert mine == {**mine, "key_id": made["id"], "key_name": "console viewer", "role": "viewer",
                    "scopes": ["calls:read"], "tenant_id": body["tenant_id"]}  # fmt: skip
    assert made["secret"] not in str(mine) and "hash" not in str(mine)
    assert service.client().get("/v1/me").status_code == 401


def test_validate_answers_as_create_and_saves_nothing(service: Service, key: str) -> None:
    bad = {**AGENT, "name": "Bad one", "stt": {"provider": "no-such-stt"}, "greeting": 5}
    python_tool = {**AGENT, "name": "Tooled", "tools": [{"type": "python", "name": "t", "function": "os:getcwd"}]}
    with service.client(key) as c:
        before = c.get("/v1/agents").json()
        ok = c.post("/v1/agents/validate", json={**AGENT, "name": "Fine"})
        assert ok.status_code == 200 and ok.json() == {"valid": True}
        for doc in (bad, python_tool, {"kind": "agent"}):
            checked, created = c.post("/v1/agents/validate", json=doc), c.post("/v1/agents", json=doc)
            assert checked.status_code == created.status_code == 422, (checked.text, created.text)
            assert checked.json() == created.json()
        assert c.get("/v1/agents").json() == before


def test_diff_and_restore_versions(service: Service, key: str) -> None:
    with service.client(key) as c:
        agent = c.post("/v1/agents", json={**AGENT, "name": "Versioned"}).json()
        ref = agent["id"]
        assert (
            c.put(f"/v1/agents/{ref}", json={**AGENT, "name": "Versioned", "greeting": "Good day."}).status_code == 200
        )
        diff = c.get(f"/v1/agents/{ref}/versions/diff")
        assert diff.status_code == 200, diff.text
        body = diff.json()
        assert (body["from"], body["to"]) == (1, 2)
        assert "-greeting: Hi there.\n" in body["diff"] and "+greeting: Good day.\n" in body["diff"]
        assert body["diff"].startswith("--- version 1\n+++ version 2\n")
        assert c.get(f"/v1/agents/{ref}/versions/diff", params={"from": 2, "to": 2}).json()["diff"] == ""
        assert c.get(f"/v1/agents/{ref}/versions/diff", params={"from": 1, "to": 9}).status_code == 404
        assert c.get(f"/v1/agents/{ref}/versions/diff", params={"from": "x"}).status_code == 422

        restored = c.post(f"/v1/agents/{ref}/versions/1/restore")
        assert restored.status_code == 200, restored.text
        assert restored.json()["version"] == 3 and restored.json()["document"]["greeting"] == "Hi there."
        assert c.get(f"/v1/agents/{ref}/versions/diff", params={"from": 1, "to": 3}).json()["diff"] == ""
        assert [v["version"] for v in c.get(f"/v1/agents/{ref}/versions").json()] == [1, 2, 3]
        assert c.post(f"/v1/agents/{ref}/versions/7/restore").status_code == 404
        # restoring an old name that another agent has taken since is a conflict, as a PUT would be
        c.put(f"/v1/agents/{ref}", json={**AGENT, "name": "Renamed"})
        c.post("/v1/agents", json={**AGENT, "name": "Versioned"})
        assert c.post(f"/v1/agents/{ref}/versions/1/restore").status_code == 409
    with service.client(service.create_key("console-other")) as other:
        assert other.get(f"/v1/agents/{ref}/versions/diff").status_code == 404
        assert other.post(f"/v1/agents/{ref}/versions/1/restore").status_code == 404


def test_talk_to_a_draft_leaves_the_agent_unchanged(service: Service, key: str, agent: dict[str, Any]) -> None:
    draft = draft_of(AGENT)
    with service.client(key) as c:
        bad = c.post(f"/v1/agents/{agent['id']}/talk-token", json={"draft": {**draft, "greeting": 5}})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][:3] == ["body", "draft", "greeting"]
        as_created = c.post("/v1/agents", json={**draft, "greeting": 5}).json()["detail"]  # the same 422, moved
        assert [{**e, "loc": ["body", *e["loc"][2:]]} for e in bad.json()["detail"]] == as_created
        tooled = {**draft, "tools": [{"type": "python", "name": "t", "function": "os:getcwd"}]}
        refused = c.post(f"/v1/agents/{agent['id']}/talk-token", json={"draft": tooled})
        assert refused.status_code == 422 and refused.json()["detail"][0]["loc"][:3] == ["body", "draft", "tools"]
        token = c.post(f"/v1/agents/{agent['id']}/talk-token", json={"draft": draft})
        assert token.status_code == 200, token.text
        viewer = c.post("/v1/keys", json={"name": "talker", "role": "viewer"}).json()["secret"]
    with service.client(viewer) as v:
        assert v.post(f"/v1/agents/{agent['id']}/talk-token", json={"draft": draft}).status_code == 403
        assert v.post(f"/v1/agents/{agent['id']}/talk-token").status_code == 200
    with service.client(service.create_key("console-drafter")) as other:  # another tenant's agent: 404, any draft
        assert other.post(f"/v1/agents/{agent['id']}/talk-token", json={"draft": {"greeting": 5}}).status_code == 404

    events = ask_hours(service, token.json()["url"])
    assert [e["type"] for e in events][:2] == ["call", "draft"]
    replies = [e["text"] for e in events if e["type"] == "agent_text"]
    assert replies[:2] == [DRAFT_GREETING, DRAFT_REPLY], replies
    with pytest.raises(websockets.exceptions.ConnectionClosedError):  # one session per token, draft or not
        ask_hours(service, token.json()["url"])

    with service.client(key) as c:
        call = c.get(f"/v1/calls/{events[0]['call_id']}").json()
        assert call["agent_version"] == agent["version"] and call["agent_id"] == agent["id"]
        first = call["events"][0]
        assert first["kind"] == "draft" and first["data"]["based_on_version"] == agent["version"]
        assert first["data"]["document"]["greeting"] == DRAFT_GREETING
        assert call["turns"][0]["agent_text"] == DRAFT_GREETING
        saved = c.get(f"/v1/agents/{agent['id']}").json()
        assert saved["version"] == agent["version"] and saved["document"] == agent["document"]
        plain = c.post(f"/v1/agents/{agent['id']}/talk-token").json()
    events = ask_hours(service, plain["url"])  # a token without a draft talks to the saved agent
    assert "draft" not in [e["type"] for e in events]
    assert [e["text"] for e in events if e["type"] == "agent_text"][:2] == ["Hi there.", CANNED_REPLY]


def test_analytics_sums_the_calls(service: Service, key: str, agent: dict[str, Any]) -> None:
    with service.client(key) as c:
        if not c.get("/v1/calls", params={"agent_id": agent["id"]}).json():
            ask_hours(service, c.post(f"/v1/agents/{agent['id']}/talk-token").json()["url"])
        calls = c.get("/v1/calls", params={"agent_id": agent["id"], "limit": 200}).json()
        for _ in range(50):  # the last call's end is written just after its socket closes
            if all(x["status"] != "active" for x in calls):
                break
            time.sleep(0.2)
            calls = c.get("/v1/calls", params={"agent_id": agent["id"], "limit": 200}).json()
        started = time.monotonic()
        got = c.get("/v1/analytics", params={"agent_id": agent["id"]})
        assert time.monotonic() - started < 1
        assert got.status_code == 200, got.text
        body = got.json()
        totals = body["totals"]
        assert totals["calls"] == len(calls) >= 1
        assert totals["minutes"] == pytest.approx(sum(x["duration_s"] for x in calls) / 60, abs=0.01)
        turns = [t for x in calls for t in c.get(f"/v1/calls/{x['id']}").json()["turns"]]
        v2v = [t["voice_to_voice"] for t in turns if t["voice_to_voice"] is not None]
        assert totals["turns"] == len(turns) and totals["v2v_samples"] == len(v2v) >= 1
        assert totals["v2v_avg"] == pytest.approx(sum(v2v) / len(v2v), abs=1e-3)
        assert totals["v2v_p50"] == pytest.approx(float(np.percentile(v2v, 50)), abs=1e-3)
        assert totals["v2v_p95"] == pytest.approx(float(np.percentile(v2v, 95)), abs=1e-3)
        interrupted = sum(t["interrupted"] for t in turns)
        assert totals["interruption_rate"] == pytest.approx(interrupted / len(turns), abs=1e-3)
        assert body["transports"] == {"talk": len(calls)}
        assert sum(body["end_reasons"].values()) == len(calls) and "caller-hangup" in body["end_reasons"]
        assert len(body["days"]) == 31 and body["days"][-1]["date"] == datetime.now(UTC).date().isoformat()
        assert sum(d["calls"] for d in body["days"]) == len(calls)

        # the same calls on the callers' days in another zone; none for another agent or another window
        ahead = c.get("/v1/analytics", params={"agent_id": agent["id"], "tz": "Pacific/Kiritimati"}).json()
        assert ahead["totals"]["calls"] == len(calls) and ahead["tz"] == "Pacific/Kiritimati"
        kiritimati_today = (datetime.now(UTC) + timedelta(hours=14)).date().isoformat()
        assert ahead["days"][-1]["date"] == kiritimati_today
        old = c.get("/v1/analytics", params={"since": "2020-01-01T00:00:00Z", "until": "2020-02-01T00:00:00Z"})
        assert old.status_code == 200 and old.json()["totals"]["calls"] == 0 and len(old.json()["days"]) == 31
        assert c.get("/v1/analytics", params={"agent_id": "00000000-0000-0000-0000-000000000000"}).json()[
            "totals"]["calls"] == 0  # fmt: skip
        for params in BAD_ANALYTICS:
            bad = c.get("/v1/analytics", params=params)
            assert bad.status_code == 422, (params, bad.text)
            assert bad.json()["detail"][0]["loc"][0] == "query"
    with service.client(service.create_key("console-analytics-other")) as other:
        assert other.get("/v1/analytics").json()["totals"]["calls"] == 0
