"""What Parley's clients of the ``openai`` SDK share: opening the connection before the first request.

Used by the OpenAI speech providers (:mod:`parley.services.tts.openai`, and so :mod:`parley.services.stt.openai`)
and the chat LLM (:mod:`parley.services.llm.openai_compat`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import openai

from parley.net.ssrf import OutboundRefused


async def warm_connection(
    client: openai.AsyncOpenAI,
    timeout_s: float,
    *,
    what: str,
    url: str,
    error: Callable[[openai.OpenAIError], Exception],
    log: logging.Logger,
) -> None:
    """``GET /models`` (at most 5 s, no retry), so the first real request pays no DNS, TCP or TLS.

    Nothing but a refusal by the outbound policy is raised (as ``error(exc)``: the call cannot start); a refused
    key is logged as a warning under ``what`` on the caller's ``log``, anything else at debug, since the first real
    request reports it, classified."""
    try:
        await client.with_options(timeout=min(timeout_s, 5.0), max_retries=0).models.list()
    except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
        log.warning("%s: %s", what, error(exc))  # worth knowing before the caller speaks
    except openai.APIConnectionError as exc:
        if isinstance(exc.__cause__, OutboundRefused):  # refused for good: the call cannot start
            raise error(exc) from None
        log.debug("%s: preconnect to %s failed: %s", what, url, type(exc.__cause__ or exc).__name__)
    except openai.OpenAIError as exc:  # e.g. no /models route: the first request reports real problems
        log.debug("%s: preconnect to %s failed: %s", what, url, type(exc).__name__)
