"""Sarvam AI text-to-speech (Bulbul) over its REST API, for the eleven languages it speaks.

``POST {base_url}/text-to-speech`` with JSON ``{text, target_language_code, speaker, model, speech_sample_rate,
pitch, pace, loudness, enable_preprocessing, temperature}`` answers ``{"request_id", "audios": [base64 WAV]}``;
each WAV is decoded to PCM16 at :attr:`sample_rate` and yielded in 100 ms chunks. Speakers belong to a model
(a ``bulbul:v2`` name is refused by ``bulbul:v3``), so a voice of another model, or a ``bulbul:v4-flash``
persona of another language, is an error when the document loads, not when the caller is waiting.

Sarvam also streams (``POST /text-to-speech/stream``, and a WebSocket at ``wss://api.sarvam.ai/text-to-speech/ws``);
one REST request per sentence is used here since the responder already sends sentence by sentence.
HTTP, key and errors: :class:`parley.services.stt.sarvam.SarvamConnection` (why not the SDK: see there).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from collections.abc import AsyncGenerator
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator

from parley.audio import pcm16_resample
from parley.audio.wav import AudioFormatError, read_wav
from parley.services.errors import ErrorKind
from parley.services.languages import LanguageProblem, match
from parley.services.stt.sarvam import INDIC_11, SarvamConnection, SarvamOptions
from parley.services.tts.base import TTS, registry

Model = Literal["bulbul:v2", "bulbul:v3", "bulbul:v4-flash"]
SPEAKERS: dict[str, tuple[str, ...]] = {
    "bulbul:v2": ("anushka", "manisha", "vidya", "arya", "abhilash", "karun", "hitesh"),
    "bulbul:v3": ("shubh", "aditya", "ritu", "priya", "neha", "rahul", "pooja", "rohan", "simran", "kavya", "amit",
                  "dev", "ishita", "shreya", "ratan", "varun", "manan", "sumit", "roopa", "kabir", "aayan",
                  "ashutosh", "advait", "anand", "tanya", "tarun", "sunny", "mani", "gokul", "vijay", "shruti",
                  "suhani", "mohit", "kavitha", "rehan", "soham", "rupali"),
}  # fmt: skip
DEFAULT_SPEAKER = {"bulbul:v2": "anushka", "bulbul:v3": "shubh", "bulbul:v4-flash": "shubh_enhi_ads"}
#: a bulbul:v4-flash persona id is ``<name>_<language>_<style>``; ``enhi`` speaks English and Hindi
PERSONA = re.compile(r"^[a-z]+_(en|hi|enhi|bn|gu|kn|ml|mr|od|pa|ta|te)_[a-z_]+$")
MAX_CHARS = {"bulbul:v2": 1500, "bulbul:v3": 2500, "bulbul:v4-flash": 2500}
HIGH_RATES = (32000, 44100, 48000)  # REST only, and not bulbul:v2
V2_ONLY = ("pitch", "loudness", "enable_preprocessing")
Language = Literal["hi-IN", "bn-IN", "ta-IN", "te-IN", "kn-IN", "ml-IN", "mr-IN", "gu-IN", "pa-IN", "od-IN", "en-IN"]


def persona_languages(speaker: str) -> tuple[str, ...]:
    """The languages a bulbul:v4-flash persona speaks, from its id (``ritu_hi_customer`` → hi-IN)."""
    found = PERSONA.match(speaker)
    if found is None:
        return ()
    part = found.group(1)
    return ("en-IN", "hi-IN") if part == "enhi" else (f"{part}-IN",)


@registry.register("sarvam")
class SarvamTTS(TTS):
    """One request per sentence (a longer text is cut at spaces into pieces the model takes)."""

    class Options(SarvamOptions):
        language_code: Language  # sent as target_language_code; must be the agent's language
        model: Model = "bulbul:v2"
        speaker: str | None = Field(None, max_length=64)  # None: the model's default voice
        pace: Annotated[float, Field(ge=0.3, le=3.0)] | None = None  # bulbul:v3 and v4: 0.5 to 2.0
        pitch: Annotated[float, Field(ge=-0.75, le=0.75)] | None = None  # bulbul:v2 only
        loudness: Annotated[float, Field(ge=0.3, le=3.0)] | None = None  # bulbul:v2 only
        enable_preprocessing: bool | None = None  # bulbul:v2 only (v3 always normalises numbers and dates)
        temperature: Annotated[float, Field(ge=0.01, le=2.0)] | None = None  # bulbul:v3 and v4 only
        speech_sample_rate: Literal[8000, 16000, 22050, 24000, 32000, 44100, 48000] = 22050

        @field_validator("speaker")
        @classmethod
        def _speaker_of_model(cls, v: str | None, info: ValidationInfo) -> str | None:
            model = info.data.get("model")
            if v is None or model is None:
                return v
            if model == "bulbul:v4-flash":
                if not PERSONA.match(v):
                    raise ValueError(f"{v!r} is not a bulbul:v4-flash persona id (<name>_<language>_<style>)")
            elif v not in SPEAKERS[model]:
                raise ValueError(f"Sarvam {model} has no voice {v!r}; its voices: {', '.join(SPEAKERS[model])}")
            return v

        @field_validator(*V2_ONLY)
        @classmethod
        def _v2_only(cls, v: object, info: ValidationInfo) -> object:
            if v is not None and info.data.get("model", "bulbul:v2") != "bulbul:v2":
                raise ValueError(f"only bulbul:v2 takes {info.field_name}")
            return v

        @field_validator("pace")
        @classmethod
        def _pace_of_model(cls, v: float | None, info: ValidationInfo) -> float | None:
            if v is not None and info.data.get("model", "bulbul:v2") != "bulbul:v2" and not 0.5 <= v <= 2.0:
                raise ValueError(f"{info.data['model']} takes a pace from 0.5 to 2.0")
            return v

        @field_validator("temperature")
        @classmethod
        def _temperature_of_model(cls, v: float | None, info: ValidationInfo) -> float | None:
            if v is not None and info.data.get("model", "bulbul:v2") == "bulbul:v2":
                raise ValueError("bulbul:v2 takes no temperature (bulbul:v3 and v4-flash do)")
            return v

        @field_validator("speech_sample_rate")
        @classmethod
        def _rate_of_model(cls, v: int, info: ValidationInfo) -> int:
            if v in HIGH_RATES and info.data.get("model", "bulbul:v2") == "bulbul:v2":
                raise ValueError("bulbul:v2 speaks at 8000, 16000, 22050 or 24000 Hz")
            return v

    def __init__(self, options: Options) -> None:
        self.options = options
        self.sample_rate = options.speech_sample_rate
        self.speaker = options.speaker or DEFAULT_SPEAKER[options.model]
        self._sarvam = SarvamConnection(options, "sarvam tts")

    @classmethod
    def language_problems(cls, language: str, options: Options) -> list[LanguageProblem]:
        if match(language, INDIC_11) is None:
            msg = f"Sarvam Bulbul does not speak {language}; it speaks {', '.join(INDIC_11)}"
            return [LanguageProblem(("provider",), msg)]
        if match(language, (options.language_code,)) is None:
            msg = f"{options.language_code} is not the agent's language ({language})"
            return [LanguageProblem(("options", "language_code"), msg)]
        if options.model == "bulbul:v4-flash" and options.speaker:
            spoken = persona_languages(options.speaker)
            if options.language_code not in spoken:
                msg = f"Sarvam voice {options.speaker!r} does not speak {options.language_code}"
                return [LanguageProblem(("options", "speaker"), msg + f" (it speaks {', '.join(spoken)})")]
        return []

    def payload(self, text: str) -> dict[str, object]:
        """The documented request body for ``text``; options left unset are left to Sarvam's defaults."""
        o = self.options
        body: dict[str, object] = {"text": text, "target_language_code": o.language_code, "speaker": self.speaker,
                                   "model": o.model, "speech_sample_rate": o.speech_sample_rate}  # fmt: skip
        for name in ("pace", "pitch", "loudness", "enable_preprocessing", "temperature"):
            value = getattr(o, name)
            if value is not None:
                body[name] = value
        return body

    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        chunk = self.sample_rate // 10 * 2  # 100 ms of PCM16
        for piece in pieces(text.strip(), MAX_CHARS[self.options.model]):
            answer = await self._sarvam.post("/text-to-speech", json=self.payload(piece))
            for pcm in self._decode(answer.get("audios")):
                for i in range(0, len(pcm), chunk):
                    yield pcm[i : i + chunk]
                    await asyncio.sleep(0)  # other calls run between chunks

    def _decode(self, audios: object) -> list[bytes]:
        if not isinstance(audios, list) or not audios or not all(isinstance(a, str) for a in audios):
            raise self._sarvam.error("/text-to-speech answered without audios", ErrorKind.BAD_RESPONSE)
        out = []
        for encoded in audios:
            try:
                audio = read_wav(base64.b64decode(encoded, validate=True))
            except (binascii.Error, AudioFormatError) as exc:
                raise self._sarvam.error(f"/text-to-speech answered audio that is not a WAV: {exc}",
                                         ErrorKind.BAD_RESPONSE) from None  # fmt: skip
            pcm = audio.mono().astype("<i2").tobytes()
            if audio.sample_rate != self.sample_rate:
                pcm = pcm16_resample(pcm, audio.sample_rate, self.sample_rate)
            out.append(pcm)
        return out

    async def aclose(self) -> None:
        await self._sarvam.aclose()


def pieces(text: str, limit: int) -> list[str]:
    """``text`` cut at spaces into pieces of at most ``limit`` characters (a longer word is cut too)."""
    out: list[str] = []
    current = ""
    for word in text.split():
        for part in (word[i : i + limit] for i in range(0, len(word), limit)):
            if current and len(current) + 1 + len(part) > limit:
                out.append(current)
                current = part
            else:
                current = f"{current} {part}" if current else part
    return [*out, current] if current else out
