"""Google Cloud Speech-to-Text (v1 ``StreamingRecognize``, gRPC): interim and final words while audio arrives.

Audio goes up as LINEAR16 as it comes; Google's interim results become ``interim`` events, ``is_final`` ones
``final`` events, and ``END_OF_SINGLE_UTTERANCE`` (with ``single_utterance``) an ``endpoint``. Once the audio has
ended the last result must come within ``timeout_s``; the whole stream is bounded by ``stream_limit_s`` (Google
ends streams at about five minutes itself). Credentials, endpoint checks and error kinds are shared with the Google
TTS provider (:mod:`parley.services.google_cloud`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

import grpc
from google.api_core import exceptions as gexc
from google.cloud import speech_v1 as speech
from google.cloud.speech_v1.services.speech.transports import SpeechGrpcAsyncIOTransport
from pydantic import Field

from parley.services.errors import ErrorKind, ProviderError
from parley.services.google_cloud import GoogleClient, GoogleCloudOptions, open_stream
from parley.services.stt.base import StreamingSTT, SttEvent, registry

log = logging.getLogger(__name__)

NAME = "google"
Event = speech.StreamingRecognizeResponse.SpeechEventType
#: a bare language (what agent documents say) → the locale Google wants
LOCALES = {"en": "en-US", "es": "es-ES", "fr": "fr-FR", "de": "de-DE", "it": "it-IT", "pt": "pt-BR", "nl": "nl-NL",
           "ja": "ja-JP", "ko": "ko-KR", "zh": "cmn-Hans-CN", "hi": "hi-IN", "ar": "ar-EG", "ru": "ru-RU",
           "pl": "pl-PL", "sv": "sv-SE", "tr": "tr-TR"}  # fmt: skip


@dataclass
class _Input:
    ended_at: float | None = None  # loop time when the audio ran out


@registry.register(NAME)
class GoogleSTT(StreamingSTT):
    """One gRPC channel per call, made on the loop at ``prepare`` or first use; one RPC per ``stream``."""

    class Options(GoogleCloudOptions):
        endpoint_url: str = "https://speech.googleapis.com"
        language_code: str | None = Field(None, max_length=35)  # None: the call's language (``en`` → en-US)
        model: str | None = Field(None, max_length=64)  # e.g. "telephony", "latest_short"; None: Google's default
        sample_rate: Annotated[int, Field(ge=8000, le=48000)] = 16000
        interim_results: bool = True
        single_utterance: bool = False  # Google ends the stream at the first pause (END_OF_SINGLE_UTTERANCE)
        punctuation: bool = True
        timeout_s: Annotated[float, Field(gt=0, le=600)] = 5.0  # for the last result once the audio has ended
        stream_limit_s: Annotated[float, Field(gt=0, le=3600)] = 300.0

    def __init__(self, options: Options) -> None:
        self.options = options
        self.sample_rate = options.sample_rate
        self._google = GoogleClient(NAME, options)
        self._client: speech.SpeechAsyncClient | None = None
        self._channel: grpc.aio.Channel | None = None

    async def prepare(self) -> None:
        await self._ready()

    async def _ready(self) -> speech.SpeechAsyncClient:
        if self._client is None:
            self._channel = await self._google.channel()
            self._client = speech.SpeechAsyncClient(transport=SpeechGrpcAsyncIOTransport(channel=self._channel))
            log.debug("google stt: url=%s model=%s", self.options.endpoint_url, self.options.model)
        return self._client

    def _config(self, language: str) -> speech.StreamingRecognitionConfig:
        o = self.options
        locale = o.language_code or (language if "-" in language else LOCALES.get(language.lower(), language))
        config = speech.RecognitionConfig(
            encoding=speech.RecognitionConfig.AudioEncoding.LINEAR16,
            sample_rate_hertz=o.sample_rate,
            language_code=locale,
            enable_automatic_punctuation=o.punctuation,
        )
        if o.model:
            config.model = o.model
        return speech.StreamingRecognitionConfig(
            config=config, interim_results=o.interim_results, single_utterance=o.single_utterance
        )

    async def stream(self, audio: AsyncIterable[bytes], language: str = "en") -> AsyncIterator[SttEvent]:
        state = _Input()
        loop = asyncio.get_running_loop()
        config = self._config(language)

        async def requests() -> AsyncIterator[speech.StreamingRecognizeRequest]:
            yield speech.StreamingRecognizeRequest(streaming_config=config)
            async for chunk in audio:
                if chunk:
                    yield speech.StreamingRecognizeRequest(audio_content=chunk)
            state.ended_at = loop.time()

        call: Any = None
        try:
            client = await self._ready()
            method, limit = client.transport.streaming_recognize, self.options.stream_limit_s
            call = open_stream(method, requests(), limit, self._google.metadata)
            responses = call.__aiter__()
            while (answer := await self._next(responses, state)) is not None:
                for event in self._events(answer):
                    yield event
        except grpc.aio.AioRpcError as exc:
            raise self._google.error(gexc.from_grpc_error(exc)) from None  # no chained cause: it may quote metadata
        except gexc.GoogleAPIError as exc:
            raise self._google.error(exc) from None
        finally:
            if call is not None:
                call.cancel()  # a caller who stops listening ends the RPC (and Google's billing)

    async def _next(self, responses: AsyncIterator[Any], state: _Input) -> Any:
        """The next answer; once the audio has ended, only within ``timeout_s`` (a silent server is a TIMEOUT)."""
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(anext(responses, None))
        try:
            while not task.done():
                if state.ended_at is None:
                    await asyncio.wait({task}, timeout=0.25)  # look again whether the audio has ended
                    continue
                left = state.ended_at + self.options.timeout_s - loop.time()
                if left <= 0:
                    msg = f"no result from {self.options.endpoint_url} {self.options.timeout_s:g} s after the audio"
                    raise self._google.fail(msg, ErrorKind.TIMEOUT)
                await asyncio.wait({task}, timeout=left)
            return task.result()
        finally:
            if not task.done():
                task.cancel()

    def _events(self, answer: Any) -> list[SttEvent]:
        if answer.error.code:
            raise self._status_error(answer.error.code, answer.error.message)
        events: list[SttEvent] = []
        if answer.speech_event_type == Event.END_OF_SINGLE_UTTERANCE:
            events.append(SttEvent("endpoint", t=_seconds(answer.speech_event_time)))
        interim: list[str] = []
        end: float | None = None
        for result in answer.results:
            if not result.alternatives:
                continue
            best, end = result.alternatives[0], _seconds(result.result_end_time)
            if result.is_final:
                events.append(SttEvent("final", best.transcript, end, best.confidence or None))
            else:
                interim.append(best.transcript)
        if interim and "".join(interim).strip():
            events.append(SttEvent("interim", "".join(interim).strip(), end))
        return events

    def _status_error(self, code: int, message: str) -> ProviderError:
        status = next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)
        return self._google.error(gexc.from_grpc_status(status, message))

    async def aclose(self) -> None:
        if self._channel is not None:
            channel, self._channel, self._client = self._channel, None, None
            await channel.close()


def _seconds(value: Any) -> float | None:
    """A proto Duration (proto-plus hands back a timedelta); None when unset."""
    if isinstance(value, timedelta):
        return value.total_seconds() or None
    seconds = getattr(value, "seconds", 0) + getattr(value, "nanos", 0) / 1e9
    return seconds or None
