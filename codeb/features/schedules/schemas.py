"""Periodic jobs as the API shows them: response shapes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from codeb.api.shapes import NULLABLE_TIME, TIMESTAMP, Meta, Shape


class LastRun(Shape):
    started_at: TIMESTAMP
    finished_at: NULLABLE_TIME
    status: Literal["running", "succeeded", "failed"] | None
    result: dict[str, Any] | None
    error: str | None


class Schedule(Shape):
    name: str
    description: str
    interval_s: Annotated[int, Meta(ge=1)]
    enabled: bool
    running: Annotated[bool, Meta(description="a process holds its lease now")]
    last_run: LastRun | None
    next_run_at: Annotated[
        str | None,
        Meta(
            description="null while the job is disabled (CODEB_SCHEDULES)",
            extra_json_schema={"format": "date-time"},
        ),
    ]


class ScheduleDue(Shape):
    schedule: Schedule


class ScheduleList(Shape):
    schedules: list[Schedule]
