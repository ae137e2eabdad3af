"""Prometheus metrics: a fallback chain's errors, switches, probes and breaker states become labelled metrics, and
``GET /metrics`` serves them to the operator's token only (404 when no token is configured)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from parley.api.app import create_app
from parley.config import Settings
from parley.metrics import REGISTRY
from parley.services.fallback import breaker
from parley.services.fallback.build import chain_provider
from parley.services.fallback.config import FallbackLink
from parley.services.secrets import NoSecrets
from parley.services.tts.base import registry as tts_registry

from .support.fakes import flaky_speech  # noqa: F401  (registers flaky-tts)


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    breaker.reset_breakers()
    yield
    breaker.reset_breakers()


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_switch_is_counted_by_stage_provider_and_kind() -> None:
    errors = _value("parley_provider_errors_total", stage="tts", provider="flaky-tts", kind="server")
    switches = _value("parley_provider_switches_total", stage="tts", **{"from": "flaky-tts", "to": "tone"})
    links = [FallbackLink(provider="flaky-tts", options={"fail_after_chunks": 2, "kind": "server"}),
             FallbackLink(provider="tone")]  # fmt: skip
    tts = await chain_provider("tts", tts_registry, links, NoSecrets())
    assert [c async for c in tts.synthesize("Hello there, this is a longer sentence.")]
    tts.chain.drain()
    assert _value("parley_provider_errors_total", stage="tts", provider="flaky-tts", kind="server") == errors + 1
    assert _value("parley_provider_switches_total", stage="tts", **{"from": "flaky-tts", "to": "tone"}) == switches + 1
    assert _value("parley_provider_breaker_state", stage="tts", provider="flaky-tts") == 2  # open
    assert _value("parley_provider_fallback_served_total", stage="tts", provider="tone") >= 1


def test_the_scrape_needs_the_operators_token(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, metrics_token="scrape-secret"))
    client = TestClient(app)
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})
    assert ok.status_code == 200 and "parley_provider_errors_total" in ok.text
    assert ok.headers["content-type"].startswith("text/plain")


def test_without_a_token_there_is_no_metrics_endpoint(tmp_path: Path) -> None:
    client = TestClient(create_app(Settings(data_dir=tmp_path)))
    assert client.get("/metrics", headers={"Authorization": "Bearer anything"}).status_code == 404
