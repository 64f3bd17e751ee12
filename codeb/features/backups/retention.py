"""Backups of deleted projects (issue 11): a project delete (CRITICAL) keeps its backups and
Redis copies for a retention period (30 days by default) so a deleted project can still be
restored; `GET /api/backups?deleted=true` lists them with the day they go. The daily
`backup_retention` job removes what is past it from the storage server (the project delete
that was approved decided it; each removal is an operation of its own)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from codeb.features.backups import redis as redis_copies
from codeb.features.backups import service as backups
from codeb.services import operations, scheduler
from codeb.services.context import SYSTEM, Deps
from codeb.store.models import Backup, BackupTarget, Operation, Project, RedisCopy

RETENTION = dt.timedelta(days=30)


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() + "Z" if value else None


def deleted_at(project: Project) -> dt.datetime:
    """When the project was deleted (the delete is its last change)."""
    return project.updated_at or project.created_at


def retained_backups(
    deps: Deps,
    project: str | None = None,
    environment: str | None = None,
    status: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> dict[str, Any]:
    """Backups of deleted projects still held (their retention not over); `project` is the
    name the project had."""
    now = deps.clock.now()
    deleted = {p.id: p for p in Project.select().where(Project.status == "deleted")}
    held = [
        pid
        for pid, p in deleted.items()
        if deleted_at(p) + RETENTION > now and project in (None, p.name.split("~")[0])
    ]
    statuses = (status,) if status else ("completed", "failed")
    query = Backup.select().where(Backup.project.in_(held) & Backup.status.in_(statuses))
    if environment:
        query = query.where(Backup.environment == environment)
    total = query.count()
    rows = query.order_by(Backup.created_at.desc(), Backup.id).limit(limit).offset(offset)
    out = []
    for b in rows:
        p = deleted[b.project_id]
        view = backups.backup_view(b)
        view["project"] = p.name.split("~")[0]
        view["project_deleted_at"] = _iso(deleted_at(p))
        view["retained_until"] = _iso(deleted_at(p) + RETENTION)
        out.append(view)
    return {"backups": out, "total": total}


def _pending(kind: str, key: str, value: str) -> bool:
    """An operation of `kind` for this row is already queued or running."""
    return any(
        op.params.get(key) == value
        for op in Operation.select().where(
            (Operation.kind == kind) & Operation.status.in_(("queued", "running"))
        )
    )


def purge_expired(deps: Deps) -> dict[str, Any]:
    """The daily `backup_retention` job: backups and Redis copies of projects deleted more
    than the retention period ago are removed from the storage server."""
    now = deps.clock.now()
    expired = [
        p.id
        for p in Project.select().where(Project.status == "deleted")
        if deleted_at(p) + RETENTION <= now
    ]
    started: list[str] = []
    if not expired:
        return {"started": started}
    with deps.write():
        for b in Backup.select().where(
            Backup.project.in_(expired) & Backup.status.in_(("completed", "failed"))
        ):
            t = BackupTarget.get_or_none(BackupTarget.id == b.target_id)
            if b.barman_id is None or t is None:
                b.status, b.deleted_at = "deleted", now
                b.save()
                continue
            if _pending("backup_delete", "backup_id", b.id):
                continue
            op = operations.create_operation(
                deps, SYSTEM, "backup_delete", [t.storage_server], {"backup_id": b.id},
                project_id=b.project_id,
            )  # fmt: skip
            started.append(op.id)
        for c in RedisCopy.select().where(
            RedisCopy.project.in_(expired) & RedisCopy.status.in_(("completed", "failed"))
        ):
            if _pending("redis_copy_delete", "copy_id", c.id):
                continue
            op = operations.create_operation(
                deps, SYSTEM, "redis_copy_delete", [c.storage_server], {"copy_id": c.id},
                project_id=c.project_id,
            )  # fmt: skip
            started.append(op.id)
    for op_id in started:
        operations.dispatch(deps, op_id)
    return {"started": started}


SCHEDULES: tuple[scheduler.Job, ...] = (
    scheduler.Job(
        name="backup_retention",
        description="Removes backups and Redis copies of projects deleted more than 30 days "
        "ago from the storage server (kept until then, so a deleted project can be restored).",
        interval=dt.timedelta(days=1),
        run=purge_expired,
    ),
)
JOBS = {"redis_copy_delete": redis_copies.DeleteJob()}
