"""What the protected deletes stand on, without a fleet (SQLite): backup_verified asks for a
drill-verified backup of EVERY database the target concerns (a project with two dbs and one
verified is not enough; a server: the dbs on it); backup_exists for a Redis volume asks for a
completed copy of that Redis (a db backup is not a copy of the cache); a deleted project's
backups are listed with ?deleted=true until the retention period ends, and then the daily
job starts their removal from the storage server."""

from __future__ import annotations

import datetime as dt

import pytest

from codeb.features.backups import retention
from codeb.protection import predicates
from codeb.protection.tokens import Target
from codeb.store.models import (
    Backup,
    BackupTarget,
    Container,
    Operation,
    Project,
    RedisCopy,
)
from tests.support import live_api

T0 = dt.datetime(2026, 11, 30, 12, 0, 0)


def _db(project: Project, env: str, ip: str) -> None:
    name = f"{project.name}-{env}-db"
    Container.create(
        id=f"c_{env}", project=project.id, environment=env, server_type="db", server_ip=ip,
        container_name=name, image="postgres:17", status="running",
    )  # fmt: skip
    BackupTarget.create(
        id=f"bt_{env}", project=project.id, environment=env, name=name, storage_server="storage",
        db_server="db", db_port=15432, replication_password="x", status="enabled", created_at=T0,
    )  # fmt: skip


def _backup(project: Project, env: str, verified: bool, status: str = "completed") -> Backup:
    return Backup.create(
        id=f"bk_{env}_{int(verified)}_{status}", project=project.id, environment=env,
        type="full", status=status, location="storage:x", target_id=f"bt_{env}",
        barman_id="20261130T120000", created_at=T0, end_time=T0,
        verified_at=T0 if verified else None,
    )  # fmt: skip


@pytest.fixture
def api(tmp_path):
    with live_api(tmp_path / "data") as live:
        with live.deps.db.connection_context():
            yield live


def test_every_database_concerned_needs_a_verified_backup(api):
    shop = Project.create(id="p_shop", name="shop", type="nodejs", local_db_password="x")
    _db(shop, "staging", "10.0.0.2")
    _db(shop, "production", "10.0.0.3")
    project = Target("project", shop.id, "shop", project_id=shop.id)
    _backup(shop, "production", verified=True)
    _backup(shop, "staging", verified=False)
    # A verified backup of production alone does not cover staging's database.
    assert not predicates.backup_verified(project, {})
    assert predicates.backup_exists(project, {})
    # The environment delete of production only concerns production's database.
    prod = Target("environment", "e_p", "shop/production", project_id=shop.id,
                  environment="production")  # fmt: skip
    assert predicates.backup_verified(prod, {})
    # A server: the databases on it.
    assert predicates.backup_verified(Target("server", "1", "db2", server_ip="10.0.0.3"), {})
    assert not predicates.backup_verified(Target("server", "2", "db1", server_ip="10.0.0.2"), {})
    # A failed backup, even verified once, does not count.
    _backup(shop, "staging", verified=True, status="failed")
    assert not predicates.backup_verified(project, {})
    _backup(shop, "staging", verified=True)
    assert predicates.backup_verified(project, {})


def test_a_redis_volume_needs_a_copy_of_that_redis(api):
    shop = Project.create(id="p_shop", name="shop", type="nodejs", local_db_password="x")
    _db(shop, "staging", "10.0.0.2")
    _backup(shop, "staging", verified=True)
    Container.create(
        id="c_redis", project=shop.id, environment="staging", server_type="redis",
        server_ip="10.0.0.4", container_name="shop-staging-redis", image="redis:8",
        status="stopped", volume="shop-staging-redis-data",
    )  # fmt: skip
    volume = Target("container", "c_redis", "shop-staging-redis", project_id=shop.id,
                    environment="staging", server_ip="10.0.0.4")  # fmt: skip
    assert not predicates.backup_exists(volume, {})  # the db's backup is no copy of the cache
    copy = RedisCopy.create(
        id="rc_0123456789abcdef", project=shop.id, environment="staging",
        source="shop-staging-redis", source_server="cache", storage_server="storage",
        status="failed", created_at=T0,
    )  # fmt: skip
    assert not predicates.backup_exists(volume, {})
    copy.status = "completed"
    copy.save()
    assert predicates.backup_exists(volume, {})


def test_deleted_projects_backups_are_kept_then_removed(api):
    deps = api.deps
    now = deps.clock.now()
    gone = Project.create(
        id="p_gone", name="gone~0123456789ab", type="nodejs", local_db_password="x",
        status="deleted", updated_at=now - dt.timedelta(days=29),
    )  # fmt: skip
    _db(gone, "staging", "10.0.0.2")
    kept = _backup(gone, "staging", verified=True)
    live = Project.create(id="p_live", name="live", type="nodejs", local_db_password="x")
    Backup.create(
        id="bk_live", project=live.id, environment="staging", type="full",
        status="completed", location="storage:y", created_at=now,
    )  # fmt: skip
    with api.client() as c:
        listed = c.get("/api/backups", params={"deleted": "true"}).json()
        assert [b["id"] for b in listed["backups"]] == [kept.id]
        (row,) = listed["backups"]
        assert row["project"] == "gone" and row["retained_until"].startswith(
            (gone.updated_at + retention.RETENTION).date().isoformat()
        )
        assert c.get("/api/backups", params={"deleted": "maybe"}).status_code == 422
        # The filters apply to this listing too, and are checked as on the other one.
        for params, ids in (
            ({"project": "gone"}, [kept.id]),
            ({"project": "live"}, []),
            ({"environment": "staging", "status": "completed"}, [kept.id]),
            ({"environment": "production"}, []),
            ({"status": "failed"}, []),
        ):
            answer = c.get("/api/backups", params={"deleted": "true", **params}).json()
            assert [b["id"] for b in answer["backups"]] == ids, params
            assert answer["total"] == len(ids)
        for bad in ({"status": "nope"}, {"environment": "qa/"}, {"limit": "0"}):
            refused = c.get("/api/backups", params={"deleted": "true", **bad})
            assert refused.status_code == 422, bad
    # Within the retention: nothing removed.
    assert retention.purge_expired(deps) == {"started": []}
    # Past it: the removal of its backup from the storage server starts (an operation).
    Project.update(updated_at=now - dt.timedelta(days=31)).where(Project.id == gone.id).execute()
    started = retention.purge_expired(deps)["started"]
    assert len(started) == 1
    op = Operation.get_by_id(started[0])
    assert op.kind == "backup_delete" and op.params == {"backup_id": kept.id}
    # A live project's backup is never touched.
    assert not any(
        o.params.get("backup_id") == "bk_live"
        for o in Operation.select().where(Operation.kind == "backup_delete")
    )
    with api.client() as c:
        assert c.get("/api/backups", params={"deleted": "true"}).json()["backups"] == []
