"""No side doors (finding 5 of the trust issue) and no rights for agents beyond requesting
(finding 4), proven over every mutating route of the OpenAPI document, present and future.

With every rule raised to at least HIGH (configuration may only make rules stricter), every
mutating route must queue instead of acting. The routes of the gate itself (confirm, approve,
cancel of queue entries) are the only exceptions, and are listed here by name."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from codeb.app import wiring
from codeb.protection.rules import RULES, DangerLevel
from codeb.store.models import (
    ApiKey,
    Backup,
    BackupTarget,
    Container,
    DnsZone,
    Domain,
    Operation,
    OperationLog,
    Project,
    ProtectionQueue,
    RedisCopy,
    Server,
)
from tests.protection.helpers import confirm, request_shapes
from tests.support import LiveApi, live_api

GATE_ROUTES = {
    ("post", "/api/protection/confirm"),
    ("post", "/api/protection/approve"),
    ("post", "/api/protection/cancel"),
}
MUTATING = ("post", "put", "patch", "delete")
ALL_HIGH = {op: {"level": max(rule.level, DangerLevel.HIGH).name} for op, rule in RULES.items()}
BODIES = {
    "ProjectCreate": {"name": "fresh"},
    "ProjectUpdate": {"type": "remix"},
    "EnvironmentCreate": {"name": "preview"},
    "ServerCreate": {"name": "app9", "ip": "127.0.0.9", "role": "app", "bootstrap": False},
    "ServerUpdate": {"role": "db", "bootstrap": False},
    "ApiKeyCreate": {"name": "ci", "role": "readonly"},
    "DeployRequest": {"project": "shop", "environment": "staging", "image": "reg.example/a:1"},
    "BackupCreateRequest": {"project": "shop", "environment": "staging"},
    "RestoreRequest": {"into": "new"},
    "DomainRequest": {"domain": "new.example.test", "project": "shop", "environment": "staging"},
    "RedisCopyRequest": {"project": "shop", "environment": "staging"},
}


SHAPES = request_shapes()


def _body(schema: str | None) -> dict | None:
    """A valid body for a route: one that names the seeded rows, else the shape's example."""
    if schema is None:
        return None
    return BODIES.get(schema) or getattr(SHAPES[schema], "example", None)


def mutating_routes() -> list[tuple[str, str, str | None]]:
    routes = []
    for path, item in wiring().document["paths"].items():
        for method in MUTATING:
            if method in item and (method, path) not in GATE_ROUTES:
                body = item[method].get("requestBody")
                ref = body["content"]["application/json"]["schema"]["$ref"] if body else None
                routes.append((method, path, ref.rsplit("/", 1)[1] if ref else None))
    return routes


def _seed(api: LiveApi) -> dict[str, str]:
    """A project, a server, a container and a running operation, made with ordinary rules."""
    with api.client() as c:
        r = c.post("/api/projects", json={"name": "shop"})
        assert r.status_code == 201, r.text
        for name, ip, role in (("app7", "127.0.0.7", "app"), ("db7", "127.0.0.8", "db"),
                               ("cache7", "127.0.0.10", "cache"),
                               ("storage7", "127.0.0.11", "storage"),
                               ("edge7", "127.0.0.12", "proxy"),
                               ("ns7", "127.0.0.13", "dns")):  # fmt: skip
            body = {"name": name, "ip": ip, "role": role, "bootstrap": False}
            r = c.post("/api/servers", json=body)
            assert r.status_code == 201, r.text
    api.new_key("victim", "operator")
    with api.deps.db.connection_context():
        Server.update(status="ready").execute()  # as a bootstrap run would leave them
        project = Project.get(Project.name == "shop")
        container = Container.create(
            id=f"ct_{secrets.token_hex(6)}", project=project.id, environment="staging",
            server_type="app", server_ip="127.0.0.7", container_name="shop-staging-app",
            image="reg.example/a:1", status="running", volume="shop-staging-app-data",
        )  # fmt: skip
        # A db with a completed backup on the storage server (backups: create, restore, delete).
        Container.create(
            id=f"ct_{secrets.token_hex(6)}", project=project.id, environment="staging",
            server_type="db", server_ip="127.0.0.8", container_name="shop-staging-db",
            image="docker.io/library/postgres:17", status="running", port_external=15432,
        )  # fmt: skip
        target = BackupTarget.create(
            id="bt_gate", project=project.id, environment="staging", name="shop-staging-db",
            storage_server="storage7", db_server="db7", db_port=15432,
            replication_password=api.deps.box.encrypt("not-a-real-password-0123"),
            status="enabled", created_at=api.deps.clock.now(),
        )  # fmt: skip
        backup = Backup.create(
            id="bk_gate", project=project.id, environment="staging", type="full",
            status="completed", location="storage7:shop-staging-db", target_id=target.id,
            barman_id="20261130T150000", end_time=api.deps.clock.now(),
            created_at=api.deps.clock.now(),
        )  # fmt: skip
        # A running Redis with a completed copy on the storage server (Redis copies).
        Container.create(
            id=f"ct_{secrets.token_hex(6)}", project=project.id, environment="staging",
            server_type="redis", server_ip="127.0.0.10", container_name="shop-staging-redis",
            image="docker.io/library/redis:8", status="running", volume="shop-staging-redis-data",
        )  # fmt: skip
        RedisCopy.create(
            id="rc_0123456789abcdef", project=project.id, environment="staging",
            source="shop-staging-redis", source_server="cache7", storage_server="storage7",
            status="completed", keys=1, canary="cn_gate", created_at=api.deps.clock.now(),
        )  # fmt: skip
        # A domain the proxy serves (domains: delete).
        zone = DnsZone.create(name="example.test")
        Domain.create(
            id="dom_gate", name="shop.example.test", zone=zone.id, project=project.id,
            environment="staging", status="active",
        )  # fmt: skip
    return {
        "domain": "shop.example.test",
        "backup_id": backup.id,
        "copy_id": "rc_0123456789abcdef",
        "project": "shop",
        "env": "staging",
        "ip": "127.0.0.7",
        "name": "victim",
        "container_id": container.id,
        "operation_id": _running_operation(api),
        "job": "protection_queue_expiry",
    }


