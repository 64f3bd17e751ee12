"""Restore drills without a fleet: how a drill's report is judged (every check, the canary
recorded with the backup, the first failing check as the reason), and through the HTTP API
on SQLite: verify is LOW and starts a drill operation on the storage server, refuses a
backup that is not completed, and only a passed drill sets verified_at (which
backup_verified reads) while a failed one clears it."""

from __future__ import annotations

import datetime as dt

import pytest

from codeb.executor.events import EventRecord
from codeb.executor.runner import RunOutcome
from codeb.executor.worker import JobResult
from codeb.features.backups import drills
from codeb.protection import predicates
from codeb.protection.tokens import Target
from codeb.store.models import Backup, BackupDrill, BackupTarget, Operation, Project, Server
from tests.executor.helpers import wait_operation
from tests.support import live_api

GOOD = {
    "checks": {
        "verify_backup": {"ok": True, "detail": "Verify backup 'x' successful"},
        "recover": {"ok": True, "detail": ""},
        "connects": {"ok": True, "detail": ""},
        "canary_table": {"ok": True, "detail": ""},
        "counts": {"ok": True, "detail": ""},
    },
    "canary": [{"token": "cn_abc", "written_at": "2026-11-30T15:00:00+00:00"}],
    "tables": 3,
    "rows": 120,
    "duration_s": 4.2,
}


def test_a_good_report_passes_with_its_canary():
    passed, reason, checks, found = drills.judge(GOOD, "cn_abc")
    assert passed and reason is None and found == "cn_abc"
    assert checks["canary"] == {"ok": True, "detail": ""}


def test_a_wrong_canary_fails_naming_what_was_found():
    passed, reason, _, found = drills.judge(GOOD, "cn_other")
    assert not passed and found is None
    assert reason.startswith("canary failed: no codeb_canary row holds 'cn_other'")
    assert "cn_abc" in reason


def test_a_damaged_backup_fails_on_verify_backup_first():
    report = {
        **GOOD,
        "checks": {
            **GOOD["checks"],
            "verify_backup": {
                "ok": False,
                "detail": 'pg_verifybackup: error: checksum mismatch for file "base/5/16384"',
            },
            "connects": {"ok": False, "detail": "the scratch PostgreSQL exited: PANIC"},
        },
    }
    passed, reason, _, _ = drills.judge(report, "cn_abc")
    assert not passed
    assert reason.startswith("verify_backup failed:") and "checksum mismatch" in reason


def test_checks_never_reached_fail():
    passed, reason, checks, _ = drills.judge(
        {"checks": {"verify_backup": {"ok": True}, "recover": {"ok": False, "detail": "no WAL"}}},
        None,
    )
    assert not passed and reason == "recover failed: no WAL"
    assert checks["connects"] == {"ok": False, "detail": "not reached"}


def test_a_backup_without_a_recorded_canary_needs_no_table():
    report = {
        **GOOD,
        "checks": {**GOOD["checks"], "canary_table": {"ok": False, "detail": "does not exist"}},
    }
    passed, _, checks, _ = drills.judge(report, None)
    assert passed and checks["canary_table"]["ok"]
    # With a canary recorded, a missing table is a failure.
    assert not drills.judge(report, "cn_abc")[0]


@pytest.fixture
def api(tmp_path):
    with live_api(tmp_path / "data") as live:
        with live.deps.db.connection_context():
            Server.create(
                name="storage", ip="127.0.0.9", ssh_port=1, role="storage", status="ready"
            )
            project = Project.create(id="p_1", name="shop", type="nodejs", local_db_password="x")
            BackupTarget.create(
                id="bt_1", project=project.id, environment="staging", name="shop-staging-db",
                storage_server="storage", db_server="db", db_port=15432,
                replication_password="encrypted", status="enabled",
                created_at=dt.datetime(2026, 11, 30, 12, 0, 0),
            )  # fmt: skip
            for bid, status in (("bk_done", "completed"), ("bk_run", "running")):
                # canary: the token recorded with the backup (a column the backups service
                # fills; before it exists the attribute is not stored and none is expected).
                Backup.create(
                    id=bid, project=project.id, environment="staging", type="full",
                    status=status, location="storage:shop-staging-db", target_id="bt_1",
                    barman_id="20261130T150000", end_time=dt.datetime(2026, 11, 30, 15),
                    canary="cn_abc",
                )  # fmt: skip
        yield live


