"""The base of every Falcon resource: small classes that translate HTTP to one service call
and back. Each feature's resources live in codeb/features/<name>/api.py."""

from __future__ import annotations

from codeb.services.context import Deps


class Resource:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
