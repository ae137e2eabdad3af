"""A local Google Cloud Text-to-Speech v1 and Speech-to-Text v1 on 127.0.0.1: a real gRPC server (grpcio).

It serves the documented methods by their full gRPC names, ``/google.cloud.texttospeech.v1.TextToSpeech/``
``SynthesizeSpeech`` and ``StreamingSynthesize`` and ``/google.cloud.speech.v1.Speech/StreamingRecognize``, and
(de)serialises with the message classes of the google-cloud packages, so the clients under test speak the real
protobuf wire format over HTTP/2. An API key arrives as ``x-goog-api-key`` metadata; ``BAD`` is refused as
UNAUTHENTICATED. ``SynthesizeSpeech`` answers LINEAR16 with its WAV header (as documented), ``StreamingSynthesize``
headerless PCM in pieces; ``StreamingRecognize`` answers interim results while audio arrives and, once the audio
ends, ``END_OF_SINGLE_UTTERANCE`` (when asked for) and a final result. A fault is a gRPC status to abort with,
``hang`` (no answer) or ``stall`` (one piece, then nothing).

A stream is refused once its client has stopped writing: grpcio's client loses a status that arrives while it is
still writing (it reports INTERNAL "Internal error from Core", a race the provider reports as a connection
failure), and these tests check the kind each real status maps to.
"""

from __future__ import annotations

import io
import math
import struct
import time
import wave
from collections.abc import Iterable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.cloud.speech_v1.types import cloud_speech
from google.cloud.texttospeech_v1.types import cloud_tts
from google.protobuf import duration_pb2

TTS_SERVICE = "google.cloud.texttospeech.v1.TextToSpeech"
STT_SERVICE = "google.cloud.speech.v1.Speech"
Event = cloud_speech.StreamingRecognizeResponse.SpeechEventType


