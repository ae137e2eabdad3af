"""What a SIP call holds besides its dialog, the agent's models and an RTP port, and how both are let go.

Every way a call ends (refused while ringing, CANCELled, a bad answer, the conversation over) frees them
through :func:`free`, so no path forgets one or closes the models where a cancellation can cut it short.
"""

from __future__ import annotations

import asyncio

from parley.calls.identity import CallTarget
from parley.calls.session import Services
from parley.services.secrets import SecretSource

from ..protocol.media import RtpSession


async def free(session: RtpSession | None, services: Services | None) -> None:
    """Close the RTP port and the models (either may be None: not taken yet, or owned by a call now)."""
    if session is not None:
        session.close()
    if services is not None:
        await asyncio.shield(services.aclose())


async def load_services(target: CallTarget, secrets: SecretSource | None = None) -> Services:
    """Load the agent's models for a call; abandoned (CANCEL, shutdown), the load stops where it can.

    Creating the providers runs in threads that cannot be stopped: that part finishes and is closed. Their
    preparation (warming the model on the prompt, a test synthesis) is cancelled and the providers closed at
    once, so an INVITE that is given up costs no more CPU than it already has.
    """
    doc = target.document
    creating = asyncio.ensure_future(Services.load(doc, secrets))
    try:
        services = await asyncio.shield(creating)
    except asyncio.CancelledError:
        creating.add_done_callback(_close_loaded)
        raise
    try:
        await services.prepare(doc)
    except BaseException:
        await asyncio.shield(services.aclose())
        raise
    return services


_closing: set[asyncio.Future[None]] = set()


def _close_loaded(task: asyncio.Future[Services]) -> None:
    if not task.cancelled() and task.exception() is None:
        closing = asyncio.ensure_future(task.result().aclose())
        _closing.add(closing)
        closing.add_done_callback(_closing.discard)
