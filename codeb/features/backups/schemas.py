"""Backups: request and response shapes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from codeb.api.shapes import NULLABLE_TIME, UNSET, Meta, Request, Shape, UnsetType
from codeb.features.projects.schemas import EnvironmentName


class BackupCreateRequest(Request):
    project: Annotated[str, Meta(min_length=1, max_length=100)]
    environment: EnvironmentName
    component: Literal["db"] | UnsetType = UNSET
    type: Literal["full"] | UnsetType = UNSET

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
    into: Literal["new", "in_place"] | UnsetType = UNSET

    example = {"target_time": "2026-11-30T12:00:00Z", "into": "new"}


class Window(Shape):
    earliest: NULLABLE_TIME
    latest: NULLABLE_TIME


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
    recoverable_window: Window | UnsetType = UNSET
    target: dict[str, Any] | UnsetType | None = UNSET


class BackupList(Shape):
    backups: list[Backup]
    total: int
