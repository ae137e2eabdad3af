"""What the Google Cloud speech providers share (TTS :mod:`parley.services.tts.google`, STT
:mod:`parley.services.stt.google`): the options for the endpoint and the credentials, one client object that holds
the credentials and makes the gRPC channel after the outbound guard's checks, the bidirectional-stream opener, and
one mapping of gRPC statuses to :class:`ProviderError` kinds.

Credentials are an API key (sent as ``x-goog-api-key`` call metadata) or a service account's JSON key (OAuth
tokens over TLS); both are secret fields. Google's "application default credentials" are never looked up: they are
the server's identity, and finding them may probe the metadata server. ``endpoint_url`` is the API's host
(``https://texttospeech.googleapis.com``, ``https://speech.googleapis.com``) or a regional endpoint; an ``http://``
URL is a plaintext local emulator (a test server).
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any, ClassVar
from urllib.parse import urlsplit

import grpc
from google.api_core import exceptions as gexc
from google.api_core import grpc_helpers_async
from google.oauth2 import service_account
from pydantic import Field, SecretStr, field_validator

from parley.net.ssrf import OutboundPolicy
from parley.offload import off_loop
from parley.services.errors import ErrorKind, ProviderError
from parley.services.registry import ProviderOptions
from parley.services.secrets import SecretField

CREDENTIAL = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
#: no proxy from the environment (it would resolve names the outbound guard cannot see)
CHANNEL_OPTIONS = (("grpc.enable_http_proxy", 0), ("grpc.max_receive_message_length", 16 * 1024 * 1024))

#: grpcio's own status when a write failed before the server's status was read: the real status is lost, and the
#: stream was closed under us, so it counts as a (transient) connection failure rather than a server error
CORE = "Internal error from Core"
CODES: dict[grpc.StatusCode, ErrorKind] = {
    grpc.StatusCode.UNAUTHENTICATED: ErrorKind.AUTH,
    grpc.StatusCode.PERMISSION_DENIED: ErrorKind.AUTH,
    grpc.StatusCode.NOT_FOUND: ErrorKind.NOT_FOUND,
    grpc.StatusCode.INVALID_ARGUMENT: ErrorKind.BAD_REQUEST,
    grpc.StatusCode.FAILED_PRECONDITION: ErrorKind.BAD_REQUEST,
    grpc.StatusCode.OUT_OF_RANGE: ErrorKind.BAD_REQUEST,
    grpc.StatusCode.UNIMPLEMENTED: ErrorKind.UNSUPPORTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ErrorKind.RATE_LIMIT,
    grpc.StatusCode.UNAVAILABLE: ErrorKind.CONNECTION,
    grpc.StatusCode.CANCELLED: ErrorKind.CONNECTION,
    grpc.StatusCode.DEADLINE_EXCEEDED: ErrorKind.TIMEOUT,
    grpc.StatusCode.INTERNAL: ErrorKind.SERVER,
    grpc.StatusCode.UNKNOWN: ErrorKind.SERVER,
    grpc.StatusCode.DATA_LOSS: ErrorKind.SERVER,
    grpc.StatusCode.ABORTED: ErrorKind.SERVER,
}


class GoogleCloudOptions(ProviderOptions):
    """Where a Google speech API is and how to authenticate to it."""

    endpoint_url: str = "https://texttospeech.googleapis.com"  # the TTS API; the STT provider sets its own
    api_key: SecretStr | None = None
    api_key_credential: str | None = Field(None, pattern=CREDENTIAL)
    api_key_env: str | None = Field(None, max_length=128)
    service_account_json: SecretStr | None = None  # the key file's JSON text
    service_account_json_credential: str | None = Field(None, pattern=CREDENTIAL)
    service_account_json_env: str | None = Field(None, max_length=128)
    timeout_s: Annotated[float, Field(gt=0, le=600)] = 15.0

    secret_fields: ClassVar[tuple[SecretField, ...]] = (
        SecretField("api_key", "api_key_credential", "api_key_env"),
        SecretField("service_account_json", "service_account_json_credential", "service_account_json_env"),
    )
    url_fields: ClassVar[tuple[str, ...]] = ("endpoint_url",)

    @field_validator("endpoint_url")
    @classmethod
    def _http_only(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname or parts.path.strip("/"):
            raise ValueError("must be an http:// or https:// URL with a host and no path")
        return v


class GoogleClient:
    """Credentials, metadata and message hygiene for one provider instance (both Google providers use it)."""

    def __init__(self, provider: str, options: GoogleCloudOptions) -> None:
        self.provider, self.options = provider, options
        self.secrets = [s.get_secret_value() for s in (options.api_key, options.service_account_json) if s]
        self.credentials = self._service_account()
        plaintext = urlsplit(options.endpoint_url).scheme.lower() == "http"
        if options.api_key is None and self.credentials is None and not plaintext:
            raise self.fail("give api_key or service_account_json (application default credentials are not used)",
                            ErrorKind.AUTH)  # fmt: skip
        if self.credentials is not None and plaintext:
            raise self.fail("a service account's tokens go only over https", ErrorKind.BAD_REQUEST)

    @property
    def metadata(self) -> Sequence[tuple[str, str]]:
        key = self.options.api_key
        return (("x-goog-api-key", key.get_secret_value()),) if key is not None else ()

    def fail(self, message: str, kind: ErrorKind, retry_after: float | None = None) -> ProviderError:
        for secret in self.secrets:
            message = message.replace(secret, "***")
        return ProviderError(f"{self.provider}: {message}", kind=kind, provider=self.provider, retry_after=retry_after)

    def _service_account(self) -> service_account.Credentials | None:
        raw = self.options.service_account_json
        if raw is None:
            return None
        try:
            info = json.loads(raw.get_secret_value())
            credentials = service_account.Credentials.from_service_account_info(info, scopes=SCOPES)
        except (ValueError, KeyError, TypeError, AttributeError):  # its message could quote the key: not passed on
            raise self.fail("service_account_json is not a service account key file", ErrorKind.AUTH) from None
        token_host = (urlsplit(str(info.get("token_uri", ""))).hostname or "").lower()
        if not token_host.endswith(".googleapis.com") and not OutboundPolicy.from_settings().allows_host(token_host):
            # the token request goes where the file says: not to a host of the tenant's choosing inside the network
            raise self.fail(
                f"service_account_json: token_uri host {token_host!r} is not Google's", ErrorKind.BAD_REQUEST
            )
        return credentials

    async def channel(self) -> grpc.aio.Channel:
        """A channel to ``endpoint_url`` on the running loop, after the outbound guard's checks."""
        parts = urlsplit(self.options.endpoint_url)
        host, port = parts.hostname or "", parts.port or (80 if parts.scheme == "http" else 443)
        await off_loop(self._check_endpoint, host, port)
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if parts.scheme == "http":
            return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        if self.credentials is None:  # an API key only: TLS without call credentials, the key in metadata
            return grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(), options=CHANNEL_OPTIONS)
        return grpc_helpers_async.create_channel(
            target, credentials=self.credentials, scopes=SCOPES, default_host=host, options=CHANNEL_OPTIONS
        )

    def _check_endpoint(self, host: str, port: int) -> None:
        url = self.options.endpoint_url
        policy = OutboundPolicy.from_settings()
        if problem := policy.url_problem(url):
            raise self.fail(f"refused: {url} {problem}", ErrorKind.BAD_REQUEST)
        if policy.allows_host(host):
            return
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError:
            raise self.fail(f"cannot resolve {host}", ErrorKind.CONNECTION) from None
        for info in infos:
            if problem := policy.address_refusal(ipaddress.ip_address(str(info[4][0]).split("%")[0])):
                raise self.fail(f"refused: {host} resolves to a {problem} address", ErrorKind.BAD_REQUEST)

    def error(self, exc: gexc.GoogleAPIError) -> ProviderError:
        """The kind a gRPC status means; the status' text (never a key) says which."""
        url = self.options.endpoint_url
        code = getattr(exc, "grpc_status_code", None)
        text = str(getattr(exc, "message", "") or exc)
        if isinstance(exc, gexc.RetryError):
            return self.fail(f"no answer from {url} in time", ErrorKind.TIMEOUT)
        kind = _kind(code, text)
        name = code.name if isinstance(code, grpc.StatusCode) else type(exc).__name__
        return self.fail(f"{url} answered {name}: {text}", kind, _retry_after(exc))


