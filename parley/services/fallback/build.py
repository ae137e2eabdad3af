"""Turning a stage's ``fallback:`` list into a chain provider for one call.

Each link's secrets are resolved like the primary's; a link that cannot be made here (its package is missing, its
native library failed the self-check, an option is refused at runtime) is left out with an event on the call —
"provider down before the call" — and the chain serves with the rest. Only a chain with no link at all fails.
"""

from __future__ import annotations

from typing import Any

from parley.metrics import observe_chain_event
from parley.offload import off_loop
from parley.services.errors import ErrorKind, ProviderError
from parley.services.fallback.breaker import breaker_for
from parley.services.fallback.chain import Chain, Link
from parley.services.fallback.config import FallbackLink, link_deadlines
from parley.services.fallback.llm import FallbackLLM, probe_llm
from parley.services.fallback.stt import FallbackSTT, probe_stt
from parley.services.fallback.tts import FallbackTTS, probe_tts
from parley.services.registry import Registry
from parley.services.secrets import SecretSource, resolve_provider_options

PROBES: dict[str, Any] = {"llm": probe_llm, "tts": probe_tts, "stt": probe_stt}
WRAPPERS: dict[str, Any] = {"llm": FallbackLLM, "tts": FallbackTTS, "stt": FallbackSTT}


async def chain_provider(stage: str, registry: Registry[Any], links: list[FallbackLink], source: SecretSource) -> Any:
    """The chain provider (a FallbackLLM/TTS/STT) for ``links`` (the primary first)."""
    made: list[Link[Any]] = []
    skipped: list[dict[str, Any]] = []
    for i, link in enumerate(links):
        where = stage if i == 0 else f"{stage}.fallback.{i - 1}"
        try:
            options = await resolve_provider_options(registry, link.provider, link.options, source, where)
            provider = await off_loop(registry.create, link.provider, options)
        except Exception as exc:  # a secret that is missing, an engine that is not here: the others serve
            skipped.append({"type": "provider_error", "stage": stage, "provider": link.provider,
                            "kind": "unavailable", "detail": type(exc).__name__, "before_call": True})  # fmt: skip
            continue
        deadlines = link_deadlines(stage, link.deadlines, primary=i == 0)
        made.append(Link(link.provider, provider, deadlines, breaker_for(stage, link.provider, options)))
    if not made:
        raise ProviderError(f"no {stage} provider of the chain could be made here", kind=ErrorKind.CONNECTION)
    for event in skipped:
        observe_chain_event(event)
    chain: Chain[Any] = Chain(stage, made, PROBES[stage], events=skipped)
    return WRAPPERS[stage](chain)
