"""Answering an INVITE: what is checked, in which order, and what is freed when the caller goes away.

Everything that costs something comes last: routing and the SDP offer are checked first (404, 415, 488,
400), then an RTP port is taken (none free: 503 with Retry-After, not a 500), and only then do the
agent's models load, behind 180 Ringing. An INVITE given up while loading (CANCEL, shutdown) stops the
load where it can and frees the port at once.
"""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING

import structlog

from parley.calls.live import CallInfo, CallTarget
from parley.calls.session import Services
from parley.services.secrets import SecretSource
from parley.store.credentials import TenantSecrets
from parley.telephony.routing import NoSuchAgent

from .call import SipCall
from .dialog import ALLOW, Dialog
from .media import RtpSession
from .message import SipUri, new_tag, response_to
from .sdp import NoCommonCodec, SdpError, SessionDescription, answer_offer
from .transactions import ServerTransaction

if TYPE_CHECKING:
    from .endpoint import SipEndpoint

log = structlog.get_logger("parley.sip.endpoint")

NO_PORT_RETRY_S = 5  # Retry-After when every RTP port is taken, and at shutdown


async def _offer(ep: SipEndpoint, txn: ServerTransaction) -> tuple[bool, SessionDescription | None]:
    """The INVITE's SDP offer, or (False, None) once answered 415/488/400: checked before any port or model."""
    request = txn.request
    if not request.body:
        return True, None
    if request.content_type != "application/sdp":
        txn.respond(response_to(request, 415, headers=[("Accept", "application/sdp")]))
        return False, None
    try:
        offer = SessionDescription.parse(request.body)
        _, params = answer_offer(offer, ep.advertised_host, 9, 0, 0)
        await ep.resolve((params.remote_host, params.remote_port))
    except (NoCommonCodec, OSError) as exc:  # OSError: its media address does not resolve
        txn.respond(response_to(request, 488, headers=[("Warning", f'305 parley "{exc}"'[:150])]))
        return False, None
    except SdpError as exc:
        txn.respond(response_to(request, 400, "Bad SDP", headers=[("Warning", f'399 parley "{exc}"'[:150])]))
        return False, None
    return True, offer


async def _open_rtp(ep: SipEndpoint, txn: ServerTransaction) -> RtpSession | None:
    """An RTP port for the call, or None once answered 503 with Retry-After (every port is taken)."""
    try:
        return await RtpSession.open(ep.bind_host, ep.rtp_ports)
    except OSError as exc:
        ep.note_refused("no-rtp-port", txn.source, error=str(exc))
        txn.respond(response_to(txn.request, 503, headers=[("Retry-After", str(NO_PORT_RETRY_S))]))
        return None


async def answer(ep: SipEndpoint, txn: ServerTransaction, by_caller: list[bool]) -> SipCall | None:
    """100, route, check the offer, take an RTP port, 180 while the models load, then the 200 with SDP."""
    request = txn.request
    txn.respond(response_to(request, 100))
    tag = new_tag()
    services: Services | None = None
    session: RtpSession | None = None
    call: SipCall | None = None
    try:
        uri = SipUri.parse(request.uri)
        try:
            target = await ep.route(uri.user_text or "")
        except NoSuchAgent as exc:
            txn.respond(response_to(request, 404, headers=[("Warning", f'399 parley "{exc}"'[:150])]))
            return None
        acceptable, offer = await _offer(ep, txn)
        if not acceptable or (session := await _open_rtp(ep, txn)) is None:
            return None  # refused before any model loads
        txn.respond(response_to(request, 180, to_tag=tag, record_route=True, headers=[("Contact", ep.contact)]))
        services = await load_services(target, TenantSecrets(ep.db, ep.settings, target.tenant_id))
        info = CallInfo(caller=request.from_.uri.user_text, called=uri.user_text, direction="inbound",
                        provider_call_id=request.call_id, worker_id=ep.settings.worker_id)  # fmt: skip
        call = SipCall(ep, Dialog.as_uas(request, tag), target, services, session, info, random.getrandbits(31))
        call.invite_ident = (request.call_id, request.from_.tag or "", request.cseq[0])
        services = session = None  # the call owns them now
        body, params = call.local_sdp(offer)
        if params is not None:
            await call.apply(params)
        headers = [("Contact", ep.contact), ("Allow", ALLOW), ("Supported", ""),
                   ("Content-Type", "application/sdp"), ("User-Agent", "Parley")]  # fmt: skip
        ep.calls[call.dialog.key] = call
        call.send_2xx(txn, response_to(request, 200, to_tag=tag, record_route=True, headers=headers, body=body))
        return call
    except asyncio.CancelledError:
        extra = [] if by_caller[0] else [("Retry-After", str(NO_PORT_RETRY_S))]
        txn.respond(response_to(request, 487 if by_caller[0] else 503, to_tag=tag, headers=extra))
        await _drop(ep, call)
        return None
    except Exception:
        log.exception("sip_invite_failed", call_id=request.call_id)
        txn.respond(response_to(request, 500, to_tag=tag))
        await _drop(ep, call)
        return None
    finally:
        if session is not None:
            session.close()
        if services is not None:
            await asyncio.shield(services.aclose())


async def _drop(ep: SipEndpoint, call: SipCall | None) -> None:
    """A call set up but not answered after all (CANCEL raced the 200, shutdown, a bug): free it now."""
    if call is not None:
        ep.forget(call)
        call.session.close()
        await asyncio.shield(call.services.aclose())


async def load_services(target: CallTarget, secrets: SecretSource | None = None) -> Services:
    """Load the agent's models for an INVITE; abandoned (CANCEL, shutdown), the load stops where it can.

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
