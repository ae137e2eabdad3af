"""The HTTP API against a real `parley serve`: embedded parts, and PostgreSQL + Redis + S3 (SeaweedFS)."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from .support.service import BACKENDS, ROOT, Service, backend_env, running_service

RECEPTIONIST = yaml.safe_load((ROOT / "examples/agents/receptionist.yaml").read_text())


@pytest.fixture(scope="module", params=BACKENDS)
def service(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    unlimited = "100000/minute"
    limits = {"PARLEY_RATE_LIMIT_PER_KEY": unlimited, "PARLEY_RATE_LIMIT_PER_ADDRESS": unlimited}
    dirname = request.param.replace("+", "-")
    with (
        backend_env(request.param, request) as env,
        running_service(tmp_path_factory.mktemp(dirname), **env, **limits) as svc,
    ):
        yield svc


@pytest.fixture(scope="module")
def admin_key(service: Service) -> str:
    return service.create_key(f"acme-{secrets.token_hex(3)}")


def agent_doc(name: str = "Receptionist") -> dict:
    return {**RECEPTIONIST, "name": name}


def test_agents_crud_with_versions(service: Service, admin_key: str) -> None:
    with service.client(admin_key) as c:
        r = c.post("/v1/agents", json=agent_doc("Front desk"))
        assert r.status_code == 201, r.text
        agent = r.json()
        assert agent["version"] == 1 and agent["document"]["greeting"].startswith("Hello")
        assert c.post("/v1/agents", json=agent_doc("Front desk")).status_code == 409
        changed = {**agent_doc("Front desk"), "greeting": "Hi there!"}
        r = c.put(f"/v1/agents/{agent['id']}", json=changed)
        assert r.status_code == 200 and r.json()["version"] == 2
        assert c.get("/v1/agents/Front desk").json()["id"] == agent["id"]  # by name too
        versions = c.get(f"/v1/agents/{agent['id']}/versions").json()
        assert [v["version"] for v in versions] == [1, 2]
        assert c.get(f"/v1/agents/{agent['id']}/versions/1").json()["document"]["greeting"].startswith("Hello")
        assert any(a["id"] == agent["id"] for a in c.get("/v1/agents").json())
        assert c.delete(f"/v1/agents/{agent['id']}").status_code == 204
        assert c.get(f"/v1/agents/{agent['id']}").status_code == 404


@pytest.mark.parametrize(
    "change,field",
    [
        (
            {"tts": {"provider": "piper", "options": {"length_scale": "slow"}}},
            ["body", "tts", "options", "length_scale"],
        ),
        ({"name": ""}, ["body", "name"]),
        ({"turn": {"end_of_turn_secs": -1}}, ["body", "turn", "end_of_turn_secs"]),
        ({"llm": {"provider": "nope"}}, ["body", "llm", "provider"]),
    ],
)
def test_invalid_agents_are_422_naming_the_field(service: Service, admin_key: str, change: dict, field: list) -> None:
    with service.client(admin_key) as c:
        r = c.post("/v1/agents", json={**agent_doc("Bad"), **change})
    assert r.status_code == 422
    assert any(d["loc"] == field for d in r.json()["detail"]), r.json()


def test_authentication_and_roles(service: Service, admin_key: str) -> None:
    with service.client() as anon:
        assert anon.get("/v1/agents").status_code == 401
        assert anon.get("/v1/agents", headers={"Authorization": "Bearer pk_wrong"}).status_code == 401
        assert anon.get("/v1/agents", headers={"X-API-Key": admin_key}).status_code == 200
    with service.client(admin_key) as c:
        viewer = c.post("/v1/keys", json={"name": "ro", "role": "viewer"}).json()
        assert viewer["secret"].startswith("pk_") and viewer["prefix"] == viewer["secret"][:12]
        assert all("secret" not in k for k in c.get("/v1/keys").json())
    with service.client(viewer["secret"]) as v:
        assert v.get("/v1/agents").status_code == 200
        assert v.post("/v1/agents", json=agent_doc("Nope")).status_code == 403
        assert v.get("/v1/keys").status_code == 403
    with service.client(admin_key) as c:
        assert c.delete(f"/v1/keys/{viewer['id']}").status_code == 204
    with service.client(viewer["secret"]) as v:
        assert v.get("/v1/agents").status_code == 401


def test_security_headers_and_body_limit(service: Service, admin_key: str) -> None:
    with service.client(admin_key) as c:
        r = c.get("/v1/agents")
        assert r.headers["x-content-type-options"] == "nosniff"
        big = c.post("/v1/agents", content=b"{" + b" " * 2_000_000 + b"}", headers={"Content-Type": "application/json"})
        assert big.status_code == 413
        assert (
            c.post("/v1/agents", content=b"not json", headers={"Content-Type": "application/json"}).status_code == 422
        )
        assert c.get("/v1/calls/not-a-uuid").status_code == 422
        assert c.get(f"/v1/calls/{uuid.uuid4()}").status_code == 404


def test_openapi_and_docs(service: Service) -> None:
    with service.client() as c:
        spec = c.get("/openapi.json").json()
        assert "/v1/agents" in spec["paths"] and "/v1/calls/{call_id}/recording" in spec["paths"]
        assert c.get("/docs").status_code == 200


def test_rate_limits_answer_429_with_retry_after(tmp_path: Path) -> None:
    with running_service(tmp_path, PARLEY_RATE_LIMIT_PER_KEY="5/minute") as svc:
        key = svc.create_key("limited")
        with svc.client(key) as c:
            codes = [c.get("/v1/agents").status_code for _ in range(7)]
            assert codes[:5] == [200] * 5 and codes[5:] == [429, 429]
            r = c.get("/v1/agents")
            assert int(r.headers["retry-after"]) >= 1
        # another key of the same service is not limited by the first one's use
        with svc.client(svc.create_key("limited")) as other:
            assert other.get("/v1/agents").status_code == 200


def test_talk_token_is_short_lived_and_bound(service: Service, admin_key: str) -> None:
    with service.client(admin_key) as c:
        agent = c.post("/v1/agents", json=agent_doc(f"Talker {uuid.uuid4().hex[:6]}")).json()
        r = c.post(f"/v1/agents/{agent['id']}/talk-token")
        assert r.status_code == 200
        body = r.json()
        assert body["expires_in"] <= 60 and body["url"].startswith(f"/v1/agents/{agent['id']}/talk?token=")
        assert json.loads(json.dumps(body))["token"].count(".") == 2


def test_scopes_narrow_a_key_within_its_role(service: Service, admin_key: str) -> None:
    with service.client(admin_key) as c:
        assert c.post("/v1/keys", json={"name": "x", "scopes": ["everything"]}).status_code == 422
        narrow = c.post("/v1/keys", json={"name": "calls only", "role": "editor", "scopes": ["calls:read"]}).json()
        assert narrow["scopes"] == ["calls:read"]
    with service.client(narrow["secret"]) as n:
        assert n.get("/v1/calls").status_code == 200
        denied = n.get("/v1/agents")
        assert denied.status_code == 403 and "agents:read" in denied.json()["detail"]
        assert n.post("/v1/agents", json=agent_doc("Scoped")).status_code == 403
