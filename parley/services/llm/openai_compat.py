"""Streaming client for OpenAI-compatible chat-completions servers (OpenAI, Azure OpenAI, vLLM, Ollama, llama.cpp).

Uses the official ``openai`` SDK, so the wire format, retries and SSE parsing are the vendor's. Every SDK
failure becomes one :class:`LLMError` whose message names the server URL and never the API key.

The SDK's HTTP client is the SSRF guard's (:func:`parley.net.ssrf.guarded_client`): ``base_url`` is tenant-chosen.
The key is never read from the environment here: ``api_key_credential``/``api_key_env`` are resolved into
``api_key`` by the call's secret source (:mod:`parley.services.secrets`) before the client is made.

Agent actions travel as OpenAI ``tools``; streamed ``tool_calls`` deltas (the arguments JSON arrives in
fragments) are put together and yielded as :class:`ToolCall` items after the reply's text.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, Sequence
from typing import Annotated, Any, ClassVar, Literal, cast

import openai
from pydantic import Field, SecretStr, field_validator, model_validator

from parley.net.ssrf import SCHEMES, OutboundRefused, guarded_client
from parley.services.errors import ErrorKind, kind_for_status, retry_after_secs
from parley.services.llm.base import LLM, LLMError, Message, Tool, ToolCall, registry
from parley.services.openai_sdk import warm_connection
from parley.services.registry import ProviderOptions
from parley.services.secrets import SecretField

log = logging.getLogger(__name__)

NO_KEY = "sk-no-key-required"  # llama.cpp, vLLM and Ollama accept any key; the SDK insists on one


@registry.register("openai")
class OpenAICompatibleLLM(LLM):
    """One SDK client (and HTTP connection pool) per call; ``aclose()`` closes it."""

    supports_tools = True

    class Options(ProviderOptions):
        base_url: str = "https://api.openai.com/v1"
        model: str  # the model name; for Azure the deployment name unless ``azure_deployment`` is set
        api_key: SecretStr | None = None  # filled from a reference; inline only in local documents
        api_key_credential: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # a tenant's
        api_key_env: str | None = Field(None, max_length=128)  # local documents only (PARLEY_PROVIDER_ENV_ALLOW)
        temperature: Annotated[float, Field(ge=0, le=2)] | None = None  # None: the server's default
        top_p: Annotated[float, Field(gt=0, le=1)] | None = None
        max_tokens: Annotated[int, Field(ge=1)] | None = None
        # newer OpenAI models reject "max_tokens"; most other servers only know it
        max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
        stop: list[str] | None = None
        timeout_s: Annotated[float, Field(gt=0)] = 30.0  # per connect/read, so a long reply may stream longer
        max_retries: Annotated[int, Field(ge=0)] = 1  # each retry waits ~0.5 s+: a caller is listening
        preconnect: bool = True  # prepare() opens the connection (TCP + TLS) before the first turn
        azure_endpoint: str | None = None
        azure_deployment: str | None = None
        api_version: str | None = None
        extra_headers: dict[str, str] = Field(default_factory=dict)
        extra_body: dict[str, Any] = Field(default_factory=dict)  # server-specific fields (vLLM, Ollama)
        tools: bool = True  # offer the agent's actions as tools; false for servers without function calling

        secret_fields: ClassVar[tuple[SecretField, ...]] = (
            SecretField("api_key", "api_key_credential", "api_key_env"),
        )
        url_fields: ClassVar[tuple[str, ...]] = ("azure_endpoint", "base_url")  # the first set is where keys go
        header_fields: ClassVar[tuple[str, ...]] = ("extra_headers",)  # no credentials in them when stored

        @field_validator("base_url", "azure_endpoint")
        @classmethod
        def _http_only(cls, v: str | None) -> str | None:
            if v is not None and v.split(":", 1)[0].lower() not in SCHEMES:
                raise ValueError("must be an http:// or https:// URL")
            return v

        @model_validator(mode="after")
        def _azure_needs_version(self) -> OpenAICompatibleLLM.Options:
            if self.azure_endpoint and not self.api_version:
                raise ValueError("azure_endpoint needs api_version (e.g. '2024-10-21')")
            return self

    def __init__(self, options: Options) -> None:
        self.options = o = options
        self._key = self._resolve_key()
        try:
            if o.azure_endpoint:
                self._client: openai.AsyncOpenAI = openai.AsyncAzureOpenAI(
                    azure_endpoint=o.azure_endpoint,
                    azure_deployment=o.azure_deployment or o.model,
                    api_version=o.api_version,
                    api_key=self._key,
                    timeout=o.timeout_s,
                    max_retries=o.max_retries,
                    default_headers=o.extra_headers or None,
                    http_client=_http_client(),
                )
            else:
                self._client = openai.AsyncOpenAI(
                    base_url=o.base_url,
                    api_key=self._key,
                    timeout=o.timeout_s,
                    max_retries=o.max_retries,
                    default_headers=o.extra_headers or None,
                    http_client=_http_client(),
                )
        except (openai.OpenAIError, ValueError) as exc:
            raise LLMError(self._redact(f"openai: cannot configure a client for {self.url}: {exc}")) from None
        log.debug("openai llm: url=%s model=%s azure=%s", self.url, o.model, bool(o.azure_endpoint))

    @property
    def url(self) -> str:
        """Where requests go (the key is never part of it)."""
        client = getattr(self, "_client", None)
        if client is not None:
            return str(client.base_url).rstrip("/")
        return (self.options.azure_endpoint or self.options.base_url).rstrip("/")

    def _resolve_key(self) -> str:
        o = self.options
        if o.api_key is not None:
            return o.api_key.get_secret_value()
        if o.api_key_credential is not None or o.api_key_env is not None:  # made without a secret source
            raise LLMError(f"openai: {self._key_source()} was not resolved (no secret source for this call)")
        return NO_KEY

    def _key_source(self) -> str:
        o = self.options
        if o.api_key_credential is not None:
            return f"credential {o.api_key_credential!r}"
        if o.api_key_env is not None:
            return f"${o.api_key_env}"
        return "options.api_key"

    def _redact(self, text: str) -> str:
        """Servers may echo the key in an error body; it must not reach logs through our message."""
        return text.replace(self._key, "***") if self._key and self._key != NO_KEY else text

    def _error(self, exc: openai.OpenAIError) -> LLMError:
        o, url = self.options, self.url
        if isinstance(exc, openai.APITimeoutError):
            msg = f"no answer from {url} within {o.timeout_s:g} s"
        elif isinstance(exc, openai.APIConnectionError) and isinstance(exc.__cause__, OutboundRefused):
            msg = str(exc.__cause__)  # it names the host; the URL would crowd a WebSocket close reason
        elif isinstance(exc, openai.APIConnectionError):
            msg = f"cannot connect to {url} ({type(exc.__cause__ or exc).__name__})"
        elif isinstance(exc, openai.AuthenticationError):
            msg = f"{url} rejected the API key (HTTP 401); check {self._key_source()}"
        elif isinstance(exc, openai.PermissionDeniedError):
            msg = f"{url} refused access (HTTP 403) to model {o.model!r}"
        elif isinstance(exc, openai.NotFoundError):
            msg = (
                f"{url} answered HTTP 404 for model {o.model!r} (unknown model/deployment or wrong URL): {exc.message}"
            )
        elif isinstance(exc, openai.APIStatusError):
            msg = f"{url} answered HTTP {exc.status_code}: {exc.message}"
        else:
            msg = f"{url}: {exc}"
        return LLMError(self._redact(f"openai: {msg}"), kind=_kind(exc), provider="openai", **_status(exc))

    def _params(self) -> dict[str, Any]:
        o = self.options
        params: dict[str, Any] = {
            "temperature": o.temperature,
            "top_p": o.top_p,
            o.max_tokens_field: o.max_tokens,
            "stop": o.stop,
        }
        params = {k: v for k, v in params.items() if v is not None}
        if o.extra_body:
            params["extra_body"] = o.extra_body
        return params

    async def stream(self, messages: list[Message], tools: Sequence[Tool] = ()) -> AsyncGenerator[str | ToolCall, None]:
        params = self._params()
        if tools and self.options.tools:
            params["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
                }
                for t in tools
            ]
        try:
            response = await self._client.chat.completions.create(
                model=self.options.model, messages=cast(Any, messages), stream=True, **params
            )
        except openai.OpenAIError as exc:
            raise self._error(exc) from None  # no chained cause: its text may quote a header or body
        calls: dict[int, list[str]] = {}  # tool call index → [name, arguments JSON so far, id]
        try:
            async for chunk in response:
                for choice in chunk.choices:  # Azure opens with a content-filter chunk that has none
                    if choice.index != 0 or choice.delta is None:
                        continue
                    if choice.delta.content:
                        yield choice.delta.content
                    for delta in choice.delta.tool_calls or ():
                        # Ollama has sent whole calls without an index: each is then a call of its own
                        key = delta.index if isinstance(delta.index, int) else len(calls)
                        call = calls.setdefault(key, ["", "", ""])
                        call[2] = call[2] or (delta.id or "")
                        if delta.function is not None:
                            call[0] = call[0] or (delta.function.name or "")
                            call[1] += delta.function.arguments or ""
        except openai.OpenAIError as exc:
            raise self._error(exc) from None
        finally:
            await response.close()  # barge-in: drop the HTTP stream so the server stops generating
        for _, (name, arguments, call_id) in sorted(calls.items()):
            if name:
                parsed = _arguments(name, arguments)
                yield ToolCall(name, parsed, id=call_id) if call_id else ToolCall(name, parsed)

    async def prepare(self) -> None:
        """Open the connection before the first turn, so it does not pay for DNS, TCP and TLS."""
        if self.options.preconnect:
            await warm_connection(
                self._client, self.options.timeout_s, what="openai llm", url=self.url, error=self._error, log=log
            )

    async def aclose(self) -> None:
        await self._client.close()


def _http_client() -> Any:
    """The SSRF-guarded client; the SDK is typed for ``httpx2`` and takes ``httpx`` clients too."""
    return guarded_client()


def _arguments(name: str, text: str) -> dict[str, Any]:
    """A tool call's arguments; a model that wrote broken JSON still gets its call, without arguments."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        log.warning("openai llm: tool call %s has arguments that are not JSON (%d chars)", name, len(text))
        return {}
    return value if isinstance(value, dict) else {}


def _kind(exc: openai.OpenAIError) -> ErrorKind:
    """What the fallback chain does about ``exc``: its HTTP status, or how the connection failed."""
    if isinstance(exc, openai.APITimeoutError):
        return ErrorKind.TIMEOUT
    if isinstance(exc, openai.APIConnectionError):
        return ErrorKind.CONNECTION
    if isinstance(exc, openai.APIStatusError):
        return kind_for_status(exc.status_code, str(exc.message))
    if isinstance(exc, openai.APIResponseValidationError | json.JSONDecodeError):
        return ErrorKind.BAD_RESPONSE
    return ErrorKind.SERVER


def _status(exc: openai.OpenAIError) -> dict[str, Any]:
    if not isinstance(exc, openai.APIStatusError):
        return {}
    return {"status": exc.status_code, "retry_after": retry_after_secs(exc.response.headers.get("retry-after"))}
