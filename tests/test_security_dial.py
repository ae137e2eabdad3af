"""Outbound calls: what a tenant asks to dial is checked before any carrier sees it, and a carrier failure does not
tell the tenant the operator's carrier account or API address (found by tests/test_security_fuzz.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.service import Service, free_port, running_service

SID = "AC" + "f" * 32


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    closed = free_port()  # nothing listens there: the carrier's API is unreachable
    env = {
        "PARLEY_TWILIO_ACCOUNT_SID": SID,
        "PARLEY_TWILIO_AUTH_TOKEN": "twilio-test-token-0123456789",
        "PARLEY_TWILIO_API_BASE_URL": f"http://127.0.0.1:{closed}",
        "PARLEY_PUBLIC_URL": "https://parley.example.com",
    }
    with running_service(Path(tmp_path_factory.mktemp("dial")), **env) as svc:
        yield svc


AGENT = {"name": "dialler", "system_prompt": "You call people.", "llm": {"provider": "canned"},
         "tts": {"provider": "tone"}, "vad": {"provider": "energy"}}  # fmt: skip


@pytest.mark.parametrize("to", [",ä\n\t<x>", "+1 555", "sip:a b@x", 'sip:"x"@y', "\x01", "++1", "tel"])
def test_numbers_that_no_carrier_dials_are_422(service: Service, to: str) -> None:
    key = service.create_key("dial-a")
    with service.client(key) as c:
        c.post("/v1/agents", json=AGENT)
        r = c.post("/v1/calls", json={"agent_id": "dialler", "to": to, "provider": "twilio"})
        assert r.status_code == 422, r.text
        r = c.post("/v1/calls", json={"agent_id": "dialler", "to": "+15550100000", "from": to})
        assert r.status_code == 422, r.text


def test_a_carrier_failure_does_not_show_the_operators_account(service: Service) -> None:
    key = service.create_key("dial-b")
    with service.client(key) as c:
        c.post("/v1/agents", json=AGENT)
        r = c.post("/v1/calls", json={"agent_id": "dialler", "to": "+15550100000", "from": "+15550100001"})
    assert r.status_code == 502
    detail = r.json()["detail"]
    assert SID not in detail and "127.0.0.1" not in detail and "twilio did not place the call" in detail
