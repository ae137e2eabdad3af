"""Parley as a SIP user agent on UDP: PBXs and trunks call agents directly, and Parley dials out.

``SipEndpoint`` owns the SIP socket. An INVITE whose request-URI user names an agent (id or name) or a
mapped phone number is answered by that agent: 100 Trying at once, 180 Ringing while the agent's models
load, then 200 OK with the SDP answer, so the caller never waits on a cold model after answering.
Everything that is not a call gets the protocol's answer (OPTIONS 200, 404, 405, 481, 488, 501, 400 for
malformed requests); nothing a peer sends can stop the endpoint or another call.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from typing import Any

import structlog

from parley.calls.capacity import CAPACITY, Busy, Slot
from parley.calls.identity import CallTarget
from parley.config import Settings
from parley.sip.protocol.dialog import ALLOW, DialogKey, uri_address
from parley.sip.protocol.message import Request, Response, SipParseError, SipUri, response_to
from parley.sip.protocol.syntax import number
from parley.sip.protocol.transactions import Addr, ServerKey, ServerTransaction, TransactionLayer
from parley.store.blobs import BlobStore
from parley.store.db import Database
from parley.telephony.routing import NoSuchAgent, resolve_target

from .addresses import Resolver, advertised
from .call import SipCall
from .guard import InviteGuard, Refusal
from .inbound import answer
from .outbound import create_dial_record, place_call

log = structlog.get_logger(__name__)

KNOWN_METHODS = frozenset({"REGISTER", "SUBSCRIBE", "PUBLISH", "MESSAGE", "UPDATE", "PRACK", "REFER"})
SUPPORTED_EXTENSIONS: frozenset[str] = frozenset()
SHUTDOWN_GRACE_S = 5.0


def parse_port_range(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition("-")
    low, high = int(lo), int(hi or lo)
    if not 0 < low <= high < 65536:
        raise ValueError(f"bad RTP port range {text!r}")
    return low, high


class SipEndpoint:
    """The SIP UDP endpoint of one Parley process (``app.state.sip``).

    The transaction layer's ``TransactionUser`` below, each call's ``UserAgent`` above (``call.py``).
    """

    def __init__(self, settings: Settings, db: Database, blobs: BlobStore) -> None:
        self.settings = settings
        self.db = db
        self.blobs = blobs
        self.rtp_ports = parse_port_range(settings.sip_rtp_ports)
        self.bind_host = settings.sip_host
        self.advertised_host = settings.sip_advertised_host or advertised(settings.sip_host)
        self.port = settings.sip_port
        self.calls: dict[DialogKey, SipCall] = {}
        self._setups: dict[ServerKey, tuple[asyncio.Task[Any], list[bool]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._outbound: dict[uuid.UUID, asyncio.Task[str]] = {}
        self._results: dict[uuid.UUID, str] = {}
        self._invites: set[tuple[str, str, int]] = set()  # INVITEs being answered or answered: merged copies get 482
        self._malformed: dict[str, tuple[float, int]] = {}
        self._refused: dict[str, tuple[float, int]] = {}
        self.guard = InviteGuard(
            settings.sip_invites_per_s,
            settings.sip_invite_burst,
            settings.sip_max_unacked_per_source,
            settings.sip_ack_timeout_s,
        )
        self._resolver = Resolver(settings.sip_host)
        self.stopping = False
        # the socket and its loop exist once start() ran
        self.loop: asyncio.AbstractEventLoop
        self.layer: TransactionLayer

    @property
    def via_host(self) -> str:
        host = self.advertised_host
        return f"[{host}]:{self.port}" if ":" in host and not host.startswith("[") else f"{host}:{self.port}"

    @property
    def contact(self) -> str:
        return f"<sip:parley@{self.via_host}>"

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.layer = TransactionLayer(self, self._on_malformed, self.loop)
        family = socket.AF_INET6 if ":" in self.bind_host else socket.AF_INET
        transport, _ = await self.loop.create_datagram_endpoint(
            lambda: self.layer, local_addr=(self.bind_host, self.port), family=family
        )
        self.port = transport.get_extra_info("sockname")[1]
        log.info(
            "sip_listening",
            host=self.bind_host,
            port=self.port,
            advertised=self.advertised_host,
            rtp_ports=f"{self.rtp_ports[0]}-{self.rtp_ports[1]}",
        )

    async def stop(self) -> None:
        """BYE every call, refuse calls still being set up (503), then close the socket."""
        self.stopping = True
        for task, flags in list(self._setups.values()):
            flags[0] = False  # not the caller's CANCEL: 503
            task.cancel()
        calls = list(self.calls.values())
        for call in calls:  # a BYE waits up to 64*T1 for a peer that is gone: not the whole shutdown
            self.spawn(call.finish("server-shutdown"))
        pending = [t for t in (*self._tasks, *self._outbound.values()) if not t.done()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=SHUTDOWN_GRACE_S)
            for task in late:  # dials still ringing, calls that would not end
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=SHUTDOWN_GRACE_S)
        self.layer.close()
        log.info("sip_stopped", calls=len(calls))

    # --- helpers for calls ------------------------------------------------------------------------------

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def adopt(self, call: SipCall) -> None:
        """An answered call: in-dialog requests and ACKs now reach it."""
        self.calls[call.dialog.key] = call

    def forget(self, call: SipCall) -> None:
        if self.calls.get(call.dialog.key) is call:
            del self.calls[call.dialog.key]
        self._invites.discard(call.invite_ident)

    async def resolve(self, addr: tuple[str, int]) -> Addr:
        """An address to send to (see :class:`.addresses.Resolver`); OSError if there is none."""
        return await self._resolver.resolve(addr)

    def _on_malformed(self, exc: SipParseError, addr: Addr) -> None:
        """One warning per source and minute, with a count: a flood must not become a flood of log lines."""
        now = time.monotonic()
        since, count = self._malformed.get(addr[0], (0.0, 0))
        if now - since >= 60:
            log.warning(
                "sip_malformed",
                source=f"{addr[0]}:{addr[1]}",
                error=str(exc)[:200],
                answered=exc.partial is not None,
                suppressed=count,
            )
            self._malformed[addr[0]] = (now, 0)
        else:
            self._malformed[addr[0]] = (since, count + 1)
        if len(self._malformed) > 10_000:
            self._malformed.clear()

    def note_refused(self, why: str, addr: Addr, **fields: Any) -> None:
        """One warning per source, reason and minute, with a count: refusing a flood must not flood the log."""
        now, key = time.monotonic(), f"{addr[0]} {why}"
        since, count = self._refused.get(key, (0.0, 0))
        if now - since >= 60:
            log.warning("sip_invite_refused", source=addr[0], why=why, suppressed=count, **fields)
            self._refused[key] = (now, 0)
        else:
            self._refused[key] = (since, count + 1)
        if len(self._refused) > 10_000:
            self._refused.clear()

    def _refuse(self, txn: ServerTransaction, refusal: Refusal) -> None:
        """Over the source's INVITE rate (503) or unacknowledged-dialog cap (486): say when to come back."""
        why = "rate" if refusal.status == 503 else "unacked-cap"
        self.note_refused(why, txn.source, unacked=self.guard.unacked.get(txn.source[0], 0))
        headers = [("Retry-After", str(refusal.retry_after))]
        txn.respond(response_to(txn.request, refusal.status, refusal.reason, headers=headers))

    # --- the transaction user ---------------------------------------------------------------------------

    def on_request(self, txn: ServerTransaction) -> None:
        request = txn.request
        method = request.method
        if method == "CANCEL":
            self._cancel(txn)
            return
        if (problem := self._precheck(request)) is not None:
            txn.respond(problem)
            return
        if request.to.tag:
            call = self.calls.get((request.call_id, request.to.tag, request.from_.tag or ""))
            if call is None:
                txn.respond(response_to(request, 481))
            else:
                call.handle(txn)
        elif method == "INVITE":
            self._invite(txn)
        elif method == "OPTIONS":
            self._options(txn)
        elif method in ("BYE", "INFO", "NOTIFY"):
            txn.respond(response_to(request, 481))
        elif method in KNOWN_METHODS:
            txn.respond(response_to(request, 405, headers=[("Allow", ALLOW)]))
        else:
            txn.respond(response_to(request, 501, headers=[("Allow", ALLOW)]))

    def _invite(self, txn: ServerTransaction) -> None:
        """A new INVITE: refused at once when the worker takes no more calls, else answered in a task."""
        request = txn.request
        if self.stopping:
            txn.respond(response_to(request, 503, headers=[("Retry-After", "30")]))
            return
        ident = (request.call_id, request.from_.tag or "", request.cseq[0])
        if ident in self._invites:  # the same INVITE by another path (RFC 3261 section 8.2.2.2)
            txn.respond(response_to(request, 482, "Loop Detected"))
            return
        slot = CAPACITY.take("sip")  # at its cap, draining, or its registry unreachable: 503 at once
        if isinstance(slot, Busy):
            txn.respond(response_to(request, 503, headers=slot.sip_headers()))
            return
        if (refusal := self.guard.admit(txn.source[0])) is not None:
            slot.release()
            self._refuse(txn, refusal)
            return
        self._invites.add(ident)
        flags = [True]
        setup = self.spawn(self._incoming(txn, flags, txn.source[0], slot))
        setup.add_done_callback(lambda _: slot.release())  # also when cancelled before it ever ran
        self._setups[txn.key] = (setup, flags)

    def _options(self, txn: ServerTransaction) -> None:
        """200, or 503 while the worker takes no calls: a dispatcher's probe (Kamailio) moves on to another worker."""
        headers = [("Allow", ALLOW), ("Accept", "application/sdp"), ("Supported", ""), ("User-Agent", "Parley")]
        busy = CAPACITY.busy()
        if busy is not None:
            txn.respond(response_to(txn.request, 503, headers=headers + busy.sip_headers()))
        else:
            txn.respond(response_to(txn.request, 200, headers=headers))

    def _precheck(self, request: Request) -> Response | None:
        """RFC 3261 section 8.2: URI scheme, Max-Forwards, required extensions."""
        scheme = request.uri.split(":", 1)[0].lower()
        if scheme not in ("sip", "sips"):
            return response_to(request, 416)
        try:
            SipUri.parse(request.uri)
        except SipParseError as exc:
            return response_to(request, 400, "Bad Request-URI", headers=[("Warning", f'399 parley "{exc}"'[:150])])
        forwards = number(request.headers.get("Max-Forwards") or "70")
        if forwards is None:
            return response_to(request, 400, "Bad Max-Forwards")
        if forwards == 0 and request.method != "OPTIONS":
            return response_to(request, 483)
        required = [t.strip() for v in request.headers.get_all("Require") for t in v.split(",") if t.strip()]
        unsupported = [t for t in required if t not in SUPPORTED_EXTENSIONS]
        if unsupported:
            return response_to(request, 420, headers=[("Unsupported", ", ".join(unsupported))])
        return None

    def on_ack(self, request: Request, addr: Addr) -> None:
        call = self.calls.get((request.call_id, request.to.tag or "", request.from_.tag or ""))
        if call is not None:
            call.on_ack(request)

    def on_stray_response(self, response: Response, addr: Addr) -> None:
        """A 2xx to Parley's INVITE sent again (the ACK was lost): ACK it again."""
        if response.cseq[1] != "INVITE" or not 200 <= response.status < 300:
            return
        call = self.calls.get((response.call_id, response.from_.tag or "", response.to.tag or ""))
        if call is not None and call.ack_for_2xx is not None:
            self.spawn(self._resend_ack(call))

    async def _resend_ack(self, call: SipCall) -> None:
        if call.ack_for_2xx is not None:
            try:
                self.layer.send(call.ack_for_2xx, await self.resolve(uri_address(call.dialog.next_hop())))
            except OSError:
                pass  # the far end's Contact does not resolve: the first ACK went the same way

    def _cancel(self, txn: ServerTransaction) -> None:
        """RFC 3261 section 9.2: 200 for the CANCEL; 487 for the INVITE if it is still unanswered."""
        request = txn.request
        key = (txn.key[0], txn.key[1], "INVITE")
        invite = self.layer.servers.get(key)
        if invite is None:
            txn.respond(response_to(request, 481))
            return
        txn.respond(response_to(request, 200))
        if invite.final_sent:
            return
        setup = self._setups.get(key)
        if setup is not None:
            setup[0].cancel()
        else:
            invite.respond(response_to(invite.request, 487))

    # --- inbound calls ----------------------------------------------------------------------------------

    async def route(self, user: str) -> CallTarget:
        """The agent a request-URI user names: an agent id or name, else a mapped phone number."""
        tenant = self.settings.telephony_tenant
        if not user:
            raise NoSuchAgent("the request-URI names no user")
        try:
            return await resolve_target(self.db, agent_ref=user, default_tenant=tenant)
        except NoSuchAgent:
            return await resolve_target(self.db, called=user, default_tenant=tenant)

    async def _incoming(self, txn: ServerTransaction, by_caller: list[bool], source: str, slot: Slot) -> None:
        """Answer an INVITE and hold its call; until the ACK it counts against its source's unacked cap, and until
        its record is written against the worker's call cap (``slot``)."""
        call: SipCall | None = None
        ident = (txn.request.call_id, txn.request.from_.tag or "", txn.request.cseq[0])
        with slot:
            try:
                try:
                    call = await answer(self, txn, by_caller)
                finally:
                    self._setups.pop(txn.key, None)
                    if call is None or call.dialog.key not in self.calls:
                        self._invites.discard(ident)
                if call is None:
                    return
                await call.acked.wait()  # set by the ACK, and by the 2xx's timeout or shutdown (finish)
            finally:
                self.guard.release(source)
            await call.run()

    # --- outbound calls ---------------------------------------------------------------------------------

    async def dial(
        self,
        to: str,
        target: CallTarget,
        *,
        caller: str | None = None,
        ring_timeout: float = 60.0,
        call_id: uuid.UUID | None = None,
        variables: dict[str, str] | None = None,
    ) -> uuid.UUID:
        """Call ``to`` (a number or SIP user) through ``PARLEY_SIP_TRUNK_URI``; the agent talks when answered.

        Returns the call record's id (``call_id`` when given) at once (status 'dialing'), the call's
        ``variables`` stored on it; :meth:`wait` gives the end reason.
        """
        call_id = await create_dial_record(self, to, target, caller, call_id=call_id, variables=variables)
        task = self.loop.create_task(place_call(self, call_id, to, target, caller, ring_timeout))
        self._outbound[call_id] = task
        task.add_done_callback(lambda t: self._dialled(call_id, t))
        return call_id

    def _dialled(self, call_id: uuid.UUID, task: asyncio.Task[str]) -> None:
        self._outbound.pop(call_id, None)
        failed = task.cancelled() or task.exception() is not None
        self._results[call_id] = "cancelled" if task.cancelled() else ("error" if failed else task.result())
        if len(self._results) > 1000:
            self._results.pop(next(iter(self._results)))

    async def wait(self, call_id: uuid.UUID) -> str:
        """How a dialled call ended ('sip-486 Busy Here', 'caller-hangup', ...); at once if it is over."""
        task = self._outbound.get(call_id)
        if task is not None:
            await asyncio.wait([task])
        return self._results.get(call_id, "unknown")
