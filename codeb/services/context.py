"""What every use case needs: the collaborators (built once at start-up) and the actor."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from peewee import Database, SqliteDatabase

from codeb.clock import Clock
from codeb.config import Settings
from codeb.secretbox import SecretBox

ROLES = ("readonly", "operator", "admin")
CLIENTS = ("api", "cli", "mcp")


@dataclass(frozen=True)
class Deps:
    settings: Settings
    db: Database
    box: SecretBox
    clock: Clock
    # The executor's worker (codeb.executor.worker.Worker); None where nothing may run.
    worker: Any = None

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        """A write transaction. On SQLite it takes the write lock up front (IMMEDIATE), so two
        requests never deadlock upgrading read locks; busy_timeout then queues them."""
        if isinstance(self.db, SqliteDatabase):
            with self.db.atomic("IMMEDIATE"):
                yield
        else:
            with self.db.atomic():
                yield


@dataclass(frozen=True)
class Actor:
    """Who asks. `requested_by` is what the client says it is: recorded, never trusted."""

    key_id: int | None
    key_name: str
    role: str
    requested_by: str = "api"

    def has_role(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


SYSTEM = Actor(key_id=None, key_name="codeb", role="admin", requested_by="cli")
