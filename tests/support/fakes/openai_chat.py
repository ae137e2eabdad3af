"""A local server speaking OpenAI's chat-completions streaming format, with a fault switch per request.

The fault is the request's ``model`` (``ok``, ``die-after-3``, ``keepalive-hang``, ``429``, ``401``,
``500-html``, ``garbage``, ``slow-first``) unless :attr:`FakeChat.modes` overrides that model (a test flips a
provider from down to up). Frames are the documented ``chat.completion.chunk`` server-sent events; keep-alives
are SSE comment lines, which the SDK skips, so only a deadline on useful output catches a server that sends them.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support.tool_server import serve_app

REPLY = "The clinic opens at eight tomorrow morning and closes at six."


@dataclass
class FakeChat:
    url: str = ""
    reply: str = REPLY
    modes: dict[str, str] = field(default_factory=dict)  # model → fault, overriding the model's own name
    requests: list[dict[str, Any]] = field(default_factory=list)
    token_delay_s: float = 0.01

    def mode(self, model: str) -> str:
        return self.modes.get(model, model)

    def asked(self, model: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r.get("model") == model]


def _chunk(text: str, finish: str | None = None) -> bytes:
    body = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": "fake",
            "choices": [{"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}]}  # fmt: skip
    return f"data: {json.dumps(body)}\n\n".encode()


def _error(status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return JSONResponse(body, status_code=status, headers=headers)


def _app(fake: FakeChat) -> Starlette:
    async def completions(request: Request) -> Response:
        body = await request.json()
        deployment = request.path_params.get("deployment")
        if deployment is not None:  # Azure: the deployment is in the path, the key in ``api-key``
            body = {**body, "model": deployment, "api_key_header": request.headers.get("api-key", "")}
        fake.requests.append(body)
        mode = fake.mode(str(body.get("model", "")))
        if mode == "429":
            return _error(429, "Rate limit reached", "requests", {"retry-after": "7"})
        if mode == "401":
            return _error(401, "Incorrect API key provided", "invalid_request_error")
        if mode == "500-html":
            return Response("<html><body><h1>502 Bad Gateway</h1></body></html>", 500, media_type="text/html")
        return StreamingResponse(_stream(fake, mode), media_type="text/event-stream")

    return Starlette(
        routes=[
            Route("/v1/chat/completions", completions, methods=["POST"]),
            Route("/openai/deployments/{deployment}/chat/completions", completions, methods=["POST"]),
        ]
    )


async def _stream(fake: FakeChat, mode: str) -> AsyncIterator[bytes]:
    words = [w + " " for w in fake.reply.split()]
    die_after = int(mode.rsplit("-", 1)[1]) if mode.startswith("die-after-") else None
    if mode == "garbage":
        yield b"data: {this is not json\n\n"
        return
    if mode == "slow-first":
        await asyncio.sleep(3)
    if mode == "keepalive-hang":
        for _ in range(600):
            yield b": keep-alive\n\n"
            await asyncio.sleep(0.1)
        return
    for i, word in enumerate(words):
        if die_after is not None and i == die_after:
            raise ConnectionResetError("the fake provider died mid-reply")  # uvicorn drops the connection
        yield _chunk(word)
        await asyncio.sleep(fake.token_delay_s)
    yield _chunk("", "stop")
    yield b"data: [DONE]\n\n"


def serve_chat() -> Iterator[FakeChat]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fake = FakeChat(url=f"http://127.0.0.1:{port}/v1")
    for _ in serve_app(_app(fake), port):
        yield fake
