"""A real HTTP server for the tool tests (starlette on uvicorn, in a thread on 127.0.0.1): it answers JSON, hangs,
fails, answers too much or not JSON, redirects, and counts what it received."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from parley.tools.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify

SECRET = "test-signing-secret-1234"


@dataclass
class Seen:
    requests: list[dict[str, Any]] = field(default_factory=list)
    flaky_left: int = 0


def _app(seen: Seen) -> Starlette:  # noqa: C901 (one small handler per misbehaviour)
    async def record(request: Request) -> dict[str, Any]:
        body = await request.body()
        entry = {
            "method": request.method,
            "path": request.url.path,
            "query": dict(request.query_params),
            "headers": dict(request.headers),
            "body": body,
            "signed": verify(
                SECRET, request.headers.get(TIMESTAMP_HEADER, ""), body, request.headers.get(SIGNATURE_HEADER, "")
            ),
        }
        seen.requests.append(entry)
        return entry

    async def patients(request: Request) -> Response:
        entry = await record(request)
        return JSONResponse({"patient": {"id": request.path_params["pid"], "phone": entry["query"].get("phone")}})

    async def book(request: Request) -> Response:
        await record(request)
        return JSONResponse({"booking": {"id": "B7", "time": "10:00"}, "echo": (await request.json())})

    async def flaky(request: Request) -> Response:
        await record(request)
        if seen.flaky_left > 0:
            seen.flaky_left -= 1
            return JSONResponse({"error": "busy"}, status_code=503)
        return JSONResponse({"ok": True})

    async def hang(request: Request) -> Response:
        await record(request)
        await asyncio.sleep(30)
        return JSONResponse({})

    async def fail(request: Request) -> Response:
        await record(request)
        return JSONResponse({"error": "boom"}, status_code=500)

    async def text(request: Request) -> Response:
        await record(request)
        return PlainTextResponse("<html>not json</html>")

    async def huge(request: Request) -> Response:
        await record(request)

        async def chunks() -> Any:
            for _ in range(20 * 16):  # 20 MB in 64 KB chunks
                yield b"x" * 65536

        return StreamingResponse(chunks(), media_type="application/json")

    async def to_private(request: Request) -> Response:
        await record(request)
        return RedirectResponse("http://10.0.0.1/admin", status_code=302)

    routes = [
        Route("/patients/{pid}", patients),
        Route("/book", book, methods=["POST"]),
        Route("/flaky", flaky, methods=["GET", "POST"]),
        Route("/hang", hang),
        Route("/fail", fail),
        Route("/text", text),
        Route("/huge", huge),
        Route("/to-private", to_private),
    ]
    return Starlette(routes=routes)


@dataclass
class ToolServer:
    url: str
    seen: Seen


def serve_app(app: Any, port: int) -> Iterator[None]:
    """Run an ASGI ``app`` on 127.0.0.1:``port`` in a thread while the caller yields (uvicorn's logging untouched)."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(250):
        if server.started:
            break
        time.sleep(0.02)
    assert server.started, f"the test server could not start on 127.0.0.1:{port}"
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(5)


def serve_tools() -> Iterator[ToolServer]:
    """Start the server, yield where it is, stop it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    seen = Seen()
    for _ in serve_app(_app(seen), port):
        yield ToolServer(f"http://127.0.0.1:{port}", seen)
