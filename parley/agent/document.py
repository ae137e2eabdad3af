"""An agent is a document (YAML or JSON) validated by pydantic.

The API, the CLI and the console all read and write this one shape. Provider
options are validated by the provider's own options model, so a typo such as
``tts.options.lenght_scale`` is reported by its path before any call starts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from parley.services.llm.base import registry as llm_registry
from parley.services.registry import Registry, UnknownProvider
from parley.services.stt.base import registry as stt_registry
from parley.services.tts.base import registry as tts_registry
from parley.services.vad.base import registry as vad_registry


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServiceChoice(_Strict):
    """Which provider runs a stage, and its provider-specific options."""

    provider: str
    options: dict[str, Any] = Field(default_factory=dict)


class TTSChoice(ServiceChoice):
    provider: str = "piper"
    #: provider used when the chosen one cannot start (e.g. the GPL piper extra is not installed)
    fallback: str | None = "espeak"
    first_piece_max_words: int = Field(
        6, ge=0, le=50, description="speak a long first sentence's first words at once (0: whole sentences)"
    )


class VADSettings(_Strict):
    provider: str = "silero"
    options: dict[str, Any] = Field(default_factory=dict)
    threshold: float = Field(0.5, gt=0, lt=1, description="speech probability that starts speech")
    stop_threshold: float | None = Field(None, gt=0, lt=1, description="probability below which it is silence")

    @model_validator(mode="after")
    def _stop_below_start(self) -> VADSettings:
        if self.stop_threshold is not None and self.stop_threshold > self.threshold:
            raise ValueError("stop_threshold must not exceed threshold")
        return self

    @property
    def silence_threshold(self) -> float:
        return self.stop_threshold if self.stop_threshold is not None else max(0.05, self.threshold - 0.15)


class TurnSettings(_Strict):
    """When the caller has finished speaking."""

    pause_secs: float = Field(
        0.064, ge=0.03, le=2, description="silence that counts as a pause: STT and the reply start (speculatively)"
    )
    end_of_turn_secs: float = Field(0.4, ge=0.05, le=5, description="silence that ends the caller's turn")
    min_speech_secs: float = Field(0.12, ge=0, le=2, description="shorter sounds are not a turn")
    prepad_secs: float = Field(0.25, ge=0, le=1, description="audio kept from before speech started")
    max_turn_secs: float = Field(
        25.0, ge=1, le=600, description="speech after which a monologue is cut into turns (at the next breath)"
    )

    @model_validator(mode="after")
    def _pause_before_end(self) -> TurnSettings:
        if self.pause_secs > self.end_of_turn_secs:
            raise ValueError("pause_secs must not exceed end_of_turn_secs")
        return self


class InterruptionSettings(_Strict):
    """Barge-in policy."""

    enabled: bool = True
    during_greeting: bool = True
    min_speech_secs: float = Field(0.0, ge=0, le=2, description="caller speech needed before the agent stops")


class AgentDocument(_Strict):
    """Everything that defines an agent."""

    name: str = Field(min_length=1, max_length=120)
    description: str = ""
    language: str = Field("en", pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")
    system_prompt: str = Field(min_length=1)
    greeting: str = ""
    stt: ServiceChoice = Field(default_factory=lambda: ServiceChoice(provider="whisper"))
    llm: ServiceChoice = Field(default_factory=lambda: ServiceChoice(provider="llama"))
    tts: TTSChoice = Field(default_factory=TTSChoice)
    vad: VADSettings = Field(default_factory=VADSettings)
    turn: TurnSettings = Field(default_factory=TurnSettings)
    interruptions: InterruptionSettings = Field(default_factory=InterruptionSettings)
    max_history_turns: int = Field(8, ge=0, le=100)
    kind: Literal["agent"] = "agent"

    @field_validator("name", "system_prompt")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank")
        return v

    @model_validator(mode="after")
    def _providers_exist(self) -> AgentDocument:
        errors: list[InitErrorDetails] = []
        for field, registry, choice in (
            ("stt", stt_registry, self.stt),
            ("llm", llm_registry, self.llm),
            ("tts", tts_registry, self.tts),
            ("vad", vad_registry, self.vad),
        ):
            errors += _check_provider(field, registry, choice.provider, choice.options)
        if self.tts.fallback:
            errors += _check_provider("tts", tts_registry, self.tts.fallback, {}, key="fallback", strict=False)
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self


def _check_provider(
    field: str, registry: Registry[Any], name: str, options: dict[str, Any], key: str = "provider", strict: bool = True
) -> list[InitErrorDetails]:
    try:
        registry.options(name, options)
    except UnknownProvider as exc:
        if not strict and "missing package" in str(exc):
            return []
        return [_error((field, key), str(exc), name)]
    except ValidationError as exc:
        return [_error((field, "options", *e["loc"]), e["msg"], e.get("input")) for e in exc.errors()]
    return []


def _error(loc: tuple[str | int, ...], msg: str, value: Any) -> InitErrorDetails:
    return InitErrorDetails(type=PydanticCustomError("provider", msg), loc=loc, input=value)


class AgentDocumentError(ValueError):
    """An agent document that cannot be used; the message names each bad field."""


def parse_agent(data: dict[str, Any], source: str = "agent") -> AgentDocument:
    try:
        return AgentDocument.model_validate(data)
    except ValidationError as exc:
        raise AgentDocumentError(format_errors(exc, source)) from exc


def load_agent(path: str | Path) -> AgentDocument:
    """Read an agent document from a .yaml/.yml/.json file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AgentDocumentError(f"{p}: no such agent document") from None
    except UnicodeDecodeError:
        raise AgentDocumentError(f"{p}: not a text file") from None
    try:
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise AgentDocumentError(f"{p}: not valid {'JSON' if p.suffix == '.json' else 'YAML'}: {exc}") from None
    if not isinstance(data, dict):
        raise AgentDocumentError(f"{p}: an agent document is a mapping of fields, not {type(data).__name__}")
    return parse_agent(data, str(p))


def format_errors(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid agent document"]
    for e in exc.errors():
        loc = ".".join(str(part) for part in e["loc"]) or "(document)"
        lines.append(f"  {loc}: {e['msg']}")
    return "\n".join(lines)
