"""A local Amazon Polly: ``POST /v1/speech`` as the rest-json protocol documents it, on 127.0.0.1 in a thread.

The request is the documented JSON body (``Engine``, ``LanguageCode``, ``OutputFormat``, ``SampleRate``, ``Text``,
``VoiceId``) signed with SigV4: the ``Authorization`` header must be there and name the access key (its signature
is not checked). A success is ``audio/pcm`` (PCM16 mono little-endian) with ``x-amzn-RequestCharacters``, sent in
pieces with a pause between them, so a client that plays the first piece early can be told from one that waits for
the whole body. An error is the status the service model gives, an ``x-amzn-ErrorType`` header and
``{"message": ...}``. What the next request gets is set by ``FakePolly.fault``.
"""

from __future__ import annotations

import json
import math
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: fault name → (HTTP status, x-amzn-ErrorType, message), as Polly's service model and common errors give them
ERRORS: dict[str, tuple[int, str, str]] = {
    "throttle": (400, "ThrottlingException", "Rate exceeded"),
    "bad-key": (403, "UnrecognizedClientException", "The security token included in the request is invalid."),
    "bad-signature": (403, "InvalidSignatureException", "The request signature we calculated does not match."),
    "too-long": (400, "TextLengthExceededException", "Maximum text length has been exceeded"),
    "engine": (400, "EngineNotSupportedException", "This voice does not support the selected engine: neural"),
    "language": (400, "LanguageNotSupportedException", "Language is not supported"),
    "server": (500, "ServiceFailureException", "Service failure"),
    "unavailable": (503, "ServiceUnavailableException", "Service unavailable"),
}
CODED = "http://internal.amazon.com/coral/com.amazonaws.tts#"  # the namespace suffix real answers carry


@dataclass
class FakePolly:
    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    fault: str | None = None  # a key of ERRORS, "hang" (no answer), "stall" (first piece then nothing)
    pieces: int = 5  # how many pieces a success is sent in
    piece_gap_s: float = 0.15
    hang_s: float = 5.0

    def audio(self, text: str, rate: int) -> bytes:
        """A tone as long as the text, so a test can check the bytes arrived whole and in order."""
        n = max(len(text), 1) * rate // 50
        return b"".join(struct.pack("<h", int(8000 * math.sin(i / 10))) for i in range(n))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: FakePolly  # set on the subclass each server gets

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test output stays readable."""

    def _error(self, status: int, code: str, message: str) -> None:
        body = json.dumps({"message": message}).encode()
        self.send_response(status)
        self.send_header("x-amzn-ErrorType", f"{code}:{CODED}{code}")
        self.send_header("x-amzn-RequestId", "00000000-0000-0000-0000-000000000000")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        entry: dict[str, Any] = {"path": self.path, "headers": dict(self.headers.items()), "raw": raw}
        self.fake.requests.append(entry)
        refusal = self._refusal(entry)
        if refusal is not None:
            return self._error(*refusal)
        if self.fake.fault == "hang":
            time.sleep(self.fake.hang_s)
            return None
        body = entry["body"]
        try:
            self._speak(self.fake.audio(body["Text"], int(body.get("SampleRate") or 16000)), len(body["Text"]))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading (a barge-in)
        return None

    def _refusal(self, entry: dict[str, Any]) -> tuple[int, str, str] | None:
        """The documented error this request gets, or None; the parsed body goes into ``entry``."""
        auth = self.headers.get("Authorization", "")
        if self.path != "/v1/speech":
            return 404, "UnknownOperationException", f"no route {self.path}"
        if not auth.startswith("AWS4-HMAC-SHA256 Credential="):
            return 403, "MissingAuthenticationTokenException", "Missing Authentication Token"
        try:
            body = entry["body"] = json.loads(entry["raw"])
        except ValueError:
            return 400, "SerializationException", "body is not JSON"
        if "Credential=BADKEY" in auth:
            return ERRORS["bad-key"]
        if self.fake.fault in ERRORS:
            return ERRORS[self.fake.fault]
        if body.get("OutputFormat") != "pcm" or not body.get("Text") or not body.get("VoiceId"):
            return 400, "ValidationException", "OutputFormat, Text and VoiceId are required"
        return None

    def _speak(self, pcm: bytes, characters: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "audio/pcm")
        self.send_header("x-amzn-RequestCharacters", str(characters))
        self.send_header("Content-Length", str(len(pcm)))
        self.end_headers()
        step = -(-len(pcm) // self.fake.pieces)
        for i in range(0, len(pcm), step):
            self.wfile.write(pcm[i : i + step])
            self.wfile.flush()
            if self.fake.fault == "stall":
                time.sleep(self.fake.hang_s)
                return
            time.sleep(self.fake.piece_gap_s)


@contextmanager
def polly_server() -> Iterator[FakePolly]:
    """A running fake on a free port of 127.0.0.1; its ``url`` is the ``endpoint_url`` to give the client."""
    fake = FakePolly()
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (_Handler,), {"fake": fake}))
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="fake-polly", daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
