"""A deleted project's retained backup restored as a new project (POST
/api/backups/:id/restore {into: "project"}), without a fleet (SQLite, the real API and
worker): the shape's answers (409 for a live project's backup or a taken name, 422 for
another name or a bad one), and what the LOW request registers: the project under the name
it had, the restored environment keeping the deleted one's db password, its db placed on
the storage server, the restore row on the environment's own db port and names, the .env
file pointing there. The run then fails before any connection (only 127.0.0.1 is allowed):
the project it was to become is retired, its ports released. The restore itself, with data
compared, is tests/backups/test_drills_fleet.py::test_project_delete_keeps_its_backups."""

from __future__ import annotations

import datetime as dt
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from codeb.executor.worker import Job, JobResult, RunContext
from codeb.features.projects import service as projects
from codeb.store.models import (
    Backup,
    BackupRestore,
    BackupTarget,
    Environment,
    Placement,
    PortAllocation,
    Project,
    Server,
)
from tests.executor.helpers import wait_operation
from tests.support import LiveApi, live_api

STORAGE_IP = "127.0.0.9"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[LiveApi]:
    with live_api(tmp_path / "data", allowed_networks="127.0.0.1/32") as live:
        yield live


def _deleted_shop_with_a_backup(api: LiveApi) -> tuple[str, str, bytes]:
    """shop, deleted (as its delete leaves it), with a completed backup of its staging db;
    (the backup's id, the old project's id, staging's encrypted db password)."""
    with api.client() as c:
        assert c.post("/api/projects", json={"name": "shop"}).status_code == 201
        body = {"name": "storage", "ip": STORAGE_IP, "role": "storage", "bootstrap": False}
        assert c.post("/api/servers", json=body).status_code == 201
    deps = api.deps
    with deps.db.connection_context(), deps.write():
        shop = Project.get(Project.name == "shop")
        staging = Environment.get(
            (Environment.project == shop.id) & (Environment.name == "staging")
        )
        t = BackupTarget.create(
            id=f"bt_{secrets.token_hex(6)}", project=shop.id, environment="staging",
            name="shop-staging-db", storage_server="storage", db_server="db",
            db_port=staging.db_port, replication_password="x", status="enabled",
            created_at=api.clock.now(),
        )  # fmt: skip
        b = Backup.create(
            id=f"bk_{secrets.token_hex(6)}", project=shop.id, environment="staging",
            type="full", status="completed", location="storage:x", target_id=t.id,
            barman_id="20261130T120000", end_time=api.clock.now() - dt.timedelta(hours=1),
        )  # fmt: skip
        Environment.update(status="deleted").where(Environment.project == shop.id).execute()
        PortAllocation.delete().where(PortAllocation.project == shop.id).execute()
        shop.name = projects.deleted_project_name(shop)
        shop.status = "deleted"
        shop.save()
        return b.id, shop.id, staging.db_password


def test_the_shape_refuses_what_it_cannot_do(api):
    backup_id, _, _ = _deleted_shop_with_a_backup(api)
    with api.client() as c:
        url = f"/api/backups/{backup_id}/restore"
        # Another name: the database's user and name come from the name it had.
        r = c.post(url, json={"into": "project", "project": "shop2"})
        assert r.status_code == 422, r.text
        assert "shop_staging" in r.json()["error"]["message"]
        assert r.json()["error"]["details"]["name"] == "shop"
        for bad in ("Shop!", "", "x" * 49):
            r = c.post(url, json={"into": "project", "project": bad})
            assert r.status_code == 422, (bad, r.text)
        r = c.post(url, json={"into": "new", "project": "shop"})
        assert r.status_code == 422, r.text
        # A live project took the name meanwhile: 409.
        assert c.post("/api/projects", json={"name": "shop"}).status_code == 201
        r = c.post(url, json={"into": "project"})
        assert r.status_code == 409, r.text
        # A live project's backup is not for into project.
        with api.deps.db.connection_context(), api.deps.write():
            live = Project.get((Project.name == "shop") & (Project.status == "active"))
            Backup.update(project=live.id).where(Backup.id == backup_id).execute()
        r = c.post(url, json={"into": "project"})
        assert r.status_code == 409 and "live project" in r.json()["error"]["message"], r.text
    with api.deps.db.connection_context():
        assert BackupRestore.select().count() == 0


class _Held:
    """A job that waits for `release` before it runs: what the request registered is read
    before the run's failure retires it (the worker settles within milliseconds here)."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.release = threading.Event()

    def run(self, ctx: RunContext) -> JobResult:
        assert self.release.wait(60), "the test never released the run"
        return self.job.run(ctx)


def test_it_registers_the_project_then_retires_it_when_the_restore_fails(api):
    backup_id, old_id, old_password = _deleted_shop_with_a_backup(api)
    deps = api.deps
    held = _Held(deps.worker._jobs["backup_restore"])
    deps.worker.register("backup_restore", held)
    with api.client() as c:
        r = c.post(f"/api/backups/{backup_id}/restore", json={"into": "project"})
        assert r.status_code == 202 and r.json()["status"] == "executed", r.text
        result = r.json()["result"]
        assert result["project"]["name"] == "shop" and result["project"]["status"] == "active"
        restore = result["restore"]
        assert restore["mode"] == "project" and restore["container_name"] == "shop-staging-db"
        assert restore["volume"] == "shop-staging-db-data" and restore["server"] == "storage"
        staging = result["project"]["environments"]["staging"]
        assert restore["port"] == staging["db_port"]
        # The .env file reaches the restored data: the storage server, the old credentials.
        with deps.db.connection_context():
            password = deps.box.decrypt(old_password)
        env_file = result["env_files"]["staging"]
        assert f"shop:{password}@{STORAGE_IP}:{staging['db_port']}/shop_staging" in env_file
        with deps.db.connection_context():
            new = Project.get_by_id(result["project"]["id"])
            assert new.id != old_id
            env = Environment.get((Environment.project == new.id) & (Environment.name == "staging"))
            storage = Server.get(Server.name == "storage")
            placed = Placement.get(
                (Placement.environment == env.id) & (Placement.component == "db")
            )
            assert placed.server_id == storage.id
        held.release.set()
        op = wait_operation(c, result["operation"]["id"], timeout=120)
        assert op["status"] == "failed", op
        with deps.db.connection_context():
            row = BackupRestore.get_by_id(restore["id"])
            assert row.status == "failed" and "retired" in row.error and row.container_id is None
            gone = Project.get_by_id(new.id)
            assert gone.status == "deleted" and gone.name.startswith("shop~")
            assert not PortAllocation.select().where(PortAllocation.project == new.id).exists()
        assert [p["name"] for p in c.get("/api/projects").json()["projects"]] == []
        # The name is free again: another attempt is accepted (its restore row's name too).
        r = c.post(f"/api/backups/{backup_id}/restore", json={"into": "project"})
        assert r.status_code == 202, r.text
        assert wait_operation(c, r.json()["result"]["operation"]["id"], 120)["status"] == "failed"
