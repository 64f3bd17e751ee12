"""`codeb backups redis ...` (and `backups restore --into project`) against the real API on
loopback. The cache and storage servers are registered on loopback addresses with a closed
SSH port: every run codeb starts fails fast (the CLI follows it to that failure), nothing
outside 127.0.0.0/8 is contacted. A copy row stands for one a copy run wrote."""

from __future__ import annotations

import datetime as dt

import pytest

from codeb.store.models import Container, Project, RedisCopy, Server
from tests.support import free_port

COPY = "rc_0123456789abcdef"


@pytest.fixture
def shop(cli, api):
    """shop with a running Redis on a ready cache server, a ready storage server and a
    completed AOF copy of that Redis."""
    port = str(free_port())
    for n, (name, role) in enumerate((("cache1", "cache"), ("storage1", "storage")), start=3):
        r = cli("servers", "add", name, f"127.0.0.{n}", role, "--ssh-port", port,
                "--no-bootstrap")  # fmt: skip
        assert r.code == 0, r.err
    assert cli("projects", "create", "shop").code == 0
    with api.deps.db.connection_context():
        Server.update(status="ready").execute()
        project = Project.get(Project.name == "shop")
        Container.create(
            id="ct_redis", project=project.id, environment="staging", server_type="redis",
            server_ip="127.0.0.3", container_name="shop-staging-redis", image="redis:8",
            status="running", volume="shop-staging-redis-data",
        )  # fmt: skip
        now = api.clock.now()
        RedisCopy.create(
            id=COPY, project=project.id, environment="staging", source="shop-staging-redis",
            source_server="cache1", storage_server="storage1", kind="manual", format="aof",
            status="completed", keys=503, size_bytes=48_000, canary="cn_0123456789abcdef",
            started_at=now - dt.timedelta(minutes=1), finished_at=now, created_at=now,
        )  # fmt: skip
    return project.id


def test_list_shows_the_copies(cli, shop):
    r = cli("backups", "redis", "list", "--project", "shop")
    assert r.code == 0, r.err
    (line,) = [x for x in r.out.splitlines() if x.startswith(COPY)]
    assert "shop-staging-redis" in line and "aof" in line and "503" in line
    body = cli("backups", "redis", "list", "--environment", "staging", "--json").json()
    assert [c["id"] for c in body["copies"]] == [COPY] and body["total"] == 1
    assert (
        cli("backups", "redis", "list", "--environment", "production", "--json").json()["copies"]
        == []
    )


def test_copy_is_followed_to_its_failure(cli, shop, api):
    r = cli("backups", "redis", "copy", "shop", "staging")
    assert r.code == 1, r.out + r.err
    assert "following operation op_" in r.out
    assert "unreachable" in r.out or "Connection refused" in r.out, r.out
    with api.deps.db.connection_context():
        made = RedisCopy.select().where(RedisCopy.id != COPY).get()
        assert made.status == "failed" and made.source == "shop-staging-redis"
    r = cli("backups", "redis", "copy", "nope", "staging")
    assert r.code == 2 and "[not_found]" in r.err


def test_verify_and_restore_reach_their_routes(cli, shop):
    r = cli("backups", "redis", "verify", COPY)
    assert r.code == 1 and "following operation op_" in r.out, r.out + r.err
    r = cli("backups", "redis", "restore", COPY)
    assert r.code == 1 and "following operation op_" in r.out, r.out + r.err
    # In place is HIGH: queued, and the CLI says how to go on.
    r = cli("backups", "redis", "restore", COPY, "--into", "in_place")
    assert r.code == 3, r.out + r.err
    assert "QUEUED" in r.out and "redis_restore" in r.out and "confirm token" in r.out
    for verb in ("verify", "restore"):
        r = cli("backups", "redis", verb, "rc_ffffffffffffffff")
        assert r.code == 2 and "[not_found]" in r.err, r.err
    with pytest.raises(SystemExit) as usage:  # argparse: a usage error, exit 2
        cli("backups", "redis", "restore", COPY, "--into", "sideways")
    assert usage.value.code == 2


def test_restore_into_project_reaches_its_route(cli, shop, api):
    """A live project's backup is refused for into project (409): the CLI says why."""
    from codeb.store.models import Backup, BackupTarget

    with api.deps.db.connection_context():
        t = BackupTarget.create(
            id="bt_x", project=shop, environment="staging", name="shop-staging-db",
            storage_server="storage1", db_server="db", db_port=15432,
            replication_password="x", status="enabled", created_at=api.clock.now(),
        )  # fmt: skip
        Backup.create(
            id="bk_live", project=shop, environment="staging", type="full", status="completed",
            location="storage:x", target_id=t.id, end_time=api.clock.now(),
        )  # fmt: skip
    r = cli("backups", "restore", "bk_live", "--into", "project")
    assert r.code != 0 and "[conflict]" in r.err and "live project" in r.err, r.err
    r = cli("backups", "restore", "bk_live", "--into", "project", "--project", "Bad!")
    assert r.code == 2 and "[validation_failed]" in r.err, r.err
