"""`codeb mcp` as its own process: stdio (the SDK's stdio client starts it) and streamable
HTTP (`--http --port N`), each against a real codeb API on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from tests.support import free_port

CODEB = str(Path(sys.executable).with_name("codeb"))


def _env(api, key: str) -> dict[str, str]:
    return {"CODEB_URL": api.base_url, "CODEB_API_KEY": key, "CODEB_CLI_CONFIG": "/nonexistent"}


def test_stdio_smoke(sqlite_api):
    key = sqlite_api.new_key("assistant", "agent")
    params = StdioServerParameters(command=CODEB, args=["mcp"], env=_env(sqlite_api, key))

    async def main():
        async with Client(params, read_timeout_seconds=60) as c:
            names = {t.name for t in (await c.list_tools()).tools}
            created = await c.call_tool("create_project", {"name": "shop"})
            listed = await c.call_tool("list_projects", {})
            return names, created, listed

    t0 = time.monotonic()
    names, created, listed = anyio.run(main)
    took = time.monotonic() - t0
    assert {"deploy_staging", "deploy_production", "follow_operation"} <= names
    assert not created.is_error and created.structured_content["status"] == "done"
    assert [p["name"] for p in listed.structured_content["projects"]] == ["shop"]
    print(f"stdio: start, list, two calls in {took:.2f}s")


def test_stdio_without_a_key_stops_with_a_message(tmp_path):
    env = {**os.environ, "CODEB_CLI_CONFIG": str(tmp_path / "none.toml")}
    env.pop("CODEB_API_KEY", None)
    r = subprocess.run([CODEB, "mcp"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 4 and "no API key" in r.stderr
    assert r.stdout == ""  # stdout is the protocol's channel: nothing else is written there


def test_streamable_http(sqlite_api):
    key = sqlite_api.new_key("assistant", "agent")
    port = free_port()
    proc = subprocess.Popen(
        [CODEB, "mcp", "--http", "--port", str(port)],
        env={**os.environ, **_env(sqlite_api, key)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/mcp"
        deadline = time.monotonic() + 120  # a loaded machine: imports alone took 10+ s
        while True:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline, "codeb mcp --http did not start in 120 s"
                time.sleep(0.2)

        async def main():
            async with Client(url) as c:
                tools = {t.name: t for t in (await c.list_tools()).tools}
                answer = await c.call_tool("create_project", {"name": "shop"})
                return tools, answer

        tools, answer = anyio.run(main)
        assert tools["deploy_production"].annotations.destructive_hint is True
        assert answer.structured_content["status"] == "done"
        with sqlite_api.client() as admin:
            assert admin.get("/api/projects/shop").status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def test_http_refuses_a_non_loopback_address_unless_told(sqlite_api):
    key = sqlite_api.new_key("assistant", "agent")
    env = {**os.environ, **_env(sqlite_api, key)}
    r = subprocess.run(
        [CODEB, "mcp", "--http", "--host", "0.0.0.0", "--port", str(free_port())],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2 and "not a loopback address" in r.stderr
