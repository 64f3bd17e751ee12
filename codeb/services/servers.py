"""The server registry. Its db and cache entries feed the .env files."""

from __future__ import annotations

import re
from typing import Any

from peewee import IntegrityError

from codeb.errors import Conflict, NotFound, ValidationFailed
from codeb.protection import audit
from codeb.services.context import Actor, Deps
from codeb.services.validation import validate_choice, validate_dns_label, validate_ip
from codeb.store.models import Server

SERVER_ROLES = ("control", "app", "db", "cache", "storage")
_SSH_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


def _ssh_settings(body: dict[str, Any]) -> tuple[str, int]:
    user = body.get("ssh_user", "root")
    port = body.get("ssh_port", 22)
    if not isinstance(user, str) or not _SSH_USER.match(user):
        raise ValidationFailed("ssh_user is not a valid user name", {"field": "ssh_user"})
    if isinstance(port, float) and port.is_integer():
        port = int(port)  # JSON has one number type: 2222.0 is 2222
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValidationFailed("ssh_port must be an integer 1-65535", {"field": "ssh_port"})
    return user, port


def server_view(server: Server) -> dict:
    return {
        "id": server.id,
        "name": server.name,
        "ip": server.ip,
        "role": server.role,
        "ssh_user": server.ssh_user,
        "ssh_port": server.ssh_port,
        "provider": server.provider,
        "provider_id": server.provider_id,
        "status": server.status,
        "facts": server.facts,
        "created_at": server.created_at.isoformat() + "Z",
        "updated_at": server.updated_at.isoformat() + "Z",
    }


def register_server(deps: Deps, actor: Actor, body: dict[str, Any]) -> dict:
    name = validate_dns_label(body.get("name"), "name")
    ip = validate_ip(body.get("ip"))
    role = validate_choice(body.get("role"), SERVER_ROLES, "role")
    ssh_user, ssh_port = _ssh_settings(body)
    now = deps.clock.now()
    fields = {
        "name": name,
        "ip": ip,
        "role": role,
        "ssh_user": ssh_user,
        "ssh_port": ssh_port,
        "provider": body.get("provider", "manual"),
        "provider_id": body.get("provider_id"),
        "created_at": now,
        "updated_at": now,
    }
    try:
        with deps.write():
            clash = Server.select().where((Server.name == name) | (Server.ip == ip)).first()
            if clash is not None:
                field = "name" if clash.name == name else "ip"
                raise Conflict(
                    f"a server with this {field} is already registered",
                    {"field": field, "server": clash.name},
                )
            server = Server.create(**fields)
            audit.record(
                deps.db,
                operation="server_register",
                danger_level=1,
                status="executed",
                requested_by=actor.requested_by,
                key_name=actor.key_name,
                now=now,
                target=ip,
                details={"name": name, "role": role},
                executed=True,
            )
    except IntegrityError:
        raise Conflict("a server with this name or ip is already registered") from None
    return server_view(server)


def list_servers(role: str | None = None) -> list[dict]:
    query = Server.select().where(Server.status != "deleted").order_by(Server.id)
    if role:
        query = query.where(Server.role == role)
    return [server_view(s) for s in query]


def get_server(ip: str) -> dict:
    try:
        normalized = validate_ip(ip)
    except Exception:
        raise NotFound(f"server {ip!r} not found", {"ip": ip}) from None
    server = Server.get_or_none((Server.ip == normalized) & (Server.status != "deleted"))
    if server is None:
        raise NotFound(f"server {ip!r} not found", {"ip": ip})
    return server_view(server)
