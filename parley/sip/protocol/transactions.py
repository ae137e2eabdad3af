"""The SIP transaction layer over UDP (RFC 3261 section 17, RFC 6026): retransmissions and matching.

UDP loses datagrams, so every request and final response is retransmitted on the T1..T2 schedule until
the other side shows it arrived; retransmissions that reach Parley are answered from the transaction
(the last response again) and never reach the call logic twice. 2xx responses to INVITE belong to the
call, not the transaction (the call retransmits them until the ACK), as RFC 3261 says.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

import structlog

from .message import Request, Response, SipMessage, SipParseError, parse_message, response_to
from .syntax import number

log = structlog.get_logger(__name__)

T1 = 0.5
T2 = 4.0
T4 = 5.0

Addr = tuple[str, int]
ServerKey = tuple[str, str, str]


class TransactionUser(Protocol):
    """What the endpoint does with what the transaction layer passes up."""

    def on_request(self, txn: ServerTransaction) -> None: ...

    def on_ack(self, request: Request, addr: Addr) -> None: ...

    def on_stray_response(self, response: Response, addr: Addr) -> None: ...


def server_key(request: Request) -> ServerKey:
    """RFC 3261 section 17.2.3: branch + sent-by + method (ACK matches its INVITE)."""
    via = request.top_via
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch or ""
    if not branch.startswith("z9hG4bK"):  # RFC 2543 peers: no unique branch, use the dialog's identifiers
        branch = f"{request.call_id}|{request.cseq[0]}|{request.from_.tag}|{via}"
    return (branch, via.sent_by, method)


def response_address(request: Request, source: Addr) -> Addr:
    """Where responses go: the top Via's ``received``/``rport`` (RFC 3261 section 18.2.2, RFC 3581)."""
    via = request.top_via
    if "rport" in via.params:  # symmetric response routing: back to where the request came from
        rport = via.params["rport"]
        port = number(rport or "", 5)
        return (via.params.get("received") or source[0], port if port and port < 65536 else source[1])
    return (via.params.get("received") or via.host.strip("[]"), via.port or 5060)


