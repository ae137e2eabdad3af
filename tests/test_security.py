"""Security middleware on a real uvicorn server, exercised over real HTTP with httpx."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import StreamingResponse
from starlette.middleware.cors import CORSMiddleware

from parley.api.security import BodySizeLimitMiddleware, add_security
from parley.config import Settings

LIMIT = 1000
ORIGIN = "https://app.example.com"


def build_app() -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/v1/things")
    async def things() -> list[int]:
        return [1, 2]

    @app.post("/v1/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"received": len(await request.body())}

    @app.get("/v1/stream")
    async def stream() -> StreamingResponse:
        async def parts() -> AsyncIterator[bytes]:
            for i in range(3):
                yield f"part{i}\n".encode()

        return StreamingResponse(parts(), media_type="text/plain")

    @app.websocket("/v1/ws")
    async def ws(socket: WebSocket) -> None:
        await socket.accept()
        await socket.send_text("hello " + await socket.receive_text())
        await socket.close()

    add_security(app, Settings(_env_file=None, cors_origins=[ORIGIN], max_body_bytes=LIMIT))
    return app


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(build_app(), host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(5)


@pytest.fixture
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=10) as c:
        yield c


def test_security_headers(client: httpx.Client) -> None:
    r = client.get("/v1/things")
    assert r.status_code == 200 and r.json() == [1, 2]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["content-security-policy"].startswith("default-src 'none'")
    assert "cdn.jsdelivr.net" not in r.headers["content-security-policy"]
    assert "camera=()" in r.headers["permissions-policy"]
    assert r.headers["cache-control"] == "no-store"
    assert "cache-control" not in client.get("/health").headers  # only /v1 is tenant data


def test_docs_csp_allows_its_cdn(client: httpx.Client) -> None:
    r = client.get("/docs")
    assert r.status_code == 200
    csp = r.headers["content-security-policy"]
    assert "script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net" in csp
    assert "cdn.jsdelivr.net/npm/swagger-ui-dist" in r.text
    assert r.headers["x-frame-options"] == "DENY"


def test_cors_preflight(client: httpx.Client) -> None:
    ask = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
    ok = client.options("/v1/echo", headers={"Origin": ORIGIN, **ask})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in ok.headers["access-control-allow-headers"].lower()
    assert ok.headers["access-control-allow-credentials"] == "true"
    assert ok.headers["x-content-type-options"] == "nosniff"  # even preflights get the headers

    bad = client.options("/v1/echo", headers={"Origin": "https://evil.example", **ask})
    assert bad.status_code == 400
    assert "access-control-allow-origin" not in bad.headers
    simple = client.get("/v1/things", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in simple.headers


def test_wildcard_origin_drops_credentials() -> None:
    app = FastAPI()
    add_security(app, Settings(_env_file=None, cors_origins=["*"]))
    cors = next(m for m in app.user_middleware if m.cls is CORSMiddleware)
    assert cors.kwargs["allow_origins"] == ["*"] and cors.kwargs["allow_credentials"] is False


def test_normal_post_passes(client: httpx.Client) -> None:
    r = client.post("/v1/echo", content=b"x" * LIMIT)
    assert r.status_code == 200 and r.json() == {"received": LIMIT}


def test_large_content_length_413(client: httpx.Client) -> None:
    r = client.post("/v1/echo", content=b"x" * (LIMIT + 1))
    assert r.status_code == 413
    assert r.json() == {"detail": f"request body too large (limit {LIMIT} bytes)"}
    assert r.headers["x-content-type-options"] == "nosniff"


def test_large_chunked_body_413(client: httpx.Client) -> None:
    sent: list[int] = []

    def chunks() -> Iterator[bytes]:
        for _ in range(4):
            sent.append(400)
            yield b"y" * 400

    r = client.post("/v1/echo", content=chunks())
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert r.status_code == 413
    assert r.json() == {"detail": f"request body too large (limit {LIMIT} bytes)"}
    # small chunked bodies still pass
    r = client.post("/v1/echo", content=iter([b"a" * 300, b"b" * 300]))
    assert r.status_code == 200 and r.json() == {"received": 600}


def test_streaming_response_passes(client: httpx.Client) -> None:
    with client.stream("GET", "/v1/stream") as r:
        assert r.status_code == 200
        assert b"".join(r.iter_bytes()) == b"part0\npart1\npart2\n"
        assert r.headers["x-frame-options"] == "DENY"


def test_websocket_passes(base_url: str) -> None:
    from websockets.sync.client import connect

    with connect(base_url.replace("http", "ws") + "/v1/ws") as ws:
        ws.send("there")
        assert ws.recv(timeout=5) == "hello there"


def test_rejects_negative_limit() -> None:
    with pytest.raises(ValueError):
        BodySizeLimitMiddleware(FastAPI(), -1)
