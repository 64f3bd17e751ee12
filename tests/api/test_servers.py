def test_register_list_get(api):
    with api.client() as c:
        r = c.post(
            "/api/servers",
            json={
                "name": "app1",
                "ip": "10.1.0.5",
                "role": "app",
                "ssh_port": 2222,
                "bootstrap": False,
            },
        )
        assert r.status_code == 201, r.text
        assert r.json()["operation"] is None
        s = r.json()["server"]
        assert (s["ssh_user"], s["ssh_port"], s["provider"]) == ("root", 2222, "manual")
        assert c.get("/api/servers/10.1.0.5").json()["name"] == "app1"
        assert c.get("/api/servers/10.1.0.6").status_code == 404
        assert c.get("/api/servers/not-an-ip").status_code == 404
        c.post(
            "/api/servers",
            json={"name": "db1", "ip": "2001:db8::1", "role": "db", "bootstrap": False},
        )
        assert [s["name"] for s in c.get("/api/servers").json()["servers"]] == ["app1", "db1"]
        assert [s["name"] for s in c.get("/api/servers?role=db").json()["servers"]] == ["db1"]
        assert c.get("/api/servers/2001:db8:0::1").json()["name"] == "db1"


def test_duplicates_and_bad_input(api):
    with api.client() as c:
        c.post(
            "/api/servers",
            json={"name": "app1", "ip": "10.1.0.5", "role": "app", "bootstrap": False},
        )
        r = c.post("/api/servers", json={"name": "app1", "ip": "10.1.0.9", "role": "app"})
        assert r.status_code == 409 and r.json()["error"]["details"]["field"] == "name"
        r = c.post("/api/servers", json={"name": "app2", "ip": "10.1.0.5", "role": "app"})
        assert r.status_code == 409 and r.json()["error"]["details"]["field"] == "ip"
        for bad in (
            {"name": "x", "ip": "999.1.1.1", "role": "app"},
            {"name": "x", "ip": "10.1.1.1", "role": "web"},
            {"name": "X", "ip": "10.1.1.1", "role": "app"},
            {"name": "x", "ip": "10.1.1.1", "role": "app", "ssh_port": 0},
            {"name": "x", "ip": "10.1.1.1", "role": "app", "ssh_user": "root; rm"},
            {"name": "x", "ip": "10.1.1.1", "role": "app", "extra": 1},
        ):
            assert c.post("/api/servers", json=bad).status_code == 422, bad
        assert len(c.get("/api/servers").json()["servers"]) == 1


def test_bootstrap_outside_allowed_networks_fails_without_connecting(api):
    """Tests allow only loopback: codeb refuses to open a connection to 10.1.0.7."""
    import time

    with api.client() as c:
        r = c.post("/api/servers", json={"name": "far", "ip": "10.1.0.7", "role": "app"})
        assert r.status_code == 202, r.text
        op_id = r.json()["operation"]["id"]
        for _ in range(100):
            op = c.get(f"/api/operations/{op_id}").json()
            if op["status"] not in ("queued", "running"):
                break
            time.sleep(0.05)
        assert op["status"] == "failed"
        assert "outside CODEB_ALLOWED_NETWORKS" in op["error"]
        assert c.get("/api/servers/10.1.0.7").json()["status"] == "bootstrapping"
        events = c.get(f"/api/operations/{op_id}/events").json()
        assert events["finished"] and events["events"] == []


def test_ssh_key_endpoint(api):
    with api.client() as c:
        key = c.get("/api/servers/ssh-key").json()["public_key"]
    assert key.startswith("ssh-ed25519 ")
    private = api.deps.settings.resolved_ssh_key_file
    assert oct(private.stat().st_mode & 0o777) == "0o600"
