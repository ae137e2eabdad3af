"""The agent's tools: HTTP, Python and MCP tools behind one interface (:class:`parley.tools.base.AgentTool`)."""
