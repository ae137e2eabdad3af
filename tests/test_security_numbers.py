"""Phone numbers belong to the tenant the operator assigns them to, not to whoever maps them first.

A real `parley serve` and the real `parley admin numbers` commands, as the README tells an operator.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from .support.service import ROOT, Service, running_service

AGENT = {"name": "desk", "system_prompt": "-", "llm": {"provider": "canned"}, "tts": {"provider": "tone"},
         "vad": {"provider": "energy"}}  # fmt: skip


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("numbers")) as svc:
        yield svc


def admin_numbers(service: Service, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "parley.cli", "admin", "numbers", *args],
        env=service.env, capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip


def test_only_the_assigned_tenant_maps_a_number(service: Service) -> None:
    a_key, b_key = service.create_key("owner-a"), service.create_key("owner-b")
    with service.client(a_key) as a, service.client(b_key) as b:
        assert a.post("/v1/agents", json=AGENT).status_code == 201
        assert b.post("/v1/agents", json=AGENT).status_code == 201
        # nobody was assigned the number: nobody can map it, whoever comes first
        r = b.post("/v1/numbers", json={"number": "+15550107777", "agent_id": "desk"})
        assert r.status_code == 403 and "operator" in r.json()["detail"]
        assert a.post("/v1/numbers", json={"number": "+15550107777", "agent_id": "desk"}).status_code == 403

        service.assign_number("+1 (555) 010-7777", "owner-a")
        # B still cannot, in any spelling; A can
        for spelling in ("+15550107777", "+1 555 010 7777", "15550107777"):
            r = b.post("/v1/numbers", json={"number": spelling, "agent_id": "desk"})
            assert r.status_code == 403, (spelling, r.text)
        r = a.post("/v1/numbers", json={"number": "+1-555-010-7777", "agent_id": "desk"})
        assert r.status_code == 201, r.text
        assert r.json()["number"] == "+15550107777"
        assert b.get("/v1/numbers").json() == []

        # deleting the mapping keeps the ownership: B still cannot take it, A can map it again
        assert a.delete("/v1/numbers/+15550107777").status_code == 204
        assert b.post("/v1/numbers", json={"number": "+15550107777", "agent_id": "desk"}).status_code == 403
        assert a.post("/v1/numbers", json={"number": "+15550107777", "agent_id": "desk"}).status_code == 201

        # the operator's view, and taking a number back (its mapping goes with it)
        listing = admin_numbers(service, "list")
        assert listing.returncode == 0 and "+15550107777\towner-a" in listing.stdout
        assert admin_numbers(service, "assign", "+15550107777", "--tenant", "owner-b").returncode == 1
        assert admin_numbers(service, "unassign", "+15550107777").returncode == 0
        assert a.get("/v1/numbers").json() == []
        assert a.post("/v1/numbers", json={"number": "+15550107777", "agent_id": "desk"}).status_code == 403
        service.assign_number("+15550107777", "owner-b")
        assert b.post("/v1/numbers", json={"number": "+15550107777", "agent_id": "desk"}).status_code == 201
        assert admin_numbers(service, "list", "--tenant", "owner-a").stdout == ""
