"""Backups in GET /api/metrics (issue 13: backup age and status per database), on SQLite and
PostgreSQL, from catalogue rows as backup_catalogue_sync files them."""

from __future__ import annotations

import datetime as dt

from prometheus_client.parser import text_string_to_metric_families

from codeb.store.models import Backup, BackupTarget, Project


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_each_database_reports_its_newest_backup_wal_and_streaming(api):
    with api.client() as c:
        assert c.post("/api/projects", json={"name": "shop"}).status_code == 201
    deps = api.deps
    now = deps.clock.now()
    with deps.db.connection_context(), deps.write():
        project = Project.get(Project.name == "shop")
        target = BackupTarget.create(
            id="bt_1", project=project, environment="staging", name="shop-staging-db",
            storage_server="storage", db_server="db", db_port=15432,
            replication_password="not-read-here", status="enabled",
            wal_last_at=now - dt.timedelta(seconds=30),
        )  # fmt: skip
        for n, (hours, status, verified) in enumerate(
            [(30, "completed", True), (6, "completed", False), (1, "failed", False)]
        ):
            Backup.create(
                id=f"bk_{n}", project=project, environment="staging", type="full",
                location="storage:/var/lib/barman", status=status, target_id=target.id,
                created_at=now - dt.timedelta(hours=hours),
                finished_at=now - dt.timedelta(hours=hours),
                verified_at=now if verified else None,
            )  # fmt: skip
    with api.client() as c:
        got = samples(c.get("/api/metrics").text)
    db = (("database", "shop-staging-db"), ("environment", "staging"), ("project", project.id))
    assert got[("codeb_backup_newest_age_seconds", db)] == 6 * 3600
    assert got[("codeb_backup_newest_verified", db)] == 0
    assert got[("codeb_backup_wal_last_age_seconds", db)] == 30
    assert got[("codeb_backup_streaming_state", tuple(sorted((*db, ("state", "enabled")))))] == 1
    assert got[("codeb_backup_streaming_state", tuple(sorted((*db, ("state", "failed")))))] == 0
    assert got[("codeb_backups", (("status", "completed"),))] == 2
    assert got[("codeb_backups", (("status", "failed"),))] == 1
    assert got[("codeb_metrics_collector_up", (("collector", "backups"),))] == 1