def _kind(code: grpc.StatusCode | None, text: str) -> ErrorKind:
    """A status' kind; its text tells a missing voice, an unoffered language and a spent quota apart."""
    low = text.lower()
    if code == grpc.StatusCode.INVALID_ARGUMENT and "language" in low:
        return ErrorKind.UNSUPPORTED
    if code == grpc.StatusCode.INVALID_ARGUMENT and "voice" in low and ("exist" in low or "found" in low):
        return ErrorKind.NOT_FOUND
    spent = any(w in low for w in ("per day", "billing", "credit"))
    if code in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.PERMISSION_DENIED) and spent:
        return ErrorKind.QUOTA
    if code == grpc.StatusCode.INTERNAL and CORE in text:
        return ErrorKind.CONNECTION
    return CODES.get(code, ErrorKind.SERVER) if isinstance(code, grpc.StatusCode) else ErrorKind.SERVER


def _retry_after(exc: gexc.GoogleAPIError) -> float | None:
    for detail in getattr(exc, "details", None) or ():
        delay = getattr(detail, "retry_delay", None)
        if delay is not None and hasattr(delay, "seconds"):
            return float(delay.seconds) + delay.nanos / 1e9
    return None


def open_stream(method: Any, requests: AsyncIterator[Any], timeout: float, metadata: Sequence[tuple[str, str]]) -> Any:
    """A bidirectional RPC on the transport's own stub rather than the client's wrapper, which first awaits
    ``wait_for_connection``. grpcio reports a refusal that comes while requests are still being written (a bad
    key) as INTERNAL "Internal error from Core" whenever a write fails before the status has been read; the
    wrapper's wait made that the rule for a two-message stream, the bare stub makes it rare (see :data:`CORE`).
    Callers turn ``grpc.aio.AioRpcError`` into api_core's error with ``from_grpc_error``."""
    return method(requests, timeout=timeout, metadata=tuple(metadata))
