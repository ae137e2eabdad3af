"""The ``tests.yaml`` model: an agent, scripted scenarios with per-turn expectations, and simulated callers.

Every expectation is deterministic (text, tools, routing, actions, timing): only ``simulated`` scenarios need an
LLM, to play the caller and to judge the outcome.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _words(v: Any) -> Any:
    """A single string is a one-item list: ``contains: Monday`` reads as ``contains: [Monday]``."""
    return [v] if isinstance(v, str) else v


class TextExpect(_Strict):
    """What a piece of text must (not) contain (any case) or match (a regular expression, searched, any case)."""

    contains: list[str] = Field(default_factory=list)
    matches: str | None = None
    not_contains: list[str] = Field(default_factory=list)

    _split = field_validator("contains", "not_contains", mode="before")(_words)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return {"contains": v} if isinstance(v, str | list) else v


class ToolExpect(_Strict):
    """A tool the agent must call this turn; ``arguments`` must be a subset of the call's arguments."""

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v


class TurnExpect(_Strict):
    heard: TextExpect | None = None
    reply: TextExpect | None = None
    tool: ToolExpect | None = None
    node: str | None = None
    action: Literal["hang_up", "transfer"] | None = None
    dtmf: str | None = None  # digits the agent sends (a ``send_dtmf`` action)
    silence_ms: float | None = Field(None, ge=0)  # the agent says nothing for at least this long after the caller
    barge_in: bool | None = None  # the agent's reply was (True) / was not (False) talked over


class Turn(_Strict):
    """One caller turn: words (spoken by a synthetic voice in audio mode) or a recording, then a pause."""

    caller: str | None = None
    wav: str | None = None
    keys: str | None = Field(None, pattern=r"^[0-9*#A-D]{1,32}$")  # the caller presses these keypad keys
    silent: bool = False  # the caller says nothing (a flow's silence_timeout edge fires)
    pause_ms: float = Field(3000, ge=0, le=60_000)  # silence after this turn in audio mode
    expect: TurnExpect = Field(default_factory=TurnExpect)

    @model_validator(mode="after")
    def _one_input(self) -> Turn:
        given = [k for k in ("caller", "wav", "keys") if getattr(self, k) is not None]
        given += ["silent"] if self.silent else []
        if len(given) != 1:
            raise ValueError(f"a turn has exactly one of caller, wav, keys, silent: true (got {given or 'none'})")
        return self


class Budget(_Strict):
    p50_ms: float | None = Field(None, gt=0)
    p95_ms: float | None = Field(None, gt=0)


class Latency(_Strict):
    voice_to_voice: Budget = Field(default_factory=Budget)


class Scenario(_Strict):
    name: str
    mode: Literal["text", "audio"] = "text"
    phone: bool = False  # audio through the 8 kHz µ-law path a phone call takes
    noise_db: float | None = Field(None, le=0)  # white noise at this level (dBFS) under the caller
    voice: str = "us-female"
    repeat: int = Field(1, ge=1, le=1000)
    variables: dict[str, Any] = Field(default_factory=dict)
    tool_mocks: dict[str, Any] = Field(default_factory=dict)
    turns: list[Turn] = Field(min_length=1)
    latency: Latency | None = None

    @model_validator(mode="after")
    def _wav_needs_audio(self) -> Scenario:
        if self.mode == "text" and any(t.wav for t in self.turns):
            raise ValueError("`wav` turns need `mode: audio`")
        if self.mode == "audio" and any(t.keys or t.silent for t in self.turns):
            raise ValueError("`keys` and `silent` turns run in `mode: text` (audio mode speaks every turn)")
        return self


class Endpoint(_Strict):
    """An OpenAI-compatible chat endpoint; ``api_key_env`` names the environment variable holding its key."""

    base_url: str
    model: str
    api_key_env: str | None = None
    temperature: float = 0.3


class Simulated(_Strict):
    """A caller played by an LLM: a persona pursuing a goal, judged against success criteria."""

    name: str
    persona: str
    goal: str
    success: list[str] = Field(min_length=1)
    max_turns: int = Field(6, ge=1, le=50)
    repeat: int = Field(1, ge=1, le=100)
    variables: dict[str, Any] = Field(default_factory=dict)
    tool_mocks: dict[str, Any] = Field(default_factory=dict)
    caller_llm: Endpoint
    judge: Endpoint | None = None  # default: the caller's endpoint

    _split = field_validator("success", mode="before")(_words)


class TestFile(_Strict):
    __test__ = False  # not a pytest class

    agent: str
    scenarios: list[Scenario] = Field(default_factory=list)
    simulated: list[Simulated] = Field(default_factory=list)
    #: collection name → files or directories (relative to this file) the agent's knowledge is read from offline
    knowledge: dict[str, list[str]] = Field(default_factory=dict)
    #: where ``agent`` and ``wav`` paths are relative to (the file's folder)
    base: Path = Path(".")

    def path(self, relative: str) -> Path:
        p = Path(relative)
        return p if p.is_absolute() else self.base / p

    def knowledge_sources(self) -> dict[str, list[Path]]:
        return {name: [self.path(p) for p in paths] for name, paths in self.knowledge.items()}


class TestFileError(ValueError):
    __test__ = False


def load_tests(path: str | Path) -> TestFile:
    """Read and check a tests file; :class:`TestFileError` says what is wrong and where."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise TestFileError(f"{p}: {exc}") from None
    if not isinstance(data, dict):
        raise TestFileError(f"{p}: expected a mapping with `agent:` and `scenarios:`")
    try:
        tests = TestFile.model_validate({**data, "base": p.parent})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise TestFileError(f"{p}: {problems}") from None
    if not tests.scenarios and not tests.simulated:
        raise TestFileError(f"{p}: no scenarios")
    return tests
