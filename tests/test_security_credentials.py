"""Issue 8, finding 1: tenants cannot name server environment variables as keys, and every outbound URL a tenant
sets passes the SSRF guard. Against a real ``parley serve`` and a real local OpenAI-compatible server.

The service allow-lists ``127.0.0.2`` only (Linux answers on all of 127/8): the test's OpenAI-compatible server
listens there, so "allowed" and "refused" loopback destinations can both be exercised on one machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import websockets

from .support.service import Service, running_service

JWT_SECRET = "jwt-secret-for-finding-1-0123456789abcdef"
TOKEN_SECRET = "token-secret-for-finding-1-0123456789"
ALLOWED_HOST = "127.0.0.2"


class Provider(ThreadingHTTPServer):
    """An OpenAI-compatible server that records every request's path and Authorization header."""

    daemon_threads = True
    seen: list[tuple[str, str]]
    redirect_to: str | None = None


class Handler(BaseHTTPRequestHandler):
    server: Provider

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        self.server.seen.append((self.path, self.headers.get("Authorization", "")))
        if self.server.redirect_to:
            self.send_response(307)
            self.send_header("Location", self.server.redirect_to + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps({"object": "list", "data": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer


def _provider(host: str) -> Provider:
    server = Provider((host, 0), Handler)
    server.seen = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def providers() -> Iterator[tuple[Provider, Provider]]:
    """(one on the allowed address, one on 127.0.0.1, which is not allowed)."""
    allowed, internal = _provider(ALLOWED_HOST), _provider("127.0.0.1")
    yield allowed, internal
    for server in (allowed, internal):
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    env = {
        "PARLEY_JWT_SECRET": JWT_SECRET,
        "PARLEY_TOKEN_SECRET": TOKEN_SECRET,
        "PARLEY_OUTBOUND_ALLOW": ALLOWED_HOST,
        "PARLEY_PROVIDER_ENV_ALLOW": "PARLEY_JWT_SECRET,HOME",  # listed, yet never readable by stored agents
        "PARLEY_RATE_LIMIT_PER_KEY": "100000/minute",
        "PARLEY_RATE_LIMIT_PER_ADDRESS": "100000/minute",
    }
    with running_service(tmp_path_factory.mktemp("credentials"), **env) as svc:
        yield svc


def agent(name: str, **llm: Any) -> dict[str, Any]:
    return {
        "name": name,
        "system_prompt": "You answer the phone.",
        "stt": {"provider": "canned"},
        "llm": {"provider": "openai", "options": {"model": "m", "max_retries": 0, **llm}},
        "tts": {"provider": "tone"},
        "vad": {"provider": "energy"},
    }


def url(server: Provider, host: str | None = None) -> str:
    return f"http://{host or str(server.server_address[0])}:{server.server_port}/v1"


async def _talk(service: Service, key: str, agent_id: str) -> str:
    """Open a talk session and end it; 'ok' when the agent's services started, else why the socket closed."""
    ws_url = service.url.replace("http", "ws", 1) + f"/v1/agents/{agent_id}/talk"
    try:
        async with websockets.connect(ws_url, additional_headers={"Authorization": f"Bearer {key}"}) as ws:
            await ws.send(json.dumps({"type": "end"}))
            async for message in ws:
                if isinstance(message, str) and json.loads(message).get("type") == "end":
                    return "ok"
            return f"closed {ws.close_code} {ws.close_reason}"
    except websockets.InvalidStatus as exc:
        return f"refused HTTP {exc.response.status_code}"
    except websockets.ConnectionClosed as exc:
        return f"closed {exc.rcvd.code if exc.rcvd else '?'} {exc.rcvd.reason if exc.rcvd else ''}"


def talk(service: Service, key: str, agent_id: str) -> str:
    return asyncio.run(asyncio.wait_for(_talk(service, key, agent_id), 60))


def locs(response: Any) -> list[str]:
    assert response.status_code == 422, response.text
    return [".".join(str(p) for p in e["loc"][1:]) for e in response.json()["detail"]]


def test_the_probe_attack_is_refused_and_the_secret_never_leaves(
    service: Service, providers: tuple[Provider, Provider]
) -> None:
    """Tenant-B editor: api_key_env PARLEY_JWT_SECRET, base_url at a server the editor controls."""
    allowed, internal = providers
    key = service.create_key("tenant-b", role="editor")
    with service.client(key) as c:
        for target in (allowed, internal):
            r = c.post("/v1/agents", json=agent("leak", api_key_env="PARLEY_JWT_SECRET", base_url=url(target)))
            assert "llm.options.api_key_env" in locs(r)
            assert JWT_SECRET not in r.text
        for var in ("PARLEY_TOKEN_SECRET", "HOME", "OPENAI_API_KEY"):  # any variable, listed or not
            r = c.post("/v1/agents", json=agent("env", api_key_env=var, base_url=url(allowed)))
            assert locs(r) == ["llm.options.api_key_env"]
        r = c.post("/v1/agents", json=agent("inline", api_key="sk-inline-key-0123", base_url=url(allowed)))
        assert locs(r) == ["llm.options.api_key"] and "sk-inline-key-0123" not in r.text
        r = c.put("/v1/agents/whatever", json=agent("whatever", api_key_env="PARLEY_JWT_SECRET"))
        assert r.status_code in (404, 422)  # refused either way, never stored
        assert c.get("/v1/agents").json() == []
    for server in providers:
        assert all(JWT_SECRET not in auth and TOKEN_SECRET not in auth for _, auth in server.seen)
    assert JWT_SECRET not in service.log.read_text()


@pytest.mark.parametrize(
    ("options", "field", "why"),
    [
        ({"base_url": "http://127.0.0.1:9/v1"}, "base_url", "loopback"),
        ({"base_url": "http://[::1]:9/v1"}, "base_url", "loopback"),
        ({"base_url": "http://169.254.169.254/latest"}, "base_url", "metadata"),
        ({"base_url": "http://[::ffff:169.254.169.254]/"}, "base_url", "metadata"),
        ({"base_url": "http://metadata.google.internal/v1"}, "base_url", "metadata"),
        ({"base_url": "http://10.0.0.8:8000/v1"}, "base_url", "private"),
        ({"base_url": "file:///etc/passwd"}, "base_url", "http"),
        (
            {"azure_endpoint": "http://169.254.169.254", "api_version": "2024-10-21"},
            "azure_endpoint",
            "metadata",
        ),
        ({"extra_headers": {"Authorization": "Bearer sk-inline"}}, "extra_headers.Authorization", "credential"),
        ({"extra_headers": {"api-key": "sk-inline"}}, "extra_headers.api-key", "credential"),
    ],
)
def test_internal_urls_are_refused_when_saved(service: Service, options: dict[str, Any], field: str, why: str) -> None:
    key = service.create_key("tenant-urls", role="editor")
    with service.client(key) as c:
        r = c.post("/v1/agents", json=agent("internal", **options))
    assert locs(r) == [f"llm.options.{field}"]
    assert why in json.dumps(r.json()["detail"]) and "sk-inline" not in r.text


def test_a_document_stored_before_the_fix_cannot_read_the_environment(
    service: Service, providers: tuple[Provider, Provider]
) -> None:
    """A document already in the database with ``api_key_env: PARLEY_JWT_SECRET``: its call does not start."""
    allowed, _ = providers
    key = service.create_key("tenant-legacy", role="editor")
    with service.client(key) as c:
        created = c.post("/v1/agents", json=agent("legacy", base_url=url(allowed))).json()
    document = created["document"]
    document["llm"]["options"]["api_key_env"] = "PARLEY_JWT_SECRET"
    db = sqlite3.connect(Path(service.env["PARLEY_DATA_DIR"]) / "parley.db")
    with db:
        db.execute("UPDATE agents SET document = ? WHERE name = 'legacy'", (json.dumps(document),))
    db.close()
    allowed.seen.clear()
    outcome = talk(service, key, created["id"])
    assert "api_key_env: the server's environment is not readable" in outcome
    assert allowed.seen == []


def test_credentials_are_write_only_encrypted_and_sent_as_bearer(
    service: Service, providers: tuple[Provider, Provider]
) -> None:
    allowed, _ = providers
    editor, viewer = service.create_key("tenant-c", role="editor"), service.create_key("tenant-c", role="viewer")
    value = "sk-tenant-c-live-key-0123456789"
    with service.client(editor) as c:
        r = c.put("/v1/credentials/openai", json={"value": value})
        assert r.status_code == 201 and value not in r.text and set(r.json()) == {"name", "hosts", "created_at",
                                                                                     "updated_at"}  # fmt: skip
        assert c.put("/v1/credentials/openai", json={"value": value}).status_code == 200  # replaced
        doc = agent("uses-credential", api_key_credential="openai", base_url=url(allowed))
        created = c.post("/v1/agents", json=doc)
        assert created.status_code == 201, created.text
        assert value not in created.text and value not in c.get(f"/v1/agents/{created.json()['id']}").text
        for bad_value in ("sk-with\nnewline", "sk-with-é", "", 12345, "x" * 5000):
            bad = c.put("/v1/credentials/bad", json={"value": bad_value})
            assert bad.status_code == 422 and "sk-with" not in bad.text and "xxxx" not in bad.text
        assert c.put("/v1/credentials/bad%20name", json={"value": "x"}).status_code == 422
    with service.client(viewer) as c:
        listed = c.get("/v1/credentials")
        assert listed.status_code == 200 and [i["name"] for i in listed.json()] == ["openai"]
        assert value not in listed.text
        assert c.put("/v1/credentials/openai", json={"value": "sk-viewer"}).status_code == 403
        assert c.delete("/v1/credentials/openai").status_code == 403
    allowed.seen.clear()
    assert talk(service, editor, created.json()["id"]) == "ok"
    assert ("/v1/models", f"Bearer {value}") in allowed.seen
    data_dir = Path(service.env["PARLEY_DATA_DIR"])
    assert value.encode() not in (data_dir / "parley.db").read_bytes()  # encrypted at rest
    rows = sqlite3.connect(data_dir / "parley.db").execute("SELECT ciphertext FROM provider_credentials").fetchall()
    assert rows and all(value not in r[0] for r in rows)
    assert stat.S_IMODE(os.stat(data_dir / "credentials.key").st_mode) == 0o600
    assert value not in service.log.read_text()


def test_a_tenant_cannot_use_another_tenants_credential(service: Service, providers: tuple[Provider, Provider]) -> None:
    allowed, _ = providers
    a, b = service.create_key("tenant-iso-a", role="editor"), service.create_key("tenant-iso-b", role="editor")
    value_a, value_b = "sk-tenant-a-only-0123456789", "sk-tenant-b-own-0123456789"
    with service.client(a) as c:
        assert c.put("/v1/credentials/shared", json={"value": value_a}).status_code == 201
    with service.client(b) as c:
        assert c.get("/v1/credentials").json() == []
        assert c.delete("/v1/credentials/shared").status_code == 404
        agent_b = c.post("/v1/agents", json=agent("b", api_key_credential="shared", base_url=url(allowed))).json()
    allowed.seen.clear()
    outcome = talk(service, b, agent_b["id"])
    assert "no credential 'shared'" in outcome and allowed.seen == []  # B's call does not start with A's key
    with service.client(b) as c:
        assert c.put("/v1/credentials/shared", json={"value": value_b}).status_code == 201
    assert talk(service, b, agent_b["id"]) == "ok"
    assert [auth for _, auth in allowed.seen] == [f"Bearer {value_b}"]
    with service.client(a) as c:
        assert [i["name"] for i in c.get("/v1/credentials").json()] == ["shared"]  # A's is untouched
        assert c.delete("/v1/credentials/shared").status_code == 204
        assert c.get("/v1/credentials").json() == []


def test_names_resolving_inside_are_refused_at_call_time(
    service: Service, providers: tuple[Provider, Provider]
) -> None:
    """``localhost`` is a name (fine to save) that resolves to 127.0.0.1 (not allowed): refused when it connects."""
    _, internal = providers
    key = service.create_key("tenant-dns", role="editor")
    with service.client(key) as c:
        assert c.put("/v1/credentials/k", json={"value": "sk-dns-0123456789"}).status_code == 201
        doc = agent("by-name", api_key_credential="k", base_url=url(internal, host="localhost"))
        created = c.post("/v1/agents", json=doc)
        assert created.status_code == 201, created.text
    internal.seen.clear()
    outcome = talk(service, key, created.json()["id"])
    assert "refused: localhost resolves to a loopback address" in outcome and internal.seen == []


def test_a_redirect_to_an_internal_address_is_not_followed(
    service: Service, providers: tuple[Provider, Provider]
) -> None:
    allowed, internal = providers
    key = service.create_key("tenant-redirect", role="editor")
    value = "sk-redirect-0123456789"
    with service.client(key) as c:
        assert c.put("/v1/credentials/k", json={"value": value}).status_code == 201
        created = c.post("/v1/agents", json=agent("redirects", api_key_credential="k", base_url=url(allowed)))
    allowed.seen.clear()
    internal.seen.clear()
    allowed.redirect_to = f"http://127.0.0.1:{internal.server_port}"
    try:
        talk(service, key, created.json()["id"])
    finally:
        allowed.redirect_to = None
    assert allowed.seen and internal.seen == []  # the key reached only the host the document names


def test_a_credential_limited_to_hosts_goes_nowhere_else(
    service: Service, providers: tuple[Provider, Provider]
) -> None:
    allowed, _ = providers
    key = service.create_key("tenant-hosts", role="editor")
    with service.client(key) as c:
        r = c.put("/v1/credentials/openai", json={"value": "sk-hosts-0123456789", "hosts": ["api.openai.com"]})
        assert r.status_code == 201 and r.json()["hosts"] == ["api.openai.com"]
        created = c.post("/v1/agents", json=agent("elsewhere", api_key_credential="openai", base_url=url(allowed)))
        assert created.status_code == 201
        assert c.put("/v1/credentials/x", json={"value": "v", "hosts": ["http://x"]}).status_code == 422
    allowed.seen.clear()
    assert "credential 'openai' may not be sent to 127.0.0.2" in talk(service, key, created.json()["id"])
    assert allowed.seen == []
