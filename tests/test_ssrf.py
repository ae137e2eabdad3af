"""The SSRF guard: every address class, IPv6 forms, the operator's allow-list, and the connect-time check
(real sockets to real local HTTP servers; the redirect and rebinding cases included)."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from parley.net import ssrf
from parley.net.ssrf import OutboundPolicy, OutboundRefused, address_problem, guarded_client

REFUSED = [
    ("127.0.0.1", "loopback"),
    ("127.255.0.9", "loopback"),
    ("::1", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.1", "private"),
    ("fd12:3456::1", "private"),  # ULA
    ("169.254.1.1", "link-local"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("100.64.0.1", "shared (CGNAT)"),
    ("100.127.255.254", "shared (CGNAT)"),
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("240.0.0.1", "private"),  # reserved (class E): Python files it under private too
    ("255.255.255.255", "private"),
    ("169.254.169.254", "cloud metadata"),
    ("169.254.170.2", "cloud metadata"),
    ("fd00:ec2::254", "cloud metadata"),
    ("100.100.100.200", "cloud metadata"),
    ("fec0::1", "site-local"),
    ("192.0.2.1", "private"),  # documentation
    ("198.18.0.1", "private"),  # benchmarking
    ("2001:db8::1", "private"),  # documentation
    # IPv4 inside IPv6: the IPv4 address decides
    ("::ffff:127.0.0.1", "loopback (IPv4 inside IPv6)"),
    ("::ffff:169.254.169.254", "cloud metadata (IPv4 inside IPv6)"),
    ("::ffff:10.0.0.1", "private (IPv4 inside IPv6)"),
    ("::127.0.0.1", "loopback (IPv4 inside IPv6)"),  # IPv4-compatible (deprecated)
    ("64:ff9b::7f00:1", "loopback (IPv4 inside IPv6)"),  # NAT64
    ("2002:7f00:1::1", "loopback (IPv4 inside IPv6)"),  # 6to4
    ("2002:a9fe:a9fe::", "cloud metadata (IPv4 inside IPv6)"),
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.215.14", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]


@pytest.mark.parametrize(("address", "kind"), REFUSED)
def test_every_internal_address_class_is_refused(address: str, kind: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) == kind
    assert OutboundPolicy().url_problem(f"http://{_host(address)}/v1") is not None


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) is None
    assert OutboundPolicy().url_problem(f"https://{_host(address)}/v1") is None


def _host(address: str) -> str:
    return f"[{address.replace('%', '%25')}]" if ":" in address else address


def test_the_allow_list_takes_hosts_domains_and_cidrs() -> None:
    policy = OutboundPolicy.parse("127.0.0.1, 10.0.0.0/8 vllm.internal,.corp.example, *.lab.example, ::1")
    assert policy.url_problem("http://127.0.0.1:8080/v1") is None
    assert policy.url_problem("http://[::ffff:127.0.0.1]/v1") is None  # the same address, mapped
    assert policy.url_problem("http://10.9.8.7/v1") is None
    assert policy.url_problem("http://[::1]:1/") is None
    assert policy.url_problem("http://127.0.0.2/") is not None
    assert policy.url_problem("http://169.254.169.254/") is not None
    assert policy.allows_host("vllm.internal") and policy.allows_host("VLLM.internal.")
    assert policy.allows_host("a.b.corp.example") and policy.allows_host("x.lab.example")
    assert not policy.allows_host("corp.example.evil.com") and not policy.allows_host("evilcorp.example")
    for bad in ("http://x", "a/b", "user@host", "-"):
        with pytest.raises(ValueError, match="PARLEY_OUTBOUND_ALLOW"):
            OutboundPolicy.parse(bad)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://example.com/", "http, https, ws or wss"),
        ("file:///etc/passwd", "http, https, ws or wss"),
        ("gopher://example.com/", "http, https, ws or wss"),
        ("http://metadata.google.internal/computeMetadata/v1/", "cloud metadata"),
        ("http://METADATA.google.internal./", "cloud metadata"),
        ("http://[::1]:8000/", "loopback"),
        ("http://", "no host"),
    ],
)
def test_cheap_checks_refuse_without_dns(url: str, why: str) -> None:
    problem = OutboundPolicy().url_problem(url)
    assert problem is not None and why in problem


class Recorder(ThreadingHTTPServer):
    daemon_threads = True
    seen: list[str]
    redirect_to: str | None = None


class Handler(BaseHTTPRequestHandler):
    server: Recorder

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.seen.append(self.path)
        if self.server.redirect_to:
            self.send_response(302)
            self.send_header("Location", self.server.redirect_to)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


@pytest.fixture
def recorders() -> Iterator[tuple[Recorder, Recorder]]:
    servers = []
    for _ in range(2):
        server = Recorder(("127.0.0.1", 0), Handler)
        server.seen = []
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    yield servers[0], servers[1]
    for server in servers:
        server.shutdown()
        server.server_close()


async def test_loopback_is_refused_at_connect_unless_allowed(recorders: tuple[Recorder, Recorder]) -> None:
    server, _ = recorders
    port = server.server_port
    async with guarded_client(OutboundPolicy()) as client:
        for url in (f"http://127.0.0.1:{port}/a", f"http://localhost:{port}/b", f"http://2130706433:{port}/c"):
            with pytest.raises(OutboundRefused, match="loopback"):
                await client.get(url)
    assert server.seen == []
    async with guarded_client(OutboundPolicy.parse("127.0.0.0/8")) as client:
        assert (await client.get(f"http://localhost:{port}/d")).text == "ok"
    async with guarded_client(OutboundPolicy.parse("localhost")) as client:
        assert (await client.get(f"http://localhost:{port}/e")).text == "ok"
        with pytest.raises(OutboundRefused):  # the name was allowed, not the address
            await client.get(f"http://127.0.0.1:{port}/f")
    assert server.seen == ["/d", "/e"]


async def test_redirects_are_not_followed_and_each_hop_is_checked(recorders: tuple[Recorder, Recorder]) -> None:
    front, inner = recorders
    front.redirect_to = f"http://127.0.0.1:{inner.server_port}/secret"
    policy = OutboundPolicy.parse("localhost")  # the front is allowed by name; the inner address is not
    async with guarded_client(policy) as client:
        response = await client.get(f"http://localhost:{front.server_port}/start")
        assert response.status_code == 302  # not followed by default
    async with guarded_client(policy, follow_redirects=True) as client:
        with pytest.raises(OutboundRefused, match="loopback"):
            await client.get(f"http://localhost:{front.server_port}/start")
    assert front.seen == ["/start", "/start"] and inner.seen == []


async def test_the_address_connected_to_is_the_address_checked(
    recorders: tuple[Recorder, Recorder], monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: a name that looked harmless when the document was saved resolves to loopback at call time."""
    server, _ = recorders
    url = f"http://rebind.example:{server.server_port}/x"
    assert OutboundPolicy().url_problem(url) is None  # a name: saving it is fine
    answers: list[str] = []

    async def getaddrinfo(host: str, port: int, **kwargs: Any) -> list[Any]:
        answers.append(host)
        return [(2, 1, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(ssrf.anyio, "getaddrinfo", getaddrinfo)
    async with guarded_client(OutboundPolicy()) as client:
        with pytest.raises(OutboundRefused, match=r"rebind\.example resolves to a loopback address"):
            await client.get(url)
    assert answers == ["rebind.example"] and server.seen == []
    async with guarded_client(OutboundPolicy.parse("127.0.0.1")) as client:  # allowed: it connects to that address
        assert (await client.get(url)).text == "ok"


async def test_environment_proxies_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    async with guarded_client(OutboundPolicy()) as client:
        with pytest.raises(OutboundRefused, match="cloud metadata"):
            await client.get("http://169.254.169.254/latest/meta-data/")
        assert isinstance(client, httpx.AsyncClient)
