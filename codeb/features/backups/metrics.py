"""Backups' figures for GET /api/metrics: per database (the Barman server name of a db
component), the newest completed backup's age, whether it was verified by a restore, how long
ago WAL last arrived, and the streaming state; and backups by status. Read from the catalogue
codeb keeps (synced from the storage server by backup_catalogue_sync), at scrape time."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from peewee import fn
from prometheus_client.core import GaugeMetricFamily

from codeb.metrics import FeatureCollector
from codeb.store.models import Backup, BackupTarget

TARGET_STATES = ("pending", "enabled", "failed")
BACKUP_STATES = ("running", "completed", "failed", "deleted")


def _collect(deps: Any) -> Iterable[Any]:
    now = deps.clock.now()
    labels = ["database", "project", "environment"]
    age = GaugeMetricFamily(
        "codeb_backup_newest_age_seconds",
        "age of the newest completed base backup of each database",
        labels=labels,
    )
    verified = GaugeMetricFamily(
        "codeb_backup_newest_verified",
        "1 if the newest completed backup was proven by a restore, else 0",
        labels=labels,
    )
    wal = GaugeMetricFamily(
        "codeb_backup_wal_last_age_seconds",
        "how long ago the storage server last received WAL from each database",
        labels=labels,
    )
    state = GaugeMetricFamily(
        "codeb_backup_streaming_state",
        "1 for each database's WAL streaming state (pending, enabled, failed)",
        labels=[*labels, "state"],
    )
    for target in BackupTarget.select().order_by(BackupTarget.name):
        names = [target.name, str(target.project_id), target.environment]
        for s in TARGET_STATES:
            state.add_metric([*names, s], 1.0 if target.status == s else 0.0)
        if target.wal_last_at is not None:
            wal.add_metric(names, max(0.0, (now - target.wal_last_at).total_seconds()))
        newest = (
            Backup.select(Backup.finished_at, Backup.created_at, Backup.verified_at)
            .where((Backup.target_id == target.id) & (Backup.status == "completed"))
            .order_by(Backup.finished_at.desc(nulls="LAST"), Backup.created_at.desc())
            .first()
        )
        if newest is not None:
            done = newest.finished_at or newest.created_at
            age.add_metric(names, max(0.0, (now - done).total_seconds()))
            verified.add_metric(names, 1.0 if newest.verified_at else 0.0)
    by_status = GaugeMetricFamily(
        "codeb_backups", "backups in codeb's catalogue, by status", labels=["status"]
    )
    counts = dict(
        Backup.select(Backup.status, fn.COUNT(Backup.id)).group_by(Backup.status).tuples()
    )
    for s in BACKUP_STATES:
        by_status.add_metric([s], float(counts.get(s, 0)))
    return [age, verified, wal, state, by_status]


METRICS = FeatureCollector(
    name="backups",
    collect=_collect,
    description="per database: newest backup age, verified, WAL arrival and streaming state",
)
