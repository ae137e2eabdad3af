"""A document from a URL a tenant gave: fetched through the SSRF guard, bounded in size and time.

The URL is the tenant's, so the request goes through :func:`parley.net.ssrf.guarded_client` (every connection,
each redirect hop too, to a checked public address, or one the operator allows with ``PARLEY_OUTBOUND_ALLOW``).
No credential is sent, so following redirects leaks nothing. The body is read as a stream (decompressed as it
comes) and dropped past ``max_bytes``, so neither a huge file nor a gzip bomb is held in memory.
"""

from __future__ import annotations

import asyncio
from pathlib import PurePosixPath
from urllib.parse import unquote

import httpx
import structlog

from parley.knowledge.types import DocumentError
from parley.net.ssrf import SCHEMES, OutboundPolicy, OutboundRefused, guarded_client

log = structlog.get_logger(__name__)

MAX_REDIRECTS = 5
_HEADERS = {"User-Agent": "Parley-knowledge/1 (document fetch)", "Accept": "*/*"}


def filename_of(url: httpx.URL) -> str:
    """The URL's last path segment ("guide.pdf"), else its host: the parser reads the extension from it."""
    name = PurePosixPath(unquote(url.path)).name.strip()
    return name or url.host or "document"


async def fetch_url(
    url: str, *, max_bytes: int = 20_000_000, timeout_s: float = 20.0, policy: OutboundPolicy | None = None
) -> tuple[bytes, str, str | None]:
    """(body, a file name from the URL, the content type); DocumentError says why not. ``policy``: the operator's
    (``PARLEY_OUTBOUND_ALLOW``) by default."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise DocumentError("the URL is refused: it is not a valid URL") from None
    if parsed.scheme not in SCHEMES:
        raise DocumentError(f"the URL is refused: it must use http or https, not {parsed.scheme or 'no scheme'!r}")
    policy = policy if policy is not None else OutboundPolicy.from_settings()
    problem = policy.url_problem(parsed)
    if problem:
        raise DocumentError(f"the URL is refused: it {problem}")
    try:
        async with asyncio.timeout(timeout_s):
            data, final, content_type = await _get(parsed, max_bytes, policy)
    except TimeoutError:
        raise DocumentError(f"the URL did not answer in full within {timeout_s:g} s") from None
    except OutboundRefused as exc:
        raise DocumentError(f"the URL was refused: {exc}") from None
    except httpx.TooManyRedirects:
        raise DocumentError(f"the URL redirected more than {MAX_REDIRECTS} times") from None
    except httpx.HTTPError as exc:
        log.info("knowledge_fetch_failed", host=parsed.host, error=type(exc).__name__)
        raise DocumentError(f"the URL could not be fetched ({type(exc).__name__})") from None
    return data, filename_of(final), content_type


async def _get(url: httpx.URL, max_bytes: int, policy: OutboundPolicy) -> tuple[bytes, httpx.URL, str | None]:
    too_large = DocumentError(f"the document at the URL is larger than {max_bytes:,} bytes")
    async with (
        guarded_client(policy, follow_redirects=True, max_redirects=MAX_REDIRECTS) as client,
        client.stream("GET", url, headers=_HEADERS) as response,
    ):
        if response.status_code >= 400:
            raise DocumentError(f"the URL answered HTTP {response.status_code}")
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise too_large
        data = bytearray()
        async for piece in response.aiter_bytes():
            data += piece
            if len(data) > max_bytes:
                raise too_large
        return bytes(data), response.url, response.headers.get("content-type")
