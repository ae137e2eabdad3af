"""OpenAI text-to-speech (``POST /v1/audio/speech``, ``response_format: "pcm"``): raw 24 kHz PCM16 mono, streamed.

Uses the official ``openai`` SDK's streaming response (``with_streaming_response``), so the request shape, the
error bodies and Retry-After are the vendor's; the audio is yielded as its HTTP chunks arrive (cut to whole
samples), and closing :meth:`synthesize` early (a barge-in) closes the HTTP stream, which stops the generation.
Works with OpenAI-compatible speech servers too (``base_url``; no key needed where they want none).

Also the shared part of OpenAI's audio providers (:mod:`parley.services.stt.openai` uses it): the options for the
key and the URL, the SDK client on Parley's SSRF-guarded ``httpx`` client (``base_url`` is tenant-chosen) and one
mapping of every SDK or transport failure to :class:`ProviderError`, whose message never holds the key.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator
from typing import Annotated, Any, ClassVar

import httpx
import openai
from pydantic import Field, SecretStr, field_validator

from parley.net.ssrf import SCHEMES, OutboundRefused, guarded_client
from parley.services.errors import ErrorKind, ProviderError, kind_for_status, retry_after_secs
from parley.services.openai_sdk import warm_connection
from parley.services.registry import ProviderOptions
from parley.services.secrets import SecretField
from parley.services.tts.base import TTS, registry

log = logging.getLogger(__name__)

NO_KEY = "sk-no-key-required"  # local OpenAI-compatible servers accept any key; the SDK insists on one
PROVIDER = "openai"
PCM_RATE = 24000  # what OpenAI's "pcm" format is: 24 kHz, 16-bit signed little-endian, mono
_NOT_AUDIO = ("text/", "application/json")


class OpenAIAudioOptions(ProviderOptions):
    """What OpenAI's speech and transcription providers share: where to send, with which key, how long to wait."""

    base_url: str = "https://api.openai.com/v1"
    api_key: SecretStr | None = None  # filled from a reference; inline only in local documents
    api_key_credential: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # a tenant's
    api_key_env: str | None = Field(None, max_length=128)  # local documents only (PARLEY_PROVIDER_ENV_ALLOW)
    organization: str | None = Field(None, max_length=128)
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0  # per connect and per read (a stall mid-stream)
    max_retries: Annotated[int, Field(ge=0, le=5)] = 0  # a caller is listening: the fallback chain moves on
    preconnect: bool = True  # prepare() opens the connection (TCP + TLS) before the first request

    secret_fields: ClassVar[tuple[SecretField, ...]] = (SecretField("api_key", "api_key_credential", "api_key_env"),)
    url_fields: ClassVar[tuple[str, ...]] = ("base_url",)

    @field_validator("base_url")
    @classmethod
    def _http_only(cls, v: str) -> str:
        if v.split(":", 1)[0].lower() not in SCHEMES:
            raise ValueError("must be an http:// or https:// URL")
        return v


