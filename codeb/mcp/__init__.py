"""The MCP server (`codeb mcp`): agents ask, people decide. See `codeb.mcp.server`."""

from codeb.mcp.hints import annotations_for
from codeb.mcp.server import Tools, ToolSpec, build_server, tool_specs

__all__ = ["ToolSpec", "Tools", "annotations_for", "build_server", "tool_specs"]
