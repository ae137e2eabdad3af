"""A real MCP server for the MCP tool tests, on the official SDK's ``MCPServer`` (FastMCP in mcp 1.x).

Run as ``python tests/support/mcp_server.py stdio`` or ``... http PORT`` (streamable HTTP on 127.0.0.1). Its tools
cover what a client must survive: a normal answer, a hidden argument, a slow one, one that raises and one that
kills the whole server mid-call (a crashed MCP server).
"""

from __future__ import annotations

import asyncio
import os
import sys

from mcp.server.mcpserver import MCPServer

server = MCPServer("parley-test", log_level="CRITICAL")


@server.tool()
def lookup_patient(name: str, clinic_key: str = "") -> dict[str, str]:
    """Find a patient's next appointment by name."""
    return {"name": name, "next": "Tuesday 10:00", "authorized": "yes" if clinic_key == "k-123" else "no"}


@server.tool()
def admin_reset() -> str:
    """A tool the agent must never be offered (not on any allow-list)."""
    return "reset"


@server.tool()
async def slow(seconds: float) -> str:
    """Answer after ``seconds``."""
    await asyncio.sleep(seconds)
    return "done"


@server.tool()
def explode() -> str:
    """Fail with a message that must not reach the call's events."""
    raise RuntimeError("database password is hunter2")


@server.tool()
async def die() -> str:
    """Kill the server process mid-call, as a crashing server would."""
    await asyncio.sleep(0.05)
    os._exit(3)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run("stdio")


if __name__ == "__main__":
    main()
