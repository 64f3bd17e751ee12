"""PUT /api/servers/:ip gives a server another role (server_update, LOW) and, unless told
not to, runs its bootstrap, which installs what the new role needs (proved on the fleet in
test_bare_bootstrap.py). Over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

from codeb.store.models import Container, Project


def register(c, name: str, ip: str, role: str) -> None:
    r = c.post("/api/servers", json={"name": name, "ip": ip, "role": role, "bootstrap": False})
    assert r.status_code == 201, r.text


def test_put_changes_the_role(api):
    with api.client() as c:
        register(c, "s1", "127.0.0.5", "control")
        r = c.put("/api/servers/127.0.0.5", json={"role": "app", "bootstrap": False})
        assert r.status_code == 200, r.text
        assert r.json()["server"]["role"] == "app" and r.json()["operation"] is None
        listed = c.get("/api/servers", params={"role": "app"}).json()["servers"]
        assert [s["name"] for s in listed] == ["s1"]
        logs = c.get("/api/protection/logs").json()
        assert any(e["operation"] == "server_update" for e in logs["logs"]), logs


def test_put_with_bootstrap_starts_a_run(api):
    with api.client() as c:
        register(c, "s2", "127.0.0.6", "control")
        r = c.put("/api/servers/127.0.0.6", json={"role": "db"})
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["server"]["role"] == "db" and body["server"]["status"] == "bootstrapping"
        assert body["operation"]["kind"] == "server_bootstrap"


def test_bad_input_is_a_clear_4xx(api):
    with api.client() as c:
        register(c, "s3", "127.0.0.7", "app")
        for bad in ({"role": "mainframe"}, {}, {"role": "db", "name": "x"}, {"role": 3}):
            r = c.put("/api/servers/127.0.0.7", json=bad)
            assert r.status_code in (400, 422), (bad, r.text)
            assert set(r.json()["error"]) >= {"code", "message"}
        r = c.put("/api/servers/127.0.0.9", json={"role": "app"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        r = c.put("/api/servers/not-an-ip", json={"role": "app"})
        assert r.status_code == 404
        assert c.get("/api/servers/127.0.0.7").json()["role"] == "app"


def test_readonly_may_not_change_a_role(api):
    ro = api.new_key("ro", "readonly")
    with api.client() as c:
        register(c, "s4", "127.0.0.8", "app")
    with api.client(ro) as c:
        r = c.put("/api/servers/127.0.0.8", json={"role": "db", "bootstrap": False})
        assert r.status_code == 403, r.text


def test_role_change_refused_while_containers_run_there(api):
    with api.client() as c:
        register(c, "s5", "127.0.0.10", "app")
        created = c.post("/api/projects", json={"name": "busy", "type": "nodejs"})
        assert created.status_code == 201, created.text
        with api.deps.db.connection_context():
            Container.create(
                id="ctr_busy",
                project=Project.get(Project.name == "busy"),
                environment="staging",
                server_type="app",
                server_ip="127.0.0.10",
                container_name="busy-staging-app",
                image="localhost/busy:1",
                status="running",
            )
        r = c.put("/api/servers/127.0.0.10", json={"role": "db", "bootstrap": False})
        assert r.status_code == 409, r.text
        assert r.json()["error"]["details"]["running_containers"] == 1
        # The same role again is no change of placement: allowed.
        r = c.put("/api/servers/127.0.0.10", json={"role": "app", "bootstrap": False})
        assert r.status_code == 200, r.text
