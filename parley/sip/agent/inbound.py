"""Answering an INVITE: what is checked, in which order, and what is freed when the caller goes away.

Everything that costs something comes last: routing and the SDP offer are checked first (404, 415, 488,
400), then an RTP port is taken (none free: 503 with Retry-After, not a 500), and only then do the
agent's models load, behind 180 Ringing. An INVITE given up while loading (CANCEL, shutdown) stops the
load where it can and frees the port at once.
"""

from __future__ import annotations

import asyncio
import random

import structlog

from parley.calls.identity import CallInfo
from parley.calls.session import Services
from parley.sip.protocol.dialog import Dialog
from parley.sip.protocol.media import RtpSession
from parley.sip.protocol.message import SipUri, new_tag, response_to
from parley.sip.protocol.sdp import NoCommonCodec, SdpError, SessionDescription, answer_offer
from parley.sip.protocol.transactions import ServerTransaction
from parley.store.credentials import TenantSecrets
from parley.telephony.routing import NoSuchAgent

from .call import SipCall, UserAgent
from .resources import free, load_services

log = structlog.get_logger("parley.sip.agent.endpoint")  # its log lines read as the endpoint's

NO_PORT_RETRY_S = 5  # Retry-After when every RTP port is taken, and at shutdown


async def _offer(ep: UserAgent, txn: ServerTransaction) -> tuple[bool, SessionDescription | None]:
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


async def _open_rtp(ep: UserAgent, txn: ServerTransaction) -> RtpSession | None:
    """An RTP port for the call, or None once answered 503 with Retry-After (every port is taken)."""
    try:
        return await RtpSession.open(ep.bind_host, ep.rtp_ports)
    except OSError as exc:
        ep.note_refused("no-rtp-port", txn.source, error=str(exc))
        txn.respond(response_to(txn.request, 503, headers=[("Retry-After", str(NO_PORT_RETRY_S))]))
        return None


async def answer(ep: UserAgent, txn: ServerTransaction, by_caller: list[bool]) -> SipCall | None:
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
        info = CallInfo(
            caller=request.from_.uri.user_text,
            called=uri.user_text,
            direction="inbound",
            provider_call_id=request.call_id,
            worker_id=ep.settings.worker_id,
        )
        call = SipCall(ep, Dialog.as_uas(request, tag), target, services, session, info, random.getrandbits(31))
        call.invite_ident = (request.call_id, request.from_.tag or "", request.cseq[0])
        services = session = None  # the call owns them now
        body, params = call.local_sdp(offer)
        if params is not None:
            await call.apply(params)
        ep.adopt(call)
        ok = response_to(request, 200, to_tag=tag, record_route=True, headers=call.sdp_headers(), body=body)
        call.send_2xx(txn, ok)
        return call
    except asyncio.CancelledError:
        extra = [] if by_caller[0] else [("Retry-After", str(NO_PORT_RETRY_S))]
        txn.respond(response_to(request, 487 if by_caller[0] else 503, to_tag=tag, headers=extra))
        await _drop(call)
        return None
    except Exception:
        log.exception("sip_invite_failed", call_id=request.call_id)
        txn.respond(response_to(request, 500, to_tag=tag))
        await _drop(call)
        return None
    finally:
        await free(session, services)


async def _drop(call: SipCall | None) -> None:
    """A call set up but not answered after all (CANCEL raced the 200, shutdown, a bug): free it now, no BYE."""
    if call is not None:
        await call.release(bye=False)
