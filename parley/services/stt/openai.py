"""OpenAI speech-to-text (``POST /v1/audio/transcriptions``): one utterance, sent as a WAV, answered with its text.

Uses the official ``openai`` SDK on Parley's SSRF-guarded client (the shared part lives in
:mod:`parley.services.tts.openai`): the multipart upload, the error bodies and Retry-After are the vendor's.
Models: ``gpt-4o-mini-transcribe`` (default), ``gpt-4o-transcribe``, ``whisper-1``; OpenAI-compatible servers
(faster-whisper and the like) work through ``base_url``. The language is the call's (``en-US`` is sent as the
ISO 639-1 ``en`` OpenAI wants) unless ``language`` is set.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import httpx
import openai
from pydantic import Field

from parley.audio.wav import wav_header
from parley.services.errors import ErrorKind
from parley.services.stt.base import STT, registry
from parley.services.tts.openai import PROVIDER, OpenAIAudioClient, OpenAIAudioOptions

log = logging.getLogger(__name__)


@registry.register(PROVIDER)
class OpenAISTT(STT):
    """Transcribes each utterance with one ``/audio/transcriptions`` request."""

    sample_rate = 16000

    class Options(OpenAIAudioOptions):
        model: str = Field("gpt-4o-mini-transcribe", pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
        language: str | None = Field(None, pattern=r"^[A-Za-z]{2,3}$")  # ISO 639-1; None: the call's
        prompt: str | None = Field(None, max_length=2000)  # names and terms the caller may say
        temperature: Annotated[float, Field(ge=0, le=1)] | None = None
        timeout_s: Annotated[float, Field(gt=0, le=300)] = 15.0  # an utterance's upload and its transcription

    def __init__(self, options: Options) -> None:
        self.options = options
        self._api = OpenAIAudioClient(options, "openai stt")
        log.debug("openai stt: url=%s model=%s", self._api.url, options.model)

    def _params(self, pcm: bytes, language: str) -> dict[str, Any]:
        o = self.options
        wav = wav_header(self.sample_rate, 1, len(pcm)) + pcm
        params: dict[str, Any] = {
            "model": o.model,
            "file": ("utterance.wav", wav, "audio/wav"),
            "response_format": "json",
        }
        code = (o.language or language or "").split("-")[0].split("_")[0].lower()
        if code:
            params["language"] = code
        if o.prompt:
            params["prompt"] = o.prompt
        if o.temperature is not None:
            params["temperature"] = o.temperature
        return params

    async def transcribe(self, pcm: bytes, language: str = "en") -> str:
        pcm = pcm[: len(pcm) - len(pcm) % 2]
        if not pcm:
            return ""
        try:
            result = await self._api.client.audio.transcriptions.create(**self._params(pcm, language))
        except (openai.OpenAIError, httpx.HTTPError, ValueError) as exc:
            raise self._api.error(exc) from None
        text = getattr(result, "text", None)
        if not isinstance(text, str):
            raise self._api.fail(f"{self._api.url} answered without a text", ErrorKind.BAD_RESPONSE)
        return text.strip()

    async def prepare(self) -> None:
        await self._api.preconnect()

    async def aclose(self) -> None:
        await self._api.aclose()
