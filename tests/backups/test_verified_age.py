"""A CRITICAL delete stands on a drill-verified backup no older than
CODEB_BACKUP_VERIFIED_MAX_AGE_HOURS (7 days by default), for every database concerned, with
the age read at the injected clock's now, the same now the 48 h cooldown is read at. Each
route that requires backup_verified (project delete, production environment delete, server
delete, db_drop) over real HTTP on SQLite: a fresh verified backup lets the final
confirmation through the gate; one that aged past the limit while the entry waited is
refused with its age and the limit, and a newer verified one lets the same entry through."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from codeb.clock import FrozenClock
from codeb.config import SettingError, load_settings
from codeb.protection import predicates
from codeb.protection.decision import Fact
from codeb.protection.tokens import Target
from codeb.store.models import Backup, BackupTarget, Container, Project
from tests.protection.helpers import confirm, make_project
from tests.support import LiveApi, live_api

DB = "shop-production-db"
DB_IP = "127.0.0.8"


@dataclass(frozen=True)
class Shop:
    project_id: str
    container_id: str


def _shop(api: LiveApi) -> Shop:
    """Project shop with its production db on a db server (rows, as deploys write them)."""
    with api.client() as c:
        p = make_project(c, "shop")["project"]
        body = {"name": "db8", "ip": DB_IP, "role": "db", "bootstrap": False}
        assert c.post("/api/servers", json=body).status_code == 201
    with api.deps.db.connection_context():
        container = Container.create(
            id=f"ct_{secrets.token_hex(6)}", project=p["id"], environment="production",
            server_type="db", server_ip=DB_IP, container_name=DB, image="postgres:17",
            status="stopped", volume=f"{DB}-data",
        )  # fmt: skip
        BackupTarget.create(
            id=f"bt_{secrets.token_hex(6)}", project=p["id"], environment="production", name=DB,
            storage_server="storage", db_server="db8", db_port=15432, replication_password="x",
            status="enabled", created_at=api.clock.now(),
        )  # fmt: skip
    return Shop(p["id"], container.id)


def _verified_backup(api: LiveApi, shop: Shop, age: dt.timedelta) -> None:
    """A completed backup of the production db, taken `age` ago and verified by a drill."""
    taken = api.clock.now() - age
    with api.deps.db.connection_context():
        target = BackupTarget.get(BackupTarget.name == DB)
        Backup.create(
            id=f"bk_{secrets.token_hex(6)}", project=shop.project_id, environment="production",
            type="full", status="completed", location="storage:x", target_id=target.id,
            created_at=taken, started_at=taken, finished_at=taken, end_time=taken,
            verified_at=taken + dt.timedelta(minutes=5),
        )  # fmt: skip


# (route id, method path, typed name); the path may name the container.
ROUTES = [
    ("project_delete", "/api/projects/shop", "shop"),
    ("environment_delete_production", "/api/projects/shop/environments/production",
     "shop/production"),
    ("server_delete", f"/api/servers/{DB_IP}", "db8"),
    ("db_drop", "/api/containers/{container}/volume", DB),
]  # fmt: skip


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(dt.datetime(2026, 11, 30, 12, 0, 0))


@pytest.fixture
def api(tmp_path: Path, clock: FrozenClock) -> Iterator[LiveApi]:
    # 127.0.0.1 only: a db_drop that gets through starts a run that fails before any SSH
    # connection to the made-up db server.
    with live_api(tmp_path / "data", clock=clock, allowed_networks="127.0.0.1/32") as live:
        yield live


def _queue(api: LiveApi, shop: Shop, path: str) -> tuple[str, str, dict]:
    """Request, confirm once and have another admin approve: what is left is the final
    confirmation after the 48 h cooldown."""
    boss = api.new_key("boss", "admin")
    with api.client() as c, api.client(key=boss) as b:
        r = c.delete(path.format(container=shop.container_id))
        assert r.status_code == 202 and r.json()["level"] == "CRITICAL", r.text
        token, entry = r.json()["confirm_token"], r.json()["entry"]
        assert confirm(c, token).status_code == 202
        assert b.post("/api/protection/approve", json={"id": entry["id"]}).status_code == 200
    return token, entry["id"], entry


def _unmet(entry: dict, name: str) -> list[str]:
    return [u["satisfy"] for u in entry["unmet"] if u["requirement"] == name]


def _gate_let_through(r) -> bool:
    """The Protection Layer consented: the operation executed (or started), or the applier
    itself answered (a server still holding containers is a 409 conflict, not a refusal)."""
    if r.status_code in (200, 202):
        return r.json()["status"] == "executed"
    return r.status_code == 409 and r.json()["error"]["code"] != "protection_entry_closed"


@pytest.mark.parametrize(("operation", "path", "typed"), ROUTES, ids=[r[0] for r in ROUTES])
def test_fresh_verified_backup_lets_the_delete_through(api, clock, operation, path, typed):
    shop = _shop(api)
    _verified_backup(api, shop, dt.timedelta(days=1))
    token, _, entry = _queue(api, shop, path)
    assert entry["operation"] == operation
    assert _unmet(entry, "backup_verified") == []  # met when requested
    clock.advance(hours=48)  # the backup is 3 days old at the final confirmation
    with api.client() as c:
        r = confirm(c, token, typed)
    assert r.status_code != 403, r.text
    assert _gate_let_through(r), r.text


@pytest.mark.parametrize(("operation", "path", "typed"), ROUTES, ids=[r[0] for r in ROUTES])
def test_stale_verified_backup_is_refused_with_its_age_and_the_limit(
    api, clock, operation, path, typed
):
    shop = _shop(api)
    _verified_backup(api, shop, dt.timedelta(days=8))
    token, entry_id, entry = _queue(api, shop, path)
    (said,) = _unmet(entry, "backup_verified")  # the queued answer already says why
    assert "8d 0h old" in said and "limit of 7d 0h" in said, said
    clock.advance(hours=48)
    with api.client() as c:
        r = confirm(c, token, typed)
        assert r.status_code == 403, r.text
        details = r.json()["error"]["details"]
        assert details["reason"] == "requirements_unmet"
        (unmet,) = details["unmet"]
        assert unmet["requirement"] == "backup_verified"
        satisfy = unmet["satisfy"]
        assert f"{DB}: the newest verified backup is 10d 0h old" in satisfy, satisfy
        assert "older than the limit of 7d 0h" in satisfy, satisfy
        assert "CODEB_BACKUP_VERIFIED_MAX_AGE_HOURS" in satisfy
        assert "10d 0h old" in r.json()["error"]["message"]
        # Nothing happened, and the entry waits on: a drill verifies a newer backup and the
        # same entry goes through.
        assert c.get(f"/api/protection/queue/{entry_id}").json()["status"] == "pending"
        _verified_backup(api, shop, dt.timedelta(hours=2))
        r = confirm(c, token, typed)
    assert _gate_let_through(r), r.text


def test_a_backup_fresh_at_the_request_can_age_out_while_the_entry_waits(api, clock):
    """Read at the final confirmation's now, not the request's: 6 days old when requested,
    8 days at the end of the 48 h cooldown."""
    shop = _shop(api)
    _verified_backup(api, shop, dt.timedelta(days=6))
    token, _, entry = _queue(api, shop, "/api/projects/shop")
    assert _unmet(entry, "backup_verified") == []
    clock.advance(hours=48)
    with api.client() as c:
        r = confirm(c, token, "shop")
    assert r.status_code == 403, r.text
    assert "8d 0h old" in r.json()["error"]["details"]["unmet"][0]["satisfy"]
    with api.deps.db.connection_context():
        assert Project.get_by_id(shop.project_id).status == "active"


def test_the_limit_is_a_setting(tmp_path, clock):
    with live_api(tmp_path / "data", clock=clock, backup_verified_max_age_hours=24 * 30) as api:
        shop = _shop(api)
        _verified_backup(api, shop, dt.timedelta(days=8))
        token, _, _ = _queue(api, shop, "/api/projects/shop")
        clock.advance(hours=48)
        with api.client() as c:
            r = confirm(c, token, "shop")
        assert r.status_code == 200 and r.json()["status"] == "executed", r.text
    assert (
        load_settings({"CODEB_BACKUP_VERIFIED_MAX_AGE_HOURS": "72"}).backup_verified_max_age_hours
        == 72
    )
    for bad in ("0", "9999999", "a week"):
        with pytest.raises(SettingError, match="CODEB_BACKUP_VERIFIED_MAX_AGE_HOURS"):
            load_settings({"CODEB_BACKUP_VERIFIED_MAX_AGE_HOURS": bad})


def test_predicate_reads_the_context_it_is_given(api, clock):
    """The predicate alone: every database named, none verified, too old, or fine."""
    shop = _shop(api)
    project = Target("project", shop.project_id, "shop", project_id=shop.project_id)
    now = clock.now()
    week = predicates.Context(now=now, verified_max_age=dt.timedelta(days=7))
    with api.deps.db.connection_context():
        fact = predicates.backup_verified(project, {}, week)
        assert fact == Fact(False, f"{DB}: no drill-verified completed backup")
    _verified_backup(api, shop, dt.timedelta(days=7, minutes=1))
    with api.deps.db.connection_context():
        fact = predicates.backup_verified(project, {}, week)
        assert not fact and "7d 0h old" in fact.found
        # At exactly the limit it still counts; without a clock no age is checked.
        exact = predicates.Context(now=now - dt.timedelta(minutes=1))
        assert predicates.backup_verified(project, {}, exact)
        assert predicates.backup_verified(project, {})
        # A failed backup, however fresh and verified once, does not count.
        target = BackupTarget.get(BackupTarget.name == DB)
        Backup.create(
            id="bk_failed", project=shop.project_id, environment="production", type="full",
            status="failed", location="storage:x", target_id=target.id, end_time=now,
            verified_at=now,
        )  # fmt: skip
        assert not predicates.backup_verified(project, {}, week)
    _verified_backup(api, shop, dt.timedelta(hours=1))
    with api.deps.db.connection_context():
        assert predicates.backup_verified(project, {}, week) == Fact(True, "")
