"""A SIP dialog (RFC 3261 section 12): the state two user agents share for one call.

Requests inside the call (BYE, re-INVITE answers' ACK, REFER) must follow the route set that proxies
recorded and go to the far end's Contact, with CSeq numbers that only grow; PBXs and trunks reject
anything else with 481 or drop it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .message import Address, Headers, Request, Response, SipParseError, SipUri, new_branch

USER_AGENT = "Parley"
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, NOTIFY"

DialogKey = tuple[str, str, str]


@dataclass
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local: Address  # our From/To address, without its tag
    remote: Address
    remote_target: SipUri
    route_set: list[str] = field(default_factory=list)
    local_seq: int = 0
    remote_seq: int | None = None

    @property
    def key(self) -> DialogKey:
        return (self.call_id, self.local_tag, self.remote_tag)

    @classmethod
    def as_uas(cls, request: Request, local_tag: str) -> Dialog:
        """The dialog an incoming INVITE creates (RFC 3261 section 12.1.1)."""
        remote = request.from_
        local = request.to
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=remote.tag or "",
            local=Address(local.uri, local.display, {k: v for k, v in local.params.items() if k != "tag"}),
            remote=Address(remote.uri, remote.display, {k: v for k, v in remote.params.items() if k != "tag"}),
            remote_target=_contact(request) or remote.uri,
            route_set=request.headers.get_all("Record-Route"),
            remote_seq=request.cseq[0],
        )

    @classmethod
    def as_uac(cls, request: Request, response: Response) -> Dialog:
        """The dialog a 2xx to Parley's INVITE creates (RFC 3261 section 12.1.2): route set reversed."""
        local = request.from_
        remote = response.to
        return cls(
            call_id=request.call_id,
            local_tag=local.tag or "",
            remote_tag=remote.tag or "",
            local=Address(local.uri, local.display, {k: v for k, v in local.params.items() if k != "tag"}),
            remote=Address(remote.uri, remote.display, {k: v for k, v in remote.params.items() if k != "tag"}),
            remote_target=_contact(response) or SipUri.parse(request.uri),
            route_set=list(reversed(response.headers.get_all("Record-Route"))),
            local_seq=request.cseq[0],
        )

    def update_target(self, message: Request | Response) -> None:
        """A re-INVITE or its answer may move the far end (a new Contact)."""
        if (target := _contact(message)) is not None:
            self.remote_target = target

    def accept_seq(self, request: Request) -> bool:
        """False for a request older than one already seen (answered 500, RFC 3261 section 12.2.2)."""
        seq = request.cseq[0]
        if self.remote_seq is not None and seq <= self.remote_seq and request.method not in ("ACK", "CANCEL"):
            return False
        if request.method not in ("ACK", "CANCEL"):
            self.remote_seq = seq
        return True

    def request(self, method: str, via_host: str, contact: str, *, seq: int | None = None) -> Request:
        """A request inside the dialog (RFC 3261 section 12.2.1.1), with a fresh Via branch."""
        if seq is None:
            self.local_seq += 1
            seq = self.local_seq
        uri, routes = str(self.remote_target), list(self.route_set)
        if routes and "lr" not in Address.parse(routes[0]).uri.params:  # a strict router (RFC 2543)
            uri = str(Address.parse(routes[0]).uri)
            routes = [*routes[1:], f"<{self.remote_target}>"]
        h = Headers()
        h.add("Via", f"SIP/2.0/UDP {via_host};branch={new_branch()};rport")
        h.add("Max-Forwards", "70")
        h.add("From", str(self.local.with_tag(self.local_tag)))
        h.add("To", str(self.remote.with_tag(self.remote_tag)) if self.remote_tag else str(self.remote))
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{seq} {method}")
        for route in routes:
            h.add("Route", route)
        if method not in ("ACK", "CANCEL", "BYE"):
            h.add("Contact", contact)
        h.add("User-Agent", USER_AGENT)
        return Request(method, uri, h)

    def next_hop(self) -> SipUri:
        """Where requests go: the first route, else the far end's Contact (RFC 3261 section 8.1.2)."""
        if self.route_set:
            return Address.parse(self.route_set[0]).uri
        return self.remote_target


def _contact(message: Request | Response) -> SipUri | None:
    value = message.headers.get("Contact")
    if not value or value.strip() == "*":
        return None
    try:
        return Address.parse(value).uri
    except SipParseError:
        return None


def uri_address(uri: SipUri) -> tuple[str, int]:
    """A URI's host and port as a socket address target (``maddr`` wins; no DNS SRV)."""
    host = uri.params.get("maddr") or uri.host
    return (host.strip("[]"), uri.port or 5060)
