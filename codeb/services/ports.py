"""Port allocation. The ranges are the design's; the `port_allocations` primary key guards
against two projects ever holding one port, also under concurrent requests."""

from __future__ import annotations

from dataclasses import dataclass

from peewee import Database, IntegrityError

from codeb.errors import PortsExhausted
from codeb.store.models import PortAllocation, utcnow

SERVER_TYPES = ("app", "db", "redis")
ENVIRONMENTS = ("staging", "production", "preview")


@dataclass(frozen=True)
class PortRange:
    first: int
    last: int

    def __contains__(self, port: int) -> bool:
        return self.first <= port <= self.last


PORT_RANGES: dict[str, dict[str, PortRange]] = {
    "staging": {
        "app": PortRange(3001, 3999),
        "db": PortRange(15432, 15999),
        "redis": PortRange(16379, 16999),
    },
    "production": {
        "app": PortRange(4001, 4999),
        "db": PortRange(25432, 25999),
        "redis": PortRange(26379, 26999),
    },
    "preview": {
        "app": PortRange(5001, 5999),
        "db": PortRange(35432, 35999),
        "redis": PortRange(36379, 36999),
    },
}


def lowest_free(port_range: PortRange, taken: set[int]) -> int | None:
    """The lowest port of the range not in `taken` (freed ports are reused first)."""
    for port in range(port_range.first, port_range.last + 1):
        if port not in taken:
            return port
    return None


def allocate_port(
    db: Database,
    environment: str,
    server_type: str,
    project_id: str,
    ranges: dict[str, dict[str, PortRange]] = PORT_RANGES,
) -> int:
    """Claim one port inside the caller's transaction. A concurrent claim of the same port
    loses on the primary key inside a savepoint and moves on to the next free one."""
    port_range = ranges[environment][server_type]
    size = port_range.last - port_range.first + 1
    for _ in range(size):
        taken = {
            row.port
            for row in PortAllocation.select(PortAllocation.port).where(
                PortAllocation.port.between(port_range.first, port_range.last)
            )
        }
        port = lowest_free(port_range, taken)
        if port is None:
            break
        try:
            with db.atomic():  # a savepoint: a lost race must not abort the outer transaction
                PortAllocation.insert(
                    port=port,
                    server_type=server_type,
                    environment=environment,
                    project=project_id,
                    allocated_at=utcnow(),
                ).execute()
            return port
        except IntegrityError:
            continue
    raise PortsExhausted(
        f"no free {server_type} port left for {environment} "
        f"({port_range.first}-{port_range.last} are all allocated)",
        {
            "environment": environment,
            "server_type": server_type,
            "range": [port_range.first, port_range.last],
        },
    )


def allocate_ports(
    db: Database,
    environment: str,
    project_id: str,
    ranges: dict[str, dict[str, PortRange]] = PORT_RANGES,
) -> dict[str, int]:
    """One app, db and redis port for an environment of a project."""
    return {
        server_type: allocate_port(db, environment, server_type, project_id, ranges)
        for server_type in SERVER_TYPES
    }


def release_ports(project_id: str, environment: str | None = None) -> int:
    """Free a project's ports (all, or one environment's) so later projects can reuse them."""
    query = PortAllocation.delete().where(PortAllocation.project == project_id)
    if environment is not None:
        query = query.where(PortAllocation.environment == environment)
    return query.execute()
