"""One SIP call once it is answered: the dialog's in-call requests, its RTP session and its LiveCall.

A call sees its endpoint only through :class:`UserAgent` (what it, and the code that sets it up, may ask
of the endpoint), so ``call``, ``inbound`` and ``outbound`` never import ``endpoint``.

Inbound and outbound calls are the same object once the 200 OK is out (or in): the far end may BYE,
re-INVITE (hold, a new address), send DTMF by SIP INFO, and the agent may hang up or transfer (REFER).
A 2xx to an INVITE is retransmitted here until its ACK arrives (RFC 3261 section 13.3.1.4): losing it
would leave a caller in silence.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Coroutine
from typing import Any, Protocol

import structlog

from parley.calls.control import ActionUnsupported, CallControl
from parley.calls.identity import CallInfo, CallTarget
from parley.calls.line import CallLine
from parley.calls.live import LiveCall
from parley.calls.record_writer import CallStore
from parley.calls.session import Services
from parley.config import Settings
from parley.sip.agent.reliable_2xx import Reliable2xx
from parley.sip.protocol.dialog import ALLOW, USER_AGENT, Dialog, uri_address
from parley.sip.protocol.media import PCMA, PCMU, RtpSession
from parley.sip.protocol.message import Request, Response, response_to
from parley.sip.protocol.sdp import (
    MediaParams,
    NoCommonCodec,
    SdpError,
    SessionDescription,
    accept_answer,
    answer_offer,
    make_offer,
)
from parley.sip.protocol.transactions import Addr, ServerTransaction, TransactionLayer
from parley.store.blobs import BlobStore
from parley.store.db import Database
from parley.transports.traits import TransportTraits

from .resources import free

log = structlog.get_logger(__name__)

_SIPFRAG = re.compile(rb"^SIP/2\.0\s+(\d{3})")
_INFO_DIGIT = {"10": "*", "11": "#", "12": "A", "13": "B", "14": "C", "15": "D"}
REFER_FINAL_WAIT_S = 30.0
DTMF_GAP_SECS = 0.08  # between keys the agent presses: most IVRs need a gap to tell two equal keys apart
#: G.711 at 8 kHz; RTP sends a packet every 20 ms, silence too
SIP_TRAITS = TransportTraits("sip", 8000, continuous_output=True)


class UserAgent(Protocol):
    """What a call, and the code that answers or places one, needs of the endpoint that owns the socket."""

    settings: Settings
    db: Database
    blobs: BlobStore
    loop: asyncio.AbstractEventLoop
    layer: TransactionLayer
    bind_host: str
    advertised_host: str
    rtp_ports: tuple[int, int]

    @property
    def via_host(self) -> str: ...

    @property
    def contact(self) -> str: ...

    async def resolve(self, addr: tuple[str, int]) -> Addr: ...

    async def route(self, user: str) -> CallTarget: ...

    def note_refused(self, why: str, addr: Addr, **fields: Any) -> None: ...

    def adopt(self, call: SipCall) -> None: ...

    def forget(self, call: SipCall) -> None: ...


class SipControl(CallControl):
    """What the agent can do to a SIP call: hang up (BYE), transfer (REFER, then BYE), press keys (RFC 4733)."""

    def __init__(self, call: SipCall) -> None:
        self.call = call

    async def hang_up(self, reason: str) -> None:
        await self.call.bye()

    async def transfer(self, target: str) -> None:
        await self.call.refer(target)

    async def send_dtmf(self, digits: str) -> None:
        """RFC 4733 telephone-events on the call's RTP (the far end must have offered telephone-event)."""
        if not self.call.session.can_send_dtmf:
            raise ActionUnsupported("the far end did not negotiate telephone-event (RFC 4733)")
        for i, digit in enumerate(digits):
            if i:
                await asyncio.sleep(DTMF_GAP_SECS)
            await self.call.session.send_dtmf(digit)


