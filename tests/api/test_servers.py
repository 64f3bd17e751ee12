def test_register_list_get(api):
    with api.client() as c:
        r = c.post(
            "/api/servers",
            json={"name": "app1", "ip": "10.1.0.5", "role": "app", "ssh_port": 2222},
        )
        assert r.status_code == 201, r.text
        s = r.json()
        assert (s["ssh_user"], s["ssh_port"], s["provider"]) == ("root", 2222, "manual")
        assert c.get("/api/servers/10.1.0.5").json()["name"] == "app1"
        assert c.get("/api/servers/10.1.0.6").status_code == 404
        assert c.get("/api/servers/not-an-ip").status_code == 404
        c.post("/api/servers", json={"name": "db1", "ip": "2001:db8::1", "role": "db"})
        assert [s["name"] for s in c.get("/api/servers").json()["servers"]] == ["app1", "db1"]
        assert [s["name"] for s in c.get("/api/servers?role=db").json()["servers"]] == ["db1"]
        assert c.get("/api/servers/2001:db8:0::1").json()["name"] == "db1"


def test_duplicates_and_bad_input(api):
    with api.client() as c:
        c.post("/api/servers", json={"name": "app1", "ip": "10.1.0.5", "role": "app"})
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
