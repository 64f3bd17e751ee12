"""Placement through the API, without hosts (over real HTTP, on SQLite and PostgreSQL): an
environment's db and Redis are placed on the least loaded servers of their roles when it is
created, its .env files name those hosts, a server holding placed components keeps its role
and is not deleted, and a deploy refuses what it cannot place before it reads any host."""

from __future__ import annotations

import re

import pytest

from codeb.errors import ValidationFailed
from codeb.services import fleet
from codeb.store.models import Environment, Project, Server
from tests.protection.helpers import confirm


def register(c, name: str, ip: str, role: str) -> None:
    r = c.post("/api/servers", json={"name": name, "ip": ip, "role": role, "bootstrap": False})
    assert r.status_code == 201, r.text


def create(c, name: str) -> dict:
    r = c.post("/api/projects", json={"name": name, "type": "nodejs"})
    assert r.status_code == 201, r.text
    return r.json()


def hosts_of(env_file: str) -> tuple[str, str]:
    db = re.search(r"^DATABASE_URL=postgresql://[^@]+@([^:]+):", env_file, re.M)[1]
    cache = re.search(r"^REDIS_URL=redis://:[^@]+@([^:]+):", env_file, re.M)[1]
    return db, cache


def placement(c, project: str, env: str) -> dict:
    r = c.get(f"/api/projects/{project}/environments/{env}")
    assert r.status_code == 200, r.text
    return r.json()["placement"]


def set_status(api, name: str, status: str) -> None:
    with api.deps.db.connection_context(), api.deps.write():
        Server.update(status=status).where(Server.name == name).execute()


def test_least_loaded_at_creation_and_env_files_follow(api):
    with api.client() as c:
        register(c, "db1", "10.0.9.1", "db")
        register(c, "db2", "10.0.9.2", "db")
        register(c, "cache1", "10.0.9.3", "cache")
        one = create(c, "one")
        two = create(c, "two")
        # Four databases over two db servers: staging, production, staging, production.
        assert placement(c, "one", "staging") == {"db": ["db1"], "redis": ["cache1"]}
        assert placement(c, "one", "production") == {"db": ["db2"], "redis": ["cache1"]}
        assert placement(c, "two", "staging")["db"] == ["db1"]
        assert placement(c, "two", "production")["db"] == ["db2"]
        assert hosts_of(one["env_files"]["staging"]) == ("10.0.9.1", "10.0.9.3")
        assert hosts_of(one["env_files"]["production"]) == ("10.0.9.2", "10.0.9.3")
        assert hosts_of(two["env_files"]["production"]) == ("10.0.9.2", "10.0.9.3")
        # A ready server comes before one that is not, whatever its load.
        set_status(api, "db2", "ready")
        r = c.post("/api/projects/one/environments", json={"name": "preview"})
        assert r.status_code == 201, r.text
        assert r.json()["environment"]["placement"]["db"] == ["db2"]
        assert hosts_of(r.json()["env_file"])[0] == "10.0.9.2"
        # The load is what is placed for active environments: 3 on db2 now, 2 on db1.
        with api.deps.db.connection_context():
            loads = {cand.name: cand.load for cand in fleet.candidates("db")}
        assert loads == {"db1": 2, "db2": 3}


