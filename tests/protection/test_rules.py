"""The rule table, its configuration (stricter only; overrides logged) and the migration."""

from __future__ import annotations

import pytest

from codeb.protection.rules import RULES, DangerLevel, configure
from codeb.store.models import OperationLog
from tests.support import live_api


def test_the_original_designs_rules_exactly():
    assert RULES["volume_delete"].level == DangerLevel.HIGH
    assert RULES["volume_delete"].requires == ("backup_exists", "user_confirmation", "cooldown_24h")
    assert RULES["container_remove"].level == DangerLevel.MEDIUM
    assert RULES["container_remove"].requires == ("container_stopped", "user_confirmation")
    assert RULES["db_drop"].level == DangerLevel.CRITICAL
    assert RULES["db_drop"].requires == ("backup_verified", "admin_approval", "cooldown_48h")
    assert RULES["deploy_production"].level == DangerLevel.MEDIUM
    assert RULES["deploy_production"].requires == ("staging_tested", "health_check_passed")


@pytest.mark.parametrize(
    ("operation", "level"),
    [("project_delete", "CRITICAL"), ("environment_delete", "HIGH"), ("container_stop", "MEDIUM"),
     ("container_start", "LOW"), ("container_restart", "LOW"), ("deploy_staging", "LOW"),
     ("domain_delete", "MEDIUM"), ("backup_delete", "HIGH"), ("backup_restore", "HIGH"),
     ("server_delete", "CRITICAL"), ("scale_down", "MEDIUM"), ("project_create", "LOW"),
     ("project_update", "LOW"), ("environment_create", "LOW"), ("server_register", "LOW"),
     ("api_key_create", "LOW"), ("api_key_revoke", "LOW")],
)  # fmt: skip
def test_every_mutating_operation_has_a_level(operation, level):
    assert RULES[operation].level.name == level
    assert RULES[operation].message


def test_configuration_can_make_rules_stricter():
    rules, applied = configure(
        {"container_start": {"level": "MEDIUM"}, "domain_delete": {"requires": ["backup_exists"]}},
        {},
    )
    assert rules["container_start"].flow == "token"
    assert "backup_exists" in rules["domain_delete"].requirements
    assert applied == []


@pytest.mark.parametrize(
    "stricter",
    [{"project_delete": {"level": "LOW"}}, {"nope": {"level": "LOW"}},
     {"db_drop": {"requires": ["magic"]}}, {"db_drop": {"level": "EXTREME"}},
     {"db_drop": {"level": "HIGH", "extra": 1}}],
)  # fmt: skip
def test_configuration_cannot_weaken_or_invent(stricter):
    with pytest.raises(ValueError):
        configure(stricter, {})


def test_weakening_needs_an_override_which_is_logged_at_start_up(tmp_path):
    overrides = {"environment_delete": {"level": "MEDIUM", "requires": []}}
    with pytest.raises(ValueError):
        with live_api(tmp_path / "a", protection_rules=overrides):
            pass
    with live_api(tmp_path / "b", protection_rule_overrides=overrides) as api:
        with api.deps.db.connection_context():
            row = OperationLog.get(OperationLog.operation == "protection_rule_override")
        assert row.target == "environment_delete"
        assert row.details["before"]["level"] == "HIGH"
        assert row.details["after"]["level"] == "MEDIUM"
        with api.client() as c:
            c.post("/api/projects", json={"name": "shop"})
            r = c.delete("/api/projects/shop/environments/staging")
            assert r.status_code == 202 and r.json()["status"] == "confirmation_required"
            listed = c.get("/api/protection/rules").json()
            assert listed["overrides"] == ["environment_delete"]


def test_migration_0002_keeps_existing_rows(tmp_path):
    from playhouse.migrations import Runner

    from codeb.store.db import MIGRATIONS_DIR, migrate, open_database

    db = open_database(f"sqlite:///{tmp_path / 'old.db'}")
    with db.connection_context():
        Runner(db, directory=str(MIGRATIONS_DIR)).up(target="0001_initial")
        db.execute_sql("INSERT INTO projects VALUES ('prj_1','p','nodejs',NULL,'x',"
                       "'2026-01-01','2026-01-01','active')")  # fmt: skip
        db.execute_sql("INSERT INTO containers VALUES ('c1','prj_1','staging','app','10.0.0.1',"
                       "'p-staging-app','img',NULL,NULL,'running','2026-01-01',"
                       "'2026-01-01')")  # fmt: skip
        db.execute_sql("INSERT INTO protection_queue VALUES ('pq_1','x',2,'prj_1','{}','h',"
                       "'2026-01-02','pending','2026-01-01')")  # fmt: skip
    assert "0002_protection_layer" in migrate(db)
    with db.connection_context():
        assert db.execute_sql("SELECT status, health_status FROM containers").fetchall() == [
            ("running", None)
        ]
        assert db.execute_sql(
            "SELECT id, confirm_token, confirmations FROM protection_queue"
        ).fetchall() == [("pq_1", "h", 0)]
        assert db.execute_sql("PRAGMA foreign_key_check").fetchall() == []
    db.close()
