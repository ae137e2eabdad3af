"""Google Cloud Text-to-Speech (v1, gRPC): Chirp 3 HD voices stream PCM as they speak, others answer whole.

Credentials, the endpoint and its outbound checks, and the gRPC status mapping are shared with the STT provider
(:mod:`parley.services.google_cloud`). ``endpoint_url`` is ``https://texttospeech.googleapis.com`` or a regional
endpoint. The gRPC channel is made on the running loop (``prepare`` or first use) and closed by ``aclose``.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Annotated

import grpc
from google.api_core import exceptions as gexc
from google.cloud import texttospeech_v1 as tts
from google.cloud.texttospeech_v1.services.text_to_speech.transports import TextToSpeechGrpcAsyncIOTransport
from pydantic import Field

from parley.services.google_cloud import CORE as CORE  # still importable from here, where it was first
from parley.services.google_cloud import GoogleClient, GoogleCloudOptions, open_stream
from parley.services.tts.base import TTS, registry

log = logging.getLogger(__name__)

NAME = "google"


def wav_payload(audio: bytes) -> bytes:
    """The samples of a WAV file (what LINEAR16 answers carry); bytes that are not RIFF pass as they are."""
    if audio[:4] != b"RIFF" or audio[8:12] != b"WAVE":
        return audio
    at = 12
    while at + 8 <= len(audio):
        tag, size = audio[at : at + 4], struct.unpack("<I", audio[at + 4 : at + 8])[0]
        if tag == b"data":
            return audio[at + 8 : at + 8 + size] if size not in (0, 0xFFFFFFFF) else audio[at + 8 :]
        at += 8 + size + (size & 1)
    return b""


@registry.register(NAME)
class GoogleTTS(TTS):
    """One gRPC channel per call; a sentence is one ``StreamingSynthesize`` (Chirp 3 HD) or ``SynthesizeSpeech``."""

    class Options(GoogleCloudOptions):
        voice: str = Field("en-US-Chirp3-HD-Charon", min_length=1, max_length=128)
        language_code: str | None = Field(None, max_length=35)  # None: from the voice name ("en-US")
        sample_rate: Annotated[int, Field(ge=8000, le=48000)] = 24000
        speaking_rate: Annotated[float, Field(ge=0.25, le=2.0)] | None = None
        streaming: bool | None = None  # None: for Chirp 3 HD voices, the only ones that stream
        chunk_bytes: Annotated[int, Field(ge=320, le=65536)] = 4800  # 100 ms at 24 kHz, for whole answers

    def __init__(self, options: Options) -> None:
        self.options = options
        self.sample_rate = options.sample_rate
        self._google = GoogleClient(NAME, options)
        self._client: tts.TextToSpeechAsyncClient | None = None
        self._channel: grpc.aio.Channel | None = None
        o = options
        self._streams = o.streaming if o.streaming is not None else "chirp3-hd" in o.voice.lower()
        self._language = o.language_code or "-".join(o.voice.split("-")[:2])

    async def prepare(self) -> None:
        await self._ready()

    async def _ready(self) -> tts.TextToSpeechAsyncClient:
        if self._client is None:
            self._channel = await self._google.channel()
            transport = TextToSpeechGrpcAsyncIOTransport(channel=self._channel)
            self._client = tts.TextToSpeechAsyncClient(transport=transport)
            log.debug("google tts: url=%s voice=%s streaming=%s", self.options.endpoint_url, self.options.voice,
                      self._streams)  # fmt: skip
        return self._client

    def _voice(self) -> tts.VoiceSelectionParams:
        return tts.VoiceSelectionParams(language_code=self._language, name=self.options.voice)

    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        if not text.strip():
            return
        try:
            client = await self._ready()
            carry = b""  # PCM16 frames never split across yields
            # closed at once on a barge-in, so the RPC ends now rather than when the generator is collected
            async with aclosing(self._stream(client, text) if self._streams else self._whole(client, text)) as pieces:
                async for piece in pieces:
                    cut = (len(carry) + len(piece)) & ~1
                    data, carry = (carry + piece)[:cut], (carry + piece)[cut:]
                    if data:
                        yield data
        except gexc.GoogleAPIError as exc:
            raise self._google.error(exc) from None  # no chained cause: it may quote metadata

    async def _whole(self, client: tts.TextToSpeechAsyncClient, text: str) -> AsyncGenerator[bytes, None]:
        o = self.options
        config = tts.AudioConfig(audio_encoding=tts.AudioEncoding.LINEAR16, sample_rate_hertz=o.sample_rate)
        if o.speaking_rate is not None:
            config.speaking_rate = o.speaking_rate
        request = tts.SynthesizeSpeechRequest(input=tts.SynthesisInput(text=text), voice=self._voice(),
                                              audio_config=config)  # fmt: skip
        answer = await client.synthesize_speech(
            request=request, retry=None, timeout=o.timeout_s, metadata=self._google.metadata
        )
        pcm = wav_payload(answer.audio_content)
        for i in range(0, len(pcm), o.chunk_bytes):
            yield pcm[i : i + o.chunk_bytes]

    async def _stream(self, client: tts.TextToSpeechAsyncClient, text: str) -> AsyncGenerator[bytes, None]:
        o = self.options
        audio = tts.StreamingAudioConfig(audio_encoding=tts.AudioEncoding.PCM, sample_rate_hertz=o.sample_rate)
        if o.speaking_rate is not None:
            audio.speaking_rate = o.speaking_rate
        config = tts.StreamingSynthesizeConfig(voice=self._voice(), streaming_audio_config=audio)

        async def requests() -> AsyncIterator[tts.StreamingSynthesizeRequest]:
            yield tts.StreamingSynthesizeRequest(streaming_config=config)
            yield tts.StreamingSynthesizeRequest(input=tts.StreamingSynthesisInput(text=text))

        call = open_stream(client.transport.streaming_synthesize, requests(), o.timeout_s, self._google.metadata)
        try:
            async for answer in call:
                yield answer.audio_content
        except grpc.aio.AioRpcError as exc:
            raise gexc.from_grpc_error(exc) from None
        finally:
            call.cancel()  # barge-in: end the RPC so the server stops speaking

    async def aclose(self) -> None:
        if self._channel is not None:
            channel, self._channel, self._client = self._channel, None, None
            await channel.close()
