"""Backups: request and response shapes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from codeb.api.shapes import NAME, NULLABLE_TIME, UNSET, Meta, Request, Shape, UnsetType
from codeb.features.projects.schemas import EnvironmentName


class BackupCreateRequest(Request):
    project: Annotated[str, Meta(min_length=1, max_length=100)]
    environment: EnvironmentName
    component: Literal["db"] | UnsetType = UNSET
    # incremental: PostgreSQL 17 block-level, on the latest backup (a full one must exist);
    # differential: the same on the latest full backup (a restore needs only the two).
    type: Literal["full", "incremental", "differential"] | UnsetType = UNSET

    example = {"project": "shop", "environment": "production", "component": "db"}


class RestoreRequest(Request):
    target_time: (
        Annotated[
            str,
            Meta(
                pattern=r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(Z|[+-]00:?00)?$",
                description="UTC, to the second, inside the backup's recoverable window "
                "(422 naming the window otherwise); absent: every WAL received",
            ),
        ]
        | UnsetType
    ) = UNSET
    # project: a deleted project's retained backup as a new project (`project` defaults to
    # the name it had, the only one its database's user and name allow: 422 otherwise).
    into: Literal["new", "in_place", "project"] | UnsetType = UNSET
    project: NAME | UnsetType = UNSET

    example = {"target_time": "2026-11-30T12:00:00Z", "into": "new"}


class Window(Shape):
    earliest: NULLABLE_TIME
    latest: NULLABLE_TIME


class Canary(Shape):
    token: str
    written_at: NULLABLE_TIME


class Backup(Shape):
    id: str
    project_id: str
    environment: str
    component: str
    type: str
    kind: str | None
    status: Literal["running", "completed", "failed", "deleted"]
    barman_id: str | None
    started_at: NULLABLE_TIME
    finished_at: NULLABLE_TIME
    size_bytes: int | None
    wal: dict[str, Any]
    begin_time: NULLABLE_TIME
    end_time: NULLABLE_TIME
    location: str
    operation_id: str | None
    verified_at: NULLABLE_TIME
    error: str | None
    created_at: NULLABLE_TIME
    # The row codeb wrote into the db's codeb_canary table just before this backup (a restore
    # of it holds the row); null for backups the storage server's timers took.
    canary: Canary | None = None
    recoverable_window: Window | UnsetType = UNSET
    target: dict[str, Any] | UnsetType | None = UNSET
    # ?deleted=true: a deleted project's backup, kept until retained_until.
    project: str | UnsetType = UNSET
    project_deleted_at: NULLABLE_TIME | UnsetType = UNSET
    retained_until: NULLABLE_TIME | UnsetType = UNSET


class BackupList(Shape):
    backups: list[Backup]
    total: int


class DrillCanary(Shape):
    expected: str | None
    found: str | None


class Drill(Shape):
    id: str
    backup_id: str
    project_id: str
    environment: str
    component: str
    kind: str
    status: Literal["running", "passed", "failed"]
    server: str | None
    started_at: NULLABLE_TIME
    finished_at: NULLABLE_TIME
    duration_s: float | None
    reason: str | None
    checks: dict[str, Any]
    canary: DrillCanary
    tables: int | None
    rows: int | None
    operation_id: str | None


class DrillList(Shape):
    drills: list[Drill]


class StatusComponent(Shape):
    project_id: str
    project: str | None
    environment: str
    component: Literal["db", "cache"]
    name: str
    status: Literal["ok", "warning", "alarm"]
    reasons: list[str]
    backup: dict[str, Any]
    drill: dict[str, Any]
    wal: dict[str, Any] | UnsetType = UNSET


class StatusEnvironment(Shape):
    project: str | None
    environment: str
    status: Literal["ok", "warning", "alarm"]
    components: list[StatusComponent]


class BackupStatus(Shape):
    status: Literal["ok", "warning", "alarm"]
    checked_at: NULLABLE_TIME
    alarms: int
    warnings: int
    environments: list[StatusEnvironment]


class RedisCopyRequest(Request):
    project: Annotated[str, Meta(min_length=1, max_length=100)]
    environment: EnvironmentName

    example = {"project": "shop", "environment": "production"}


class RedisRestoreRequest(Request):
    into: Literal["new", "in_place"] | UnsetType = UNSET

    example = {"into": "new"}


class RedisCopy(Shape):
    id: str
    project_id: str
    environment: str
    component: str
    source: str
    source_server: str
    storage_server: str
    kind: str
    format: str | None
    status: Literal["running", "completed", "failed", "deleted"]
    size_bytes: int | None
    keys: int | None
    canary: str | None
    started_at: NULLABLE_TIME
    finished_at: NULLABLE_TIME
    verified_at: NULLABLE_TIME
    error: str | None
    operation_id: str | None


class RedisCopyList(Shape):
    copies: list[RedisCopy]
    total: int
