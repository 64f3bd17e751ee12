"""Differential backups (issue 10: "full weekly, incremental/differential daily"): with
Barman and PostgreSQL 17 a differential is an incremental whose parent is the latest
*full* backup (`barman backup --incremental <that full>`), so a restore needs two backups,
never the chain of dailies an incremental on `latest` builds. `type` accepts full,
incremental and differential; anything else is a 422 naming them; a differential without a
completed full backup is a 409; Barman's "incremental" never renames a differential row."""

from __future__ import annotations

import pytest

from codeb.errors import Conflict, ValidationFailed
from codeb.features.backups import service as backups
from codeb.services.context import SYSTEM
from codeb.store.models import Backup, Container, Environment, Server
from tests.backups.test_backups_unit import SHOW_BACKUP, _backup, _Deps, store  # noqa: F401

BODY = {"project": "shop", "environment": "staging"}


@pytest.fixture
def env(store):  # noqa: F811
    _, project, target = store
    Environment.create(id="env_s", project=project.id, name="staging", db_password="x",
                       redis_password="x")  # fmt: skip
    Container.create(
        id="ct_db", project=project.id, environment="staging", server_type="db",
        server_ip="127.0.0.8", container_name="shop-staging-db", image="postgres:17",
        status="running",
    )  # fmt: skip
    Server.create(name="storage", ip="127.0.0.9", role="storage", status="ready")
    return project, target


def test_an_unknown_type_is_422_naming_the_three(env):
    for bad in ("weekly", "diff", "FULL", ""):
        with pytest.raises(ValidationFailed) as info:
            backups.create_backup(_Deps(), SYSTEM, {**BODY, "type": bad})
        assert info.value.details["allowed"] == ["full", "incremental", "differential"]
        assert "differential" in info.value.message and "latest full" in info.value.message


def test_a_differential_needs_a_completed_full_backup(env):
    project, target = env
    with pytest.raises(Conflict) as info:
        backups.create_backup(_Deps(), SYSTEM, {**BODY, "type": "differential"})
    assert "completed full backup" in info.value.message
    inc = _backup(project, target, "bk_inc")
    inc.type = "incremental"
    inc.save()
    _backup(project, target, "bk_failed_full", status="failed")
    with pytest.raises(Conflict):  # an incremental or a failed full is no parent
        backups.create_backup(_Deps(), SYSTEM, {**BODY, "type": "differential"})


def test_the_parent_is_the_latest_completed_full(env):
    project, target = env
    old = _backup(project, target, "bk_old", end=(10, 0, 0))
    new = _backup(project, target, "bk_new", end=(14, 0, 0))
    new.barman_id = "20261130T140000"
    new.save()
    inc = _backup(project, target, "bk_inc", end=(15, 0, 0))
    inc.type, inc.barman_id = "incremental", "20261130T150000"
    inc.save()
    assert backups._parent_backup(target, "differential").id == new.id != old.id
    assert backups._parent_backup(target, "incremental").id == inc.id
    diff = Backup(id="bk_d", type="differential", target_id=target.id)
    assert backups._incremental_parent(target, diff) == "20261130T140000"
    assert backups._incremental_parent(target, Backup(id="bk_i", type="incremental")) == "latest"
    for b in (old, new):  # gone since the request: the role fails the backup, saying so
        b.status = "deleted"
        b.save()
    assert backups._incremental_parent(target, diff) == "none"


def test_barman_never_renames_a_differential():
    b = Backup(id="bk_d", type="differential", status="running")
    backups._apply_barman(b, {**SHOW_BACKUP, "backup_type": "incremental"})
    assert b.type == "differential" and b.status == "completed"
    b = Backup(id="bk_s", type="full", status="running")  # found by the catalogue sync
    backups._apply_barman(b, {**SHOW_BACKUP, "backup_type": "incremental"})
    assert b.type == "incremental"


def test_the_request_shape_accepts_the_three_types():
    import msgspec

    from codeb.features.backups.schemas import BackupCreateRequest

    for kind in ("full", "incremental", "differential"):
        got = msgspec.convert({**BODY, "type": kind}, BackupCreateRequest)
        assert got.type == kind
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({**BODY, "type": "weekly"}, BackupCreateRequest)