class ServerTransaction:
    """One request received and the responses to it."""

    def __init__(self, layer: TransactionLayer, request: Request, source: Addr) -> None:
        self.layer = layer
        self.request = request
        self.source = source
        self.addr = response_address(request, source)
        self.key = server_key(request)
        self.last: Response | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._interval = T1
        self._deadline = 0.0

    @property
    def final_sent(self) -> bool:
        return self.last is not None and self.last.status >= 200

    def respond(self, response: Response) -> None:
        if self.final_sent:
            return  # a final response is final: a late 487 after the 200 (CANCEL race) is not sent
        self.last = response
        self.layer.send(response, self.addr)
        if response.status < 200:
            return
        if self.request.method == "INVITE" and response.status >= 300:
            self._deadline = time.monotonic() + 64 * T1  # Timer H
            self._schedule(self._retransmit, T1)  # Timer G: until the ACK
        else:
            self._schedule(self.terminate, 64 * T1)  # Timer J (and RFC 6026's Accepted state for 2xx)

    def _schedule(self, fn: Callable[[], None], delay: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.layer.loop.call_later(delay, fn)

    def _retransmit(self) -> None:
        if self.last is None or time.monotonic() > self._deadline:
            self.terminate()
            return
        self.layer.send(self.last, self.addr)
        self._interval = min(self._interval * 2, T2)
        self._schedule(self._retransmit, self._interval)

    def retransmitted(self) -> None:
        """The request arrived again: say the last thing again."""
        if self.last is not None:
            self.layer.send(self.last, self.addr)

    def acked(self) -> None:
        """The ACK for a non-2xx final response: stop retransmitting, absorb ACK copies for T4 (Timer I)."""
        self._schedule(self.terminate, T4)

    def terminate(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.layer.servers.get(self.key) is self:
            del self.layer.servers[self.key]


class ClientTransaction:
    """One request sent: retransmitted until answered; ``response`` is the final answer (408 on timeout)."""

    def __init__(
        self,
        layer: TransactionLayer,
        request: Request,
        addr: Addr,
        on_provisional: Callable[[Response], None] | None = None,
    ) -> None:
        self.layer = layer
        self.request = request
        self.addr = addr
        self.on_provisional = on_provisional
        self.response: asyncio.Future[Response] = layer.loop.create_future()
        self.key = (request.top_via.branch or "", request.method)
        self.provisional: Response | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._interval = T1
        self._deadline = time.monotonic() + 64 * T1  # Timer B / F
        self._ack: Request | None = None

    def start(self) -> None:
        self.layer.clients[self.key] = self
        self.layer.send(self.request, self.addr)
        self._timer = self.layer.loop.call_later(T1, self._retransmit)

    def _retransmit(self) -> None:
        if self.response.done():
            return
        if time.monotonic() > self._deadline:
            self._finish(Response(408, "Request Timeout"))
            return
        invite = self.request.method == "INVITE"
        if not (invite and self.provisional is not None):  # Timer A stops once the INVITE is answered at all
            self.layer.send(self.request, self.addr)
            self._interval = T2 if (self.provisional and not invite) else min(self._interval * 2, T2)
        else:
            self._interval = T2
            self._deadline = max(self._deadline, time.monotonic() + 64 * T1)
        self._timer = self.layer.loop.call_later(self._interval, self._retransmit)

    def on_response(self, response: Response) -> None:
        if response.status < 200:
            if not self.response.done():
                self.provisional = response
                if self.on_provisional is not None:
                    self.on_provisional(response)
            return
        if self.request.method == "INVITE" and response.status >= 300:
            if self._ack is None:
                self._ack = _ack_for_failure(self.request, response)
            self.layer.send(self._ack, self.addr)  # again for each retransmitted final response
            if not self.response.done():
                self._finish(response, linger=32.0)  # Timer D: absorb retransmissions
            return
        if not self.response.done():
            self._finish(response, linger=0.0 if self.request.method == "INVITE" else T4)

    def _finish(self, response: Response, linger: float = 0.0) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if not self.response.done():
            self.response.set_result(response)
        if linger:
            self._timer = self.layer.loop.call_later(linger, self.terminate)
        else:
            self.terminate()

    def terminate(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.layer.clients.get(self.key) is self:
            del self.layer.clients[self.key]
        if not self.response.done():
            self.response.set_result(Response(408, "Request Timeout"))


def _ack_for_failure(request: Request, response: Response) -> Request:
    """RFC 3261 section 17.1.1.3: the ACK for a non-2xx final response (same branch, the response's To)."""
    ack = Request("ACK", request.uri)
    ack.headers.add("Via", request.headers.get_all("Via")[0])
    for name in ("Max-Forwards", "From", "Call-ID"):
        if (value := request.headers.get(name)) is not None:
            ack.headers.add(name, value)
    ack.headers.add("To", response.headers.get("To") or request.headers.get("To") or "")
    ack.headers.add("CSeq", f"{request.cseq[0]} ACK")
    for route in request.headers.get_all("Route"):
        ack.headers.add("Route", route)
    return ack


class TransactionLayer(asyncio.DatagramProtocol):
    """The UDP socket with the transactions on it."""

    def __init__(
        self, tu: TransactionUser, on_malformed: Callable[[SipParseError, Addr], None], loop: asyncio.AbstractEventLoop
    ) -> None:
        self.tu = tu
        self.on_malformed = on_malformed
        self.loop = loop
        self.transport: asyncio.DatagramTransport | None = None
        self.servers: dict[ServerKey, ServerTransaction] = {}
        self.clients: dict[tuple[str, str], ClientTransaction] = {}

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def error_received(self, exc: Exception) -> None:
        log.debug("sip_socket_error", error=str(exc))  # ICMP unreachable from a peer that went away

    def send(self, message: SipMessage, addr: Addr) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(message.encode(), addr)

    def request(
        self, request: Request, addr: Addr, on_provisional: Callable[[Response], None] | None = None
    ) -> ClientTransaction:
        """Send ``request`` in a new client transaction (ACK is sent with :meth:`send`: it has none)."""
        txn = ClientTransaction(self, request, addr, on_provisional)
        txn.start()
        return txn

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        if not data.strip(b"\r\n\t "):
            return  # keep-alive (RFC 5626 section 4.4.1)
        try:
            message = parse_message(data)
        except SipParseError as exc:
            self.on_malformed(exc, addr)
            partial = exc.partial
            if isinstance(partial, Request) and partial.method != "ACK":
                bad = response_to(partial, 400, headers=[("Warning", _warning(str(exc)))])
                self.send(bad, response_address(partial, addr))
            return
        try:
            if isinstance(message, Response):
                self._response(message, addr)
            else:
                self._request(message, addr)
        except Exception:  # a bug on one message must not stop the socket
            log.exception("sip_message_failed", call_id=message.call_id)

    def _response(self, response: Response, addr: Addr) -> None:
        key = (response.top_via.branch or "", response.cseq[1])
        txn = self.clients.get(key)
        if txn is not None:
            txn.on_response(response)
        else:
            self.tu.on_stray_response(response, addr)

    def _request(self, request: Request, addr: Addr) -> None:
        via = request.top_via
        if via.host != addr[0]:
            via.params["received"] = addr[0]
        if "rport" in via.params and not via.params["rport"]:
            via.params["rport"] = str(addr[1])
        request.headers.replace_first("Via", str(via))
        key = server_key(request)
        txn = self.servers.get(key)
        if request.method == "ACK":
            if txn is not None and txn.last is not None and txn.last.status >= 300:
                txn.acked()
            else:
                self.tu.on_ack(request, addr)
            return
        if txn is not None:
            txn.retransmitted()
            return
        txn = ServerTransaction(self, request, addr)
        self.servers[key] = txn
        self.tu.on_request(txn)

    def close(self) -> None:
        for server in list(self.servers.values()):
            server.terminate()
        for client in list(self.clients.values()):
            client.terminate()
        if self.transport is not None:
            self.transport.close()


def _warning(text: str) -> str:
    clean = "".join(ch for ch in text if ch.isprintable() and ch not in '"\\')[:120]
    return f'399 parley "{clean}"'
