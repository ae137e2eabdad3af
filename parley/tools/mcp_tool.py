"""Tools from an MCP server: one ``type: mcp`` entry yields the server's allowed tools, sharing one session.

The SDK's transports and :class:`ClientSession` are anyio context managers whose cancel scopes must be entered and
left by the same task, so each server gets a background task (:class:`McpConnection`) that owns them for the
call's life; tools talk to it through the session object. A call races the server's death: a server that exits
mid-call fails that call (and later ones) with ``server-died`` at once instead of hanging to the deadline.
The server's error text is logged (redacted), never put in the call's events.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Any, Literal

import httpx
import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from parley.net.ssrf import OutboundPolicy, OutboundRefused
from parley.redact import redact_text
from parley.services.secrets import SECRET_HEADERS, SecretSource
from parley.tools.base import AgentTool, SideEffect, ToolContext, ToolError, ToolResult
from parley.tools.config import ToolConfigBase

log = structlog.get_logger(__name__)
CONNECTION_CLOSED = -32000  # the SDK's "Connection closed" error code (mcp_types.CONNECTION_CLOSED)


class McpServerConfig(BaseModel):
    """Where the server is: a command to start (stdio) or a streamable-HTTP ``url``."""

    model_config = ConfigDict(extra="forbid")

    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    #: environment variables whose values come from the secret source (``{"API_KEY": "CLINIC_API_KEY"}``)
    env_from: dict[str, str] = Field(default_factory=dict)
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    #: headers whose values are tenant credentials (``{"Authorization": "clinic-token"}``)
    header_credentials: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerConfig:
        if (self.command is None) == (self.url is None):
            raise ValueError("an MCP server has either a command (stdio) or a url (streamable HTTP)")
        if self.url is not None:
            problem = OutboundPolicy.from_settings().url_problem(self.url)
            if problem:
                raise ValueError(f"the MCP server url {problem}")
        return self

    @field_validator("headers")
    @classmethod
    def _no_inline_secrets(cls, v: dict[str, str]) -> dict[str, str]:
        bad = sorted(h for h in v if h.lower() in SECRET_HEADERS)
        if bad:
            raise ValueError(f"header {bad[0]} carries a credential: name it under header_credentials")
        return v


class McpToolConfig(ToolConfigBase):
    """A ``type: mcp`` entry: ``name`` labels the server (in events), ``tools`` is the allow-list."""

    type: Literal["mcp"]
    name: str = "mcp"
    description: str = Field(default="", max_length=1024)
    server: McpServerConfig
    tools: list[str] = Field(min_length=1)
    hidden_arguments: dict[str, dict[str, Any]] = Field(default_factory=dict)
    side_effects: dict[str, SideEffect] = Field(default_factory=dict)
    connect_timeout_s: float = Field(default=5.0, gt=0, le=60)

    async def create(self, secrets: SecretSource) -> list[AgentTool]:
        connection = McpConnection(self.name)
        listed = await connection.start(await self._transport(secrets), self.connect_timeout_s)
        by_name = {t.name: t for t in listed}
        missing = [n for n in self.tools if n not in by_name]
        if missing:
            log.warning("mcp_tools_missing", server=self.name, tools=missing)
        made: list[AgentTool] = []
        for name in self.tools:
            if name in by_name:
                item = by_name[name]
                hidden = self.hidden_arguments.get(name, {})
                made.append(
                    McpTool(
                        connection,
                        name,
                        item.description or name,
                        visible_schema(item.input_schema, hidden),
                        hidden,
                        self.side_effects.get(name, self.side_effect),
                        self.deadline_s,
                    )
                )
                made[-1].filler = self.filler
        if not made:
            await connection.aclose()
            raise ToolError("unknown-tool", f"server {self.name} offers none of {self.tools}")
        return made

    async def _transport(self, secrets: SecretSource) -> contextlib.AbstractAsyncContextManager[Any]:
        server = self.server
        if server.command is not None:
            from mcp.client.stdio import StdioServerParameters, stdio_client

            env = dict(server.env) | {k: secrets.env(v) for k, v in server.env_from.items()}
            params = StdioServerParameters(command=server.command, args=server.args, env=env)
            return stdio_client(params, errlog=sys.stderr)
        from mcp.client.streamable_http import streamable_http_client

        assert server.url is not None
        headers = dict(server.headers)
        host = httpx.URL(server.url).host
        for header, credential in server.header_credentials.items():
            headers[header] = await secrets.credential(credential, host)
        client = guarded_http2_client(headers, self.connect_timeout_s)
        return _with_client(client, streamable_http_client(server.url, http_client=client))


@contextlib.asynccontextmanager
async def _with_client(client: Any, transport: contextlib.AbstractAsyncContextManager[Any]) -> Any:
    async with client, transport as streams:
        yield streams


def visible_schema(schema: dict[str, Any], hidden: dict[str, Any]) -> dict[str, Any]:
    """The server's input schema less the hidden (fixed) arguments: the LLM neither sees nor sets them."""
    out = {k: v for k, v in schema.items() if k != "title"}
    out["type"] = "object"
    out["properties"] = {k: v for k, v in schema.get("properties", {}).items() if k not in hidden}
    required = [r for r in schema.get("required", []) if r not in hidden]
    if required:
        out["required"] = required
    else:
        out.pop("required", None)
    return out


