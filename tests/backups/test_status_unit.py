"""Backup alarms without a fleet: each part's level and reason (the newest backup against its
schedule, a newer failed attempt, the WAL receiver as the storage server reported it, the
last drill), a whole status on SQLite through GET /api/backups/status, and `codeb backups
status` exiting 1 on an alarm and 0 otherwise (the real CLI, in-process, against a live API)."""

from __future__ import annotations

import datetime as dt
import os

import pytest

from codeb.cli import main
from codeb.clock import FrozenClock
from codeb.features.backups import status
from codeb.store.models import Backup, BackupDrill, BackupTarget, Project, WalCheck
from tests.support import live_api

NOW = dt.datetime(2026, 11, 30, 16, 0, 0)


@pytest.mark.parametrize(
    ("schedule", "seconds"),
    [("daily", 86400), ("hourly", 3600), ("weekly", 604800), ("15m", 900), ("2h", 7200),
     ("Mon *-*-* 03:00", 86400), (None, 86400)],
)  # fmt: skip
def test_schedule_periods(schedule, seconds):
    assert status.schedule_period(schedule).total_seconds() == seconds


def test_backup_age_against_the_schedule():
    assert status.backup_part(NOW, None, "daily", None)["status"] == "alarm"
    fresh = status.backup_part(NOW, NOW - dt.timedelta(hours=20), "daily", None)
    assert fresh["status"] == "ok" and fresh["age_s"] == 72000
    # A daily schedule that did not run: alarm within the period plus its grace (2 h).
    late = status.backup_part(NOW, NOW - dt.timedelta(hours=26, minutes=1), "daily", None)
    assert late["status"] == "alarm" and "the daily schedule did not run" in late["reason"]
    assert status.backup_part(NOW, NOW - dt.timedelta(hours=25), "daily", None)["status"] == "ok"
    # A failed attempt newer than the newest good backup is an alarm with its reason.
    failed = (NOW - dt.timedelta(hours=1), "upload to S3 failed: 503")
    part = status.backup_part(NOW, NOW - dt.timedelta(hours=5), "daily", failed)
    assert part["status"] == "alarm" and "upload to S3 failed: 503" in part["reason"]
    older = (NOW - dt.timedelta(hours=9), "old failure")
    assert status.backup_part(NOW, NOW - dt.timedelta(hours=5), "daily", older)["status"] == "ok"


def test_receiver_states():
    ok = {"unit": "active", "failing": {}, "gaps": [], "check_rc": 0}
    assert status.receiver_of(ok) == ("streaming", None)
    stopped = {"unit": "inactive", "failing": {"receive-wal running": "FAILED"}, "check_rc": 1}
    receiver, detail = status.receiver_of(stopped)
    assert receiver == "stopped" and "codeb-barman-receive-wal is inactive" in detail
    failed = {"unit": "failed", "failing": {"receive_wal_running": "x", "replication_slot": "y"}}
    receiver, detail = status.receiver_of(failed)
    assert receiver == "failed" and "replication_slot" in detail
    # barman cron runs one while the unit is down: WAL still ships.
    assert status.receiver_of({**ok, "unit": "activating"})[0] == "streaming"
    gap = status.receiver_of({**ok, "gaps": ["000000010000000000000007"]})
    assert gap[0] == "streaming" and "000000010000000000000007" in gap[1]


def _seed(now: dt.datetime) -> None:
    project = Project.create(id="p_1", name="shop", type="nodejs", local_db_password="x")
    BackupTarget.create(
        id="bt_1", project=project.id, environment="staging", name="shop-staging-db",
        storage_server="storage", db_server="db", db_port=15432,
        replication_password="encrypted", status="enabled", created_at=now,
    )  # fmt: skip
    Backup.create(
        id="bk_1", project=project.id, environment="staging", type="full", status="completed",
        location="storage:shop-staging-db", target_id="bt_1", barman_id="20261130T150000",
        end_time=now - dt.timedelta(hours=2), finished_at=now - dt.timedelta(hours=2),
        verified_at=now - dt.timedelta(hours=1),
    )  # fmt: skip
    BackupDrill.create(
        id="dr_1", project=project.id, environment="staging", backup_id="bk_1",
        status="passed", finished_at=now - dt.timedelta(hours=1), duration_s=12.5,
        created_at=now - dt.timedelta(hours=1),
    )  # fmt: skip
    WalCheck.create(
        target_id="bt_1", checked_at=now - dt.timedelta(seconds=30), receiver="streaming",
        last_wal_at=now - dt.timedelta(seconds=40),
    )  # fmt: skip


def test_status_and_the_cli_exit_code(tmp_path, capsys):
    clock = FrozenClock()
    with live_api(tmp_path / "data", clock=clock) as api:
        now = clock.now()
        with api.deps.db.connection_context():
            _seed(now)
        env = {"CODEB_URL": api.base_url, "CODEB_API_KEY": api.admin_key, "NO_COLOR": "1",
               "CODEB_CLI_CONFIG": str(tmp_path / "none.toml")}  # fmt: skip
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            with api.client() as c:
                body = c.get("/api/backups/status").json()
                assert body["status"] == "ok" and body["alarms"] == 0, body
                (envs,) = body["environments"]
                assert envs["project"] == "shop" and envs["environment"] == "staging"
                (comp,) = envs["components"]
                assert (
                    comp["drill"]["result"] == "passed" and comp["wal"]["receiver"] == "streaming"
                )
                assert main(["backups", "status"]) == 0
                assert "backups: ok" in capsys.readouterr().out
                # The receiver stopped: alarm, the reason, and the CLI exits 1.
                with api.deps.db.connection_context():
                    WalCheck.update(
                        receiver="stopped", stopped_since=now,
                        detail="pg_receivewal is not running (codeb-barman-receive-wal is "
                        "inactive)",
                    ).execute()  # fmt: skip
                body = c.get("/api/backups/status", params={"project": "shop"}).json()
                comp = body["environments"][0]["components"][0]
                assert body["status"] == "alarm" and comp["wal"]["status"] == "alarm"
                assert "inactive" in comp["wal"]["reason"] and comp["reasons"]
                assert main(["backups", "status"]) == 1
                out = capsys.readouterr().out
                assert "backups: alarm" in out and "inactive" in out
                # A stale check is a warning (the job has not run), not ok.
                with api.deps.db.connection_context():
                    WalCheck.update(
                        receiver="streaming", detail=None,
                        checked_at=now - dt.timedelta(minutes=6),
                    ).execute()  # fmt: skip
                comp = c.get("/api/backups/status").json()["environments"][0]["components"][0]
                assert comp["wal"]["status"] == "warning" and comp["status"] == "warning"
                assert main(["backups", "status"]) == 0
                assert c.get("/api/backups/status", params={"project": "nope"}).status_code == 404
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
