"""Outbound calls through the SIP trunk (``PARLEY_SIP_TRUNK_URI``): INVITE, digest auth, then the agent talks.

The call record exists from the moment the call is dialled (status 'dialing'), so the API can hand out
its id at once; a dial that fails ends it as 'failed' with the SIP code (``sip-486 Busy Here``). The
agent's models load before the INVITE goes out, so the greeting starts as soon as the callee answers.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from urllib.parse import quote

import structlog

from parley.calls.identity import CallInfo, CallTarget
from parley.calls.session import Services
from parley.sip.protocol.dialog import ALLOW, USER_AGENT, Dialog, uri_address
from parley.sip.protocol.digest import DigestError, authorization, choose_challenge
from parley.sip.protocol.media import RtpSession
from parley.sip.protocol.message import Headers, Request, Response, SipUri, new_branch, new_call_id, new_tag
from parley.sip.protocol.sdp import SdpError, SessionDescription, accept_answer, make_offer
from parley.sip.protocol.transactions import T1, Addr
from parley.store.calls import CallRepo, CallStatus
from parley.store.credentials import TenantSecrets

from .call import SipCall, UserAgent
from .resources import free, load_services

log = structlog.get_logger(__name__)

MAX_AUTH_ROUNDS = 2


def _from_user(ep: UserAgent, caller: str | None) -> str:
    return caller or ep.settings.sip_trunk_username or "parley"


async def create_dial_record(
    ep: UserAgent,
    to: str,
    target: CallTarget,
    caller: str | None,
    *,
    call_id: uuid.UUID | None = None,
    variables: dict[str, str] | None = None,
) -> uuid.UUID:
    """The dialled call's record ('dialing'), under ``call_id`` when given, with the call's ``variables``."""
    call_id = call_id or uuid.uuid4()
    async with ep.db.session() as s:
        call = await CallRepo(s).create(
            target.tenant_id,
            target.agent_id,
            target.agent_version,
            target.agent_name,
            "sip",
            caller=_from_user(ep, caller),
            direction="outbound",
            called=to,
            worker_id=ep.settings.worker_id,
            status=CallStatus.DIALING,
            call_id=call_id,
        )
        if variables:
            call.variables = dict(variables)
            await s.flush()
    return call_id


async def _fail(ep: UserAgent, target: CallTarget, call_id: uuid.UUID, reason: str) -> str:
    async with ep.db.session() as s:
        await CallRepo(s).end(target.tenant_id, call_id, CallStatus.FAILED, reason, 0.0)
    log.info("sip_dial_failed", call=str(call_id), reason=reason)
    return reason


def _invite(ep: UserAgent, trunk: SipUri, to: str, from_user: str, sdp: bytes) -> Request:
    uri = SipUri(trunk.host, quote(to, safe="+*#"), trunk.port, trunk.scheme, params=dict(trunk.params))
    h = Headers()
    h.add("Via", f"SIP/2.0/UDP {ep.via_host};branch={new_branch()};rport")
    h.add("Max-Forwards", "70")
    h.add("From", f"<sip:{quote(from_user, safe='+*#')}@{trunk.hostport}>;tag={new_tag()}")
    h.add("To", f"<sip:{uri.user}@{trunk.hostport}>")
    h.add("Call-ID", new_call_id(ep.advertised_host))
    h.add("CSeq", "1 INVITE")
    h.add("Contact", ep.contact)
    h.add("Allow", ALLOW)
    h.add("Supported", "")
    h.add("User-Agent", USER_AGENT)
    h.add("Content-Type", "application/sdp")
    return Request("INVITE", str(uri), h, sdp)


def _authorized(invite: Request, challenge: Response, username: str, password: str) -> Request:
    """The INVITE again, answering the challenge: CSeq + 1, a new branch (RFC 3261 section 22.2)."""
    proxy = challenge.status == 407
    offered = challenge.headers.get_all("Proxy-Authenticate" if proxy else "WWW-Authenticate")
    answer = authorization(choose_challenge(offered), "INVITE", invite.uri, username, password)
    h = invite.headers.copy()
    via = invite.vias[0]
    via.params["branch"] = new_branch()
    h.replace_first("Via", str(via))
    h.set("CSeq", f"{invite.cseq[0] + 1} INVITE")
    h.remove("Authorization" if not proxy else "Proxy-Authorization")
    h.add("Proxy-Authorization" if proxy else "Authorization", answer)
    return Request("INVITE", invite.uri, h, invite.body)


def _cancel_for(invite: Request) -> Request:
    """RFC 3261 section 9.1: same Request-URI, top Via, From, To, Call-ID, CSeq number."""
    h = Headers()
    h.add("Via", invite.headers.get_all("Via")[0])
    for name in ("Max-Forwards", "From", "To", "Call-ID"):
        h.add(name, invite.headers.get(name) or "")
    h.add("CSeq", f"{invite.cseq[0]} CANCEL")
    for route in invite.headers.get_all("Route"):
        h.add("Route", route)
    return Request("CANCEL", invite.uri, h)


async def _send_invite(ep: UserAgent, invite: Request, addr: Addr, ring_timeout: float) -> tuple[Response, bool]:
    """The INVITE's final response, and whether Parley gave up ringing (then it CANCELled)."""
    txn = ep.layer.request(invite, addr)
    try:
        return await asyncio.wait_for(asyncio.shield(txn.response), ring_timeout), False
    except TimeoutError:
        pass
    if txn.provisional is not None:  # RFC 3261 section 9.1: CANCEL only once the INVITE was answered at all
        ep.layer.request(_cancel_for(invite), addr)
    try:
        return await asyncio.wait_for(asyncio.shield(txn.response), 64 * T1), True
    except TimeoutError:
        return Response(408, "Request Timeout"), True


