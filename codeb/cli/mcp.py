"""`codeb mcp`: the MCP server for AI assistants, over stdio (default: the assistant starts
it) or streamable HTTP (`--http --port N`: its own long-running process). It talks to the API
at CODEB_URL with CODEB_API_KEY, which should be an `agent` key (`codeb keys create --role
agent`): the API then refuses every confirmation and approval made with it.

Needs the `mcp` extra (`pip install 'codeb[mcp]'`; `make run` installs it)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys

from codeb.cli.session import AUTH, USAGE
from codeb.client.http import CodebClient, ConfigError, config_path, load_settings


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_mcp(args: argparse.Namespace) -> int:
    if args.http and not _loopback(args.host) and not args.allow_non_loopback:
        # The MCP endpoint has no authentication of its own: whoever reaches it acts with
        # the agent key. Off loopback only on purpose (behind an authenticating proxy).
        print(f"error: --host {args.host} is not a loopback address; whoever reaches the MCP "
              "endpoint acts with its key. Put an authenticating proxy in front and pass "
              "--allow-non-loopback", file=sys.stderr)  # fmt: skip
        return USAGE
    try:
        from codeb.mcp.server import build_server
    except ImportError as exc:
        print(f"error: the MCP server needs the mcp extra ({exc}); pip install 'codeb[mcp]'",
              file=sys.stderr)  # fmt: skip
        return USAGE
    # stdout is the protocol's channel over stdio: logs go to stderr only.
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USAGE
    if not settings.api_key:
        print(f"error: no API key: set CODEB_API_KEY (an agent key) or api_key in "
              f"{config_path()}", file=sys.stderr)  # fmt: skip
        return AUTH
    with CodebClient.from_settings(settings, client="mcp") as client:
        server = build_server(client)
        if args.http:
            server.run("streamable-http", host=args.host, port=args.port)
        else:
            server.run("stdio")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "mcp",
        help="serve codeb's MCP tools for AI assistants (stdio, or --http)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--http", action="store_true", help="streamable HTTP instead of stdio")
    p.add_argument("--host", default="127.0.0.1", help="with --http (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="with --http (default 8765)")
    p.add_argument(
        "--allow-non-loopback",
        action="store_true",
        help="with --http: serve on a non-loopback --host (the endpoint has no auth of its own)",
    )
    p.add_argument("--log-level", default="WARNING")
    p.set_defaults(func=cmd_mcp)
