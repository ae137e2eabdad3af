"""Does a stage's provider speak the agent's language? Checked when a document is loaded, not mid-call.

A provider says what it speaks in one of two ways, and the agent document asks each STT and TTS stage:

* a class attribute ``languages`` (BCP-47 tags, e.g. ``{"hi-IN", "ta-IN"}``): the document's language must
  match one of them by its primary subtag (``hi`` matches ``hi-IN``);
* a classmethod ``language_problems(language, options)`` returning :class:`LanguageProblem` items, for a
  provider whose answer depends on its options (a model's language list, a voice that speaks one language).

A problem's ``loc`` is under the stage (``("options", "speaker")``), so the error names the field to change:
``tts.options.speaker: Sarvam voice 'x' does not speak ta-IN``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from parley.services.registry import Registry, UnknownProvider

#: ISO 639-1 codes some vendors spell their own way (Sarvam writes Odia ``od``)
ALIASES: Mapping[str, str] = {"or": "od", "od": "or"}


@dataclass(frozen=True)
class LanguageProblem:
    """One reason a stage cannot serve the agent's language; ``loc`` is relative to the stage."""

    loc: tuple[str, ...]
    msg: str


def primary(tag: str) -> str:
    """The primary language subtag, lower case (``hi`` of ``hi-IN``)."""
    return tag.split("-", 1)[0].strip().lower()


def match(tag: str, supported: Iterable[str]) -> str | None:
    """The entry of ``supported`` that serves ``tag``: the same tag (any case), else the first with its primary
    subtag (or that subtag's alias: ``or`` finds ``od-IN``); None when none does."""
    options = list(supported)
    for s in options:
        if s.lower() == tag.lower():
            return s
    wanted = {primary(tag), ALIASES.get(primary(tag), primary(tag))}
    return next((s for s in options if primary(s) in wanted), None)


def problems_for(cls: type[Any], language: str, options: Any) -> list[LanguageProblem]:
    """What provider class ``cls`` (with validated ``options``) says about ``language``."""
    check = getattr(cls, "language_problems", None)
    if callable(check):
        return list(check(language, options))
    spoken = getattr(cls, "languages", None)
    if spoken and match(language, spoken) is None:
        name = getattr(cls, "provider_name", cls.__name__)
        return [LanguageProblem(("provider",), f"{name} does not speak {language}; it speaks {', '.join(spoken)}")]
    return []


def stage_problems(
    registry: Registry[Any], provider: str, options: dict[str, Any], language: str
) -> list[LanguageProblem]:
    """The language problems of one stage; a provider or options that do not validate are reported elsewhere."""
    try:
        cls = registry.get(provider)
        validated = registry.options(provider, options)
    except (UnknownProvider, ValidationError):
        return []
    return problems_for(cls, language, validated)
