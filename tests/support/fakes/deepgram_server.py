"""A local stand-in for Deepgram's live ``/v1/listen`` WebSocket, speaking its documented wire format.

It does no recognition: it "hears" one word of a scripted transcript per ``bytes_per_word`` of audio, answering
as Deepgram does (developers.deepgram.com, "Live Audio" reference): ``Results`` interims while a segment grows,
a final (``is_final``) when it is complete, ``speech_final`` plus ``UtteranceEnd`` after the last one; on
``Finalize`` the words heard so far as a final with ``from_finalize``; on ``CloseStream`` that, ``Metadata`` and
a 1000 close; a 1011 ``NET-0001`` close after ``idle_timeout_s`` with neither audio nor ``KeepAlive``. A refused
handshake is an HTTP error with Deepgram's JSON body (``err_code``, ``err_msg``, ``request_id``) and its
``dg-error`` and ``dg-request-id`` headers.

:attr:`FakeDeepgram.fault`, read when each connection opens, makes that connection fail one way:
``reject-<status>`` (401, 402, 403, 429 with ``Retry-After``, 5xx), ``hang-handshake`` (never answers the
upgrade), and after ``fault_after_bytes`` of audio: ``close-1011``, ``close-1008``, ``drop`` (the TCP connection
is cut), ``garbage`` (a text frame that is not JSON), ``silent`` (reads everything, answers nothing).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

LOG = logging.getLogger("tests.fakes.deepgram")
LOG.setLevel(logging.INFO)  # websockets logs each request header at DEBUG: the client's key is one of them
REQUIRED = {"encoding": "linear16", "channels": "1"}  # what Parley must send; anything else is a 400 here
ERRORS = {  # status → Deepgram's documented err_code and err_msg
    400: ("Bad Request", "Failed to process the request: unsupported encoding."),
    401: ("INVALID_AUTH", "Invalid credentials."),
    402: ("ASR_PAYMENT_REQUIRED", "Project does not have enough credits for an ASR request."),
    403: ("INSUFFICIENT_PERMISSIONS", "You do not have permission to access the requested model."),
    404: ("NOT_FOUND", "The requested resource could not be found."),
    429: ("TOO_MANY_REQUESTS", "Too many requests. Please try again later."),
    500: ("INTERNAL_SERVER_ERROR", "The server encountered an error."),
    503: ("SERVICE_UNAVAILABLE", "The service is temporarily unavailable."),
}


@dataclass
class Received:
    """What one connection brought: for assertions."""

    path: str
    query: dict[str, list[str]]
    authorization: str | None
    fault: str | None
    audio_bytes: int = 0
    controls: list[tuple[float, str]] = field(default_factory=list)  # (monotonic time, type)
    audio_times: list[float] = field(default_factory=list)  # monotonic time of each audio frame

    def control_types(self) -> list[str]:
        return [t for _, t in self.controls]


@dataclass
class _Session:
    """One connection's place in the script."""

    rate_bytes: float  # audio bytes per second
    request_id: str
    utterance_end: bool  # utterance_end_ms was asked for
    heard: int = 0  # words heard so far
    final_upto: int = 0  # words already sent as finals
    shown: int = 0  # words in the last interim


