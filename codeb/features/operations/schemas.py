"""Operations (long-running runs) and their events: response shapes."""

from __future__ import annotations

from typing import Any, Literal

from codeb.api.declare import paging, query
from codeb.api.shapes import NULLABLE_TIME, STRINGS, TIMESTAMP, UNSET, Shape, UnsetType, described
from codeb.executor.worker import STATUSES
from codeb.services.operations import MAX_WAIT_S

OperationStatus = Literal[STATUSES]  # type: ignore[valid-type]


class Operation(Shape):
    id: str
    kind: str
    status: OperationStatus
    targets: STRINGS
    project_id: str | UnsetType | None = UNSET
    server_id: int | UnsetType | None = UNSET
    requested_by: str | UnsetType = UNSET
    key_name: str | UnsetType | None = UNSET
    params: dict[str, Any] | UnsetType = UNSET
    created_at: TIMESTAMP
    started_at: NULLABLE_TIME | UnsetType = UNSET
    finished_at: NULLABLE_TIME | UnsetType = UNSET
    duration_s: float | UnsetType | None = UNSET
    rc: int | UnsetType | None = UNSET
    error: str | UnsetType | None = UNSET
    recap: described(  # type: ignore[valid-type]
        dict[str, dict[str, Any]], "per host: ok, changed, failures, dark, skipped, ..."
    )
    result: dict[str, Any] | UnsetType = UNSET


class OperationList(Shape):
    operations: list[Operation]
    total: int


class Event(Shape):
    seq: int
    event: str
    host: str | UnsetType | None = UNSET
    task: str | UnsetType | None = UNSET
    changed: bool | UnsetType = UNSET
    failed: bool | UnsetType = UNSET
    duration: float | UnsetType | None = UNSET
    data: dict[str, Any] | UnsetType = UNSET


class OperationEvents(Shape):
    operation_id: str
    status: OperationStatus
    finished: bool
    next_after: int
    events: list[Event]


LIST_QUERY = (
    *paging(default=50),
    query("status", enum=list(STATUSES)),
    query("kind", maxLength=64),
)
EVENTS_QUERY = (
    query("after", type="integer", minimum=0, maximum=2**31, default=0),
    query("limit", type="integer", minimum=1, maximum=5000, default=500),
    query("wait", type="integer", minimum=0, maximum=MAX_WAIT_S, default=0),
)
