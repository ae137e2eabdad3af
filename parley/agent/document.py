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
from pydantic_core import InitErrorDetails

from parley.agent.action_settings import ActionSettings
from parley.agent.analysis_settings import AnalysisSettings
from parley.agent.grounding import GroundingSettings
from parley.agent.knowledge_settings import KNOWLEDGE_TOOL, KnowledgeSettings
from parley.agent.limits import (
    MAX_DESCRIPTION_CHARS,
    MAX_DOCUMENT_CHARS,
    MAX_GREETING_CHARS,
    MAX_LINE_CHARS,
    MAX_SYSTEM_PROMPT_CHARS,
    Line,
    Text,
    bounded_options,
    error_detail,
    size_of,
)
from parley.agent.memory_settings import MemorySettings
from parley.agent.privacy_settings import PrivacySettings
from parley.flows.config import FlowConfig
from parley.services.fallback.config import Deadlines, FallbackLink
from parley.services.languages import stage_problems
from parley.services.llm.base import registry as llm_registry
from parley.services.registry import ProviderPackageMissing, Registry, UnknownProvider
from parley.services.stt.base import registry as stt_registry
from parley.services.tts.base import registry as tts_registry
from parley.services.vad.base import registry as vad_registry
from parley.tools.config import ToolUseSettings
from parley.tools.kinds import ToolConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServiceChoice(_Strict):
    """Which provider runs a stage, and its provider-specific options; ``fallback`` providers take over, in order,
    when it fails (see :mod:`parley.services.fallback`), each held to ``deadlines``."""

    provider: Line = Field(max_length=64)
    options: dict[str, Any] = Field(default_factory=dict)
    fallback: list[FallbackLink] = Field(default_factory=list, max_length=5)
    deadlines: Deadlines | None = None

    def chain(self) -> list[FallbackLink]:
        """The primary and its fallback links, in order (empty when there is no fallback: no chain is built)."""
        links = self.fallback if isinstance(self.fallback, list) else []
        if not links:
            return []
        return [FallbackLink(provider=self.provider, options=self.options, deadlines=self.deadlines), *links]


class TTSChoice(ServiceChoice):
    provider: Line = Field("piper", max_length=64)
    #: a provider name: used when the chosen one cannot start (e.g. the GPL piper extra is not installed); a list:
    #: a fallback chain like the other stages'
    fallback: Line | list[FallbackLink] | None = Field("espeak", max_length=64)  # type: ignore[assignment]

    @property
    def engine_fallback(self) -> str | None:
        """The provider to use when the chosen engine is missing (the string form of ``fallback``)."""
        return self.fallback if isinstance(self.fallback, str) else None

    first_piece_max_words: int = Field(
        6, ge=0, le=50, description="speak a long first sentence's first words at once (0: whole sentences)"
    )


class VADSettings(_Strict):
    provider: Line = Field("silero", max_length=64)
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
    detector: Literal["smart_turn", "silence"] = Field(
        "silence",
        description="silence: the turn ends after end_of_turn_secs of silence; smart_turn: the Smart Turn model "
        "(and the transcript) judge at the first pause whether the caller has finished",
    )
    complete_wait_secs: float = Field(
        0.2, ge=0.03, le=5, description="smart_turn: silence that ends a turn the model judges finished"
    )
    max_wait_secs: float = Field(
        1.5, ge=0.05, le=10, description="smart_turn: silence that ends a turn the model judges unfinished"
    )
    complete_threshold: float = Field(
        0.5, ge=0, le=1, description="smart_turn: P(turn complete) at or above which the turn is finished"
    )

    @model_validator(mode="after")
    def _pause_before_end(self) -> TurnSettings:
        if self.pause_secs > self.end_of_turn_secs:
            raise ValueError("pause_secs must not exceed end_of_turn_secs")
        if not self.pause_secs <= self.complete_wait_secs <= self.max_wait_secs:
            raise ValueError("smart_turn waits need pause_secs <= complete_wait_secs <= max_wait_secs")
        return self


class InterruptionSettings(_Strict):
    """Barge-in policy."""

    enabled: bool = True
    during_greeting: bool = True
    min_speech_secs: float = Field(0.0, ge=0, le=2, description="caller speech needed before the agent stops")


#: what the caller hears when the LLM or TTS fails during a reply (``fallback_line`` in the document)
DEFAULT_FALLBACK_LINE = "Sorry, I'm having trouble answering right now."


MAX_TOOLS = 64  # entries (an MCP entry may offer several tools)


