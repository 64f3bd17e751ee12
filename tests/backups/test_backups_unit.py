"""The backups service's pure parts and its refusals, without a fleet: the SCRAM verifier
codeb sends instead of the replication password (checked against a real PostgreSQL), what
Barman's show-backup JSON becomes on a backup row, target times and the recoverable window,
and requests refused before anything starts."""

from __future__ import annotations

import datetime as dt
import subprocess
from urllib.parse import urlsplit

import pytest

from codeb.clock import FrozenClock
from codeb.config import SettingError, load_settings
from codeb.errors import Conflict, NotFound, ValidationFailed
from codeb.features.backups import service as backups
from codeb.protection.rules import RULES
from codeb.services.context import SYSTEM
from codeb.store.db import open_database
from codeb.store.models import (
    ALL_MODELS,
    Backup,
    BackupTarget,
    Container,
    Environment,
    Project,
    Server,
)
from tests.protection.helpers import confirm
from tests.support import live_api

# What `barman -f json show-backup` said on the fleet (Barman 3.13.3, PostgreSQL 17.12).
SHOW_BACKUP = {
    "backup_id": "20261130T150818",
    "backup_type": "full",
    "base_backup_information": {
        "backup_method": "postgres",
        "backup_size_bytes": 31312101,
        "backup_size_with_wals_bytes": 64866533,
        "begin_time": "2026-11-30 15:08:18.864144+00:00",
        "begin_wal": "000000010000000000000004",
        "end_time": "2026-11-30 15:08:19.475783+00:00",
        "end_wal": "000000010000000000000005",
    },
    "status": "DONE",
}


def test_scram_verifier_is_what_postgresql_accepts(postgres_url):
    """A role created with the verifier logs in with the password (the db host never sees it)."""
    password = "s3cret-Replication_pw"
    verifier = backups.scram_verifier(password)
    assert verifier.startswith("SCRAM-SHA-256$4096:") and password not in verifier
    assert backups.scram_verifier(password) != verifier  # a new salt each time
    admin = subprocess.run(
        ["psql", postgres_url, "-X", "-v", "ON_ERROR_STOP=1", "-q"],
        input=f"DROP ROLE IF EXISTS codeb_scram_test;\n"
        f"CREATE ROLE codeb_scram_test LOGIN PASSWORD '{verifier}';\n",
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert admin.returncode == 0, admin.stderr
    parts = urlsplit(postgres_url)

    def login(pw: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["psql", "-X", "-h", parts.hostname, "-p", str(parts.port), "-U", "codeb_scram_test",
             "-d", parts.path.lstrip("/"), "-tAc", "SELECT current_user"],
            env={"PGPASSWORD": pw, "PATH": "/usr/bin:/bin"},
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip

    ok = login(password)
    assert ok.returncode == 0 and ok.stdout.strip() == "codeb_scram_test", ok.stderr
    assert login("wrong-password-123").returncode != 0


def test_barman_show_backup_onto_a_row():
    b = Backup(id="bk_1", status="running")
    backups._apply_barman(b, SHOW_BACKUP)
    assert b.status == "completed" and b.barman_id == "20261130T150818"
    assert b.size_bytes == 64866533
    assert (b.begin_wal, b.end_wal) == ("000000010000000000000004", "000000010000000000000005")
    # Consistent from its end, rounded up to the second: a target at end_time restores.
    assert b.end_time == dt.datetime(2026, 11, 30, 15, 8, 20)
    backups._apply_barman(b, {**SHOW_BACKUP, "status": "FAILED", "error": "connection lost"})
    assert b.status == "failed" and b.error == "connection lost"
    backups._apply_barman(b, {**SHOW_BACKUP, "status": "WAITING_FOR_WALS"})
    assert b.status == "running"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-30T15:18:42Z", dt.datetime(2026, 11, 30, 15, 18, 42)),
        ("2026-11-30 15:18:42+00:00", dt.datetime(2026, 11, 30, 15, 18, 42)),
        ("2026-11-30T15:18:42", dt.datetime(2026, 11, 30, 15, 18, 42)),
    ],
)
def test_target_times(text, expected):
    assert backups._parse_target_time(text) == expected


@pytest.mark.parametrize(
    "bad", ["yesterday", "2026-11-30T15:18", "2026-11-30T15:18:42+02:00", "2026-11-30T15:18:42Z\n",
            "2026-11-30T15:18:42.5Z", 1796051299, None]
)  # fmt: skip
def test_bad_target_times_are_422(bad):
    with pytest.raises(ValidationFailed) as info:
        backups._parse_target_time(bad)
    assert info.value.status == 422


@pytest.fixture
def store(tmp_path):
    database = open_database(f"sqlite:///{tmp_path / 'b.db'}")
    with database.connection_context():
        database.create_tables(ALL_MODELS)
        project = Project.create(id="p_1", name="shop", type="nodejs", local_db_password="x")
        target = BackupTarget.create(
            id="bt_1", project=project.id, environment="staging", name="shop-staging-db",
            storage_server="storage", db_server="db", db_port=15432,
            replication_password="encrypted", status="enabled",
            created_at=dt.datetime(2026, 11, 30, 12, 0, 0),
        )  # fmt: skip
        yield database, project, target