async def _answered(
    ep: UserAgent, invite: Request, addr: Addr, ring_timeout: float, from_user: str
) -> tuple[Request, Response, bool] | str:
    """Send the INVITE, answering up to ``MAX_AUTH_ROUNDS`` digest challenges: (the INVITE as last sent, its
    final response, whether Parley gave up ringing), or the failure reason when a challenge cannot be met."""
    settings = ep.settings
    response, gave_up = await _send_invite(ep, invite, addr, ring_timeout)
    password = settings.sip_trunk_password.get_secret_value() if settings.sip_trunk_password else None
    for _ in range(MAX_AUTH_ROUNDS):
        if response.status not in (401, 407) or password is None:
            break
        try:
            invite = _authorized(invite, response, settings.sip_trunk_username or from_user, password)
        except DigestError as exc:
            return f"sip-{response.status} {response.reason} ({exc})"
        response, gave_up = await _send_invite(ep, invite, addr, ring_timeout)
    return invite, response, gave_up


async def _established(call: SipCall, answer: Response, gave_up: bool) -> str | None:
    """Media for an answered call from the 200's SDP; the reason to leave at once instead (then it BYEs)."""
    problem = "no-answer" if gave_up else None  # answered while the CANCEL was under way: leave politely
    try:
        await call.apply(accept_answer(SessionDescription.parse(answer.body)))
    except SdpError as exc:
        log.warning("sip_bad_answer", call_id=answer.call_id, error=str(exc))
        problem = f"bad answer SDP: {exc}"[:200]
    if problem is not None:
        await call.release()
    return problem


async def place_call(
    ep: UserAgent, call_id: uuid.UUID, to: str, target: CallTarget, caller: str | None, ring_timeout: float
) -> str:
    """Dial, authenticate, and hold the conversation; returns the end reason (or the failure)."""
    services: Services | None = None
    session: RtpSession | None = None
    settings = ep.settings
    established = False
    try:
        if not settings.sip_trunk_uri:
            return await _fail(ep, target, call_id, "no trunk: set PARLEY_SIP_TRUNK_URI")
        trunk = SipUri.parse(settings.sip_trunk_uri)
        services = await load_services(target, TenantSecrets(ep.db, settings, target.tenant_id))
        session = await RtpSession.open(ep.bind_host, ep.rtp_ports)
        addr = await ep.resolve(uri_address(trunk))
        sdp_id = random.getrandbits(31)
        from_user = _from_user(ep, caller)
        offer = make_offer(ep.advertised_host, session.local_port, sdp_id, 1).encode()
        outcome = await _answered(ep, _invite(ep, trunk, to, from_user, offer), addr, ring_timeout, from_user)
        if isinstance(outcome, str):
            return await _fail(ep, target, call_id, outcome)
        invite, response, gave_up = outcome
        if not 200 <= response.status < 300:
            reason = "no-answer" if gave_up else f"sip-{response.status} {response.reason}"
            return await _fail(ep, target, call_id, reason)
        dialog = Dialog.as_uac(invite, response)
        ack = dialog.request("ACK", ep.via_host, ep.contact, seq=invite.cseq[0])
        ep.layer.send(ack, await ep.resolve(uri_address(dialog.next_hop())))
        info = CallInfo(
            caller=from_user,
            called=to,
            direction="outbound",
            provider_call_id=invite.call_id,
            worker_id=settings.worker_id,
            call_id=call_id,
        )
        call = SipCall(ep, dialog, target, services, session, info, sdp_id)
        services = session = None  # the call owns them now
        call.ack_for_2xx = ack
        ep.adopt(call)
        if (problem := await _established(call, response, gave_up)) is not None:
            return await _fail(ep, target, call_id, problem)
        call.acked.set()
        established = True
        return await call.run()
    except asyncio.CancelledError:
        if not established:
            await asyncio.shield(_fail(ep, target, call_id, "server-shutdown"))
        raise
    except Exception as exc:
        log.exception("sip_dial_error", call=str(call_id))
        return await _fail(ep, target, call_id, f"error: {exc}"[:200])
    finally:
        await free(session, services)
