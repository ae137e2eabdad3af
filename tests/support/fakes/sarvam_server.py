"""A local stand-in for Sarvam AI's REST speech APIs, speaking their documented wire format (docs.sarvam.ai).

* ``POST /speech-to-text`` (multipart ``file``, ``model``, ``language_code``, ``mode``) and
  ``POST /speech-to-text-translate`` (``file``, ``model=saaras:v2.5``) answer ``{"request_id", "transcript",
  "language_code", "language_probability"}``: a fixed Hindi sentence, or its English translation, for any WAV;
* ``POST /text-to-speech`` (JSON ``text``, ``target_language_code``, ``speaker``, ``model``,
  ``speech_sample_rate``, …) answers ``{"request_id", "audios": [base64 WAV]}``: a tone 40 ms a character long;
* the key is the ``api-subscription-key`` header (a wrong or missing one is Sarvam's 403
  ``invalid_api_key_error``); errors are ``{"error": {"request_id", "message", "code"}}``.

It checks what the documentation requires (a WAV file, a known model, language and speaker of that model, text
within the model's limit) and answers a bad request as Sarvam does, with 400 ``invalid_request_error``.
:attr:`FakeSarvam.faults` is a queue: each request takes the next fault, if any: ``403``, ``429`` (with
``Retry-After: 7``), ``quota`` (429 ``insufficient_quota_error``), ``busy`` (503 ``rate_limit_exceeded_error``),
``500``, ``html`` (a proxy's 502 HTML page), ``html-200``, ``garbage`` (200, broken JSON), ``no-audio``,
``hang`` (answers after 1.5 s).
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from parley.audio.wav import wav_header

from ..service import free_port
from ..tool_server import serve_app

KEY = "sk_fake_sarvam_0123456789abcdef"
HINDI = "नमस्ते, मुझे अपॉइंटमेंट चाहिए"
ENGLISH = "Hello, I need an appointment"
INDIC = ("hi-IN", "bn-IN", "ta-IN", "te-IN", "kn-IN", "ml-IN", "mr-IN", "gu-IN", "pa-IN", "od-IN", "en-IN")
STT_MODELS = {"saarika:v2.5": (*INDIC, "unknown"), "saaras:v3": (*INDIC, "as-IN", "ur-IN", "unknown")}
SPEAKERS = {
    "bulbul:v2": ("anushka", "manisha", "vidya", "arya", "abhilash", "karun", "hitesh"),
    "bulbul:v3": ("shubh", "aditya", "ritu", "priya", "neha", "rahul", "pooja", "rohan", "simran", "kavya"),
}
MAX_CHARS = {"bulbul:v2": 1500, "bulbul:v3": 2500}
RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
MS_PER_CHAR = 40


@dataclass
class FakeSarvam:
    url: str = ""
    faults: list[str] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"request_id": uuid.uuid4().hex, "message": message, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


async def _fault(name: str | None) -> Response | None:
    answers: dict[str, Response] = {
        "403": _error(403, "invalid_api_key_error", "Invalid API key"),
        "429": _error(429, "rate_limit_exceeded_error", "Rate limit exceeded", {"Retry-After": "7"}),
        "quota": _error(429, "insufficient_quota_error", "Insufficient credits"),
        "busy": _error(503, "rate_limit_exceeded_error", "Server is under high load"),
        "500": _error(500, "internal_server_error", "Internal server error"),
        "html": HTMLResponse("<html><body><h1>502 Bad Gateway</h1></body></html>", status_code=502),
        "html-200": HTMLResponse("<html><body>Maintenance</body></html>"),
        "garbage": Response('{"transcript": "नमस', media_type="application/json"),
        "no-audio": JSONResponse({"request_id": "r", "audios": []}),
    }
    if name == "hang":
        await asyncio.sleep(1.5)
        return None
    return answers.get(name) if name else None


def _tone(seconds: float, rate: int) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.3 * 32767 * np.sin(2 * np.pi * 220 * t)).astype("<i2").tobytes()
    return wav_header(rate, 1, len(pcm)) + pcm


def _check_stt(form: dict[str, Any], translate: bool) -> JSONResponse | None:
    upload = form.get("file")
    if not isinstance(upload, bytes) or not upload.startswith(b"RIFF") or upload[8:12] != b"WAVE":
        return _error(400, "invalid_request_error", "file: Invalid audio file, expected a supported audio format")
    model = form.get("model")
    if translate:
        return None if model == "saaras:v2.5" else _error(400, "invalid_request_error", f"Invalid model {model}")
    if model not in STT_MODELS:
        return _error(400, "invalid_request_error", f"Invalid model: {model}")
    if form.get("language_code") not in STT_MODELS[model]:
        return _error(400, "invalid_request_error", f"Invalid language_code {form.get('language_code')} for {model}")
    return None


def _check_tts(body: Any) -> JSONResponse | None:
    if not isinstance(body, dict) or not isinstance(body.get("text"), str) or not body["text"].strip():
        return _error(422, "invalid_request_error", "text: Field required")
    model = body.get("model", "bulbul:v3")
    if model not in SPEAKERS:
        return _error(400, "invalid_request_error", f"Invalid model {model}")
    if len(body["text"]) > MAX_CHARS[model]:
        return _error(400, "invalid_request_error", f"text: at most {MAX_CHARS[model]} characters for {model}")
    if body.get("target_language_code") not in INDIC:
        return _error(400, "invalid_request_error", f"Invalid target_language_code {body.get('target_language_code')}")
    if body.get("speaker", SPEAKERS[model][0]) not in SPEAKERS[model]:
        msg = f"Speaker '{body.get('speaker')}' is not compatible with model {model}"
        return _error(400, "invalid_request_error", msg)
    if int(body.get("speech_sample_rate", 22050)) not in RATES:
        return _error(400, "invalid_request_error", "Invalid speech_sample_rate")
    return None


def _app(fake: FakeSarvam) -> Starlette:
    async def begin(request: Request, entry: dict[str, Any]) -> Response | None:
        entry |= {"path": request.url.path, "headers": dict(request.headers)}
        fake.requests.append(entry)
        answer = await _fault(fake.faults.pop(0) if fake.faults else None)
        if answer is not None:
            return answer
        if request.headers.get("api-subscription-key") != KEY:
            return _error(403, "invalid_api_key_error", "Invalid API key or the key is missing")
        return None

    async def stt(request: Request) -> Response:
        translate = request.url.path.endswith("-translate")
        form = await request.form()
        fields = {k: (await v.read() if isinstance(v, UploadFile) else v) for k, v in form.items()}
        entry = {"form": {k: v for k, v in fields.items() if k != "file"}, "file": fields.get("file")}
        if (early := await begin(request, entry)) is not None:
            return early
        if (bad := _check_stt(fields, translate)) is not None:
            return bad
        english = translate or fields.get("mode") == "translate"
        code = fields.get("language_code")
        detected = "hi-IN" if code in (None, "unknown") else code
        return JSONResponse({"request_id": uuid.uuid4().hex, "transcript": ENGLISH if english else HINDI,
                             "language_code": detected, "language_probability": None})  # fmt: skip

    async def tts(request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if (early := await begin(request, {"json": body})) is not None:
            return early
        if (bad := _check_tts(body)) is not None:
            return bad
        rate = int(body.get("speech_sample_rate", 22050))
        wav = _tone(len(body["text"]) * MS_PER_CHAR / 1000, rate)
        return JSONResponse({"request_id": uuid.uuid4().hex, "audios": [base64.b64encode(wav).decode()]})

    routes = [
        Route("/speech-to-text", stt, methods=["POST"]),
        Route("/speech-to-text-translate", stt, methods=["POST"]),
        Route("/text-to-speech", tts, methods=["POST"]),
    ]
    return Starlette(routes=routes)


def serve_sarvam() -> Iterator[FakeSarvam]:
    """Start the fake on 127.0.0.1, yield it, stop it."""
    port = free_port()
    fake = FakeSarvam(url=f"http://127.0.0.1:{port}")
    for _ in serve_app(_app(fake), port):
        yield fake
