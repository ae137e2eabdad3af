"""HTTP tools: an endpoint the agent calls, declared in its document.

The request is built from templates over the LLM's arguments and the call's variables, signed (HMAC, see
:mod:`parley.tools.signing`) when the entry names a secret, sent through the SSRF guard (every connection and each
redirect hop checked), and carries an ``Idempotency-Key`` that stays the same across retries. Retries happen only
where repeating is harmless (an idempotent method on a tool that is not ``irreversible``), with jittered backoff,
all inside the tool's deadline. The answer is read as a stream and cut off past ``max_response_bytes``, so a 20 MB
reply costs one megabyte, not twenty.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from typing import Any, Literal

import httpx
import jmespath
from jmespath.exceptions import JMESPathError
from pydantic import Field, field_validator, model_validator

from parley.net.ssrf import OutboundPolicy, OutboundRefused, guarded_client
from parley.services.secrets import CredentialError, SecretSource
from parley.tools.base import AgentTool, SideEffect, ToolContext, ToolError, ToolResult
from parley.tools.config import ToolConfigBase
from parley.tools.signing import sign
from parley.tools.templates import names_in, render_text, render_value

IDEMPOTENT_METHODS = frozenset(("GET", "HEAD", "PUT", "DELETE"))
RETRY_STATUSES = frozenset((429, 502, 503, 504))
#: call variables every call has (tools and flows add more, so other names are allowed with a warning-free lookup)
CALL_VARIABLES = frozenset(("caller", "called", "agent", "call_id", "direction"))
MAX_REDIRECTS = 3
#: what the LLM reads of a whole answer (no ``result``): a few KB, so a big reply does not flood its context
RESULT_CHARS = 4_000


class HttpToolConfig(ToolConfigBase):
    """A ``type: http`` entry. ``extract`` maps call variables to JMESPath expressions over the JSON answer;
    ``result`` (JMESPath) selects what the LLM reads (default: the whole answer, bounded)."""

    type: Literal["http"]
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    url: str = Field(min_length=1, max_length=2000)
    headers: dict[str, str] = Field(default_factory=dict)
    query: dict[str, str] = Field(default_factory=dict)
    body: dict[str, Any] | list[Any] | str | None = None
    extract: dict[str, str] = Field(default_factory=dict)
    result: str | None = None
    signing_secret_env: str | None = None
    signing_secret_credential: str | None = None
    retries: int = Field(default=2, ge=0, le=5)
    max_response_bytes: int = Field(default=1_000_000, ge=1_000, le=20_000_000)
    #: call variables the templates read beyond the standard ones (set by other tools or the flow)
    variables: list[str] = Field(default_factory=list)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.lower().startswith(("http://", "https://")):
            raise ValueError("an HTTP tool's url starts with http:// or https://")
        literal = render_text(v, {}).lower()
        if problem := OutboundPolicy.from_settings().url_problem(literal) if "{{" not in v else None:
            raise ValueError(f"the url {problem}")
        return v

    @field_validator("extract")
    @classmethod
    def _expressions(cls, v: dict[str, str]) -> dict[str, str]:
        for name, expression in v.items():
            _compile(expression, f"extract.{name}")
        return v

    @model_validator(mode="after")
    def _known_names(self) -> HttpToolConfig:
        if self.result is not None:
            _compile(self.result, "result")
        arguments = set(self.parameters.get("properties", {}))
        used = names_in(self.url) | names_in(self.headers) | names_in(self.query) | names_in(self.body)
        unknown = sorted(used - arguments - CALL_VARIABLES - set(self.variables))
        if unknown:
            known = sorted(CALL_VARIABLES)
            raise ValueError(f"placeholders {unknown} are not parameters, call variables ({known}) or listed variables")
        if self.signing_secret_env and self.signing_secret_credential:
            raise ValueError("name the signing secret once: signing_secret_env or signing_secret_credential")
        return self

    async def create(self, secrets: SecretSource) -> list[AgentTool]:
        secret = ""
        try:
            if self.signing_secret_env:
                secret = secrets.env(self.signing_secret_env)
            elif self.signing_secret_credential:
                secret = await secrets.credential(self.signing_secret_credential, httpx.URL(self.url).host)
        except CredentialError as exc:
            raise ToolError("secret", str(exc)) from None
        return [HttpTool(self, secret)]


def _compile(expression: str, where: str) -> Any:
    try:
        return jmespath.compile(expression)
    except JMESPathError as exc:
        raise ValueError(f"{where}: not a JMESPath expression ({type(exc).__name__})") from None


class HttpTool(AgentTool):
    def __init__(self, config: HttpToolConfig, secret: str) -> None:
        self.config = config
        self.name, self.description, self.parameters = config.name, config.description, config.parameters
        self.side_effect, self.deadline_s, self.filler = config.side_effect, config.deadline_s, config.filler
        self._secret = secret
        self._extract = {k: jmespath.compile(v) for k, v in config.extract.items()}
        self._result = jmespath.compile(config.result) if config.result else None

    def _request(self, arguments: dict[str, Any], context: ToolContext) -> tuple[str, dict[str, str], bytes]:
        c = self.config
        namespace = {**context.variables, **arguments}
        url = render_text(c.url, namespace, url=True)
        query = {k: render_text(v, namespace) for k, v in c.query.items()}
        if query:
            url = str(httpx.URL(url).copy_merge_params(query))
        headers = {k: render_text(v, namespace) for k, v in c.headers.items()}
        body = b""
        if c.body is not None:
            value = render_value(c.body, namespace)
            body = value.encode() if isinstance(value, str) else json.dumps(value).encode()
        elif c.method in ("POST", "PUT", "PATCH"):
            body = json.dumps(arguments).encode()
        if body and not any(h.lower() == "content-type" for h in headers):
            headers["Content-Type"] = "application/json"
        return url, headers, body

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        url, headers, body = self._request(arguments, context)
        headers["Idempotency-Key"] = str(uuid.uuid4())
        retries = self.config.retries if self._may_retry() else 0
        deadline = time.monotonic() + self.deadline_s
        async with guarded_client(follow_redirects=True, max_redirects=MAX_REDIRECTS) as client:
            for attempt in range(retries + 1):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ToolError("timeout", f"{self.name}: no answer within {self.deadline_s} s")
                signed = {**headers, **sign(self._secret, body)} if self._secret else headers
                try:
                    status, data = await asyncio.wait_for(self._send(client, url, signed, body), left)
                except TimeoutError:
                    raise ToolError("timeout", f"{self.name}: no answer within {self.deadline_s} s") from None
                except _Retryable as exc:
                    if attempt == retries or not await _backoff(attempt, deadline):
                        raise exc.error from None
                    continue
                if status in RETRY_STATUSES and attempt < retries and await _backoff(attempt, deadline):
                    continue
                return self._result_of(status, data)
        raise ToolError("failed", f"{self.name}: no attempt made")  # pragma: no cover - the loop always returns

    def _may_retry(self) -> bool:
        return self.config.method in IDEMPOTENT_METHODS and self.side_effect is not SideEffect.IRREVERSIBLE

    async def _send(
        self, client: httpx.AsyncClient, url: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes]:
        try:
            async with client.stream(self.config.method, url, headers=headers, content=body or None) as response:
                data = bytearray()
                async for chunk in response.aiter_bytes():
                    data += chunk
                    if len(data) > self.config.max_response_bytes:
                        raise ToolError("too-large", f"{self.name}: answer over {self.config.max_response_bytes} bytes")
                return response.status_code, bytes(data)
        except OutboundRefused as exc:
            raise ToolError("blocked-address", f"{self.name}: {exc}") from None
        except httpx.TooManyRedirects:
            raise ToolError("connect", f"{self.name}: more than {MAX_REDIRECTS} redirects") from None
        except (httpx.ConnectError, httpx.TimeoutException, httpx.RemoteProtocolError) as exc:
            raise _Retryable(ToolError("connect", f"{self.name}: {type(exc).__name__}")) from None

    def _result_of(self, status: int, data: bytes) -> ToolResult:
        if status >= 400:
            raise ToolError("http-status", f"{self.name}: HTTP {status}")
        try:
            value = json.loads(data) if data.strip() else None
        except ValueError:
            raise ToolError("not-json", f"{self.name}: the answer is not JSON") from None
        variables = {k: e.search(value) for k, e in self._extract.items()}
        content = self._result.search(value) if self._result is not None else _bounded(value)
        return ToolResult(content, {k: v for k, v in variables.items() if v is not None})


def _bounded(value: Any) -> Any:
    """The whole answer if small, else its JSON text cut at :data:`RESULT_CHARS` (marked as cut)."""
    text = json.dumps(value, ensure_ascii=False)
    return value if len(text) <= RESULT_CHARS else text[:RESULT_CHARS] + " ...(truncated)"


class _Retryable(Exception):
    def __init__(self, error: ToolError) -> None:
        self.error = error


async def _backoff(attempt: int, deadline: float) -> bool:
    """Wait before the next try (jittered, doubling); False when that wait would pass the deadline."""
    delay = 0.2 * (2**attempt) * random.uniform(0.5, 1.5)
    if time.monotonic() + delay >= deadline:
        return False
    await asyncio.sleep(delay)
    return True