class _Clock:
    def now(self) -> dt.datetime:
        return dt.datetime(2026, 11, 30, 16, 0, 0)


class _Deps:
    clock = _Clock()


def _backup(project, target, bid, status="completed", end=(15, 0, 0)):
    return Backup.create(
        id=bid, project=project.id, environment="staging", type="full", status=status,
        location="storage:shop-staging-db", target_id=target.id, barman_id="20261130T150000",
        end_time=dt.datetime(2026, 11, 30, *end), created_at=dt.datetime(2026, 11, 30, *end),
    )  # fmt: skip


def test_restore_outside_the_window_is_422_naming_it(store):
    _, project, target = store
    b = _backup(project, target, "bk_a")
    for when in ("2026-11-30T14:59:59Z", "2026-11-30T16:00:01Z"):
        with pytest.raises(ValidationFailed) as info:
            backups.restore_backup(_Deps(), SYSTEM, b.id, {"target_time": when})
        window = info.value.details["recoverable_window"]
        assert window == {"earliest": "2026-11-30T15:00:00Z", "latest": "2026-11-30T16:00:00Z"}
        assert "2026-11-30T15:00:00Z" in info.value.message


def test_restore_refusals_before_anything_starts(store):
    _, project, target = store
    b = _backup(project, target, "bk_b")
    with pytest.raises(ValidationFailed):
        backups.restore_backup(_Deps(), SYSTEM, b.id, {"into": "elsewhere"})
    with pytest.raises(ValidationFailed):
        backups.restore_backup(_Deps(), SYSTEM, b.id, {"target": "2026-11-30T15:30:00Z"})
    failed = _backup(project, target, "bk_c", status="failed")
    with pytest.raises(Conflict):
        backups.restore_backup(_Deps(), SYSTEM, failed.id, {})
    with pytest.raises(NotFound):
        backups.restore_backup(_Deps(), SYSTEM, "bk_nope", {})


def test_window_and_listing(store):
    _, project, target = store
    _backup(project, target, "bk_old", end=(13, 0, 0))
    _backup(project, target, "bk_new", end=(15, 0, 0))
    _backup(project, target, "bk_gone", status="deleted", end=(12, 0, 0))
    window = backups.recoverable_window(target, _Clock().now())
    assert window == {"earliest": "2026-11-30T13:00:00Z", "latest": "2026-11-30T16:00:00Z"}
    listed = backups.list_backups(project="shop")
    assert [b["id"] for b in listed["backups"]] == ["bk_new", "bk_old"] and listed["total"] == 2
    assert backups.list_backups(status="deleted")["total"] == 1
    with pytest.raises(ValidationFailed):
        backups.list_backups(status="lost")


def test_in_place_restore_goes_through_the_queue_without_a_cooldown(tmp_path):
    """backup_restore (in_place) is HIGH: queued, two confirmations, the second typing the
    environment's name, and a completed backup; it waives the 24 h cooldown (an incident
    can't wait), so with the clock standing still the second confirmation executes it: a
    `backup_restore_in_place` operation on the storage, db and app servers, and a restore row
    in mode in_place. No host is reached: the servers are not in the allowed networks."""
    clock = FrozenClock(dt.datetime(2026, 11, 30, 16, 0, 0))
    with live_api(tmp_path, clock=clock) as api, api.client() as c:
        assert c.post("/api/projects", json={"name": "shop"}).status_code == 201
        for name, ip, role in [("storage7", "127.0.0.9", "storage"), ("db7", "127.0.0.8", "db"),
                               ("app7", "127.0.0.7", "app")]:  # fmt: skip
            body = {"name": name, "ip": ip, "role": role, "bootstrap": False}
            assert c.post("/api/servers", json=body).status_code == 201
        with api.deps.db.connection_context():
            Server.update(status="ready").execute()
            project = Project.get(Project.name == "shop")
            for kind, ip, port in (("app", "127.0.0.7", 13000), ("db", "127.0.0.8", 15432)):
                Container.create(
                    id=f"ct_{kind}", project=project.id, environment="production",
                    server_type=kind, server_ip=ip, container_name=f"shop-production-{kind}",
                    image="docker.io/library/postgres:17", status="running", port_external=port,
                    volume=f"shop-production-{kind}-data",
                )  # fmt: skip
            target = BackupTarget.create(
                id="bt_p", project=project.id, environment="production",
                name="shop-production-db", storage_server="storage7", db_server="db7",
                db_port=15432, replication_password=api.deps.box.encrypt("x" * 24),
                status="enabled", created_at=clock.now(),
            )  # fmt: skip
            Backup.create(
                id="bk_p", project=project.id, environment="production", type="full",
                status="completed", location="storage7:shop-production-db", target_id=target.id,
                barman_id="20261130T150000", end_time=dt.datetime(2026, 11, 30, 15, 0, 0),
                created_at=dt.datetime(2026, 11, 30, 15, 0, 0),
            )  # fmt: skip
        r = c.post("/api/backups/bk_p/restore",
                   json={"into": "in_place", "target_time": "2026-11-30T15:30:00Z"})  # fmt: skip
        assert r.status_code == 202 and r.json()["status"] == "queued", r.text
        assert r.json()["level"] == "HIGH"
        token = r.json()["confirm_token"]
        first = confirm(c, token)
        assert first.status_code == 202 and first.json()["status"] == "confirmation_recorded"
        assert confirm(c, token, "shop/staging").status_code == 422  # the wrong name
        done = confirm(c, token, "shop/production")  # same instant: no cooldown to wait for
        assert done.status_code == 202 and done.json()["status"] == "executed", done.text
        result = done.json()["result"]
        assert result["restore"]["mode"] == "in_place"
        assert result["restore"]["target_time"] == "2026-11-30T15:30:00Z"
        assert result["operation"]["kind"] == "backup_restore_in_place"
        assert set(result["operation"]["targets"]) == {"storage7", "db7", "app7"}
        assert "cooldown_24h" not in RULES["backup_restore"].requirements
        assert "backup_exists" in RULES["backup_restore"].requirements


