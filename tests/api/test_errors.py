"""One error shape for every error; the right statuses; never a 500 for bad input."""


def assert_error(r, status, code=None):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert set(err) == {"code", "message", "details"}
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["details"], dict)
    if code:
        assert err["code"] == code


def test_shapes(api):
    with api.client() as c:
        assert_error(c.get("/api/nowhere"), 404, "not_found")
        assert_error(c.patch("/api/projects"), 405, "method_not_allowed")
        assert_error(c.post("/api/projects", content=b"{nope"), 400, "bad_request")
        assert_error(c.post("/api/projects", content=b""), 400, "bad_request")
        assert_error(c.post("/api/projects", json=[1, 2]), 422, "validation_failed")
        assert_error(c.post("/api/projects", json="str"), 422, "validation_failed")
        assert_error(
            c.post(
                "/api/projects",
                content=b"name=x",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            ),
            415,
            "unsupported_media_type",
        )
        assert_error(c.post("/api/projects", json={"name": "a" * 10_000}), 422)
        assert_error(c.post("/api/projects", content=b"\xff\xfe"), 400)
    with api.client(key=None) as c:
        assert_error(c.get("/api/projects"), 401, "unauthorized")


def test_exhausted_range_is_409_and_leaves_nothing(api):
    from codeb.store.models import PortAllocation, Project

    with api.deps.db.connection_context(), api.deps.db.atomic():
        PortAllocation.insert_many(
            [
                {"port": p, "server_type": "db", "environment": "production"}
                for p in range(25432, 26000)
            ]
        ).execute()
    with api.client() as c:
        r = c.post("/api/projects", json={"name": "full"})
        assert_error(r, 409, "ports_exhausted")
        assert "25432-25999" in r.json()["error"]["message"]
        assert c.get("/api/projects/full").status_code == 404
    with api.deps.db.connection_context():
        assert Project.select().count() == 0
        # Staging ports taken before the failure were rolled back with it.
        assert PortAllocation.select().where(PortAllocation.environment == "staging").count() == 0