class _Ctx:
    """What DrillJob.run needs of a RunContext: the deps, the operation, a run that answers
    as the storage server's module would have."""

    def __init__(self, deps, operation, report):
        self.deps, self.operation, self._report = deps, operation, report

    def run(self, playbook):
        assert playbook.playbook == "backup_drill.yml"
        assert playbook.extravars["codeb_backup_drill_action"] == "drill"
        assert playbook.extravars["codeb_backup_drill_database"] == "shop_staging"
        stats = EventRecord(
            0, "playbook_on_stats", None, None, False, False, None,
            {"artifact_data": {"codeb_drill": self._report}},
        )  # fmt: skip
        return RunOutcome("successful", 0), [stats]


def test_verify_is_low_and_only_a_passed_drill_verifies(api):
    deps = api.deps
    with api.client() as c:
        refused = c.post("/api/backups/bk_run/verify")
        assert refused.status_code == 409 and "not completed" in refused.text
        assert c.post("/api/backups/bk_nope/verify").status_code == 404
        r = c.post("/api/backups/bk_done/verify")
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "executed"
        drill = r.json()["result"]["drill"]
        op_id = r.json()["result"]["operation"]["id"]
        assert drill["status"] == "running" and drill["server"] == "storage"
        # The worker runs it against a storage server nobody listens for: failed, with why.
        done = wait_operation(c, op_id, timeout=120)
        assert done["status"] == "failed", done
        first = c.get("/api/backups/bk_done/drills").json()["drills"][0]
        assert first["status"] == "failed" and first["reason"], first
    with deps.db.connection_context():
        op = Operation.get_by_id(op_id)
        assert op.kind == "backup_drill" and "storage" in op.targets
        target = Target("project", "p_1", "shop", project_id="p_1")
        assert not predicates.backup_verified(target, {})
        # A passed drill verifies the backup.
        result = drills.DrillJob().run(_Ctx(deps, op, GOOD))
        assert isinstance(result, JobResult) and result.status == "succeeded", result
        d = BackupDrill.get_by_id(drill["id"])
        assert d.status == "passed" and d.tables_count == 3 and d.rows_count == 120
        assert Backup.get_by_id("bk_done").verified_at is not None
        assert predicates.backup_verified(target, {})
    with api.client() as c:
        listed = c.get("/api/backups/bk_done/drills").json()["drills"]
        assert listed[0]["status"] == "passed" and listed[0]["rows"] == 120
        op2 = c.post("/api/backups/bk_done/verify").json()["result"]["operation"]["id"]
        wait_operation(c, op2, timeout=120)
    with deps.db.connection_context():
        bad = {**GOOD, "checks": {**GOOD["checks"], "verify_backup": {
            "ok": False, "detail": "checksum mismatch for file \"base/5/16384\""}}}  # fmt: skip
        result = drills.DrillJob().run(_Ctx(deps, Operation.get_by_id(op2), bad))
        assert result.status == "failed" and "checksum mismatch" in result.error
        # A failed drill withdraws the verification.
        assert Backup.get_by_id("bk_done").verified_at is None
        assert not predicates.backup_verified(target, {})
    with api.client() as c:
        status = c.get("/api/backups/status").json()
        (comp,) = status["environments"][0]["components"]
        assert comp["drill"]["status"] == "alarm" and "checksum mismatch" in comp["drill"]["reason"]
        assert status["status"] == "alarm"
