"""One SSRF guard for every outbound URL a tenant can set (LLM/STT/TTS base URLs, tools, webhooks).

A tenant must not make the server reach what only the server can reach: loopback, private networks, link-local
(and so cloud metadata), CGNAT, multicast, reserved ranges. The operator may allow some of them with
``PARLEY_OUTBOUND_ALLOW`` (hosts and CIDRs), e.g. a vLLM on the same host.

The real defence is at connect time: :class:`GuardedBackend` resolves the name itself, checks every address, and
connects to the address it checked, so a name that resolves differently a moment later (DNS rebinding) gains
nothing; each redirect hop opens its connection through the same check. :func:`url_problem` is the cheap early
check (scheme, literal addresses, metadata names) that lets the API answer 422 when a document is saved.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import anyio
import httpcore
import httpx
from pydantic_settings import BaseSettings, SettingsConfigDict

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SCHEMES = ("http", "https")
WS_SCHEMES = ("ws", "wss")  # a streaming provider's WebSocket (Deepgram, ElevenLabs): the same rules apply
ALLOW_SETTING = "PARLEY_OUTBOUND_ALLOW"


class _OutboundEnvironment(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PARLEY_", env_file=".env", extra="ignore")
    outbound_allow: str = ""


#: cloud instance metadata services (AWS, GCP, Azure, OpenStack, Oracle: 169.254.169.254; AWS IPv6 and ECS;
#: Alibaba), refused by address and by name
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)
METADATA_NAMES = frozenset(
    ("metadata.google.internal", "metadata.goog", "metadata", "instance-data", "instance-data.ec2.internal")
)
DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_V4_COMPAT = ipaddress.ip_network("::/96")


class OutboundRefused(httpx.ConnectError):
    """The guard refused a destination; the message says why (never with a credential in it)."""

    def __init__(self, message: str, *, request: httpx.Request | None = None) -> None:
        super().__init__(message, request=request)


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 form carries (mapped, NAT64, 6to4, IPv4-compatible), which decides where it goes."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or (ip in _V4_COMPAT and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_problem(ip: IPAddress) -> str | None:
    """What kind of non-public address ``ip`` is ("loopback", "private", …), or None for a public one."""
    if isinstance(ip, ipaddress.IPv6Address):
        ip = ipaddress.IPv6Address(str(ip).split("%")[0])  # a zone id says nothing about where it goes
        inner = _embedded_v4(ip)
        if inner is not None:
            problem = address_problem(inner)
            return f"{problem} (IPv4 inside IPv6)" if problem else None
    checks = (
        (ip in METADATA_ADDRESSES, "cloud metadata"),
        (ip.is_loopback, "loopback"),
        (ip.is_unspecified, "unspecified"),
        (ip.is_link_local, "link-local"),
        (ip.is_multicast, "multicast"),
        (ip.version == 4 and ip in _CGNAT, "shared (CGNAT)"),
        (ip.is_private, "private"),
        (ip.is_reserved, "reserved"),
        (ip.version == 6 and ip.is_site_local, "site-local"),
        (not ip.is_global, "non-public"),
    )
    return next((name for hit, name in checks if hit), None)


def _host_name(host: str) -> str:
    return host.strip().lower().rstrip(".").strip("[]")


@dataclass(frozen=True)
class OutboundPolicy:
    """What the operator allows besides public addresses: host names (``.example.com`` for a domain) and CIDRs."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: str | Iterable[str]) -> OutboundPolicy:
        """From ``"127.0.0.1, 10.0.0.0/8, vllm.internal, .corp.example"``; a bad entry raises ValueError."""
        items = entries.replace(",", " ").split() if isinstance(entries, str) else list(entries)
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for item in (i.strip() for i in items):
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            name = _host_name(item.removeprefix("*"))
            if not name or any(c in name for c in "/:@ ") or not name.replace(".", "").replace("-", "").isalnum():
                raise ValueError(f"{ALLOW_SETTING}: {item!r} is neither a host name nor an address/CIDR")
            hosts.add("." + name.lstrip(".") if item.startswith(("*.", ".")) else name)
        return cls(frozenset(hosts), tuple(networks))

    @classmethod
    def from_settings(cls) -> OutboundPolicy:
        """The operator's policy from ``PARLEY_OUTBOUND_ALLOW`` (read when a client is made), from the environment
        or ``.env`` as :class:`parley.config.Settings` reads it (which also validates it at start-up); read here by
        a settings model of its own so that the guard does not import the service's settings."""
        return cls.parse(_OutboundEnvironment().outbound_allow.replace(",", " ").split())

    def allows_host(self, host: str) -> bool:
        name = _host_name(host)
        return name in self.hosts or any(h.startswith(".") and name.endswith(h) for h in self.hosts)

    def allows_address(self, ip: IPAddress) -> bool:
        forms: list[IPAddress] = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and (inner := _embedded_v4(ip)) is not None:
            forms.append(inner)
        return any(f.version == n.version and f in n for f in forms for n in self.networks)

    def address_refusal(self, ip: IPAddress) -> str | None:
        if self.allows_address(ip):
            return None
        return address_problem(ip)

    def url_problem(self, url: str | httpx.URL) -> str | None:
        """Why ``url`` may not be requested, judged without DNS (scheme, literal addresses, metadata names)."""
        try:
            parsed = httpx.URL(url) if isinstance(url, str) else url
        except (httpx.InvalidURL, TypeError, ValueError):
            return "is not a valid URL"
        if parsed.scheme not in SCHEMES + WS_SCHEMES:
            return f"must use http, https, ws or wss, not {parsed.scheme or 'no scheme'!r}"
        host = _host_name(parsed.host)
        if not host:
            return "has no host"
        if self.allows_host(host):
            return None
        if host in METADATA_NAMES:
            return f"names {host}, a cloud metadata service"
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return None  # a name: judged when it is resolved, at connect time
        problem = self.address_refusal(ip)
        return f"points at a {problem} address (see {ALLOW_SETTING})" if problem else None

    async def resolve(self, host: str, port: int, wait_s: float | None) -> list[str]:
        """The addresses of ``host`` to connect to, all checked; OutboundRefused when any is not allowed."""
        name = _host_name(host)
        if name in METADATA_NAMES and not self.allows_host(name):
            raise OutboundRefused(f"refused: {name} is a cloud metadata service (see {ALLOW_SETTING})")
        try:
            with anyio.fail_after(wait_s):
                infos = await anyio.getaddrinfo(name, port, type=socket.SOCK_STREAM)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {name} took longer than {wait_s} s") from None
        except OSError:
            raise httpcore.ConnectError(f"cannot resolve {name}") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if self.allows_host(name):
            return addresses
        for text in addresses:
            problem = self.address_refusal(ipaddress.ip_address(text.split("%")[0]))
            if problem:
                raise OutboundRefused(f"refused: {name} resolves to a {problem} address (see {ALLOW_SETTING})")
        return addresses


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Connects only to addresses it resolved and checked itself, so the address used is the address checked."""

    def __init__(self, policy: OutboundPolicy, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.policy = policy
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self.policy.resolve(host, port, timeout)
        last: Exception = httpcore.ConnectError(f"{host} has no address")
        options = list(socket_options or ())
        for address in addresses:
            try:
                return await self.inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=options
                )
            except httpcore.ConnectError as exc:
                last = exc
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise OutboundRefused("refused: unix sockets are not reachable")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with its connection pool on a :class:`GuardedBackend`, and no proxy (it would resolve)."""

    def __init__(
        self,
        policy: OutboundPolicy | None = None,
        *,
        verify: bool = True,
        http2: bool = False,
        limits: httpx.Limits = DEFAULT_LIMITS,
    ) -> None:
        super().__init__(verify=verify, http2=http2, limits=limits, trust_env=False)
        self.policy = policy if policy is not None else OutboundPolicy.from_settings()
        # httpx offers no network_backend argument: the pool it made is replaced by one on the guarded backend
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=http2,
            network_backend=GuardedBackend(self.policy),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        problem = self.policy.url_problem(request.url)
        if problem:
            raise OutboundRefused(f"refused: {request.url.host or 'the URL'} {problem}", request=request)
        return await super().handle_async_request(request)


def guarded_client(
    policy: OutboundPolicy | None = None, *, follow_redirects: bool = False, max_redirects: int = 5, **kwargs: Any
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` for tenant-chosen URLs: every connection (each redirect hop too) is checked.

    Redirects are off by default: a redirect may carry headers (an ``api-key``) to a host nobody chose.
    Environment proxies are ignored, since a proxy would resolve names where the guard cannot see.
    """
    return httpx.AsyncClient(
        transport=GuardedTransport(policy),
        follow_redirects=follow_redirects,
        max_redirects=max_redirects,
        trust_env=False,
        **kwargs,
    )
