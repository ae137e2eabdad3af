"""GET /healthz and GET /readyz on a real `parley serve`: no authentication, small JSON bodies, nothing secret,
documented in the OpenAPI under the health tag."""

from __future__ import annotations

import httpx

from .support.service import Service


def test_healthz(service: Service) -> None:
    r = httpx.get(f"{service.url}/healthz", timeout=5)
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_readyz_names_each_check(service: Service) -> None:
    r = httpx.get(f"{service.url}/readyz", timeout=5)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ready"] is True and body["not_ready"] == []
    assert body["checks"] == {
        "database": "ok",
        "blobs": "ok",
        "redis": "not configured",
        "registry": "ok",
        "models": "ok",
        "drain": "ok",
        "capacity": "ok",
    }
    assert body["calls"]["in_use"] == 0 and body["calls"]["limit"] > 0 and body["calls"]["draining"] is False
    assert "sqlite" not in r.text and "/" not in r.text  # no paths, no URLs


def test_openapi_documents_health(service: Service) -> None:
    paths = httpx.get(f"{service.url}/openapi.json", timeout=10).json()["paths"]
    for path in ("/healthz", "/readyz"):
        assert paths[path]["get"]["tags"] == ["health"]
    assert "503" in paths["/readyz"]["get"]["responses"]
