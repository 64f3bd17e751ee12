def test_health_needs_no_key(api):
    with api.client(key=None) as c:
        r = c.get("/api/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


def test_create_project_first_ports(api):
    with api.client() as c:
        r = c.post("/api/projects", json={"name": "my-project", "type": "nextjs"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["environments"]["staging"] == {
        "app_port": 3001,
        "db_port": 15432,
        "redis_port": 16379,
        "redis_db": 0,
    }
    assert body["environments"]["production"] == {
        "app_port": 4001,
        "db_port": 25432,
        "redis_port": 26379,
        "redis_db": 0,
    }
