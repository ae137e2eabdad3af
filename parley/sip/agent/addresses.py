"""Where to send: peers' host names (from Contact and SDP) resolved with a bound time and cache, and the address
peers reach us at when we bind every interface."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

from parley.sip.protocol.transactions import Addr

DNS_TIMEOUT_S = 2.0
CACHE_SIZE = 1000


class Resolver:
    """A/AAAA lookups only (SRV/NAPTR are not used). Names come from peers: each lookup is bounded in time and the
    cache in size, so a peer cannot stall the endpoint or grow its memory."""

    def __init__(self, bind_host: str) -> None:
        self.family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
        self._cache: dict[str, str] = {}

    async def resolve(self, addr: tuple[str, int]) -> Addr:
        """An address to send to; OSError if there is none."""
        host, port = addr
        try:
            ipaddress.ip_address(host)
            return (host, port)
        except ValueError:
            pass
        if host not in self._cache:
            try:
                lookup = asyncio.get_running_loop().getaddrinfo(host, port, family=self.family, type=socket.SOCK_DGRAM)
                infos = await asyncio.wait_for(lookup, DNS_TIMEOUT_S)
            except (TimeoutError, UnicodeError) as exc:
                raise OSError(f"cannot resolve {host[:60]!r}: {exc or 'timeout'}") from None
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            self._cache[host] = str(infos[0][4][0])
        return (self._cache[host], port)


def advertised(host: str) -> str:
    """The address peers reach us at when we bind every interface: the one the default route leaves by."""
    try:
        if not ipaddress.ip_address(host).is_unspecified:
            return host
    except ValueError:
        return host
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"
