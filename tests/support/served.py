"""The fixture most API tests start from: a running `parley serve`, an admin key of one tenant, and an agent.

tests/conftest.py registers these for every module. A test asks for ``service``, ``key`` or ``agent``; a module
changes what they are by overriding the small fixtures they read: ``service_env`` (settings for the process, may
depend on the module's fake carrier API), ``tenant_name`` and ``agent_doc`` (the agent document to create). All
are module-scoped: one process per module, as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .service import Service, running_service

CANNED_REPLY = "We are open nine to five."
#: a model-free receptionist (Whisper hears, canned rules answer, espeak speaks): short calls, stable replies
AGENT: dict[str, Any] = {
    "kind": "agent",
    "name": "Phone Receptionist",
    "greeting": "Hi there.",
    "system_prompt": "You answer the phone for a clinic.",
    "stt": {"provider": "whisper"},
    "llm": {"provider": "canned", "options": {"rules": [{"match": ["hours", "open", "opening"], "reply": CANNED_REPLY}],
                                              "default": "Sorry, could you say that again?"}},
    "tts": {"provider": "espeak"},
}  # fmt: skip


def module_stem(request: pytest.FixtureRequest) -> str:
    """``telephony-vonage`` for tests/test_telephony_vonage.py: names a module's data directory and tenant."""
    return request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_").replace("_", "-")


@pytest.fixture(scope="module")
def service_env() -> dict[str, str]:
    """``PARLEY_*`` settings for the module's `parley serve` (none: the embedded defaults)."""
    return {}


@pytest.fixture(scope="module")
def service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, service_env: dict[str, str]
) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp(module_stem(request)), **service_env) as svc:
        yield svc


@pytest.fixture(scope="module")
def tenant_name(request: pytest.FixtureRequest) -> str:
    return f"{module_stem(request)}-tenant"


@pytest.fixture(scope="module")
def key(service: Service, tenant_name: str) -> str:
    """An admin key of ``tenant_name``, made with `parley admin create-key` as the README says."""
    return service.create_key(tenant_name)


@pytest.fixture(scope="module")
def agent_doc() -> dict[str, Any]:
    return AGENT


@pytest.fixture(scope="module")
def agent(service: Service, key: str, agent_doc: dict[str, Any]) -> dict[str, Any]:
    """``agent_doc`` created through the API (the response body: ``id``, ``name``, ``version``…)."""
    with service.client(key) as c:
        created = c.post("/v1/agents", json=agent_doc)
        assert created.status_code == 201, created.text
        return dict(created.json())