class McpConnection:
    """One server's session, owned by one background task from connect to :meth:`aclose`."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.session: Any = None
        self.died = asyncio.Event()
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._users = 0

    async def start(self, transport: contextlib.AbstractAsyncContextManager[Any], timeout_s: float) -> list[Any]:
        """Connect, initialize and list the tools within ``timeout_s``, or raise ToolError("connect")."""
        ready: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        ready.add_done_callback(lambda f: f.cancelled() or f.exception())  # read here or by start, never lost
        self._task = asyncio.create_task(self._serve(transport, ready), name=f"mcp-{self.label}")
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.shield(ready)
        except TimeoutError:
            await self._abort()
            raise ToolError("connect", f"MCP server {self.label} did not answer in {timeout_s:g}s") from None
        except Exception as exc:
            await self._abort()
            log.warning("mcp_connect_failed", server=self.label, detail=redact_text(repr(exc)[:300]))
            raise ToolError("connect", f"MCP server {self.label} could not be reached ({type(exc).__name__})") from None

    async def _serve(self, transport: contextlib.AbstractAsyncContextManager[Any], ready: asyncio.Future[Any]) -> None:
        from mcp.client.session import ClientSession

        try:
            async with transport as (read, write), ClientSession(read, write) as session:
                await session.initialize()
                listed = await session.list_tools()
                self.session = session
                if not ready.done():
                    ready.set_result(list(listed.tools))
                await self._closing.wait()
        except Exception as exc:  # the task's end is reported through ``ready`` and ``died``
            if not ready.done():
                ready.set_exception(exc)
            else:
                log.warning("mcp_server_ended", server=self.label, detail=redact_text(repr(exc)[:300]))
        finally:
            if not ready.done():
                ready.set_exception(ToolError("connect", "cancelled"))
            self.died.set()

    async def call(self, name: str, arguments: dict[str, Any], timeout_s: float) -> Any:
        """``tools/call`` raced against the server's death."""
        if self.died.is_set() or self.session is None:
            raise ToolError("server-died", f"MCP server {self.label} is gone")
        call = asyncio.ensure_future(self.session.call_tool(name, arguments, read_timeout_seconds=timeout_s))
        death = asyncio.ensure_future(self.died.wait())
        try:
            await asyncio.wait({call, death}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            death.cancel()
            if not call.done():
                call.cancel()
        if not call.done() or call.cancelled():
            raise ToolError("server-died", f"MCP server {self.label} died during {name}")
        return _unwrap(call, self.label, name)

    async def aclose(self) -> None:
        """Leave the session and stop the server (the SDK bounds its own shutdown); cancel if that hangs."""
        self._closing.set()
        task = self._task
        if task is None:
            return
        try:
            async with asyncio.timeout(5):
                await asyncio.shield(task)
        except (TimeoutError, Exception):
            await self._abort()
        self._task = None

    async def _abort(self) -> None:
        """Cancel the session's task (one stuck connecting); its context managers still stop the server."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


def _unwrap(call: asyncio.Future[Any], label: str, name: str) -> Any:
    from mcp.shared.exceptions import MCPError

    exc = call.exception()
    if exc is None:
        return call.result()
    log.warning("mcp_call_failed", server=label, tool=name, detail=redact_text(repr(exc)[:300]))
    if isinstance(exc, MCPError) and exc.code == CONNECTION_CLOSED:
        raise ToolError("server-died", f"MCP server {label} closed the connection during {name}")
    if isinstance(exc, MCPError) and "timed out" in exc.message.lower():
        raise ToolError("timeout", f"MCP tool {name} timed out")
    raise ToolError("failed", f"MCP tool {name} failed ({type(exc).__name__})")


class McpTool(AgentTool):
    """One of a server's tools; several share a :class:`McpConnection`, closed when the last one closes."""

    def __init__(
        self,
        connection: McpConnection,
        name: str,
        description: str,
        parameters: dict[str, Any],
        hidden: dict[str, Any],
        side_effect: SideEffect,
        deadline_s: float,
    ) -> None:
        self.connection, self.name, self.description = connection, name, description[:1024]
        self.parameters, self.hidden = parameters, hidden
        self.side_effect, self.deadline_s = side_effect, deadline_s
        connection._users += 1
        self._closed = False

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        result = await self.connection.call(self.name, {**arguments, **self.hidden}, self.deadline_s)
        if result.is_error:
            log.warning("mcp_tool_error", server=self.connection.label, tool=self.name)
            raise ToolError("failed", f"MCP tool {self.name} reported an error")
        if result.structured_content is not None:
            return ToolResult(result.structured_content)
        texts = [getattr(block, "text", "") for block in result.content]
        return ToolResult("\n".join(t for t in texts if t))

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.connection._users -= 1
        if self.connection._users <= 0:
            await self.connection.aclose()


def guarded_http2_client(headers: dict[str, str], connect_timeout_s: float) -> Any:
    """An ``httpx2`` client (the SDK's HTTP library) whose connections pass the SSRF guard, like
    :func:`parley.net.ssrf.guarded_client` for httpx: each address resolved and checked, no proxy, no redirects."""
    import httpcore2
    import httpx2

    policy = OutboundPolicy.from_settings()

    class _Backend(httpcore2.AsyncNetworkBackend):
        def __init__(self) -> None:
            self.inner = httpcore2.AnyIOBackend()

        async def connect_tcp(  # type: ignore[override]
            self,
            host: str,
            port: int,
            timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
            **kwargs: Any,
        ) -> httpcore2.AsyncNetworkStream:
            addresses = await policy.resolve(host, port, timeout)
            last: Exception = httpcore2.ConnectError(f"{host} has no address")
            for address in addresses:
                try:
                    return await self.inner.connect_tcp(address, port, timeout=timeout, **kwargs)
                except httpcore2.ConnectError as exc:
                    last = exc
            raise last

        async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore2.AsyncNetworkStream:
            raise OutboundRefused("refused: unix sockets are not reachable")

        async def sleep(self, seconds: float) -> None:
            await self.inner.sleep(seconds)

    class _Transport(httpx2.AsyncHTTPTransport):
        def __init__(self) -> None:
            super().__init__(trust_env=False)
            self._pool = httpcore2.AsyncConnectionPool(
                ssl_context=httpx2.create_ssl_context(trust_env=False), network_backend=_Backend()
            )

        async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
            problem = policy.url_problem(str(request.url))
            if problem:
                raise OutboundRefused(f"refused: {request.url.host or 'the URL'} {problem}")
            return await super().handle_async_request(request)

    timeout = httpx2.Timeout(30.0, connect=connect_timeout_s, read=300.0)
    return httpx2.AsyncClient(
        transport=_Transport(), headers=headers, timeout=timeout, follow_redirects=False, trust_env=False
    )
