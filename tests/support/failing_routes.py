"""`parley serve` with routes that fail on purpose: ``python -m tests.support.failing_routes serve``.

Only this test process has them (tests/test_security_errors.py); they stand for any bug that raises. Each failure
carries the caller's credential in its message and a bulky local in every frame: what a log that printed locals, or
did not redact, would have written out — and what rendering that on the event loop once cost every call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import StreamingResponse

import parley.api.app as app_module
from parley.cli import main

LOCAL_MARKER = "LOCAL-VALUE-THAT-MUST-NOT-BE-LOGGED"
_create_app = app_module.create_app
BULKY = {i: f"{LOCAL_MARKER}-{i}-" + "x" * 200 for i in range(300)}


def fail(depth: int, credential: str) -> None:
    """Recurse ``depth`` frames, each holding a large local, then raise with ``credential`` in the message."""
    bulky_local = BULKY  # one object, built once: the route itself costs next to nothing
    if depth > 1:
        fail(depth - 1, credential)
    raise RuntimeError(f"failing on purpose for {credential} ({len(bulky_local)} items)")


def _credential(headers: Any, query: Any) -> str:
    return f"authorization={headers.get('authorization', '')} token={query.get('token', '')}"


def create_app(settings: Any = None) -> FastAPI:
    app = _create_app(settings)

    @app.get("/__test__/fail")
    async def fail_here(request: Request, depth: int = 1) -> None:
        fail(depth, _credential(request.headers, request.query_params))

    @app.get("/__test__/fail-midway")
    async def fail_midway(request: Request) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"the start of a body, then "
            fail(3, _credential(request.headers, request.query_params))

        return StreamingResponse(body(), media_type="text/plain")

    @app.websocket("/__test__/fail-ws")
    async def fail_ws(ws: WebSocket) -> None:
        await ws.accept()
        fail(3, _credential(ws.headers, ws.query_params))

    return app


app_module.create_app = create_app  # parley.cli's `serve` imports it when it runs

if __name__ == "__main__":
    main()