class OpenAIAudioClient:
    """One SDK client per call (its connection pool too); ``aclose()`` closes it."""

    def __init__(self, options: OpenAIAudioOptions, what: str) -> None:
        self.opts, self.what = options, what  # what: "openai tts" / "openai stt", for messages
        self.key = self._resolve_key()
        try:
            self.client = openai.AsyncOpenAI(
                base_url=options.base_url,
                api_key=self.key,
                organization=options.organization,
                timeout=options.timeout_s,
                max_retries=options.max_retries,
                http_client=guarded_client(),  # type: ignore[arg-type]  # typed for httpx2, takes httpx too
            )
        except (openai.OpenAIError, ValueError) as exc:
            raise self.fail(f"cannot configure a client for {options.base_url}: {exc}", ErrorKind.BAD_REQUEST) from None
        self.url = str(self.client.base_url).rstrip("/")

    def _resolve_key(self) -> str:
        o = self.opts
        if o.api_key is not None:
            return o.api_key.get_secret_value()
        if o.api_key_credential is not None or o.api_key_env is not None:  # made without a secret source
            raise self.fail(f"{self.key_source()} was not resolved (no secret source for this call)", ErrorKind.AUTH)
        return NO_KEY

    def key_source(self) -> str:
        o = self.opts
        if o.api_key_credential is not None:
            return f"credential {o.api_key_credential!r}"
        return f"${o.api_key_env}" if o.api_key_env is not None else "options.api_key"

    def fail(self, message: str, kind: ErrorKind, **extra: Any) -> ProviderError:
        """A ProviderError whose message never holds the key (servers echo it in error bodies)."""
        text = f"{self.what}: {message}"
        key = getattr(self, "key", "")
        if key and key != NO_KEY:
            text = text.replace(key, "***")
        return ProviderError(text, kind=kind, provider=PROVIDER, **extra)

    def error(self, exc: Exception) -> ProviderError:
        """Any SDK or transport failure, classified."""
        url, limit = self.url, self.opts.timeout_s
        if isinstance(exc, openai.APITimeoutError | httpx.TimeoutException):
            return self.fail(f"no answer from {url} within {limit:g} s", ErrorKind.TIMEOUT)
        if isinstance(exc, openai.APIConnectionError) and isinstance(exc.__cause__, OutboundRefused):
            return self.fail(str(exc.__cause__), ErrorKind.BAD_REQUEST)  # the operator's policy: permanent
        if isinstance(exc, openai.APIConnectionError | httpx.TransportError):
            return self.fail(f"cannot reach {url} ({type(exc.__cause__ or exc).__name__})", ErrorKind.CONNECTION)
        if isinstance(exc, openai.APIStatusError):
            return self._status(exc)
        if isinstance(exc, openai.APIResponseValidationError | ValueError):
            return self.fail(f"{url} answered in an undocumented shape ({type(exc).__name__})", ErrorKind.BAD_RESPONSE)
        return self.fail(f"{url}: {type(exc).__name__}", ErrorKind.SERVER)

    def _status(self, exc: openai.APIStatusError) -> ProviderError:
        status = exc.status_code
        body = exc.body if exc.body is not None else exc.message
        text = json.dumps(body)[:2000] if not isinstance(body, str) else body[:2000]
        html = exc.response.headers.get("content-type", "").startswith("text/html")
        detail = "an HTML page" if html else (exc.message or "")[:300]
        message = f"{self.url} answered HTTP {status}: {detail}"
        kind = kind_for_status(status, text)
        if kind is ErrorKind.AUTH:
            message += f"; check {self.key_source()}"
        retry_after = retry_after_secs(exc.response.headers.get("retry-after"))
        return self.fail(message, kind, status=status, retry_after=retry_after)

    async def preconnect(self) -> None:
        """Open the connection before the first request (``GET /models``), so it pays no DNS, TCP or TLS."""
        if self.opts.preconnect:
            await warm_connection(
                self.client, self.opts.timeout_s, what=self.what, url=self.url, error=self.error, log=log
            )

    async def aclose(self) -> None:
        await self.client.close()


@registry.register(PROVIDER)
class OpenAITTS(TTS):
    """Speaks each sentence with one streamed ``/audio/speech`` request."""

    sample_rate = PCM_RATE

    class Options(OpenAIAudioOptions):
        model: str = Field("gpt-4o-mini-tts", pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")  # or tts-1, tts-1-hd
        voice: str = Field("alloy", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
        instructions: str | None = Field(None, max_length=4096)  # tone and style; gpt-4o-mini-tts only
        speed: Annotated[float, Field(ge=0.25, le=4.0)] | None = None

    def __init__(self, options: Options) -> None:
        self.options = options
        self._api = OpenAIAudioClient(options, "openai tts")
        log.debug("openai tts: url=%s model=%s voice=%s", self._api.url, options.model, options.voice)

    def _params(self, text: str) -> dict[str, Any]:
        o = self.options
        params: dict[str, Any] = {"model": o.model, "voice": o.voice, "input": text, "response_format": "pcm"}
        if o.instructions:
            params["instructions"] = o.instructions
        if o.speed is not None:
            params["speed"] = o.speed
        return params

    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        sentence = " ".join(text.split())
        if not sentence:
            return
        speech = self._api.client.audio.speech.with_streaming_response
        try:
            async with speech.create(**self._params(sentence)) as response:
                kind = response.headers.get("content-type", "")
                if kind.startswith(_NOT_AUDIO):
                    raise self._api.fail(f"{self._api.url} answered {kind.split(';')[0]}, not audio",
                                         ErrorKind.BAD_RESPONSE)  # fmt: skip
                carry = b""
                async for chunk in response.iter_bytes():
                    carry += chunk
                    cut = len(carry) - len(carry) % 2  # whole 16-bit samples only
                    if cut:
                        pcm, carry = carry[:cut], carry[cut:]
                        yield pcm
        except (openai.OpenAIError, httpx.HTTPError) as exc:
            raise self._api.error(exc) from None

    async def prepare(self) -> None:
        await self._api.preconnect()

    async def aclose(self) -> None:
        await self._api.aclose()
