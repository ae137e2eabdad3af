"""What every carrier webhook does the same way: the public address, signed stream parameters, the agent.

A carrier's answer/voice webhook names the call's parties and (in its query) the
agent; it answers with where the media stream connects and which parameters it
carries. Those parameters are signed (HMAC keyed by the carrier's secret), so a
stream cannot choose its own agent.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from parley.calls.live import CallTarget
from parley.config import Settings
from parley.store.db import Database
from parley.telephony.routing import NoSuchAgent, resolve_target
from parley.telephony.stream import StreamStart, TargetFinder


def public_url(settings: Settings, request_base: str) -> str:
    """The address carriers reach Parley at: PARLEY_PUBLIC_URL, else what this request came in on."""
    return (settings.public_url or request_base).rstrip("/")


def ws_base(base: str) -> str:
    """``https://host`` → ``wss://host`` (and http → ws): where a carrier opens the media stream."""
    scheme, _, rest = base.partition("://")
    return ("wss://" if scheme == "https" else "ws://") + rest


def stream_token(secret: str, params: Mapping[str, str]) -> str:
    """HMAC over the stream's parameters: the stream proves they came from a webhook answer we signed."""
    text = "|".join(f"{k}={params[k]}" for k in sorted(params))
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


async def answer_target(
    db: Database,
    settings: Settings,
    query: Mapping[str, str],
    caller: str | None,
    called: str | None,
    call_key: str,
    provider_call_id: str,
) -> tuple[CallTarget, dict[str, str]]:
    """The agent a webhook's call goes to, and the stream parameters naming it (unsigned).

    ``query`` holds Parley's own parameters (``agent``, ``tenant``, and ``call`` for a call Parley dialled, whose
    far party is then the "to" side). Raises :class:`~parley.telephony.routing.NoSuchAgent`.
    """
    if query.get("call"):
        caller, called = called, caller
    target = await resolve_target(
        db, agent_ref=query.get("agent"), called=called, tenant_ref=query.get("tenant"),
        default_tenant=settings.telephony_tenant,
    )  # fmt: skip
    params = {"agent": str(target.agent_id), "tenant": str(target.tenant_id), "caller": caller or "",
              "called": called or "", call_key: provider_call_id, "call": query.get("call", "")}  # fmt: skip
    return target, params


def signed_stream_target(db: Database, settings: Settings, secret: str | None) -> TargetFinder:
    """The stream's agent, from the parameters our webhook answer signed (checked when ``secret`` is set)."""

    async def find(start: StreamStart) -> CallTarget:
        params = dict(start.params)
        given = params.pop("token", "")
        if secret is not None and not hmac.compare_digest(given, stream_token(secret, params)):
            raise NoSuchAgent("stream parameters are not signed by this Parley")
        return await resolve_target(
            db, agent_ref=params.get("agent"), called=start.called, tenant_ref=params.get("tenant"),
            default_tenant=settings.telephony_tenant,
        )  # fmt: skip

    return find
