"""Session-wide fixtures: the object stores, the shared `parley serve` fixtures, and the log check for secrets.

The helpers themselves live in tests/support/ (docs/testing.md); ``espeak``, ``silence`` and ``noise`` are
re-exported here for test modules that still import them from conftest.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from .support.audio import espeak, noise, silence
from .support.served import agent, agent_doc, key, service, service_env, tenant_name
from .support.servers import azurite, seaweedfs
from .support.service import leaked_secrets

__all__ = ["agent", "agent_doc", "azurite", "espeak", "key", "noise", "seaweedfs", "service", "service_env",
           "silence", "tenant_name"]  # fmt: skip

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_log() -> Iterator[None]:
    """After the whole run: no `parley serve` log holds a key or secret setting any test gave it (finding 3)."""
    yield
    leaks = leaked_secrets()
    if leaks:
        pytest.fail("secrets written to a log:\n" + "\n".join(leaks[:50]), pytrace=False)


@pytest.fixture(autouse=True)
def capacity_as_it_was() -> Iterator[None]:
    """This process's call slots (parley.calls.capacity.CAPACITY) as they were before each test: an in-process app
    whose lifespan ended drains the process (as a real shutdown does), and an in-process SIP endpoint in a later
    test would answer every INVITE 503 'draining'."""
    from parley.calls.capacity import CAPACITY

    saved = (CAPACITY.limit, CAPACITY.draining, CAPACITY.registry_ok)
    yield
    CAPACITY.limit, CAPACITY.draining, CAPACITY.registry_ok = saved
