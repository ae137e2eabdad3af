"""Amazon Polly text-to-speech through boto3: PCM16 at 8 or 16 kHz, played as the answer's bytes arrive.

boto3 blocks, so the client is made and every read of ``AudioStream`` runs in a worker thread (``off_loop``): the
first piece is yielded while Polly is still sending the rest, and a barge-in stops reading at the next piece.

Credentials are an access key id and secret (secret fields: a tenant credential or, for local documents, an
allow-listed environment variable). AWS's own chain (environment, profile, instance or task role) is the
*server's* identity, so it is used only when the operator sets ``PARLEY_AWS_CREDENTIAL_CHAIN=1``; otherwise a
document without keys fails with an AUTH error instead of speaking on the server's account. ``endpoint_url``
(a VPC endpoint, a test server) goes through the outbound guard's checks before any request.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import AsyncGenerator, Iterator
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from parley.net.ssrf import OutboundPolicy, OutboundRefused
from parley.offload import off_loop
from parley.services.errors import ErrorKind, ProviderError, kind_for_status
from parley.services.registry import ProviderOptions
from parley.services.secrets import SecretField
from parley.services.tts.base import TTS, registry

log = logging.getLogger(__name__)

NAME = "polly"
CREDENTIAL = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"

#: botocore error codes (``x-amzn-ErrorType``) → kind; anything else is judged by its HTTP status
CODES: dict[str, ErrorKind] = {
    **dict.fromkeys(
        ("InvalidSignatureException", "UnrecognizedClientException", "AccessDeniedException", "InvalidClientTokenId",
         "IncompleteSignature", "IncompleteSignatureException", "MissingAuthenticationTokenException",
         "ExpiredToken", "ExpiredTokenException", "SignatureDoesNotMatch", "NotAuthorized"),
        ErrorKind.AUTH,
    ),
    **dict.fromkeys(
        ("InvalidParameterValue", "InvalidParameterValueException", "TextLengthExceededException",
         "InvalidSsmlException", "InvalidSampleRateException", "MarksNotSupportedForFormatException",
         "SsmlMarksNotSupportedForTextTypeException", "SerializationException"),
        ErrorKind.BAD_REQUEST,
    ),
    **dict.fromkeys(("EngineNotSupportedException", "LanguageNotSupportedException"), ErrorKind.UNSUPPORTED),
    **dict.fromkeys(("LexiconNotFoundException", "ResourceNotFoundException"), ErrorKind.NOT_FOUND),
    **dict.fromkeys(
        ("ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded"),
        ErrorKind.RATE_LIMIT,
    ),
    **dict.fromkeys(("ServiceQuotaExceededException", "LimitExceededException"), ErrorKind.QUOTA),
    **dict.fromkeys(
        ("ServiceFailureException", "ServiceFailure", "InternalFailure", "ServiceUnavailableException"),
        ErrorKind.SERVER,
    ),
}  # fmt: skip


class _AwsChain(BaseSettings):
    """The operator's consent to AWS's default credential chain (read like the outbound guard reads its list)."""

    model_config = SettingsConfigDict(env_prefix="PARLEY_", env_file=".env", extra="ignore")
    aws_credential_chain: bool = False


@registry.register(NAME)
class PollyTTS(TTS):
    """One boto3 client per call (thread-safe, pooled), made off the event loop on first use or in ``prepare``."""

    class Options(ProviderOptions):
        voice: str = Field("Joanna", min_length=1, max_length=64)  # a VoiceId the engine offers
        engine: Literal["standard", "neural", "long-form", "generative"] = "neural"
        language_code: str | None = Field(None, max_length=16)  # only for bilingual voices (Aditi: en-IN, hi-IN)
        sample_rate: Literal[8000, 16000] = 16000  # the rates Polly offers for pcm
        region: str = Field("us-east-1", pattern=r"^[a-z]{2}(-[a-z]+)+-\d+$")
        endpoint_url: str | None = None  # a VPC endpoint or a test server; None: Polly's public one for region
        access_key_id: SecretStr | None = None
        access_key_id_credential: str | None = Field(None, pattern=CREDENTIAL)
        access_key_id_env: str | None = Field(None, max_length=128)
        secret_access_key: SecretStr | None = None
        secret_access_key_credential: str | None = Field(None, pattern=CREDENTIAL)
        secret_access_key_env: str | None = Field(None, max_length=128)
        connect_timeout_s: Annotated[float, Field(gt=0)] = 3.0
        read_timeout_s: Annotated[float, Field(gt=0)] = 10.0  # for the first byte and between pieces
        max_retries: Annotated[int, Field(ge=0, le=5)] = 1  # a caller is listening: retry little
        chunk_bytes: Annotated[int, Field(ge=320, le=65536)] = 3200  # 100 ms at 16 kHz

        secret_fields: ClassVar[tuple[SecretField, ...]] = (
            SecretField("access_key_id", "access_key_id_credential", "access_key_id_env"),
            SecretField("secret_access_key", "secret_access_key_credential", "secret_access_key_env"),
        )
        url_fields: ClassVar[tuple[str, ...]] = ("endpoint_url",)

        @field_validator("endpoint_url")
        @classmethod
        def _http_only(cls, v: str | None) -> str | None:
            if v is not None and urlsplit(v).scheme.lower() not in ("http", "https"):
                raise ValueError("must be an http:// or https:// URL")
            return v

    def __init__(self, options: Options) -> None:
        self.options = options
        self.sample_rate = options.sample_rate
        self._client: Any = None
        self._secrets = [s.get_secret_value() for s in (options.access_key_id, options.secret_access_key) if s]

    @property
    def url(self) -> str:
        return self.options.endpoint_url or f"https://polly.{self.options.region}.amazonaws.com"

    def _fail(self, message: str, kind: ErrorKind, status: int | None = None) -> ProviderError:
        for secret in self._secrets:  # an echoed key must not reach a log through our message
            message = message.replace(secret, "***")
        return ProviderError(f"{NAME}: {message}", kind=kind, provider=NAME, status=status)

    async def prepare(self) -> None:
        await self._ready()

    async def _ready(self) -> Any:
        if self._client is None:
            self._client = await off_loop(self._make_client)
        return self._client

    def _check_endpoint(self) -> None:
        """The guard's early check, and the addresses the name has now (boto3 connects on its own; in a thread)."""
        url = self.options.endpoint_url
        if url is None:
            return
        policy = OutboundPolicy.from_settings()
        if problem := policy.url_problem(url):
            raise self._fail(f"refused: {url} {problem}", ErrorKind.BAD_REQUEST)
        parts = urlsplit(url)
        host = parts.hostname or ""
        if policy.allows_host(host):
            return
        try:
            infos = socket.getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM)
        except OSError:
            raise self._fail(f"cannot resolve {host}", ErrorKind.CONNECTION) from None
        for info in infos:
            if problem := policy.address_refusal(ipaddress.ip_address(str(info[4][0]).split("%")[0])):
                raise self._fail(f"refused: {host} resolves to a {problem} address", ErrorKind.BAD_REQUEST)

    def _make_client(self) -> Any:
        o = self.options
        self._check_endpoint()
        keys = (o.access_key_id, o.secret_access_key)
        if any(k is None for k in keys) and not _AwsChain().aws_credential_chain:
            missing = "access_key_id" if o.access_key_id is None else "secret_access_key"
            msg = f"no {missing} given (AWS's default credential chain needs PARLEY_AWS_CREDENTIAL_CHAIN=1)"
            raise self._fail(msg, ErrorKind.AUTH)
        config = Config(
            connect_timeout=o.connect_timeout_s,
            read_timeout=o.read_timeout_s,
            retries={"mode": "standard", "total_max_attempts": o.max_retries + 1},
            user_agent_extra="parley",
        )
        key_id, secret = (k.get_secret_value() if k is not None else None for k in keys)
        session = boto3.session.Session(aws_access_key_id=key_id, aws_secret_access_key=secret, region_name=o.region)
        log.debug("polly tts: url=%s voice=%s engine=%s", self.url, o.voice, o.engine)
        return session.client("polly", endpoint_url=o.endpoint_url, config=config)

    def _request(self, text: str) -> dict[str, Any]:
        o = self.options
        params = {"Engine": o.engine, "OutputFormat": "pcm", "SampleRate": str(o.sample_rate)}
        params |= {"Text": text, "VoiceId": o.voice}
        if o.language_code:
            params["LanguageCode"] = o.language_code
        return params

    async def synthesize(self, text: str) -> AsyncGenerator[bytes, None]:
        if not text.strip():
            return
        try:
            client = await self._ready()
            answer = await off_loop(client.synthesize_speech, **self._request(text))
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc) from None  # no chained cause: its text may quote a header
        body = answer["AudioStream"]
        pieces: Iterator[bytes] = body.iter_chunks(self.options.chunk_bytes)
        carry = b""  # an odd byte waits for its pair: PCM16 frames never split across yields
        try:
            while piece := await off_loop(next, pieces, b""):
                piece, carry = _whole_frames(carry + piece)
                if piece:
                    yield piece
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc) from None
        finally:
            await off_loop(body.close)  # barge-in: drop the connection so the rest is not read

    def _error(self, exc: BotoCoreError | ClientError) -> ProviderError:
        o, url = self.options, self.url
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code, message = str(error.get("Code", "")), str(error.get("Message", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            kind = CODES.get(code) or (
                ErrorKind.NOT_FOUND
                if "voiceid" in message.lower()
                else kind_for_status(int(status or 500), f"{code} {message}")
            )
            return self._fail(f"{url} answered {code or status}: {message}", kind, status)
        if isinstance(exc, ReadTimeoutError | ConnectTimeoutError):
            return self._fail(f"no answer from {url} within {o.read_timeout_s:g} s", ErrorKind.TIMEOUT)
        if isinstance(exc, EndpointConnectionError | BotoConnectionError):
            return self._fail(f"cannot connect to {url} ({type(exc).__name__})", ErrorKind.CONNECTION)
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return self._fail(f"no AWS credentials for {url}", ErrorKind.AUTH)
        if isinstance(exc.__cause__, OutboundRefused):
            return self._fail(str(exc.__cause__), ErrorKind.BAD_REQUEST)
        name = type(exc).__name__
        kind = ErrorKind.CONNECTION if "Stream" in name or "IncompleteRead" in name else ErrorKind.BAD_RESPONSE
        return self._fail(f"{url}: {name}", kind)

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await off_loop(client.close)


def _whole_frames(data: bytes) -> tuple[bytes, bytes]:
    cut = len(data) - len(data) % 2
    return data[:cut], data[cut:]
