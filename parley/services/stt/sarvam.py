"""Sarvam AI speech-to-text (Saarika, Saaras) over its REST API, for Indian languages.

``POST {base_url}/speech-to-text`` (multipart: ``file`` = a WAV, ``model``, ``language_code``) answers
``{"request_id", "transcript", "language_code"}``; ``POST /speech-to-text-translate`` (``model=saaras:v2.5``)
answers the same shape with English text, whatever Indian language was spoken (option ``translate``). The key
travels in the ``api-subscription-key`` header; errors are ``{"error": {"message", "code", "request_id"}}``
(Sarvam answers a bad key with 403, a spent credit with 429 ``insufficient_quota_error``).

Plain httpx on Parley's SSRF-guarded client, not the ``sarvamai`` SDK: the SDK's wheel declares no licence,
falls back to reading ``SARVAM_API_KEY`` from the process environment (Parley's keys come only from the
call's secret source), and its exceptions would need mapping back from the status anyway; the two REST calls
are a form post and a JSON post. :class:`SarvamConnection` is shared with the Bulbul TTS
(:mod:`parley.services.tts.sarvam`).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, ClassVar, Literal

import httpx
from pydantic import Field, SecretStr, field_validator, model_validator

from parley.audio.wav import wav_header
from parley.net.ssrf import SCHEMES, OutboundRefused, guarded_client
from parley.services.errors import ErrorKind, ProviderError, kind_for_status, retry_after_secs
from parley.services.languages import LanguageProblem, match
from parley.services.registry import ProviderOptions
from parley.services.secrets import SecretField
from parley.services.stt.base import STT, registry

log = logging.getLogger(__name__)

SARVAM_URL = "https://api.sarvam.ai"
KEY_HEADER = "api-subscription-key"
MAX_ANSWER_BYTES = 32 * 1024 * 1024  # a sentence's base64 WAV is well under this; a runaway body is cut off

#: the eleven languages of Saarika v2.5 and of the translate endpoint (and Bulbul's)
INDIC_11 = ("hi-IN", "bn-IN", "ta-IN", "te-IN", "kn-IN", "ml-IN", "mr-IN", "gu-IN", "pa-IN", "od-IN", "en-IN")
SAARAS_V3 = (*INDIC_11, "as-IN", "ur-IN", "ne-IN", "kok-IN", "ks-IN", "sd-IN", "sa-IN", "sat-IN", "mni-IN",
             "brx-IN", "mai-IN", "doi-IN")  # fmt: skip
STT_LANGUAGES: dict[str, tuple[str, ...]] = {"saarika:v2.5": INDIC_11, "saaras:v3": SAARAS_V3}
AUTO = "unknown"  # Sarvam's language_code for "detect it"
TRANSLATE_MODEL = "saaras:v2.5"  # the /speech-to-text-translate model


class SarvamOptions(ProviderOptions):
    """Where Sarvam is and the key for it (shared by the STT and TTS providers)."""

    base_url: str = SARVAM_URL
    api_key: SecretStr | None = None  # filled from a reference; inline only in local documents
    api_key_credential: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # a tenant's
    api_key_env: str | None = Field(None, max_length=128)  # local documents only (PARLEY_PROVIDER_ENV_ALLOW)
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0  # connect and read, per request

    secret_fields: ClassVar[tuple[SecretField, ...]] = (SecretField("api_key", "api_key_credential", "api_key_env"),)
    url_fields: ClassVar[tuple[str, ...]] = ("base_url",)

    @field_validator("base_url")
    @classmethod
    def _http_only(cls, v: str) -> str:
        if v.split(":", 1)[0].lower() not in SCHEMES:
            raise ValueError("must be an http:// or https:// URL")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _some_key(self) -> SarvamOptions:
        if self.api_key is None and self.api_key_credential is None and self.api_key_env is None:
            raise ValueError("Sarvam needs a key: set api_key_credential (served agents) or api_key_env")
        return self


class SarvamConnection:
    """One guarded HTTP client for one call's requests to Sarvam; every failure becomes a :class:`ProviderError`
    whose message names the URL and never the key."""

    def __init__(self, options: SarvamOptions, provider: str) -> None:
        self.options, self.provider = options, provider
        if options.api_key is None:
            source = f"credential {options.api_key_credential!r}" if options.api_key_credential else None
            source = source or f"${options.api_key_env}"
            raise ProviderError(f"{provider}: {source} was not resolved (no secret source for this call)",
                                kind=ErrorKind.AUTH, provider=provider)  # fmt: skip
        self._key = options.api_key.get_secret_value()
        self._http = guarded_client(timeout=httpx.Timeout(options.timeout_s))

    def error(self, msg: str, kind: ErrorKind, status: int | None = None, retry: float | None = None) -> ProviderError:
        """A ProviderError naming this provider, with the key (should a server echo it) blanked out."""
        text = msg.replace(self._key, "***") if self._key else msg  # a server may echo the key back
        return ProviderError(f"{self.provider}: {text}", kind=kind, provider=self.provider, status=status,
                             retry_after=retry)  # fmt: skip

    async def post(self, path: str, **request: Any) -> dict[str, Any]:
        """POST ``request`` (httpx's ``json=`` or ``data=``/``files=``) to ``path``; the answer's JSON object."""
        url = f"{self.options.base_url}{path}"
        try:
            async with self._http.stream("POST", url, headers={KEY_HEADER: self._key}, **request) as response:
                body = await _read_capped(response)
        except _TooLarge:
            raise self.error(f"{url} answered more than {MAX_ANSWER_BYTES} bytes", ErrorKind.BAD_RESPONSE) from None
        except httpx.TimeoutException:
            raise self.error(f"no answer from {url} within {self.options.timeout_s:g} s", ErrorKind.TIMEOUT) from None
        except OutboundRefused as exc:  # the operator's policy refuses this host: retrying will not help
            raise self.error(str(exc), ErrorKind.BAD_REQUEST) from None
        except httpx.HTTPError as exc:
            raise self.error(f"cannot reach {url} ({type(exc).__name__})", ErrorKind.CONNECTION) from None
        if response.status_code >= 400:
            raise self._status_error(url, response, body)
        try:
            value = httpx.Response(200, content=body).json()
        except ValueError:
            what = "JSON that does not parse" if "json" in response.headers.get("content-type", "") else None
            raise self.error(f"{url} answered {what or _content_kind(response)}", ErrorKind.BAD_RESPONSE) from None
        if not isinstance(value, dict):
            raise self.error(f"{url} answered JSON that is not an object", ErrorKind.BAD_RESPONSE)
        return value

    def _status_error(self, url: str, response: httpx.Response, body: bytes) -> ProviderError:
        status = response.status_code
        code, message = _error_fields(body)
        kind = kind_for_status(status, f"{code} {message}")
        if code == "rate_limit_exceeded_error":  # Sarvam also answers high load this way, with 503
            kind = ErrorKind.RATE_LIMIT
        elif code == "insufficient_quota_error":
            kind = ErrorKind.QUOTA
        elif code in ("invalid_api_key_error", "authentication_error"):
            kind = ErrorKind.AUTH
        detail = f" ({code}): {message[:300]}" if code or message else f": {_content_kind(response)}"
        retry = retry_after_secs(response.headers.get("retry-after"))
        return self.error(f"{url} answered HTTP {status}{detail}", kind, status, retry)

    async def aclose(self) -> None:
        await self._http.aclose()


class _TooLarge(Exception):
    pass


async def _read_capped(response: httpx.Response) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > MAX_ANSWER_BYTES:
            raise _TooLarge
    return bytes(body)


def _error_fields(body: bytes) -> tuple[str, str]:
    """(error.code, error.message) of a documented error body; ("", "") for anything else (an HTML page)."""
    try:
        value = httpx.Response(200, content=body).json()
    except ValueError:
        return "", ""
    error = value.get("error") if isinstance(value, dict) else None
    if isinstance(error, dict):
        return str(error.get("code") or ""), str(error.get("message") or "")
    if isinstance(value, dict) and "detail" in value:  # a gateway's validation answer
        return "", str(value["detail"])
    return "", ""


def _content_kind(response: httpx.Response) -> str:
    ctype = response.headers.get("content-type", "").split(";")[0].strip()
    return "an HTML page" if ctype == "text/html" else f"a body of type {ctype or 'unknown'}"


@registry.register("sarvam")
class SarvamSTT(STT):
    """One request per utterance (Sarvam's REST form takes up to 30 s of audio)."""

    sample_rate = 16000  # Sarvam recommends 16 kHz, 16-bit

    class Options(SarvamOptions):
        model: Literal["saarika:v2.5", "saaras:v3"] = "saarika:v2.5"
        translate: bool = False  # English text whatever the caller spoke (saaras translates)
        language_code: str | None = Field(None, max_length=16)  # None: the agent's; "unknown": Sarvam detects it

    def __init__(self, options: Options) -> None:
        self.options = options
        self._sarvam = SarvamConnection(options, "sarvam stt")
        self.detected_language: str | None = None  # what Sarvam said the last utterance was in

    @classmethod
    def language_problems(cls, language: str, options: Options) -> list[LanguageProblem]:
        spoken = STT_LANGUAGES[options.model]
        code = options.language_code
        if code is not None:
            if code != AUTO and code not in spoken:
                msg = f"Sarvam {options.model} does not recognise {code!r}; it knows {', '.join(spoken)} or {AUTO!r}"
                return [LanguageProblem(("options", "language_code"), msg)]
            return []
        if match(language, spoken) is None:
            msg = f"sarvam ({options.model}) does not recognise {language}; it knows {', '.join(spoken)}"
            return [LanguageProblem(("provider",), msg + f" (or set options.language_code: {AUTO})")]
        return []

    def code_for(self, language: str) -> str:
        """The Sarvam ``language_code`` for the agent's ``language`` (``hi`` → ``hi-IN``)."""
        if self.options.language_code is not None:
            return self.options.language_code
        found = match(language, STT_LANGUAGES[self.options.model]) if language else None
        return found or AUTO

    async def transcribe(self, pcm: bytes, language: str = "en") -> str:
        if not pcm:
            return ""
        wav = wav_header(self.sample_rate, 1, len(pcm)) + pcm
        files = {"file": ("utterance.wav", wav, "audio/wav")}
        o = self.options
        if o.translate and o.model == "saarika:v2.5":  # the translate endpoint detects the language itself
            path, data = "/speech-to-text-translate", {"model": TRANSLATE_MODEL}
        else:
            path, data = "/speech-to-text", {"model": o.model, "language_code": self.code_for(language)}
            if o.model == "saaras:v3":
                data["mode"] = "translate" if o.translate else "transcribe"
        body = await self._sarvam.post(path, data=data, files=files)
        transcript = body.get("transcript")
        if not isinstance(transcript, str):
            raise self._sarvam.error(f"{path} answered without a transcript", ErrorKind.BAD_RESPONSE)
        detected = body.get("language_code")
        self.detected_language = detected if isinstance(detected, str) else None
        log.debug("sarvam stt: %d chars, language %s", len(transcript), self.detected_language)
        return transcript.strip()

    async def aclose(self) -> None:
        await self._sarvam.aclose()