def test_unplaced_until_a_server_exists(api):
    with api.client() as c:
        created = create(c, "early")
        # No db or cache server: the .env file names the configured placeholder.
        assert hosts_of(created["env_files"]["staging"]) == ("127.0.0.1", "127.0.0.1")
        assert placement(c, "early", "staging") == {}
        # A deploy with nothing to place on is refused before any host is read.
        r = c.post(
            "/api/containers/deploy",
            json={"project": "early", "environment": "staging", "image": "x/app:1"},
        )
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "placement_refused"
        assert r.json()["error"]["details"]["role"] == "app"
        register(c, "app1", "10.0.9.11", "app")
        register(c, "db1", "10.0.9.12", "db")
        register(c, "cache1", "10.0.9.13", "cache")
        # Servers that are not ready: refused, naming the server, nothing recorded.
        r = c.post(
            "/api/containers/deploy",
            json={"project": "early", "environment": "staging", "image": "x/app:1"},
        )
        assert r.status_code == 409, r.text
        assert "not ready" in r.json()["error"]["message"], r.text
        assert placement(c, "early", "staging") == {}
        assert c.get("/api/operations").json()["total"] == 0
    with api.deps.db.connection_context():
        project = Project.get(Project.name == "early")
        env = Environment.get((Environment.project == project.id) & (Environment.name == "staging"))
        assert fleet.resolve(project, env) == {
            "app": ["app1"],
            "db": ["db1"],
            "redis": ["cache1"],
        }


def test_a_server_holding_placed_components_keeps_its_role_and_stays(api):
    boss = api.new_key("boss", "admin")
    with api.client() as c, api.client(key=boss) as b:
        register(c, "db1", "10.0.9.21", "db")
        create(c, "held")
        r = c.put("/api/servers/10.0.9.21", json={"role": "cache", "bootstrap": False})
        assert r.status_code == 409, r.text
        details = r.json()["error"]["details"]
        assert details["running_containers"] == 0
        assert {
            (p["project"], p["environment"], p["component"]) for p in details["placed_components"]
        } == {("held", "staging", "db"), ("held", "production", "db")}
        assert c.get("/api/servers/10.0.9.21").json()["role"] == "db"
        # Delete (CRITICAL): approved, cooled down, confirmed, and still refused at execution.
        r = c.delete("/api/servers/10.0.9.21")
        assert r.status_code == 202, r.text
        token, entry = r.json()["confirm_token"], r.json()["entry"]["id"]
        assert confirm(c, token).status_code == 202
        assert b.post("/api/protection/approve", json={"id": entry}).status_code == 200
        api.clock.advance(hours=49)
        r = confirm(c, token, "db1")
        assert r.status_code == 409, r.text
        assert "placed on it" in r.json()["error"]["message"]
        assert c.get("/api/servers/10.0.9.21").status_code == 200
        # Deleting the project releases them: the server may go.
        with api.deps.db.connection_context(), api.deps.write():
            Environment.update(status="deleted").execute()
        r = c.put("/api/servers/10.0.9.21", json={"role": "cache", "bootstrap": False})
        assert r.status_code == 200, r.text


def test_a_deploys_servers_field_is_checked_against_the_registry(api):
    with api.client() as c:
        register(c, "app1", "10.0.9.31", "app")
        register(c, "db1", "10.0.9.32", "db")
    with api.deps.db.connection_context():
        assert fleet.parse_request(
            {"servers": {"app": ["app1"], "db": "db1"}, "replicas": None}
        ) == (
            {"app": ["app1"], "db": ["db1"]},
            None,
        )
        assert fleet.parse_request({"replicas": 3}) == ({}, 3)
        for bad, field in (
            ({"servers": []}, "servers"),
            ({"servers": {}}, "servers"),
            ({"servers": {"web": "app1"}}, "servers"),
            ({"servers": {"app": []}}, "servers.app"),
            ({"servers": {"app": ["app1", "app1"]}}, "servers.app"),
            ({"servers": {"app": "nope"}}, "servers.app"),
            ({"servers": {"app": "db1"}}, "servers.app"),
            ({"servers": {"db": ["db1", "db1"]}}, "servers.db"),
            ({"servers": {"app": "App1\n"}}, "servers.app"),
            ({"replicas": 0}, "replicas"),
            ({"replicas": True}, "replicas"),
            ({"replicas": 51}, "replicas"),
        ):
            with pytest.raises(ValidationFailed) as refused:
                fleet.parse_request(bad)
            assert refused.value.details["field"] == field, bad