def _running_operation(api: LiveApi) -> str:
    """A run as the registry sees it while it is in flight (no worker job behind it: a cancel
    only sets its flag). A restart marks it interrupted, so make it after each start."""
    with api.deps.db.connection_context():
        op = Operation.create(
            id=f"op_{secrets.token_hex(8)}", kind="server_bootstrap", status="running",
            requested_by="api", key_name="victim", targets=["app7"], params={},
        )  # fmt: skip
    return op.id


@pytest.fixture
def strict(tmp_path: Path) -> Iterator[tuple[LiveApi, dict[str, str]]]:
    data = tmp_path / "data"
    with live_api(data) as first:
        values = _seed(first)
    with live_api(data, protection_rules=ALL_HIGH) as api:
        yield api, {**values, "operation_id": _running_operation(api)}


def _url(path: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)


def _effects(api: LiveApi) -> dict[str, object]:
    with api.deps.db.connection_context():
        return {
            "projects": [(p.name, p.status, p.type) for p in Project.select()],
            "servers": [(s.name, s.status) for s in Server.select()],
            "keys": [(k.name, k.revoked_at) for k in ApiKey.select()],
            "containers": [(c.id, c.status) for c in Container.select()],
            # The clean-up run that start-up recovery begins goes its own way; not those.
            "operations": [
                (o.id, o.status, o.cancel_requested_at)
                for o in Operation.select().where(Operation.kind != "remote_cleanup")
            ],
            "executed": OperationLog.select().where(OperationLog.status == "executed").count(),
        }


def test_the_sweep_covers_every_kind_of_change():
    paths = {path for _, path, _ in mutating_routes()}
    for expected in ("/api/servers", "/api/keys", "/api/operations/{operation_id}/cancel",
                     "/api/servers/{ip}/bootstrap", "/api/keys/{name}"):  # fmt: skip
        assert expected in paths


def test_every_mutating_route_consults_the_gate(strict):
    """Every rule at HIGH or above: each route answers 202 queued and changes nothing."""
    api, values = strict
    before = _effects(api)
    with api.client() as c:
        for method, path, schema in mutating_routes():
            r = c.request(method.upper(), _url(path, values), json=_body(schema))
            assert r.status_code == 202, (method, path, r.text)
            assert r.json()["status"] == "queued", (method, path, r.text)
    assert _effects(api) == before
    with api.deps.db.connection_context():
        queued = {e.operation for e in ProtectionQueue.select()}
    assert {"server_register", "api_key_create", "api_key_revoke", "operation_cancel",
            "server_bootstrap"} <= queued  # fmt: skip


def test_an_agent_key_requests_but_never_confirms_on_any_route(strict):
    api, values = strict
    agent_key = api.new_key("assistant", "agent")
    before = _effects(api)
    with api.client(key=agent_key) as agent, api.client() as admin:
        for method, path, schema in mutating_routes():
            url, body = _url(path, values), _body(schema)
            # Keys are never an agent's; the operation seeded was started by another key.
            if path.startswith("/api/keys") or path.endswith("/cancel"):
                r = agent.request(method.upper(), url, json=body)
                assert r.status_code == 403, (method, path, r.text)
                continue
            r = agent.request(method.upper(), url, json=body)
            assert r.status_code == 202, (method, path, r.text)
            token, entry_id = r.json()["confirm_token"], r.json()["entry"]["id"]
            # The same request repeated with its token, the confirm route, typed or not.
            again = agent.request(
                method.upper(), url, json=body, headers={"X-Confirm-Token": token}
            )
            assert again.status_code == 403, (method, path, again.text)
            for typed in (None, values.get("project")):
                r = confirm(agent, token, typed)
                assert r.status_code == 403, (method, path, r.text)
                assert r.json()["error"]["details"]["reason"] == "human_required"
            assert agent.post("/api/protection/approve", json={"id": entry_id}).status_code == 403
            # Its own entry: yes. Someone else's: no.
            assert agent.post("/api/protection/cancel", json={"id": entry_id}).status_code == 200
            other = admin.request(method.upper(), url, json=body)
            other_id = other.json()["entry"]["id"]
            r = agent.post("/api/protection/cancel", json={"id": other_id})
            assert r.status_code == 403, (method, path, r.text)
            assert admin.post("/api/protection/cancel", json={"id": other_id}).status_code == 200
        for method, path in (
            ("get", "/api/keys"),
            ("post", "/api/keys"),
            ("delete", "/api/keys/victim"),
        ):
            r = agent.request(
                method.upper(), path, json=BODIES["ApiKeyCreate"] if method == "post" else None
            )
            assert r.status_code == 403, (method, path, r.text)
    assert _effects(api) == before


def test_an_agent_cancels_only_its_own_operations(tmp_path):
    with live_api(tmp_path / "data") as api:
        values = _seed(api)
        agent_key = api.new_key("assistant", "agent")
        with api.client(key=agent_key) as agent:
            r = agent.post(f"/api/operations/{values['operation_id']}/cancel")
            assert r.status_code == 403, r.text
        with api.deps.db.connection_context():
            assert Operation.get_by_id(values["operation_id"]).cancel_requested_at is None
