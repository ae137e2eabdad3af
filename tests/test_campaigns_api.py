"""Campaign API against a real `parley serve` (both backends): create, upload, control with 409s, PATCH while
running, delete rules, contacts paging, export, the do-not-call list, a viewer key, and another tenant's 404s."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from .support.service import BACKENDS, ROOT, Service, backend_env, running_service

AGENT = yaml.safe_load((ROOT / "examples/agents/receptionist.yaml").read_text())
CSV = (
    "\ufeffphone,first_name,timezone\n"
    "+12025550101,Ada,\n"
    "202 555 0102,Bob,America/Chicago\n"  # no +: the caller id's country (US)
    "+12025550101,Ada again,\n"  # a duplicate of row 2
    "not a number,Eve,\n"
    "+442071838750,Cy,Mars/Olympus\n"  # a bad zone
    "+442071838751,Di,\n"
    "+12025550199,Dnc,\n"  # on the do-not-call list
)


@pytest.fixture(scope="module", params=BACKENDS)
def service(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    # no dialling here: the scheduler is off, so states change only through the API
    with (
        backend_env(request.param, request) as env,
        running_service(tmp_path_factory.mktemp("campaigns"), **env, PARLEY_CAMPAIGNS_ENABLED="false") as svc,
    ):
        yield svc


def test_campaign_lifecycle(service: Service) -> None:
    key = service.create_key("campaigns-a")
    with service.client(key) as c:
        agent = c.post("/v1/agents", json={**AGENT, "name": "caller"}).json()
        assert c.post("/v1/do-not-call", json={"phone": "+1 202 555 0199", "reason": "asked"}).status_code == 201
        assert c.get("/v1/do-not-call").json()[0]["phone"] == "+12025550199"
        body = {"name": "spring", "agent_id": agent["id"], "provider": "sip", "caller_id": "+12025550000"}
        assert c.post("/v1/campaigns", json={**body, "schedule": {"default_timezone": "Nowhere/X"}}).status_code == 422
        bad_window = {"windows": [{"start": "18:00", "end": "09:00"}]}
        assert c.post("/v1/campaigns", json={**body, "schedule": bad_window}).status_code == 422
        created = c.post("/v1/campaigns", json=body)
        assert created.status_code == 201, created.text
        campaign = created.json()
        cid = campaign["id"]
        assert campaign["status"] == "draft" and campaign["import"]["accepted"] == 0
        assert c.post(f"/v1/campaigns/{cid}/start").status_code == 409  # no contacts yet

        up = c.post(f"/v1/campaigns/{cid}/contacts", content=CSV.encode(), headers={"content-type": "text/csv"})
        assert up.status_code == 200, up.text
        report = up.json()
        assert (report["accepted"], report["dnc"], report["duplicates"], report["rejected_count"]) == (4, 1, 1, 2)
        assert {r["row"] for r in report["rejected"]} == {5, 6}
        assert report["duplicate_rows"] == [{"row": 4, "phone": "+12025550101", "of_row": 2}]
        again = c.post(f"/v1/campaigns/{cid}/contacts", json=[{"phone": "+12025550101"}, {"phone": "+12025550103"}])
        assert (again.json()["accepted"], again.json()["duplicates"]) == (1, 1)

        page = c.get(f"/v1/campaigns/{cid}/contacts", params={"limit": 2})
        assert page.headers["x-total-count"] == "5" and len(page.json()) == 2
        everyone = {x["phone"]: x for x in c.get(f"/v1/campaigns/{cid}/contacts").json()}
        first = everyone["+12025550101"]
        assert first["timezone"] == "America/New_York" and first["row"] == 2
        assert first["variables"] == {"first_name": "Ada"} and first["history"] == []
        assert everyone["+12025550102"]["timezone"] == "America/Chicago"
        assert everyone["+442071838751"]["timezone"] == "Europe/London"
        dnc = c.get(f"/v1/campaigns/{cid}/contacts", params={"state": "dnc"})
        assert dnc.headers["x-total-count"] == "1" and dnc.json()[0]["phone"] == "+12025550199"
        shown = c.get(f"/v1/campaigns/{cid}").json()
        assert shown["counts"]["by_state"] == {"pending": 4, "dnc": 1} and shown["counts"]["in_flight"] == 0

        assert c.post(f"/v1/campaigns/{cid}/resume").status_code == 409
        assert c.post(f"/v1/campaigns/{cid}/start").json()["status"] == "running"
        assert c.post(f"/v1/campaigns/{cid}/start").status_code == 409
        assert c.post(f"/v1/campaigns/{cid}/contacts", json=[{"phone": "+12025550104"}]).status_code == 409
        assert c.delete(f"/v1/campaigns/{cid}").status_code == 409
        patched = c.patch(f"/v1/campaigns/{cid}", json={"schedule": {"max_concurrent": 2, "windows": []}})
        assert patched.status_code == 200 and patched.json()["schedule"]["max_concurrent"] == 2
        assert c.post(f"/v1/campaigns/{cid}/pause").json()["status"] == "paused"
        assert c.post(f"/v1/campaigns/{cid}/contacts", json=[{"phone": "+12025550104"}]).json()["accepted"] == 1
        assert c.post(f"/v1/campaigns/{cid}/resume").json()["status"] == "running"
        cancelled = c.post(f"/v1/campaigns/{cid}/cancel").json()
        assert cancelled["status"] == "cancelled" and cancelled["counts"]["by_state"] == {"cancelled": 5, "dnc": 1}
        assert c.patch(f"/v1/campaigns/{cid}", json={"name": "late"}).status_code == 409

        exported = c.get(f"/v1/campaigns/{cid}/export")
        assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        assert len(rows) == 6 and {"phone", "state", "first_name", "analysis.summary", "analysis.success"} <= set(
            rows[0]
        )
        as_json = c.get(f"/v1/campaigns/{cid}/export", params={"format": "json"}).json()
        assert [r["phone"] for r in as_json] == [r["phone"] for r in rows]
        lines = c.get(f"/v1/campaigns/{cid}/export", params={"format": "jsonl"}).text.splitlines()
        assert len(lines) == 6 and "variables" in json.loads(lines[0])
        assert c.get("/v1/campaigns").json()[0]["id"] == cid

        viewer = c.post("/v1/keys", json={"name": "v", "role": "viewer"}).json()["secret"]
        with service.client(viewer) as v:
            assert v.get(f"/v1/campaigns/{cid}").status_code == 200
            assert v.get(f"/v1/campaigns/{cid}/export").status_code == 200
            assert v.post("/v1/campaigns", json=body).status_code == 403
            assert v.post(f"/v1/campaigns/{cid}/pause").status_code == 403
            assert v.post("/v1/do-not-call", json={"phone": "+12025550111"}).status_code == 403

        with service.client(service.create_key("campaigns-b")) as b:
            assert b.get("/v1/campaigns").json() == [] and b.get("/v1/do-not-call").json() == []
            for method, path in [("GET", ""), ("PATCH", ""), ("DELETE", ""), ("GET", "/contacts"),
                                 ("POST", "/contacts"), ("POST", "/start"), ("POST", "/cancel"),
                                 ("GET", "/export")]:  # fmt: skip
                r = b.request(method, f"/v1/campaigns/{cid}{path}", json={} if method == "PATCH" else None)
                assert r.status_code == 404, (method, path, r.text)
            assert b.delete("/v1/do-not-call/+12025550199").status_code == 404
            assert b.post("/v1/campaigns", json=body).status_code == 404  # A's agent

        assert c.delete("/v1/do-not-call/+12025550199").status_code == 204
        assert c.delete("/v1/do-not-call/+12025550199").status_code == 404
        assert c.delete(f"/v1/campaigns/{cid}").status_code == 204
        assert c.get(f"/v1/campaigns/{cid}").status_code == 404


def test_cli_creates_uploads_controls_and_exports(service: Service, tmp_path: Path) -> None:
    """`parley campaigns …` as the README shows it, against the running service."""
    key = service.create_key("campaigns-cli")
    with service.client(key) as c:
        agent = c.post("/v1/agents", json={**AGENT, "name": "cli"}).json()
    spec = {"name": "cli", "agent_id": agent["id"], "provider": "sip", "caller_id": "+12025550000"}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(spec))
    (tmp_path / "c.csv").write_text("phone,first_name\n+12025550101,Ada\n2025550102,Bob\nbad,x\n")
    env = {**service.env, "PARLEY_URL": service.url, "PARLEY_API_KEY": key}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "parley.cli", "campaigns", *args], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    cid = cli("create", str(tmp_path / "c.yaml")).stdout.strip().splitlines()[-1]
    uploaded = cli("upload", cid, str(tmp_path / "c.csv"))
    assert uploaded.returncode == 0 and "accepted 2" in uploaded.stderr and "row 4" in uploaded.stderr
    assert "running" in cli("start", cid).stdout
    again = cli("start", cid)
    assert again.returncode == 1 and "409" in again.stderr
    assert "cancelled" in cli("cancel", cid).stdout
    watched = cli("watch", cid)
    assert watched.returncode == 0 and "cancelled" in watched.stdout
    exported = cli("export", cid).stdout.splitlines()
    assert exported[0].startswith("row,phone,") and len(exported) == 3
    env["PARLEY_URL"] = "http://127.0.0.1:1"
    unreachable = cli("list")
    assert unreachable.returncode == 2 and "cannot reach the service" in unreachable.stderr
