"""ElevenLabs text-to-speech over the WebSocket ``stream-input`` API, PCM16 mono at 16, 22.05 or 24 kHz.

Why ``websockets`` and not the official ``elevenlabs`` SDK (2.78.0, MIT): its stream-input helper
(``convert_realtime``) runs on websockets' *synchronous* client (it would block the event loop), takes one
connection's whole text as an iterator and closes the socket at its end, and connects by itself (the SSRF guard
could not check the address). The wire format is small, so this module speaks it directly (elevenlabs.io/docs,
"Text to Speech > WebSocket"):

* connect ``{base}/v1/text-to-speech/{voice_id}/stream-input?model_id=…&output_format=pcm_16000&auto_mode=true``
  with the ``xi-api-key`` header (a refused handshake is an HTTP status with ``{"detail": {"status", "message"}}``);
* send ``{"text": " ", "voice_settings": {…}}``, the text (ending in a space) with ``flush: true``, ``{"text": ""}``;
* receive ``{"audio": base64 PCM, "isFinal": null, "normalizedAlignment": {…}}`` messages, ``{"isFinal": true}``
  and a normal close; a failure is ``{"message", "error", "code"}`` and/or a close frame (1008 and a reason).

One sentence per connection: one stream-input socket has no end-of-flush marker (``isFinal`` only follows the end
of input). So the provider keeps a *spare* connection open (``prepare()`` opens it; each sentence takes it and opens
the next at once): no sentence waits for a handshake, and a barge-in (closing :meth:`synthesize` early) just drops
that socket, which stops the server's generation too. ``aclose()`` closes the spare.

SSRF: ``base_url`` is tenant-chosen; :mod:`parley.net.websocket` connects only to addresses the outbound policy
checked, as for Deepgram.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import quote, urlencode

from pydantic import Field, SecretStr, field_validator, model_validator
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidStatus
from websockets.protocol import State

from parley.net.websocket import WsConnectError, WsEndpoint, connect_guarded, ws_url
from parley.services.errors import ErrorKind, ProviderError, kind_for_status, retry_after_secs
from parley.services.registry import ProviderOptions
from parley.services.secrets import SecretField
from parley.services.tts.base import TTS, registry

log = logging.getLogger(__name__)

PROVIDER = "elevenlabs"
DEFAULT_VOICE = "JBFqnCBsd6RMkjVDRZzb"  # "George", a premade voice every account has
END_OF_INPUT = json.dumps({"text": ""})
_SPARE_MARGIN_S = 5.0  # a spare older than inactivity_timeout_s minus this is replaced, not used
#: words in ElevenLabs' ``error``/``status`` codes and close reasons, and the kind each means
_ERROR_WORDS = (
    (("api_key", "api key", "unauthorized", "authoriz", "permission"), ErrorKind.AUTH),
    (("quota", "credit", "insufficient"), ErrorKind.QUOTA),
    (("not_found", "not found", "does not exist"), ErrorKind.NOT_FOUND),
    (("rate_limit", "rate limit", "concurrent", "system_busy", "too many"), ErrorKind.RATE_LIMIT),
    (("language",), ErrorKind.UNSUPPORTED),
    (("timeout", "have not received"), ErrorKind.TIMEOUT),
    (("invalid", "parse", "character_limit", "value_error", "schema"), ErrorKind.BAD_REQUEST),
)


_WIRE_LOG = logging.getLogger(f"{__name__}.wire")  # websockets' own log; never below INFO (it holds headers)


class _Stale(Exception):
    """The socket closed before it answered anything: a spare the server had dropped (idle), worth one retry."""

    def __init__(self, closed: ConnectionClosed) -> None:
        super().__init__(str(closed))
        self.closed = closed


def error_kind(text: str) -> ErrorKind:
    """The kind an ElevenLabs error code, message or close reason names (a server fault when none)."""
    lowered = text.lower()
    return next((kind for words, kind in _ERROR_WORDS if any(w in lowered for w in words)), ErrorKind.SERVER)


@registry.register(PROVIDER)
class ElevenLabsTTS(TTS):
    """One spare WebSocket held for the call; each sentence is spoken on a connection of its own."""

    class Options(ProviderOptions):
        base_url: str = "https://api.elevenlabs.io"  # https:// is read as wss://
        voice_id: str = Field(DEFAULT_VOICE, pattern=r"^[A-Za-z0-9]{1,64}$")
        model_id: str = Field("eleven_flash_v2_5", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
        sample_rate: Literal[16000, 22050, 24000] = 16000  # asked for as output_format=pcm_<rate>
        stability: Annotated[float, Field(ge=0, le=1)] | None = None  # None: the voice's own settings
        similarity_boost: Annotated[float, Field(ge=0, le=1)] | None = None
        style: Annotated[float, Field(ge=0, le=1)] | None = None
        speed: Annotated[float, Field(ge=0.7, le=1.2)] | None = None
        language_code: str | None = Field(None, pattern=r"^[a-z]{2,3}$")  # ISO 639-1; flash/turbo v2.5 only
        auto_mode: bool = True  # whole sentences arrive: no chunk schedule, the lowest latency
        api_key: SecretStr | None = None  # filled from a reference; inline only in local documents
        api_key_credential: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # a tenant's
        api_key_env: str | None = Field(None, max_length=128)  # local documents only (PARLEY_PROVIDER_ENV_ALLOW)
        connect_timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0  # DNS + TCP + TLS + handshake
        receive_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0  # the longest wait for the next message
        inactivity_timeout_s: Annotated[int, Field(ge=10, le=180)] = 180  # how long the server keeps a spare
        preconnect: bool = True  # keep a spare connection open, so no sentence waits for a handshake

        secret_fields: ClassVar[tuple[SecretField, ...]] = (
            SecretField("api_key", "api_key_credential", "api_key_env"),
        )
        url_fields: ClassVar[tuple[str, ...]] = ("base_url",)

        @field_validator("base_url")
        @classmethod
        def _ws_url(cls, v: str) -> str:
            return ws_url(v)

        @model_validator(mode="after")
        def _needs_key(self) -> ElevenLabsTTS.Options:
            if self.api_key is None and self.api_key_credential is None and self.api_key_env is None:
                raise ValueError("elevenlabs needs api_key_credential (or api_key_env in a local document)")
            return self

    def __init__(self, options: Options) -> None:
        self.options = o = options
        self._key = self._resolve_key()
        self._endpoint = WsEndpoint.parse(o.base_url, f"/v1/text-to-speech/{quote(o.voice_id)}/stream-input")
        self.url = self._endpoint.url  # no query, no key: for messages
        self.sample_rate = o.sample_rate
        self._spare: asyncio.Task[tuple[ClientConnection, float]] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        log.debug("elevenlabs tts: url=%s model=%s rate=%d", self.url, o.model_id, o.sample_rate)

    def _resolve_key(self) -> str:
        o = self.options
        if o.api_key is not None:
            return o.api_key.get_secret_value()
        raise self._fail(f"{self._key_source()} was not resolved (no secret source for this call)", ErrorKind.AUTH)

    def _key_source(self) -> str:
        o = self.options
        if o.api_key_credential is not None:
            return f"credential {o.api_key_credential!r}"
        return f"${o.api_key_env}" if o.api_key_env is not None else "options.api_key"

    def _fail(self, message: str, kind: ErrorKind, **extra: Any) -> ProviderError:
        """A ProviderError whose message never holds the key (a server may echo it)."""
        text, key = f"elevenlabs: {message}", getattr(self, "_key", "")
        if key:
            text = text.replace(key, "***")
        return ProviderError(text, kind=kind, provider=PROVIDER, **extra)

    def query(self) -> str:
        """The documented stream-input parameters."""
        o = self.options
        params = [
            ("model_id", o.model_id),
            ("output_format", f"pcm_{o.sample_rate}"),
            ("auto_mode", "true" if o.auto_mode else "false"),
            ("inactivity_timeout", str(o.inactivity_timeout_s)),
        ]
        if o.language_code:
            params.append(("language_code", o.language_code))
        return urlencode(params)

    async def _connect(self) -> tuple[ClientConnection, float]:
        """A new connection and when it was opened; ProviderError when none can be had."""
        try:
            ws = await connect_guarded(
                self._endpoint,
                {"xi-api-key": self._key},
                query=self.query(),
                timeout_s=self.options.connect_timeout_s,
                wire_logger=_WIRE_LOG,
                max_size=16 * 2**20,  # base64 audio of a long sentence comes in large messages
            )
        except InvalidStatus as exc:
            raise self._rejected(exc) from None
        except WsConnectError as exc:
            raise self._fail(str(exc), exc.kind) from None
        return ws, time.monotonic()

    def _rejected(self, exc: InvalidStatus) -> ProviderError:
        """A refused handshake, read from ElevenLabs' ``{"detail": {"status", "message"}}`` body."""
        response = exc.response
        status = response.status_code
        body = (response.body or b"")[:4096].decode("utf-8", "replace")
        detail = _detail(body)
        message = f"{self.url} answered HTTP {status}" + (f": {detail}" if detail else "")
        kind = kind_for_status(status, body)
        if status in (400, 401, 403) and (named := error_kind(detail)) is not ErrorKind.SERVER:
            kind = named  # ElevenLabs' 401 also means a spent quota; its 400 an unknown voice
        if kind is ErrorKind.AUTH:
            message += f"; check {self._key_source()}"
        retry_after = retry_after_secs(response.headers.get("Retry-After"))
        return self._fail(message, kind, status=status, retry_after=retry_after)

    async def _take(self) -> tuple[ClientConnection, bool]:
        """A connection for one sentence (the spare if it is still good) and whether it was the spare."""
        spare, self._spare = self._spare, None
        if spare is not None:
            try:
                ws, opened = await spare
            except ProviderError as exc:
                if exc.permanent:
                    raise
            else:
                fresh = time.monotonic() - opened < self.options.inactivity_timeout_s - _SPARE_MARGIN_S
                if ws.state is State.OPEN and fresh:
                    return ws, True
                self._dispose(ws)
        ws, _ = await self._connect()
        return ws, False

    def _refill(self) -> None:
        """Start opening the next sentence's connection now, while this one speaks."""
        if self.options.preconnect and self._spare is None:
            self._spare = asyncio.create_task(self._connect())
            self._spare.add_done_callback(lambda t: t.cancelled() or t.exception())  # its failure is seen

    def _dispose(self, ws: ClientConnection) -> None:
        """Close ``ws`` in the background, so a barge-in never waits for the close handshake."""
        task = asyncio.create_task(ws.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def first_message(self) -> dict[str, Any]:
        """``{"text": " "}`` with the voice settings that were set (the documented first message)."""
        o = self.options
        names = ("stability", "similarity_boost", "style", "speed")
        settings = {n: getattr(o, n) for n in names if getattr(o, n) is not None}
        return {"text": " ", "voice_settings": settings} if settings else {"text": " "}

    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        sentence = " ".join(text.split())
        if not sentence:
            return
        for attempt in range(2):
            ws, spare = await self._take()
            self._refill()
            try:
                async with aclosing(self._speak(ws, sentence)) as audio:
                    async for pcm in audio:
                        yield pcm
                return
            except _Stale as exc:
                if not spare or attempt:
                    raise self._closed(exc.closed) from None
                log.debug("elevenlabs tts: the spare connection had closed; opening another")
            finally:
                self._dispose(ws)

    async def _speak(self, ws: ClientConnection, sentence: str) -> AsyncGenerator[bytes, None]:
        """Send one sentence on ``ws`` and yield its PCM as it comes; ``_Stale`` if ``ws`` closed unheard."""
        try:
            await ws.send(json.dumps(self.first_message()))
            await ws.send(json.dumps({"text": f"{sentence} ", "flush": True}))
            await ws.send(END_OF_INPUT)
        except ConnectionClosed as exc:
            raise _Stale(exc) from None
        carry, heard, limit = b"", False, self.options.receive_timeout_s
        while True:
            try:
                async with asyncio.timeout(limit):
                    message = await ws.recv()  # cancelling recv() loses nothing (websockets documents it)
            except TimeoutError:
                raise self._fail(f"no audio from {self.url} within {limit:g} s", ErrorKind.TIMEOUT) from None
            except ConnectionClosed as exc:
                if not heard:
                    raise _Stale(exc) from None
                if isinstance(exc, ConnectionClosedOK):
                    return  # closed normally after the end of input: the sentence is done
                raise self._closed(exc) from None
            heard = True
            pcm, final = self._parse(message)
            carry += pcm
            if cut := len(carry) - len(carry) % 2:  # whole 16-bit samples; an odd byte waits for the next one
                yield carry[:cut]
                carry = carry[cut:]
            if final:
                return

    def _parse(self, message: str | bytes) -> tuple[bytes, bool]:
        """The audio of one message and whether it is the last; ProviderError for an error or a bad shape."""
        data: Any = None
        if isinstance(message, str):
            try:
                data = json.loads(message)
            except ValueError:
                pass
        if not isinstance(data, dict):
            raise self._fail(f"{self.url} sent a message that is not a JSON object", ErrorKind.BAD_RESPONSE)
        audio = data.get("audio")
        if not audio and ("error" in data or "message" in data) and data.get("isFinal") is not True:
            code = str(data.get("error") or "")
            text = str(data.get("message") or "")[:300]
            raise self._fail(f"{self.url} answered {code or 'an error'}: {text}", error_kind(f"{code} {text}"))
        pcm = b""
        if audio:
            try:
                pcm = base64.b64decode(str(audio), validate=True)
            except (binascii.Error, ValueError):
                raise self._fail(f"{self.url} sent audio that is not base64", ErrorKind.BAD_RESPONSE) from None
        return pcm, data.get("isFinal") is True

    def _closed(self, exc: ConnectionClosed) -> ProviderError:
        frame = exc.rcvd
        if frame is None:
            return self._fail(f"the connection to {self.url} dropped mid-sentence", ErrorKind.CONNECTION)
        reason = frame.reason[:200]
        said = f" ({frame.code}: {reason})" if reason else f" ({frame.code})"
        if frame.code == 1008 and reason:  # policy violation: the reason says which
            kind = error_kind(reason)
        else:
            kind = ErrorKind.SERVER if frame.code == 1011 else ErrorKind.CONNECTION
        return self._fail(f"{self.url} closed the connection before the sentence ended{said}", kind)

    async def prepare(self) -> None:
        """Open the spare connection before the first sentence, so it does not pay for DNS, TCP, TLS."""
        if not self.options.preconnect:
            return
        self._refill()
        assert self._spare is not None
        try:
            await asyncio.shield(self._spare)
        except ProviderError as exc:
            self._spare = None
            if exc.kind is ErrorKind.BAD_REQUEST:  # refused by the outbound policy: the call cannot start
                raise
            level = logging.WARNING if exc.permanent else logging.DEBUG
            log.log(level, "elevenlabs tts: preconnect failed: %s", exc)  # worth knowing before the caller speaks

    async def aclose(self) -> None:
        spare, self._spare = self._spare, None
        if spare is not None:
            spare.cancel()
            done = await asyncio.gather(spare, return_exceptions=True)
            if isinstance(done[0], tuple):
                self._dispose(done[0][0])
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


def _detail(body: str) -> str:
    """``status: message`` from ElevenLabs' JSON error body (bounded), or ''."""
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    detail = data.get("detail") if isinstance(data, dict) else None
    if isinstance(detail, dict):
        parts = [str(detail[k]) for k in ("status", "message") if detail.get(k)]
        return ": ".join(parts)[:300]
    return str(detail)[:300] if isinstance(detail, str) else ""
