"""What every use case needs: the collaborators (built once at start-up) and the actor."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from peewee import Database, SqliteDatabase

from codeb.clock import Clock
from codeb.config import Settings
from codeb.protection import audit
from codeb.secretbox import SecretBox

# In order of what they may do. `agent` (AI assistants, the MCP server) reads and requests
# like an operator, but never confirms, approves, cancels others' entries or manages keys.
ROLES = ("readonly", "agent", "operator", "admin")
CLIENTS = ("api", "cli", "mcp")


@dataclass(frozen=True)
class Deps:
    settings: Settings
    db: Database
    box: SecretBox
    clock: Clock
    # The executor's worker (codeb.executor.worker.Worker); None where nothing may run.
    worker: Any = None
    # The periodic jobs' scheduler (codeb.services.scheduler.Scheduler); None outside serving.
    scheduler: Any = None
    # What the features declared (codeb.wiring.Wiring, built from codeb.app.FEATURES at
    # start-up; nothing registers by being imported).
    wiring: Any = None
    # The background helpers the serving process started (Wiring.background), by name.
    background: Mapping[str, Any] = field(default_factory=dict)

    @property
    def appliers(self) -> Mapping[str, Any]:
        """The Protection Layer's appliers, by operation."""
        return self.wiring.appliers if self.wiring is not None else {}

    @property
    def runner_jobs(self) -> Mapping[str, Any]:
        """The runner's jobs, by operation kind."""
        return self.wiring.runner_jobs if self.wiring is not None else {}

    @property
    def schedules(self) -> tuple[Any, ...]:
        """The scheduler's periodic jobs."""
        return self.wiring.schedules if self.wiring is not None else ()

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
        if self.db.transaction_depth() == 0:
            # Committed: the log's new head is anchored outside the database.
            audit.anchor_pending(self.db)


@dataclass(frozen=True)
class Actor:
    """Who asks. `requested_by` is what the client says it is: recorded, never trusted.
    `principal` is the person or service the key belongs to; `key_created_at` when the key
    was made (an approver's key must predate the request)."""

    key_id: int | None
    key_name: str
    role: str
    requested_by: str = "api"
    principal: str | None = None
    key_created_at: dt.datetime | None = None

    @property
    def who(self) -> str:
        return self.principal or self.key_name

    def has_role(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


# The server itself (`codeb keys create`, start-up, recovery): shell access to the control
# server is the root of trust.
SYSTEM = Actor(key_id=None, key_name="codeb", role="admin", requested_by="cli", principal="codeb")