class FakeDeepgram:
    """``async with FakeDeepgram() as dg:`` serves ``dg.url`` (``ws://127.0.0.1:PORT``) in the running loop."""

    def __init__(
        self,
        key: str = "dg-test-key-0123456789abcdef",
        segments: tuple[str, ...] = ("book a table", "for two please"),
        bytes_per_word: int = 3200,  # 0.1 s at 16 kHz PCM16
        fault_after_bytes: int = 9600,
        idle_timeout_s: float = 10.0,
    ) -> None:
        self.key = key
        self.segments = segments
        self.bytes_per_word = bytes_per_word
        self.fault_after_bytes = fault_after_bytes
        self.idle_timeout_s = idle_timeout_s
        self.fault: str | None = None
        self.connections: list[Received] = []
        self.url = ""
        self._server: Server | None = None
        self._records: dict[ServerConnection, Received] = {}
        self._released = asyncio.Event()

    @property
    def words(self) -> list[str]:
        return " ".join(self.segments).split()

    @property
    def transcript(self) -> str:
        return " ".join(self.segments)

    async def __aenter__(self) -> FakeDeepgram:
        self._server = await serve(
            self._session, "127.0.0.1", 0, process_request=self._handshake, compression=None, logger=LOG
        )
        port = next(iter(self._server.sockets)).getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._released.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    # -- the HTTP upgrade --------------------------------------------------------------------------------------

    async def _handshake(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        record = Received(parts.path, parse_qs(parts.query), request.headers.get("Authorization"), self.fault)
        self.connections.append(record)
        self._records[connection] = record
        if record.fault == "hang-handshake":
            await self._released.wait()
            return self._reject(connection, 503)
        if record.fault and record.fault.startswith("reject-"):
            return self._reject(connection, int(record.fault.removeprefix("reject-")))
        if parts.path != "/v1/listen":
            return self._reject(connection, 404)
        if record.authorization != f"Token {self.key}":
            return self._reject(connection, 401)
        query = {k: v[-1] for k, v in record.query.items()}
        if any(query.get(k) != v for k, v in REQUIRED.items()) or not query.get("sample_rate", "").isdigit():
            return self._reject(connection, 400)
        return None

    def _reject(self, connection: ServerConnection, status: int) -> Response:
        code, message = ERRORS.get(status, ERRORS[500])
        request_id = str(uuid.uuid4())
        body = json.dumps({"err_code": code, "err_msg": message, "request_id": request_id})
        response = connection.respond(status, body)
        headers = Headers(
            (k, v) for k, v in response.headers.raw_items() if k.lower() not in ("content-type", "content-length")
        )
        headers["Content-Type"] = "application/json"
        headers["Content-Length"] = str(len(response.body or b""))
        headers["dg-request-id"] = request_id
        headers["dg-error"] = message
        if status == 429:
            headers["Retry-After"] = "7"
        return Response(response.status_code, response.reason_phrase, headers, response.body)

    # -- the stream --------------------------------------------------------------------------------------------

    async def _session(self, ws: ServerConnection) -> None:
        record = self._records.pop(ws)
        query = {k: v[-1] for k, v in record.query.items()}
        rate = int(query["sample_rate"]) * 2 * int(query["channels"])
        session = _Session(rate, str(uuid.uuid4()), "utterance_end_ms" in query)
        while True:
            try:
                message = await asyncio.wait_for(ws.recv(), self.idle_timeout_s)
            except TimeoutError:
                await ws.close(1011, "NET-0001: Deepgram did not receive audio data or a text message within the "
                               "timeout window.")  # fmt: skip
                return
            except ConnectionClosed:
                return
            now = time.monotonic()
            if isinstance(message, bytes):
                record.audio_bytes += len(message)
                record.audio_times.append(now)
                if not await self._audio(ws, record, session):
                    return
                continue
            try:
                kind = json.loads(message).get("type")
            except (ValueError, AttributeError):
                await ws.close(1008, "DATA-0000: The payload cannot be decoded as audio.")
                return
            record.controls.append((now, str(kind)))
            if record.fault == "silent":
                continue
            if kind == "Finalize":
                await self._flush(ws, session)
            elif kind == "CloseStream":
                await self._flush(ws, session)
                await ws.send(json.dumps(self._metadata(record, session)))
                await ws.close(1000)
                return

    async def _audio(self, ws: ServerConnection, record: Received, session: _Session) -> bool:
        """Answer audio as the script says; False once a fault has ended the connection."""
        fault = record.fault if record.audio_bytes >= self.fault_after_bytes else None
        if fault == "silent":
            return True
        if fault == "garbage":
            await ws.send("<html><body>502 Bad Gateway</body></html>")
            return True
        session.heard = min(len(self.words), record.audio_bytes // self.bytes_per_word)
        await self._answer(ws, session)
        if fault == "close-1011":
            await ws.close(1011, "NET-0000: The service has encountered an internal error.")
            return False
        if fault == "close-1008":
            await ws.close(1008, "DATA-0000: The payload cannot be decoded as audio.")
            return False
        if fault == "drop":
            ws.transport.abort()
            return False
        return True

    async def _answer(self, ws: ServerConnection, session: _Session) -> None:
        """Finals for each segment now complete, else an interim for the words heard since the last final."""
        boundaries, count = [], 0
        for segment in self.segments:
            count += len(segment.split())
            boundaries.append(count)
        for end in boundaries:
            if session.final_upto < end <= session.heard:
                last = end == boundaries[-1]
                await ws.send(json.dumps(self._results(session, end, final=True, speech_final=last)))
                if last and session.utterance_end:
                    last_word_end = end * self.bytes_per_word / session.rate_bytes
                    await ws.send(
                        json.dumps({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": last_word_end})
                    )
        if session.final_upto < session.heard and session.heard != session.shown:
            await ws.send(json.dumps(self._results(session, session.heard, final=False)))
            session.shown = session.heard

    async def _flush(self, ws: ServerConnection, session: _Session) -> None:
        if session.final_upto < session.heard:
            await ws.send(json.dumps(self._results(session, session.heard, final=True, from_finalize=True)))

    def _results(
        self, session: _Session, end: int, *, final: bool, speech_final: bool = False, from_finalize: bool = False
    ) -> dict[str, Any]:
        """A ``Results`` message for words ``final_upto:end`` (moves ``final_upto`` when final)."""
        secs = self.bytes_per_word / session.rate_bytes
        first = session.final_upto
        said = self.words[first:end]
        words = [
            {"word": w, "start": (first + i) * secs, "end": (first + i + 1) * secs, "confidence": 0.97}
            for i, w in enumerate(said)
        ]
        if final:
            session.final_upto = end
        model = {"name": "general-nova-3", "version": "2024-12-20.0", "arch": "nova-3"}
        return {
            "type": "Results",
            "channel_index": [0, 1],
            "duration": (end - first) * secs,
            "start": first * secs,
            "is_final": final,
            "speech_final": speech_final,
            "channel": {"alternatives": [{"transcript": " ".join(said), "confidence": 0.97, "words": words}]},
            "metadata": {"request_id": session.request_id, "model_uuid": str(uuid.uuid4()), "model_info": model},
            "from_finalize": from_finalize,
        }

    def _metadata(self, record: Received, session: _Session) -> dict[str, Any]:
        return {
            "type": "Metadata",
            "transaction_key": "deprecated",
            "request_id": session.request_id,
            "sha256": "0" * 64,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            "duration": record.audio_bytes / session.rate_bytes,
            "channels": 1,
        }
