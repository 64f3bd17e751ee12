"""API keys: required, hashed, role-limited, expiring, revocable."""

import datetime as dt

from codeb.features.keys import service as keys
from codeb.services.context import SYSTEM
from codeb.store.models import ApiKey


def test_every_route_but_health_needs_a_key(api):
    with api.client(key=None) as c:
        for method, path in [
            ("GET", "/api/projects"),
            ("POST", "/api/projects"),
            ("GET", "/api/projects/x"),
            ("GET", "/api/servers"),
            ("GET", "/api/openapi.json"),
            ("GET", "/api/keys"),
        ]:
            r = c.request(method, path)
            assert r.status_code == 401, (method, path)
            assert r.json()["error"]["code"] == "unauthorized"
        health = c.get("/api/health").json()
        assert set(health) <= {"status", "version", "database"}


def test_wrong_key_is_401(api):
    with api.client(key="cb_not-a-real-key") as c:
        assert c.get("/api/projects").status_code == 401


def test_keys_are_stored_hashed_and_shown_once(api):
    with api.client() as c:
        r = c.post("/api/keys", json={"name": "ops", "role": "operator"})
        assert r.status_code == 201
        plaintext = r.json()["api_key"]
        listing = c.get("/api/keys").text
    assert plaintext not in listing
    with api.deps.db.connection_context():
        stored = ApiKey.get(ApiKey.name == "ops")
    assert stored.key_hash != plaintext and plaintext not in stored.key_hash
    assert stored.key_hash == keys.hash_key(plaintext)


def test_readonly_may_only_read(api):
    ro = api.new_key("ro", "readonly")
    with api.client(key=ro) as c:
        assert c.get("/api/projects").status_code == 200
        r = c.post("/api/projects", json={"name": "nope"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        assert c.get("/api/keys").status_code == 403
    with api.client() as c:
        assert c.get("/api/projects").json()["total"] == 0


def test_operator_cannot_manage_keys(api):
    op = api.new_key("op", "operator")
    with api.client(key=op) as c:
        assert c.post("/api/projects", json={"name": "yes"}).status_code == 201
        assert c.get("/api/keys").status_code == 403
        assert c.post("/api/keys", json={"name": "x", "role": "admin"}).status_code == 403
        assert c.delete("/api/keys/admin").status_code == 403


def test_revoked_key_stops_at_once(api):
    op = api.new_key("op", "operator")
    with api.client(key=op) as c:
        assert c.get("/api/projects").status_code == 200
    with api.client() as c:
        assert c.delete("/api/keys/op").status_code == 200
        assert c.delete("/api/keys/nobody").status_code == 404
    with api.client(key=op) as c:
        assert c.get("/api/projects").status_code == 401


def test_expired_key_is_refused(api):
    with api.deps.db.connection_context():
        _, plaintext = keys.create_key(
            api.deps, SYSTEM, "short", "operator", api.clock.now() + dt.timedelta(hours=1)
        )
    with api.client(key=plaintext) as c:
        assert c.get("/api/projects").status_code == 200
        api.clock.advance(hours=2)
        assert c.get("/api/projects").status_code == 401
    with api.client() as c:
        states = {k["name"]: k["state"] for k in c.get("/api/keys").json()["keys"]}
    assert states["short"] == "expired"


def test_requested_by_is_recorded_not_trusted(api):
    from codeb.store.models import OperationLog

    ro = api.new_key("ro", "readonly")
    with api.client(key=ro, **{"X-Codeb-Client": "cli"}) as c:
        assert c.post("/api/projects", json={"name": "x"}).status_code == 403
    with api.client(**{"X-Codeb-Client": "mcp"}) as c:
        assert c.post("/api/projects", json={"name": "viamcp"}).status_code == 201
        assert c.get("/api/projects", headers={"X-Codeb-Client": "root"}).status_code == 422
    with api.deps.db.connection_context():
        row = OperationLog.get(OperationLog.operation == "project_create")
    assert (row.requested_by, row.key_name) == ("mcp", "admin")


def test_key_names_and_roles_validated(api):
    with api.client() as c:
        assert c.post("/api/keys", json={"name": "a b", "role": "admin"}).status_code == 422
        assert c.post("/api/keys", json={"name": "ok", "role": "root"}).status_code == 422
        assert c.post("/api/keys", json={"name": "ok", "role": "readonly"}).status_code == 201
        assert c.post("/api/keys", json={"name": "ok", "role": "readonly"}).status_code == 409