class SipCall:
    """An established dialog with its media. ``run`` holds the conversation; it returns the end reason."""

    def __init__(
        self,
        endpoint: UserAgent,
        dialog: Dialog,
        target: CallTarget,
        services: Services,
        session: RtpSession,
        info: CallInfo,
        sdp_session_id: int,
    ) -> None:
        self.ep = endpoint
        self.dialog = dialog
        self.target = target
        self.services = services
        self.session = session
        self.info = info
        self.sdp_session_id = sdp_session_id
        self.sdp_version = 1
        self.live: LiveCall | None = None
        self.terminated = False  # a BYE went out or came in: the dialog is over
        self.end_reason: str | None = None
        self.acked = asyncio.Event()
        self.awaiting_answer = False  # Parley's offer went out in a 2xx; the answer comes in the ACK
        self.ack_for_2xx: Request | None = None  # outbound: the ACK, sent again when the 2xx is
        self._2xx = Reliable2xx(endpoint.loop, endpoint.layer, endpoint.settings.sip_ack_timeout_s, self._no_ack)
        self._refer_result: asyncio.Future[int] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.invite_ident: tuple[str, str, int] = ("", "", 0)  # inbound: the INVITE that made the call
        self._released = False

    # --- media ------------------------------------------------------------------------------------------

    async def apply(self, params: MediaParams) -> None:
        """Point the RTP session at what the SDP settled (first time and on every re-INVITE)."""
        try:
            host = (await self.ep.resolve((params.remote_host, params.remote_port)))[0]
        except OSError as exc:
            raise SdpError(str(exc)) from None
        codec = PCMU if params.encoding == "PCMU" else PCMA
        self.session.configure((host, params.remote_port), codec, params.dtmf_payload_type)
        was_held = self.session.on_hold
        self.session.hold(params.on_hold)
        if self.live is not None and was_held != self.session.on_hold:
            self.live.record_event({"type": "hold", "on": self.session.on_hold, "t": round(self.live.now(), 3)})

    def local_sdp(self, answer_to: SessionDescription | None) -> tuple[bytes, MediaParams | None]:
        """The SDP Parley sends now: an answer to ``answer_to``, or a fresh offer (a late-offer INVITE)."""
        host, port = self.ep.advertised_host, self.session.local_port
        if answer_to is None:
            self.awaiting_answer = True
            return make_offer(host, port, self.sdp_session_id, self.sdp_version).encode(), None
        answer, params = answer_offer(answer_to, host, port, self.sdp_session_id, self.sdp_version)
        return answer.encode(), params

    def sdp_headers(self) -> list[tuple[str, str]]:
        """The headers of Parley's 200 OK with SDP, to the INVITE and to every re-INVITE."""
        return [
            ("Contact", self.ep.contact),
            ("Allow", ALLOW),
            ("Supported", ""),
            ("Content-Type", "application/sdp"),
            ("User-Agent", USER_AGENT),
        ]

    # --- 2xx reliability --------------------------------------------------------------------------------

    def send_2xx(self, txn: ServerTransaction, response: Response) -> None:
        """Send a 2xx to an INVITE and keep sending it until the ACK (see :mod:`.reliable_2xx`)."""
        self._2xx.send(txn, response)

    def _no_ack(self) -> None:
        if not self.terminated:
            log.warning("sip_no_ack", call_id=self.dialog.call_id)
            self.spawn(self.finish("no-ack"))

    def on_ack(self, request: Request) -> None:
        if self._2xx.acked(request.cseq[0]):
            if self.awaiting_answer:
                self.awaiting_answer = False
                if request.body:
                    self.spawn(self._answer_in_ack(request))
                    return
                log.warning("sip_no_answer_in_ack", call_id=self.dialog.call_id)
                if self.session.remote is None:  # a late-offer call with no media at all
                    self.spawn(self.finish("no-sdp-answer"))
            self.acked.set()

    async def _answer_in_ack(self, request: Request) -> None:
        try:
            await self.apply(accept_answer(SessionDescription.parse(request.body)))
        except SdpError as exc:
            log.warning("sip_bad_answer_in_ack", call_id=self.dialog.call_id, error=str(exc))
            await self.finish("bad-sdp")
        finally:
            self.acked.set()

    # --- requests inside the dialog ---------------------------------------------------------------------

    def handle(self, txn: ServerTransaction) -> None:
        request = txn.request
        if not self.dialog.accept_seq(request):
            txn.respond(response_to(request, 500, "CSeq Out Of Order"))
            return
        method = request.method
        if method == "BYE":
            txn.respond(response_to(request, 200))
            self.terminated = True
            self._2xx.stop()  # a BYE before the ACK: nothing more to resend
            self.spawn(self.finish("caller-hangup"))
        elif method == "INVITE":
            self.spawn(self._reinvite(txn))
        elif method == "INFO":
            self._info(txn)
        elif method == "NOTIFY":
            self._notify(txn)
        elif method == "OPTIONS":
            txn.respond(response_to(request, 200, headers=[("Allow", ALLOW), ("Accept", "application/sdp")]))
        else:
            status = 501 if method not in ("REFER", "UPDATE", "PRACK", "MESSAGE", "SUBSCRIBE") else 405
            txn.respond(response_to(request, status, headers=[("Allow", ALLOW)]))

    async def _reinvite(self, txn: ServerTransaction) -> None:
        request = txn.request
        if self._2xx.waiting or self.awaiting_answer:  # our last 2xx is not ACKed yet
            txn.respond(response_to(request, 500, headers=[("Retry-After", "1")]))
            return
        offer = None
        try:
            if request.body:
                offer = SessionDescription.parse(request.body)
            self.sdp_version += 1
            body, params = self.local_sdp(offer)
        except NoCommonCodec as exc:
            txn.respond(response_to(request, 488, headers=[("Warning", f'305 parley "{exc}"'[:150])]))
            return
        except SdpError as exc:
            txn.respond(response_to(request, 400, "Bad SDP", headers=[("Warning", f'399 parley "{exc}"'[:150])]))
            return
        try:
            if params is not None:
                await self.apply(params)
        except SdpError as exc:
            txn.respond(response_to(request, 488, headers=[("Warning", f'305 parley "{exc}"'[:150])]))
            return
        self.dialog.update_target(request)
        ok = response_to(request, 200, to_tag=self.dialog.local_tag, headers=self.sdp_headers(), body=body)
        self.send_2xx(txn, ok)

    def _info(self, txn: ServerTransaction) -> None:
        request = txn.request
        kind = request.content_type
        digit = None
        if kind == "application/dtmf-relay":
            m = re.search(rb"(?im)^\s*signal\s*=\s*(\S+)", request.body)
            digit = m.group(1).decode("ascii", "replace") if m else None
        elif kind == "application/dtmf":
            digit = request.body.decode("ascii", "replace").strip()
        elif request.body:
            txn.respond(response_to(request, 415, headers=[("Accept", "application/dtmf-relay, application/dtmf")]))
            return
        txn.respond(response_to(request, 200))
        digit = _INFO_DIGIT.get(digit or "", digit)
        if digit and len(digit) == 1 and digit in "0123456789*#ABCDabcd" and self.live is not None:
            self.spawn(self.live.dtmf(digit.upper()))

    def _notify(self, txn: ServerTransaction) -> None:
        request = txn.request
        txn.respond(response_to(request, 200))
        event = (request.headers.get("Event") or "").split(";")[0].strip().lower()
        m = _SIPFRAG.match(request.body.strip())
        if event == "refer" and m and self._refer_result is not None and not self._refer_result.done():
            status = int(m.group(1))
            if status >= 200:
                self._refer_result.set_result(status)

    # --- Parley's own requests --------------------------------------------------------------------------

    async def send_request(self, request: Request) -> Response:
        """Send a request in the dialog; its final response (408 after 64*T1 unanswered)."""
        addr = await self.ep.resolve(uri_address(self.dialog.next_hop()))
        return await asyncio.shield(self.ep.layer.request(request, addr).response)

    async def bye(self) -> None:
        """End the dialog from Parley's side (once)."""
        if self.terminated:
            return
        self.terminated = True
        self._2xx.stop()
        bye = self.dialog.request("BYE", self.ep.via_host, self.ep.contact)
        try:
            response = await self.send_request(bye)
        except OSError as exc:  # the far end's Contact names a host that does not resolve
            log.info("sip_bye_unroutable", call_id=self.dialog.call_id, error=str(exc)[:200])
            return
        if response.status >= 300:
            log.info("sip_bye_refused", call_id=self.dialog.call_id, status=response.status)

    async def refer(self, target: str) -> None:
        """Blind transfer (RFC 3515): the far end calls ``target``; then Parley leaves the call."""
        if target.startswith(("sip:", "sips:", "tel:")):
            refer_to = target
        else:
            user = re.sub(r"[^0-9A-Za-z+*#._\-]", "", target)
            refer_to = f"sip:{user}@{self.dialog.remote.uri.hostport}"
        request = self.dialog.request("REFER", self.ep.via_host, self.ep.contact)
        request.headers.add("Refer-To", f"<{refer_to}>")
        request.headers.add("Referred-By", f"<{self.dialog.local.uri}>")
        self._refer_result = self.ep.loop.create_future()
        response = await self.send_request(request)
        if response.status >= 300:
            raise RuntimeError(f"REFER refused: {response.status} {response.reason}")
        try:  # a NOTIFY with the transfer's outcome, when the far end sends one
            status = await asyncio.wait_for(asyncio.shield(self._refer_result), REFER_FINAL_WAIT_S)
        except TimeoutError:
            status = 200
        if status >= 300:
            raise RuntimeError(f"transfer failed: the target answered {status}")
        await self.bye()

    # --- the conversation -------------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = self.ep.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def finish(self, reason: str) -> None:
        """End the conversation (a BYE came, no ACK came, shutdown); BYE the far end if it is still there."""
        self.end_reason = self.end_reason or reason
        if self.live is not None:
            await self.live.end(reason)
        self.session.close()
        self.acked.set()
        await self.bye()

    async def _audio(self, live: LiveCall) -> AsyncIterator[bytes]:
        """The caller's audio; when RTP stops without a BYE (a crashed phone, a lost NAT binding), the call ends
        as 'rtp-timeout' rather than as a hang-up."""
        async for frame in self.session.audio():
            yield frame
        if not self.session.closed and not self.terminated:
            log.info("sip_rtp_timeout", call_id=self.dialog.call_id)
            self.end_reason = self.end_reason or "rtp-timeout"
            await live.end("rtp-timeout")
            await asyncio.Event().wait()  # LiveCall ends with that reason and cancels this feed

    async def run(self) -> str:
        """Wait for the ACK, then hold the conversation until either side ends it."""
        try:
            await self.acked.wait()
            if self.end_reason is not None:
                return self.end_reason
            control = SipControl(self)
            line = CallLine(SIP_TRAITS, self.session.send, control)
            live = LiveCall(self.target, self.services, CallStore(self.ep.db, self.ep.blobs), line, self.info)
            self.live = live
            self.session.on_dtmf = lambda digit: self.spawn(live.dtmf(digit))
            log.info(
                "sip_call_started",
                call_id=self.dialog.call_id,
                agent=self.target.agent_name,
                direction=self.info.direction,
                caller=self.info.caller,
                called=self.info.called,
            )
            reason = await live.run(self._audio(live))
            self.end_reason = self.end_reason or reason
            return self.end_reason
        finally:
            await self.release()
            log.info(
                "sip_call_ended",
                call_id=self.dialog.call_id,
                reason=self.end_reason,
                record=str(self.live.call_id) if self.live and self.live.call_id else None,
            )

    async def release(self, *, bye: bool = True) -> None:
        """Free what the call holds, once: the RTP port, the models, the dialog (BYE, unless ``bye`` is False:
        it was never answered) and its place in the endpoint's table, which goes even if this is cancelled."""
        if self._released:
            return
        self._released = True
        try:
            await free(self.session, self.services)
            if bye and not self.terminated:
                await asyncio.shield(self.bye())
        finally:
            self.ep.forget(self)
