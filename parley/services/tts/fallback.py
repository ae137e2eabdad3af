"""Create a TTS provider, falling back to another (espeak) when the wanted engine is not installed.

Only a missing engine falls back: piper is an optional GPL extra, so a deployment without it should still
speak. A misspelled provider name or a bad option is a configuration error and is raised as usual.
"""

from __future__ import annotations

from typing import Any

import structlog

from parley.services.registry import ProviderPackageMissing, ProviderUnavailable
from parley.services.tts.base import TTS, registry

log = structlog.get_logger(__name__)

#: what "the engine is not here" looks like, by type: a package or native library missing (the registry says
#: which), or an engine that failed to start (a provider's constructor raises ImportError or RuntimeError). Any
#: other UnknownProvider is a misspelled name, and a ValidationError a bad option: both are raised.
ENGINE_MISSING = (ProviderPackageMissing, ProviderUnavailable, ImportError, RuntimeError)


def create_tts(name: str, options: dict[str, Any] | None = None, fallback: str | None = "espeak") -> TTS:
    """``registry.create(name, options)``, or ``fallback`` with default options if ``name``'s engine is missing."""
    try:
        return registry.create(name, options)
    except ENGINE_MISSING as exc:
        if fallback is None or fallback == name:
            raise
        log.warning("tts provider unavailable, using fallback", provider=name, fallback=fallback, reason=str(exc))
        return registry.create(fallback)
