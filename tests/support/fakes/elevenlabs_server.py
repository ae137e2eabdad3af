"""A local ElevenLabs ``stream-input`` WebSocket server speaking the documented wire format, for contract tests.

It checks what the real service checks (the path, ``model_id``, ``output_format=pcm_<rate>``, the ``xi-api-key``
header, a first message of ``{"text": " "}``), buffers text until ``flush``/``try_trigger_generation`` or the end
of input (``{"text": ""}``), and answers each word with one ``{"audio": base64, "isFinal": null,
"normalizedAlignment": …, "alignment": …}`` message of a sine tone (``MS_PER_CHAR`` a character), ``WORD_DELAY_S``
apart, then ``{"isFinal": true}`` and a normal close. ``faults`` holds one fault per coming connection:

``reject-401`` / ``reject-429`` / ``reject-500-html``: the handshake is refused with that HTTP answer;
``auth`` / ``quota``: a ``{"message", "error", "code": 1008}`` message then close 1008; ``close-1008``: only the
close frame; ``garbage``: a text frame that is not JSON; ``close-mid``: one word's audio, then the TCP connection
drops; ``hang``: it reads and never answers; ``idle-close``: it closes (1008, the 20 s inactivity reason) at once.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

KEY = "xi-TEST-key-0123456789abcdef"
MS_PER_CHAR = 20
WORD_DELAY_S = 0.03
_LOG = logging.getLogger("tests.fakes.elevenlabs")  # websockets logs headers (the key) at DEBUG: not from here
_LOG.setLevel(logging.WARNING)
INACTIVITY = "Have not received a new text input within the timeout of 20 seconds. Streaming input terminated."


def tone(chars: int, rate: int, start: int = 0) -> bytes:
    """``chars`` characters' worth of a 440 Hz tone at ``rate`` (deterministic; ``start`` keeps the phase)."""
    n = rate * MS_PER_CHAR * chars // 1000
    return b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * (start + i) / rate))) for i in range(n))


@dataclass
class Session:
    """What one connection carried: its handshake and the messages received."""

    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    messages: list[dict[str, Any]] = field(default_factory=list)
    words_sent: list[float] = field(default_factory=list)  # monotonic time each word's audio went out
    closed_by_client: bool = False


@dataclass
class FakeElevenLabs:
    url: str = ""
    faults: list[str] = field(default_factory=list)
    sessions: list[Session] = field(default_factory=list)
    stopping: bool = False
    _pending: dict[int, str] = field(default_factory=dict)

    def session_faults(self, connection: ServerConnection) -> str:
        return self._pending.pop(id(connection), "")

    # -- handshake ---------------------------------------------------------------------------------------------

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        fault = self.faults.pop(0) if self.faults else ""
        parts = urlsplit(request.path)
        query = parse_qs(parts.query)
        self.sessions.append(Session(parts.path, query, {k.lower(): v for k, v in request.headers.raw_items()}))
        if fault.startswith("reject-"):
            return _reject(fault)
        if request.headers.get("xi-api-key") != KEY:
            return _json(401, {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}})
        segments = parts.path.split("/")
        if len(segments) != 5 or segments[1:3] != ["v1", "text-to-speech"] or segments[4] != "stream-input":
            return _json(404, {"detail": "Not Found"})
        rate = query.get("output_format", [""])[0].removeprefix("pcm_")
        if not query.get("model_id") or rate not in ("16000", "22050", "24000"):
            return _json(400, {"detail": {"status": "invalid_parameters", "message": "bad output_format"}})
        self._pending[id(connection)] = fault
        return None

    # -- messages ----------------------------------------------------------------------------------------------

    async def handler(self, ws: ServerConnection) -> None:
        fault = self.session_faults(ws)
        session = self.sessions[-1]
        rate = int(session.query["output_format"][0].removeprefix("pcm_"))
        if fault == "idle-close":
            await ws.close(1008, INACTIVITY)
            return
        try:
            await self._converse(ws, session, rate, fault)
        except ConnectionClosed:
            session.closed_by_client = True

    async def _converse(self, ws: ServerConnection, session: Session, rate: int, fault: str) -> None:
        buffer, sample = "", 0
        async for raw in ws:
            message = json.loads(raw)
            session.messages.append(message)
            if fault == "hang":
                continue
            if len(session.messages) == 1 and message.get("text") != " ":
                await ws.send(json.dumps({"message": "The first message must be ' '", "error": "invalid_input_message",
                                          "code": 1008}))  # fmt: skip
                await ws.close(1008, "invalid_input_message")
                return
            if await self._fault(ws, fault):
                return
            text = str(message.get("text", ""))
            buffer += text
            if text and not (message.get("flush") or message.get("try_trigger_generation")):
                continue
            for word in buffer.split():
                pcm = tone(len(word), rate, sample)
                sample += len(pcm) // 2
                await ws.send(json.dumps(_audio(word, pcm)))
                session.words_sent.append(time.monotonic())
                if fault == "close-mid":
                    ws.transport.abort()
                    return
                await asyncio.sleep(WORD_DELAY_S)
            buffer = ""
            if text == "":
                await ws.send(json.dumps({"isFinal": True}))
                await ws.close()
                return

    async def _fault(self, ws: ServerConnection, fault: str) -> bool:
        """Answer the first message with ``fault``; True when it ended the connection."""
        if fault in ("auth", "quota"):
            error = {"auth": ("invalid_api_key", "Invalid API key"), "quota": ("quota_exceeded", "Quota exceeded")}
            code, text = error[fault]
            await ws.send(json.dumps({"message": text, "error": code, "code": 1008}))
            await ws.close(1008, text)
            return True
        if fault == "close-1008":
            await ws.close(1008, "Invalid API key")
            return True
        if fault == "garbage":
            await ws.send("<html>Bad Gateway</html>")
            return False
        return False


def _audio(word: str, pcm: bytes) -> dict[str, Any]:
    chars = list(word + " ")
    starts = [i * MS_PER_CHAR for i in range(len(chars))]
    alignment = {"charStartTimesMs": starts, "charDurationsMs": [MS_PER_CHAR] * len(chars), "chars": chars}
    return {"audio": base64.b64encode(pcm).decode(), "isFinal": None, "normalizedAlignment": alignment,
            "alignment": alignment}  # fmt: skip


def _json(status: int, body: Any, **headers: str) -> Response:
    h = Headers({"Content-Type": "application/json", **headers})
    return Response(status, "Error", h, json.dumps(body).encode())


def _reject(fault: str) -> Response:
    if fault == "reject-429":
        body = {"detail": {"status": "too_many_concurrent_requests", "message": "Too many concurrent requests"}}
        return _json(429, body, **{"Retry-After": "7"})
    if fault == "reject-401":
        return _json(401, {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}})
    page = b"<html><body><h1>500 Internal Server Error</h1></body></html>"
    return Response(500, "Internal Server Error", Headers({"Content-Type": "text/html"}), page)


def serve_elevenlabs() -> Iterator[FakeElevenLabs]:
    """Run the fake in a thread on 127.0.0.1 while the caller yields."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fake = FakeElevenLabs(url=f"http://127.0.0.1:{port}")
    loop = asyncio.new_event_loop()
    started, stop = threading.Event(), asyncio.Event()

    async def main() -> None:
        async with serve(fake.handler, "127.0.0.1", port, process_request=fake.process_request, logger=_LOG):
            started.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(5), "the fake ElevenLabs server did not start"
    try:
        yield fake
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(5)
        loop.close()
