"""The MCP server against a real codeb server over loopback HTTP, through the SDK's own
in-process client (`mcp.Client(server)`): the tools call the API with an agent key exactly as
`codeb mcp` does."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.server.mcpserver import MCPServer

from codeb.client import CodebClient
from codeb.mcp import build_server
from tests.support import LiveApi


@dataclass
class Mcp:
    api: LiveApi
    agent_key: str
    client: CodebClient
    server: MCPServer

    def list_tools(self) -> list[Any]:
        async def main() -> list[Any]:
            async with Client(self.server) as c:
                return (await c.list_tools()).tools

        return anyio.run(main)

    def call_raw(self, tool: str, /, **arguments: Any):
        async def main():
            async with Client(self.server) as c:
                return await c.call_tool(tool, arguments)

        return anyio.run(main)

    def call(self, tool: str, /, **arguments: Any) -> dict:
        """A tool's structured answer; fails the test on a tool error."""
        result = self.call_raw(tool, **arguments)
        assert not result.is_error, result.content[0].text
        if result.structured_content is not None:
            out = result.structured_content
            return out.get("result", out) if set(out) == {"result"} else out
        return json.loads(result.content[0].text)

    def error(self, tool: str, /, **arguments: Any) -> dict:
        """A tool's error, parsed (the tools answer errors as one JSON message)."""
        result = self.call_raw(tool, **arguments)
        assert result.is_error, result
        text = result.content[0].text
        return json.loads(text[text.index("{") :])


def mcp_for(api: LiveApi, key_name: str = "assistant") -> Iterator[Mcp]:
    key = api.new_key(key_name, "agent")
    client = CodebClient(api.base_url, key, "mcp")
    try:
        yield Mcp(api, key, client, build_server(client))
    finally:
        client.close()


@pytest.fixture
def mcp(sqlite_api: LiveApi) -> Iterator[Mcp]:
    yield from mcp_for(sqlite_api)