def test_catalogue_sync_reports_an_invalidated_slot_and_keeps_failed_backups_failed(store):
    """A slot max_slot_wal_keep_size invalidated (wal_status lost) is reported on the target
    (once); a backup that failed here (its process killed) stays failed while Barman lists it
    STARTED, and turns completed only when Barman says DONE."""
    _, project, target = store
    killed = _backup(project, target, "bk_killed", status="failed")
    killed.error, killed.barman_id = "killed", None
    killed.save()
    started = {**SHOW_BACKUP, "backup_name": "bk_killed", "status": "STARTED"}
    entry = {
        "backups": [started],
        "wal": {},
        "slot": {"slot_name": "codeb_barman", "wal_status": "lost", "active": False},
    }
    backups._sync_target(_Deps(), target, entry)
    assert Backup.get_by_id("bk_killed").status == "failed"
    t = BackupTarget.get_by_id(target.id)
    assert t.last_error.startswith(backups.SLOT_LOST) and "wal_removed" in t.last_error
    first = t.last_error
    backups._sync_target(_Deps(), t, entry)
    assert BackupTarget.get_by_id(target.id).last_error == first  # reported once
    backups._sync_target(_Deps(), t, {**entry, "backups": [{**started, "status": "DONE"}]})
    assert Backup.get_by_id("bk_killed").status == "completed"


def test_schedules_per_environment():
    """Defaults: full weekly, incremental daily; CODEB_BACKUP_SCHEDULES replaces either per
    environment; the cadence (what a backup's age is held against) is the more frequent."""
    default = load_settings({})
    expected = {"full": "weekly", "incremental": "daily"}
    assert backups.schedules_for(default, "production") == expected
    table = '{"staging": {"full": "Sun *-*-* 03:00", "incremental": "off"}}'
    s = load_settings({"CODEB_BACKUP_SCHEDULES": table})
    assert backups.schedules_for(s, "staging") == {"full": "Sun *-*-* 03:00", "incremental": "off"}
    assert backups.cadence(backups.schedules_for(s, "staging")) == "Sun *-*-* 03:00"
    assert backups.cadence(backups.schedules_for(s, "production")) == "daily"
    for bad in ('{"staging": {"hourly": "daily"}}', '{"staging": {"full": "$(reboot)"}}',
                '{"staging": "daily"}'):  # fmt: skip
        with pytest.raises(SettingError):
            load_settings({"CODEB_BACKUP_SCHEDULES": bad})


def test_incremental_needs_a_completed_backup_to_build_on(store):
    _, project, _target = store
    Environment.create(id="env_s", project=project.id, name="staging", db_password="x",
                       redis_password="x")  # fmt: skip
    Container.create(
        id="ct_db", project=project.id, environment="staging", server_type="db",
        server_ip="127.0.0.8", container_name="shop-staging-db", image="postgres:17",
        status="running",
    )  # fmt: skip
    Server.create(name="storage", ip="127.0.0.9", role="storage", status="ready")
    with pytest.raises(ValidationFailed):
        backups.create_backup(_Deps(), SYSTEM, {"project": "shop", "environment": "staging",
                                                "type": "weekly"})  # fmt: skip
    with pytest.raises(Conflict) as info:
        backups.create_backup(_Deps(), SYSTEM, {"project": "shop", "environment": "staging",
                                                "type": "incremental"})  # fmt: skip
    assert "full one first" in info.value.message
    b = Backup(id="bk_i")
    backups._apply_barman(b, {**SHOW_BACKUP, "backup_type": "incremental"})
    assert b.type == "incremental" and b.status == "completed"
