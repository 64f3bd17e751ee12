"""The `codeb` command: server-side commands (`serve`, `migrate`, `keys`, `inventory`) and a
client of the HTTP API for everything else (`codeb.client`)."""

from codeb.cli.commands import build_parser, main

__all__ = ["build_parser", "main"]
