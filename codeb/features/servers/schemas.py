"""The server registry: request and response shapes. The roles come from one constant
(codeb.features.servers.service.SERVER_ROLES)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from codeb.api.declare import query
from codeb.api.shapes import (
    NAME_PATTERN,
    TIMESTAMP,
    UNSET,
    Meta,
    Request,
    Shape,
    UnsetType,
    described,
)
from codeb.features.operations.schemas import Operation
from codeb.features.servers.service import SERVER_ROLES

ServerRole = Literal[SERVER_ROLES]  # type: ignore[valid-type]


class Server(Shape):
    id: int
    name: str
    ip: str
    role: ServerRole
    ssh_user: str
    ssh_port: int
    provider: str | UnsetType = UNSET
    provider_id: str | UnsetType | None = UNSET
    status: str
    facts: dict[str, Any] | UnsetType | None = UNSET
    created_at: TIMESTAMP | UnsetType = UNSET
    updated_at: TIMESTAMP | UnsetType = UNSET


IP = Annotated[
    str,
    Meta(
        description="IPv4 or IPv6 address",
        extra_json_schema={"anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]},
    ),
]


class ServerCreate(Request):
    example = {"name": "app9", "ip": "127.0.0.9", "role": "app", "bootstrap": False}
    name: Annotated[str, Meta(min_length=1, max_length=63, pattern=NAME_PATTERN)]
    ip: IP
    role: ServerRole
    ssh_user: Annotated[str, Meta(pattern="^[a-z_][a-z0-9_-]{0,31}$")] | UnsetType = UNSET
    ssh_port: Annotated[int, Meta(ge=1, le=65535)] | UnsetType = UNSET
    provider: Annotated[str, Meta(min_length=1, max_length=40)] | UnsetType = UNSET
    provider_id: Annotated[str, Meta(max_length=100)] | UnsetType | None = UNSET
    bootstrap: described(bool, "run the bootstrap playbook now (default true)") | UnsetType = (  # type: ignore[valid-type]
        UNSET
    )


class ServerUpdate(Request):
    example = {"role": "db", "bootstrap": False}
    role: ServerRole
    bootstrap: (
        described(  # type: ignore[valid-type]
            bool,
            "run the bootstrap playbook now (default true): it installs what the new role needs",
        )
        | UnsetType
    ) = UNSET


class ServerList(Shape):
    servers: list[Server]


class ServerRegistered(Shape):
    server: Server
    operation: Operation | None


class ServerStats(Shape):
    server: str
    ip: str
    gathered_at: TIMESTAMP | UnsetType = UNSET
    cpu: dict[str, Any]
    load: dict[str, Any]
    memory: dict[str, Any]
    disk: dict[str, Any]
    containers: dict[str, Any] | UnsetType | None = UNSET
    cached: bool


class SshPublicKey(Shape):
    public_key: str


LIST_QUERY = (query("role", enum=list(SERVER_ROLES)),)