@dataclass
class FakeGoogle:
    target: str = ""  # host:port
    url: str = ""  # http://host:port, the endpoint_url to give a provider
    calls: list[dict[str, Any]] = field(default_factory=list)  # method, metadata, requests
    fault: grpc.StatusCode | str | None = None
    fault_details: str = "injected fault"
    transcript: str = "book a table for two"
    pieces: int = 4
    piece_gap_s: float = 0.02
    hang_s: float = 3.0

    def audio(self, text: str, rate: int) -> bytes:
        n = max(len(text), 1) * rate // 50
        return b"".join(struct.pack("<h", int(6000 * math.sin(i / 7))) for i in range(n))

    def _start(self, method: str, context: grpc.ServicerContext, requests: Iterable[Any] = ()) -> dict[str, Any]:
        """Record the call, then refuse it if it should be (a stream after reading all it is sent)."""
        metadata = {k: v for k, v in context.invocation_metadata()}
        call: dict[str, Any] = {"method": method, "metadata": metadata, "requests": []}
        self.calls.append(call)
        refuse = metadata.get("x-goog-api-key") == "BAD" or isinstance(self.fault, grpc.StatusCode)
        if refuse:
            call["requests"] += list(requests)
        if metadata.get("x-goog-api-key") == "BAD":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "API key not valid. Please pass a valid API key.")
        if isinstance(self.fault, grpc.StatusCode):
            context.abort(self.fault, self.fault_details)
        return call

    def _hang(self) -> None:
        if self.fault == "hang":
            time.sleep(self.hang_s)

    def synthesize(self, request: cloud_tts.SynthesizeSpeechRequest, context: grpc.ServicerContext) -> Any:
        self._start("SynthesizeSpeech", context)["requests"].append(request)
        self._hang()
        rate = request.audio_config.sample_rate_hertz or 24000
        out = io.BytesIO()
        with wave.open(out, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(self.audio(request.input.text, rate))
        return cloud_tts.SynthesizeSpeechResponse(audio_content=out.getvalue())

    def streaming_synthesize(
        self, requests: Iterable[cloud_tts.StreamingSynthesizeRequest], context: grpc.ServicerContext
    ) -> Iterator[cloud_tts.StreamingSynthesizeResponse]:
        call = self._start("StreamingSynthesize", context, requests)
        config: cloud_tts.StreamingSynthesizeConfig | None = None
        for request in _logged(requests, call["requests"]):
            if config is None:
                if "streaming_config" not in request:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first request must be a streaming_config")
                config = request.streaming_config
                continue
            self._hang()
            pcm = self.audio(request.input.text, config.streaming_audio_config.sample_rate_hertz or 24000)
            step = -(-len(pcm) // self.pieces) + 1 & ~1
            for i in range(0, len(pcm), step):
                yield cloud_tts.StreamingSynthesizeResponse(audio_content=pcm[i : i + step])
                if self.fault == "stall":
                    time.sleep(self.hang_s)
                time.sleep(self.piece_gap_s)

    def streaming_recognize(
        self, requests: Iterable[cloud_speech.StreamingRecognizeRequest], context: grpc.ServicerContext
    ) -> Iterator[cloud_speech.StreamingRecognizeResponse]:
        call = self._start("StreamingRecognize", context, requests)
        config: cloud_speech.StreamingRecognitionConfig | None = None
        heard, words = 0, self.transcript.split()
        for request in _logged(requests, call["requests"]):
            if config is None:
                if "streaming_config" not in request:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first request must be a streaming_config")
                config = request.streaming_config
                continue
            heard += len(request.audio_content)
            if config.interim_results and heard // 6400 > (heard - len(request.audio_content)) // 6400:
                guess = " ".join(words[: min(len(words), heard // 6400)])  # a word each 200 ms at 16 kHz
                yield _result(guess, final=False, seconds=heard / 32000)
                if self.fault == "stall":
                    time.sleep(self.hang_s)
        self._hang()
        if config is not None and config.single_utterance:
            yield cloud_speech.StreamingRecognizeResponse(speech_event_type=Event.END_OF_SINGLE_UTTERANCE)
        if heard:
            yield _result(self.transcript, final=True, seconds=heard / 32000)


def _logged(requests: Iterable[Any], log: list[Any]) -> Iterator[Any]:
    for request in requests:
        log.append(request)
        yield request


def _result(text: str, *, final: bool, seconds: float) -> cloud_speech.StreamingRecognizeResponse:
    end = duration_pb2.Duration(seconds=int(seconds), nanos=int(seconds % 1 * 1e9))
    alternative = cloud_speech.SpeechRecognitionAlternative(transcript=text, confidence=0.9 if final else 0.0)
    result = cloud_speech.StreamingRecognitionResult(
        alternatives=[alternative], is_final=final, stability=0.0 if final else 0.5, result_end_time=end
    )
    return cloud_speech.StreamingRecognizeResponse(results=[result])


def _handlers(fake: FakeGoogle) -> list[grpc.GenericRpcHandler]:
    tts = {
        "SynthesizeSpeech": grpc.unary_unary_rpc_method_handler(
            fake.synthesize,
            request_deserializer=cloud_tts.SynthesizeSpeechRequest.deserialize,
            response_serializer=cloud_tts.SynthesizeSpeechResponse.serialize,
        ),
        "StreamingSynthesize": grpc.stream_stream_rpc_method_handler(
            fake.streaming_synthesize,
            request_deserializer=cloud_tts.StreamingSynthesizeRequest.deserialize,
            response_serializer=cloud_tts.StreamingSynthesizeResponse.serialize,
        ),
    }
    stt = {
        "StreamingRecognize": grpc.stream_stream_rpc_method_handler(
            fake.streaming_recognize,
            request_deserializer=cloud_speech.StreamingRecognizeRequest.deserialize,
            response_serializer=cloud_speech.StreamingRecognizeResponse.serialize,
        ),
    }
    return [
        grpc.method_handlers_generic_handler(TTS_SERVICE, tts),
        grpc.method_handlers_generic_handler(STT_SERVICE, stt),
    ]


@contextmanager
def google_speech_server() -> Iterator[FakeGoogle]:
    """A running fake on a free port of 127.0.0.1 (plaintext HTTP/2, as a local emulator would be)."""
    fake = FakeGoogle()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="fake-google"))
    server.add_generic_rpc_handlers(_handlers(fake))
    port = server.add_insecure_port("127.0.0.1:0")
    fake.target, fake.url = f"127.0.0.1:{port}", f"http://127.0.0.1:{port}"
    server.start()
    try:
        yield fake
    finally:
        server.stop(grace=None).wait(2)
