"""Redis copies without a fleet: how a drill's report is judged (DBSIZE and the canary key
must equal the copy's), and the refusals through the HTTP API on SQLite: a copy needs a
running Redis with a volume, a restore a completed copy, in place is HIGH (queued, never
run at once) and needs the cache still deployed; unknown fields are a 422."""

from __future__ import annotations

import datetime as dt

import pytest

from codeb.features.backups import redis
from codeb.store.models import Container, Project, ProtectionQueue, RedisCopy, Server
from tests.support import live_api

COPY = RedisCopy(id="rc_0123456789abcdef", keys=503, canary="cn_abc")


def test_a_drill_passes_on_equal_dbsize_and_canary():
    passed, reason, checks = redis.judge(
        COPY, {"loaded": "True", "keys": "503", "canary": "cn_abc"}
    )
    assert passed and reason is None and all(c["ok"] for c in checks.values())


@pytest.mark.parametrize(
    ("report", "start"),
    [
        ({"loaded": "True", "keys": "502", "canary": "cn_abc"}, "dbsize failed: DBSIZE 502"),
        (
            {"loaded": "True", "keys": "503", "canary": "None"},
            "canary failed: codeb:canary is None",
        ),
        ({"loaded": "False", "error": "podman run: no image"}, "load failed: podman run"),
    ],
)
def test_a_drill_fails_naming_the_first_check(report, start):
    passed, reason, _ = redis.judge(COPY, report)
    assert not passed and reason.startswith(start), reason


@pytest.fixture
def api(tmp_path):
    with live_api(tmp_path / "data") as live:
        with live.deps.db.connection_context():
            Server.create(name="storage", ip="127.0.0.9", role="storage", status="ready")
            Server.create(name="cache", ip="127.0.0.10", role="cache", status="ready")
        with live.client() as c:
            assert c.post("/api/projects", json={"name": "shop"}).status_code == 201
        yield live


def test_refusals_and_in_place_is_queued(api):
    with api.client() as c:
        body = {"project": "shop", "environment": "staging"}
        r = c.post("/api/backups/redis", json=body)
        assert r.status_code == 409 and "no running Redis" in r.text
        assert c.post("/api/backups/redis", json={**body, "x": 1}).status_code == 422
        assert c.post("/api/backups/redis", json={"project": "nope", "environment": "staging"}
                      ).status_code == 404  # fmt: skip
        with api.deps.db.connection_context():
            project = Project.get(Project.name == "shop")
            cache = Container.create(
                id="ct_redis", project=project.id, environment="staging", server_type="redis",
                server_ip="127.0.0.10", container_name="shop-staging-redis", image="redis:8",
                status="running", volume="shop-staging-redis-data",
            )  # fmt: skip
            RedisCopy.create(
                id="rc_0123456789abcdef", project=project.id, environment="staging",
                source="shop-staging-redis", source_server="cache", storage_server="storage",
                status="running", created_at=dt.datetime(2026, 11, 30, 12),
            )  # fmt: skip
        url = "/api/backups/redis/rc_0123456789abcdef"
        r = c.post(f"{url}/restore", json={"into": "new"})
        assert r.status_code == 409 and "not completed" in r.text
        assert c.post(f"{url}/verify").status_code == 409
        assert c.post("/api/backups/redis/rc_nope/verify").status_code == 404
        assert c.post(f"{url}/restore", json={"into": "elsewhere"}).status_code == 422
        with api.deps.db.connection_context():
            RedisCopy.update(status="completed", keys=3, canary="cn_x").execute()
        # In place is HIGH: queued, nothing runs at once; the name to type is the container's.
        r = c.post(f"{url}/restore", json={"into": "in_place"})
        assert r.status_code == 202 and r.json()["status"] == "queued", r.text
        with api.deps.db.connection_context():
            entry = ProtectionQueue.get()
            assert entry.operation == "redis_restore" and entry.target_name == cache.container_name
        listed = c.get("/api/backups/redis", params={"project": "shop"}).json()
        assert listed["total"] == 1 and listed["copies"][0]["keys"] == 3
        # A removed cache cannot be restored in place (restore into a new container instead).
        with api.deps.db.connection_context():
            Container.update(status="removed").execute()
        r = c.post(f"{url}/restore", json={"into": "in_place"})
        assert r.status_code == 409 and "not deployed" in r.text
