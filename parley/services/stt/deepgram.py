"""Deepgram live speech-to-text: ``/v1/listen`` over one WebSocket per utterance stream.

Why ``websockets`` and not the official ``deepgram-sdk`` (7.16.0, MIT): the SDK's socket client resolves and
connects by itself, so the SSRF guard could not check the address actually connected to; a refused handshake
loses Deepgram's JSON error body and ``dg-error`` header and raises an ``ApiError`` that carries the *request*
headers, ``Authorization: Token <key>`` among them; and it uses websockets' deprecated legacy client. The wire
format is small, so this module speaks it directly (developers.deepgram.com, "Live Audio" reference):

* connect ``{base_url}/v1/listen?model=…&encoding=linear16&sample_rate=16000&channels=1&interim_results=true…``
  with ``Authorization: Token <key>``; a refused handshake is HTTP 4xx/5xx with a JSON body (``err_code``,
  ``err_msg``) and the message again in a ``dg-error`` header;
* send PCM as binary frames (never an empty one: Deepgram reads it as the end of audio), ``{"type": "KeepAlive"}``
  while no audio flows (Deepgram closes after 10 s of nothing), ``Finalize`` then ``CloseStream`` at the end;
* receive ``Results`` (``is_final``, ``speech_final``, ``start``, ``duration``), ``UtteranceEnd``,
  ``SpeechStarted`` and ``Metadata``; then the server closes with 1000. A failure mid-stream is a close frame
  (1008 for audio it cannot decode, 1011 for its own errors) or a dropped connection.

SSRF: ``base_url`` is tenant-chosen. The host is resolved by the outbound policy (:mod:`parley.net.ssrf`) and
the socket connects to the address that was checked (TLS still verifies the host name), as the httpx guard does;
:mod:`parley.net.websocket` does both, for ElevenLabs too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar
from urllib.parse import urlencode

import httpcore
from pydantic import Field, SecretStr, field_validator, model_validator
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidStatus

from parley.net.ssrf import OutboundRefused
from parley.net.websocket import WsConnectError, WsEndpoint, connect_guarded, ws_url
from parley.services.errors import ErrorKind, ProviderError, kind_for_status, retry_after_secs
from parley.services.registry import ProviderOptions
from parley.services.secrets import SecretField
from parley.services.stt.base import StreamingSTT, SttEvent, registry

log = logging.getLogger(__name__)
Keyword = Annotated[str, Field(min_length=1, max_length=100)]

PROVIDER = "deepgram"
KEEPALIVE = json.dumps({"type": "KeepAlive"})
FINALIZE = json.dumps({"type": "Finalize"})
CLOSE_STREAM = json.dumps({"type": "CloseStream"})
_POLL_S = 0.5  # how often the receiver looks at the answer deadline while nothing is awaited


_WIRE_LOG = logging.getLogger(f"{__name__}.wire")  # websockets' own log; never below INFO (it holds headers)


@dataclass
class _Flow:
    """What the sender did and the receiver heard: the answer deadline and the keep-alive clock."""

    last_sent: float  # audio or KeepAlive: Deepgram's 10 s idle clock
    last_heard: float  # any message from the server
    unanswered_since: float | None = None  # first audio sent after the last message heard
    closing_at: float | None = None  # CloseStream sent: a normal close is the end, and it is owed
    keepalives: int = 0

    def sent_audio(self) -> None:
        self.last_sent = time.monotonic()
        if self.unanswered_since is None:
            self.unanswered_since = self.last_sent

    def heard(self) -> None:
        self.last_heard = time.monotonic()
        self.unanswered_since = None

    def left(self, limit_s: float) -> float | None:
        """Seconds until the server is overdue, or None while it owes nothing (all audio answered, not closing)."""
        if self.closing_at is not None:  # the finals and the close are owed; each message shows progress
            return max(self.closing_at, self.last_heard) + limit_s - time.monotonic()
        return None if self.unanswered_since is None else self.unanswered_since + limit_s - time.monotonic()


@registry.register(PROVIDER)
class DeepgramSTT(StreamingSTT):
    """One WebSocket per :meth:`stream`; nothing is held between utterances."""

    class Options(ProviderOptions):
        base_url: str = "wss://api.deepgram.com"  # or a self-hosted Deepgram; https:// is read as wss://
        model: str = Field("nova-3", pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
        api_key: SecretStr | None = None  # filled from a reference; inline only in local documents
        api_key_credential: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # a tenant's
        api_key_env: str | None = Field(None, max_length=128)  # local documents only (PARLEY_PROVIDER_ENV_ALLOW)
        language: str | None = Field(None, pattern=r"^(multi|[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*)$")  # None: the call's
        endpointing_ms: Annotated[int, Field(ge=0, le=10_000)] = 300  # silence that ends a final; 0: off
        utterance_end_ms: Annotated[int, Field(ge=1000, le=5000)] | None = 1000  # None: no UtteranceEnd
        smart_format: bool = False
        keywords: list[Keyword] = Field(default_factory=list, max_length=100)  # Nova-3: sent as keyterm
        connect_timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0  # DNS + TCP + TLS + handshake
        first_result_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0  # sent audio unanswered this long
        keepalive_s: Annotated[float, Field(gt=0, le=8)] = 3.0  # KeepAlive after this long without audio

        secret_fields: ClassVar[tuple[SecretField, ...]] = (
            SecretField("api_key", "api_key_credential", "api_key_env"),
        )
        url_fields: ClassVar[tuple[str, ...]] = ("base_url",)

        @field_validator("base_url")
        @classmethod
        def _ws_url(cls, v: str) -> str:
            return ws_url(v)

        @model_validator(mode="after")
        def _needs_key(self) -> DeepgramSTT.Options:
            if self.api_key is None and self.api_key_credential is None and self.api_key_env is None:
                raise ValueError("deepgram needs api_key_credential (or api_key_env in a local document)")
            return self

    def __init__(self, options: Options) -> None:
        self.options = options
        self._key = self._resolve_key()
        self._endpoint = WsEndpoint.parse(options.base_url, "/v1/listen")
        self.url = self._endpoint.url  # no query and never the key: safe in messages
        log.debug("deepgram stt: url=%s model=%s", self.url, options.model)

    def _resolve_key(self) -> str:
        if self.options.api_key is not None:
            return self.options.api_key.get_secret_value()
        message = f"deepgram: {self._key_source()} was not resolved (no secret source for this call)"
        raise ProviderError(message, kind=ErrorKind.AUTH, provider=PROVIDER)

    def _key_source(self) -> str:
        o = self.options
        if o.api_key_credential is not None:
            return f"credential {o.api_key_credential!r}"
        return f"${o.api_key_env}" if o.api_key_env is not None else "options.api_key"

    def _redact(self, text: str) -> str:
        """A server may echo the key in an error; it must not reach a log through us."""
        return text.replace(self._key, "***") if self._key else text

    def _fail(self, message: str, kind: ErrorKind, **extra: Any) -> ProviderError:
        return ProviderError(self._redact(f"deepgram: {message}"), kind=kind, provider=PROVIDER, **extra)

    def query(self, language: str) -> str:
        """The documented ``/v1/listen`` parameters for PCM16 mono at :attr:`sample_rate`."""
        o = self.options
        params = [
            ("model", o.model),
            ("encoding", "linear16"),
            ("sample_rate", str(self.sample_rate)),
            ("channels", "1"),
            ("interim_results", "true"),
            ("endpointing", str(o.endpointing_ms) if o.endpointing_ms else "false"),
        ]
        if o.utterance_end_ms is not None:
            params.append(("utterance_end_ms", str(o.utterance_end_ms)))
        params += [("language", o.language or language), ("punctuate", "true")]
        if o.smart_format:
            params.append(("smart_format", "true"))
        term = "keyterm" if o.model.startswith("nova-3") else "keywords"  # Nova-3 has keyterm prompting only
        params += [(term, k) for k in o.keywords]
        return urlencode(params)

    async def prepare(self) -> None:
        """Refuse a base_url the outbound policy refuses before the caller speaks; opens nothing (streams bill)."""
        try:
            await self._endpoint.checked_addresses(self.options.connect_timeout_s)
        except OutboundRefused as exc:
            raise self._fail(str(exc), ErrorKind.BAD_REQUEST) from None
        except (httpcore.ConnectError, httpcore.TimeoutException) as exc:  # the first stream reports it, classified
            log.debug("deepgram stt: cannot resolve %s yet (%s)", self._endpoint.host, type(exc).__name__)

    async def _connect(self, language: str) -> ClientConnection:
        try:
            return await connect_guarded(
                self._endpoint,
                {"Authorization": f"Token {self._key}"},
                query=self.query(language),
                timeout_s=self.options.connect_timeout_s,
                wire_logger=_WIRE_LOG,
                compression=None,  # PCM hardly compresses; spare the CPU
            )
        except InvalidStatus as exc:
            raise self._rejected(exc) from None
        except WsConnectError as exc:
            raise self._fail(str(exc), exc.kind) from None

    def _rejected(self, exc: InvalidStatus) -> ProviderError:
        """A refused handshake, read from Deepgram's JSON body or its ``dg-error`` header."""
        response = exc.response
        status = response.status_code
        body = (response.body or b"")[:4096].decode("utf-8", "replace")
        detail = _error_detail(body) or response.headers.get("dg-error", "")[:300]
        message = f"{self.url} answered HTTP {status}" + (f": {detail}" if detail else "")
        if status == 401:
            message += f"; check {self._key_source()}"
        return self._fail(
            message,
            kind_for_status(status, f"{body} {response.headers.get('dg-error', '')}"),
            status=status,
            retry_after=retry_after_secs(response.headers.get("Retry-After")),
        )

    async def stream(self, audio: AsyncIterable[bytes], language: str = "en") -> AsyncIterator[SttEvent]:
        ws = await self._connect(language)
        flow = _Flow(time.monotonic(), time.monotonic())
        sender = asyncio.create_task(self._send(ws, audio, flow))
        try:
            async for event in self._events(ws, flow, sender):
                yield event
        except BaseException:  # a failure, or a caller that stopped listening: no closing handshake to wait for
            ws.transport.abort()
            raise
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            await ws.close()
            log.debug("deepgram stt: stream closed (%d keep-alives)", flow.keepalives)

    async def _send(self, ws: ClientConnection, audio: AsyncIterable[bytes], flow: _Flow) -> None:
        """Audio as it comes, KeepAlive while it pauses, then Finalize and CloseStream."""
        keepalive = asyncio.create_task(self._keepalive(ws, flow))
        try:
            async for chunk in audio:
                if chunk:  # an empty frame would end the stream
                    await ws.send(bytes(chunk))
                    flow.sent_audio()
            keepalive.cancel()
            await ws.send(FINALIZE)
            flow.closing_at = time.monotonic()
            await ws.send(CLOSE_STREAM)
        except ConnectionClosed:
            return  # the receiver reports why
        except Exception:
            ws.transport.abort()  # the audio source failed: wake the receiver, which raises this
            raise
        finally:
            keepalive.cancel()

    async def _keepalive(self, ws: ClientConnection, flow: _Flow) -> None:
        every = self.options.keepalive_s
        try:
            while True:
                wait = flow.last_sent + every - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                await ws.send(KEEPALIVE)
                flow.last_sent = time.monotonic()
                flow.keepalives += 1
        except ConnectionClosed:
            return

    async def _events(self, ws: ClientConnection, flow: _Flow, sender: asyncio.Task[None]) -> AsyncIterator[SttEvent]:
        while True:
            try:
                message = await self._next(ws, flow)
            except ConnectionClosed as exc:
                _raise_sender_error(sender)
                if isinstance(exc, ConnectionClosedOK) and flow.closing_at is not None:
                    return
                raise self._closed(exc) from None
            flow.heard()
            if not isinstance(message, str):
                raise self._fail(f"{self.url} sent a binary frame ({len(message)} bytes)", ErrorKind.BAD_RESPONSE)
            for event in self._parse(message):
                yield event

    async def _next(self, ws: ClientConnection, flow: _Flow) -> str | bytes:
        """The next message; TIMEOUT when sent audio goes unanswered for ``first_result_timeout_s``."""
        limit = self.options.first_result_timeout_s
        while True:
            left = flow.left(limit)
            try:
                async with asyncio.timeout(_POLL_S if left is None else max(left, 0.0)):
                    return await ws.recv()  # cancelling recv() loses nothing (websockets documents it)
            except TimeoutError:
                left = flow.left(limit)
                if left is not None and left <= 0:
                    raise self._fail(f"no answer from {self.url} within {limit:g} s", ErrorKind.TIMEOUT) from None

    def _closed(self, exc: ConnectionClosed) -> ProviderError:
        frame = exc.rcvd
        if frame is None:
            return self._fail(f"the connection to {self.url} dropped mid-stream", ErrorKind.CONNECTION)
        reason = f": {frame.reason[:200]}" if frame.reason else ""
        if frame.code in (1000, 1001):
            return self._fail(f"{self.url} ended the stream before the audio did{reason}", ErrorKind.CONNECTION)
        kind = ErrorKind.BAD_REQUEST if frame.code == 1008 else ErrorKind.CONNECTION  # 1008: undecodable audio
        return self._fail(f"{self.url} closed the stream ({frame.code}{reason})", kind)

    def _parse(self, text: str) -> list[SttEvent]:
        try:
            message = json.loads(text)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            raise self._fail(f"{self.url} sent a frame that is not a JSON object ({len(text)} chars)",
                             ErrorKind.BAD_RESPONSE)  # fmt: skip
        kind = message.get("type")
        if kind == "Results":
            return self._results(message)
        if kind == "UtteranceEnd":
            end = message.get("last_word_end")
            return [SttEvent("endpoint", t=float(end) if isinstance(end, int | float) and end >= 0 else None)]
        if kind == "Error":  # documented for rejected Configure messages; the stream goes on
            log.warning(
                "deepgram stt: %s sent Error: %s", self.url, self._redact(str(message.get("description"))[:200])
            )
        return []  # Metadata, SpeechStarted, and types Deepgram adds later

    def _results(self, message: dict[str, Any]) -> list[SttEvent]:
        try:
            best = message["channel"]["alternatives"][0]
            text = str(best.get("transcript") or "")
            end = float(message.get("start") or 0) + float(message.get("duration") or 0)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            raise self._fail(f"{self.url} sent Results without channel.alternatives", ErrorKind.BAD_RESPONSE) from None
        confidence = best.get("confidence")
        final = message.get("is_final") is True
        events = []
        if text.strip():
            events.append(SttEvent("final" if final else "interim", text, end,
                                   float(confidence) if _number(confidence) else None))  # fmt: skip
        if final and message.get("speech_final") is True:
            events.append(SttEvent("endpoint", t=end))
        return events


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _raise_sender_error(sender: asyncio.Task[None]) -> None:
    """The audio source's own failure outranks the closed socket it caused."""
    if sender.done() and not sender.cancelled() and (error := sender.exception()) is not None:
        raise error


def _error_detail(body: str) -> str:
    """``ERR_CODE: message`` from Deepgram's JSON error body (bounded), or ''."""
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    if not isinstance(data, dict):
        return ""
    parts = [str(data[k]) for k in ("err_code", "err_msg") if data.get(k)]
    return ": ".join(parts)[:300]
