"""Every kind of ``tools:`` entry, by its ``type``: the union the agent document validates against.

Adding a kind: write its module (an :class:`~parley.tools.base.AgentTool` and a
:class:`~parley.tools.config.ToolConfigBase` with a ``type`` literal), then add the config here.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from parley.tools.http import HttpToolConfig
from parley.tools.mcp_tool import McpToolConfig
from parley.tools.python_tool import PythonToolConfig

ToolConfig = Annotated[HttpToolConfig | PythonToolConfig | McpToolConfig, Field(discriminator="type")]
