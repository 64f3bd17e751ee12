"""Steps the protection tests share: projects, backups, confirmations, reading the state."""

from __future__ import annotations

import secrets
from typing import Any

import httpx

from codeb.store.models import Backup, Environment, OperationLog, Project, ProtectionQueue
from tests.support import LiveApi


def make_project(c: httpx.Client, name: str) -> dict[str, Any]:
    r = c.post("/api/projects", json={"name": name})
    assert r.status_code == 201, r.text
    return r.json()


def add_backup(
    api: LiveApi, project_id: str, env: str | None = None, verified: bool = True
) -> None:
    """Backups come with a later issue; here they are rows, as that issue will write them."""
    now = api.clock.now()
    with api.deps.db.connection_context():
        envs = [env] if env else ["staging", "production"]
        for name in envs:
            Backup.create(
                id=f"bk_{secrets.token_hex(6)}", project=project_id, environment=name, type="full",
                location="s3://backups/x", created_at=now, verified_at=now if verified else None,
            )  # fmt: skip


def confirm(c: httpx.Client, token: str, typed_name: str | None = None) -> httpx.Response:
    body = {"token": token}
    if typed_name is not None:
        body["typed_name"] = typed_name
    return c.post("/api/protection/confirm", json=body)


def project_row(api: LiveApi, project_id: str) -> Project:
    with api.deps.db.connection_context():
        return Project.get_by_id(project_id)


def env_status(api: LiveApi, project_id: str, name: str) -> str | None:
    with api.deps.db.connection_context():
        env = (
            Environment.select()
            .where((Environment.project == project_id) & (Environment.name.startswith(name)))
            .order_by(Environment.created_at.desc())
            .first()
        )
        return env.status if env else None


def log_statuses(api: LiveApi, operation: str) -> list[str]:
    with api.deps.db.connection_context():
        rows = OperationLog.select().where(OperationLog.operation == operation)
        return [r.status for r in rows.order_by(OperationLog.id)]


def entry(api: LiveApi, entry_id: str) -> ProtectionQueue:
    with api.deps.db.connection_context():
        return ProtectionQueue.get_by_id(entry_id)


def error_code(r: httpx.Response) -> str:
    return r.json()["error"]["code"]


def request_shapes() -> dict:
    """Every request shape a route declares, by name (each carries a valid `example`)."""
    from codeb.app import wiring

    return {
        op.body.__name__: op.body
        for route in wiring().routes
        for op in route.ops.values()
        if op.body is not None
    }