class AgentDocument(_Strict):
    """Everything that defines an agent."""

    name: Line = Field(min_length=1, max_length=120)
    description: Text = Field("", max_length=MAX_DESCRIPTION_CHARS)
    language: str = Field("en", pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")
    system_prompt: Text = Field(min_length=1, max_length=MAX_SYSTEM_PROMPT_CHARS)
    greeting: Text = Field("", max_length=MAX_GREETING_CHARS)
    fallback_line: Line = Field(
        DEFAULT_FALLBACK_LINE,
        max_length=MAX_LINE_CHARS,
        description="said when the LLM or TTS fails during a reply; the turn ends there (empty: nothing is said)",
    )
    stt: ServiceChoice = Field(default_factory=lambda: ServiceChoice(provider="whisper"))
    llm: ServiceChoice = Field(default_factory=lambda: ServiceChoice(provider="llama"))
    tts: TTSChoice = Field(default_factory=TTSChoice)
    vad: VADSettings = Field(default_factory=VADSettings)
    turn: TurnSettings = Field(default_factory=TurnSettings)
    interruptions: InterruptionSettings = Field(default_factory=InterruptionSettings)
    actions: ActionSettings = Field(default_factory=ActionSettings)
    max_history_turns: int = Field(8, ge=0, le=100)
    grounding: GroundingSettings = Field(default_factory=GroundingSettings)
    tools: list[ToolConfig] = Field(default_factory=list, max_length=MAX_TOOLS)
    tool_use: ToolUseSettings = Field(default_factory=ToolUseSettings)
    flow: FlowConfig | None = None
    analysis: AnalysisSettings | None = None
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    memory: MemorySettings = Field(default_factory=MemorySettings)
    knowledge: KnowledgeSettings | None = None
    kind: Literal["agent"] = "agent"

    @model_validator(mode="before")
    @classmethod
    def _small_enough(cls, data: Any) -> Any:
        """Refuse an oversized document before validating its parts, naming its largest part; a text field
        over its own limit is left to that limit's clearer error."""
        if not isinstance(data, dict) or size_of(data, MAX_DOCUMENT_CHARS) <= MAX_DOCUMENT_CHARS:
            return data
        sizes = {str(k): size_of(v, MAX_DOCUMENT_CHARS) for k, v in data.items()}
        largest = max(sizes, key=sizes.__getitem__)
        if isinstance(data.get(largest), str):
            return data
        msg = (
            f"the document is over {MAX_DOCUMENT_CHARS} characters as JSON,"
            f" and this is its largest part ({sizes[largest]}+ characters)"
        )
        raise ValidationError.from_exception_data(cls.__name__, [error_detail((largest,), msg, None)])

    @model_validator(mode="after")
    def _small_enough_in_all(self) -> AgentDocument:
        if (size := size_of(self.model_dump(mode="json"), MAX_DOCUMENT_CHARS)) > MAX_DOCUMENT_CHARS:
            raise ValueError(f"document too large: more than {MAX_DOCUMENT_CHARS} characters as JSON ({size}+)")
        return self

    @field_validator("name", "system_prompt")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank")
        return v

    @model_validator(mode="after")
    def _tools_fit(self) -> AgentDocument:
        names = [t.name for t in self.tools]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"tools: names used twice: {dupes}")
        if self.knowledge is not None and self.knowledge.tool:  # the knowledge base's own tool is offered too
            if KNOWLEDGE_TOOL in names:
                raise ValueError(f"tools: {KNOWLEDGE_TOOL!r} is the knowledge base's tool (knowledge.mode)")
            names.append(KNOWLEDGE_TOOL)
        if self.flow is not None:
            self.flow.check_tools(set(names))
        return self

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
            links = choice.chain()[1:] if isinstance(choice, ServiceChoice) else []
            for i, link in enumerate(links):
                errors += _check_provider(field, registry, link.provider, link.options, at=("fallback", i))
        if self.tts.engine_fallback:
            errors += _check_provider("tts", tts_registry, self.tts.engine_fallback, {}, key="fallback", strict=False)
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self

    @model_validator(mode="after")
    def _languages_spoken(self) -> AgentDocument:
        """Each STT and TTS provider (fallback links too) that declares its languages must serve ``language``."""
        errors: list[InitErrorDetails] = []
        for field, registry, choice in (("stt", stt_registry, self.stt), ("tts", tts_registry, self.tts)):
            links: list[tuple[tuple[str | int, ...], str, dict[str, Any]]] = [((), choice.provider, choice.options)]
            links += [(("fallback", i), link.provider, link.options) for i, link in enumerate(choice.chain()[1:])]
            for at, provider, options in links:
                problems = stage_problems(registry, provider, options, self.language)
                errors += [error_detail((field, *at, *p.loc), p.msg, self.language) for p in problems]
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self


def _check_provider(
    field: str,
    registry: Registry[Any],
    name: str,
    options: dict[str, Any],
    key: str = "provider",
    strict: bool = True,
    at: tuple[str | int, ...] = (),
) -> list[InitErrorDetails]:
    """Errors of one provider choice; ``at`` locates a fallback link inside the stage (``("fallback", 0)``)."""
    where = (field, *at)
    if bounds := bounded_options(options, (*where, "options")):
        return bounds
    try:
        registry.options(name, options)
    except ProviderPackageMissing as exc:
        return [] if not strict else [error_detail((*where, key), str(exc), name)]
    except UnknownProvider as exc:
        return [error_detail((*where, key), str(exc), name)]
    except ValidationError as exc:
        return [error_detail((*where, "options", *e["loc"]), e["msg"], e.get("input")) for e in exc.errors()]
    return []


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
