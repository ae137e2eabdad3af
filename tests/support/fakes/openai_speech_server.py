"""A local OpenAI audio server speaking the documented wire format, for contract tests (starlette on uvicorn).

``POST /v1/audio/speech`` (JSON ``model``, ``voice``, ``input``, ``response_format: "pcm"``) streams raw 24 kHz
PCM16 of a tone, ``MS_PER_CHAR`` a character, in ``CHUNK_BYTES`` pieces ``CHUNK_DELAY_S`` apart;
``POST /v1/audio/transcriptions`` (multipart ``file`` = a WAV, ``model``, ``language``) answers
``{"text": transcript}``; ``GET /v1/models`` lists one model. Every route checks ``Authorization: Bearer KEY``
and answers errors in OpenAI's ``{"error": {"message", "type", "param", "code"}}`` shape (the 401 message
quotes the key, as a careless proxy would). ``faults`` holds one fault per coming request:

``401`` / ``403`` / ``404`` / ``429`` (Retry-After: 3) / ``quota`` (429 ``insufficient_quota``) / ``500-html`` (an
HTML page) / ``garbage`` (200 with a body that is not the documented shape) / ``close-mid`` (some audio, then the
connection drops; speech only) / ``hang`` (no answer for ``HANG_S``).
"""

from __future__ import annotations

import asyncio
import io
import math
import struct
import wave
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from ..service import free_port
from ..tool_server import serve_app

KEY = "sk-TEST-openai-0123456789abcdef"
MS_PER_CHAR = 20
CHUNK_BYTES = 4800  # 100 ms at 24 kHz
CHUNK_DELAY_S = 0.01
HANG_S = 5.0


def tone(chars: int, rate: int = 24000) -> bytes:
    n = rate * MS_PER_CHAR * chars // 1000
    return b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate))) for i in range(n))


@dataclass
class FakeOpenAIAudio:
    url: str = ""
    faults: list[str] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    transcript: str = "I would like to book an appointment."
    stopping: bool = False


def _error(status: int, message: str, kind: str, code: str | None, **headers: str) -> Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


async def _fault(fake: FakeOpenAIAudio, fault: str) -> Response | None:
    """The answer ``fault`` gives before the route's own, or None."""
    if fault == "401":
        return _error(401, f"Incorrect API key provided: {KEY}.", "invalid_request_error", "invalid_api_key")
    if fault == "403":
        return _error(403, "You are not allowed to sample from this model", "invalid_request_error", None)
    if fault == "404":
        return _error(404, "The model 'nope' does not exist", "invalid_request_error", "model_not_found")
    if fault == "429":
        return _error(429, "Rate limit reached for requests", "requests", "rate_limit_exceeded", **{"Retry-After": "3"})
    if fault == "quota":
        return _error(429, "You exceeded your current quota", "insufficient_quota", "insufficient_quota")
    if fault == "500-html":
        return PlainTextResponse("<html><body><h1>502 Bad Gateway</h1></body></html>", 500, media_type="text/html")
    if fault == "hang":
        for _ in range(int(HANG_S / 0.05)):
            if fake.stopping:
                break
            await asyncio.sleep(0.05)
        return JSONResponse({})
    return None


def _authorized(request: Request) -> bool:
    return request.headers.get("authorization") == f"Bearer {KEY}"


async def _speech(request: Request) -> Response:
    fake: FakeOpenAIAudio = request.app.state.fake
    fault = fake.faults.pop(0) if fake.faults else ""
    body = await request.json()
    fake.requests.append({"path": request.url.path, "headers": dict(request.headers), "json": body})
    if (answer := await _fault(fake, fault)) is not None:
        return answer
    if not _authorized(request):
        return _error(401, "Incorrect API key provided", "invalid_request_error", "invalid_api_key")
    if not body.get("input") or not body.get("voice") or not body.get("model"):
        return _error(400, "Missing required parameter", "invalid_request_error", None)
    if body.get("response_format") != "pcm":
        return _error(400, "this fake only speaks pcm", "invalid_request_error", None)
    if fault == "garbage":
        return PlainTextResponse("<html>Welcome to the captive portal</html>", media_type="text/html")
    pcm = tone(len(body["input"]))

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(pcm), CHUNK_BYTES):
            yield pcm[i : i + CHUNK_BYTES]
            if fault == "close-mid":
                raise ConnectionResetError("the fake drops the connection mid-stream")
            await asyncio.sleep(CHUNK_DELAY_S)

    return StreamingResponse(chunks(), media_type="audio/pcm")


def _is_wav(data: bytes) -> bool:
    try:
        with wave.open(io.BytesIO(data)) as w:
            return w.getnchannels() == 1 and w.getsampwidth() == 2 and w.getnframes() > 0
    except (wave.Error, EOFError):
        return False


async def _transcriptions(request: Request) -> Response:
    fake: FakeOpenAIAudio = request.app.state.fake
    fault = fake.faults.pop(0) if fake.faults else ""
    async with request.form() as form:
        upload = form.get("file")
        wav = await upload.read() if upload is not None and not isinstance(upload, str) else b""
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
    fake.requests.append({"path": request.url.path, "headers": dict(request.headers), "form": fields, "wav": wav})
    if (answer := await _fault(fake, fault)) is not None:
        return answer
    if not _authorized(request):
        return _error(401, "Incorrect API key provided", "invalid_request_error", "invalid_api_key")
    if not _is_wav(wav) or not fields.get("model"):
        return _error(400, "Invalid file format.", "invalid_request_error", None)
    if fault == "garbage":
        return Response(b'{"text": "unterminated', media_type="application/json")
    return JSONResponse({"text": fake.transcript, "usage": {"type": "duration", "seconds": 1}})


async def _models(request: Request) -> Response:
    fake: FakeOpenAIAudio = request.app.state.fake
    fake.requests.append({"path": request.url.path, "headers": dict(request.headers)})
    if not _authorized(request):
        return _error(401, "Incorrect API key provided", "invalid_request_error", "invalid_api_key")
    return JSONResponse({"object": "list", "data": [{"id": "gpt-4o-mini-tts", "object": "model"}]})


def _app(fake: FakeOpenAIAudio) -> Starlette:
    routes = [
        Route("/v1/audio/speech", _speech, methods=["POST"]),
        Route("/v1/audio/transcriptions", _transcriptions, methods=["POST"]),
        Route("/v1/models", _models),
    ]
    app = Starlette(routes=routes)
    app.state.fake = fake
    return app


def serve_openai_audio() -> Iterator[FakeOpenAIAudio]:
    """Run the fake on 127.0.0.1 in a thread while the caller yields."""
    port = free_port()
    fake = FakeOpenAIAudio(url=f"http://127.0.0.1:{port}/v1")
    serving = serve_app(_app(fake), port)
    next(serving)
    try:
        yield fake
    finally:
        fake.stopping = True
        next(serving, None)
