"""Periodic jobs as the API sees them: every job's last and next run, and "run it now"
(schedule_run). The scheduler itself is codeb.services.scheduler; features declare their
jobs with `config.add_schedule(Job(...))`."""

from __future__ import annotations

from codeb.api.declare import Op, answer, path
from codeb.features.protection.schemas import NOT_YET, ProtectionExecuted
from codeb.features.schedules import schemas, service
from codeb.wiring import Configurator


def includeme(config: Configurator) -> None:
    # Imported here so a service import never pulls in Falcon (the HTTP layer).
    from codeb.features.schedules import api

    config.add_appliers(service.APPLIERS)
    config.add_route(
        "/api/schedules",
        api.Schedules,
        get=Op(
            "Periodic jobs: interval, last run (result or error) and next run",
            {200: answer(schemas.ScheduleList, "every declared job, by name")},
        ),
    )
    config.add_route(
        "/api/schedules/{job}/run",
        api.ScheduleRun,
        params=(path("job"),),
        post=Op(
            "Run a periodic job at the scheduler's next tick (schedule_run, LOW); the same "
            "lease as its periodic runs keeps it from running twice at once",
            {
                200: answer(
                    (schemas.ScheduleDue, ProtectionExecuted),
                    "due now (with X-Confirm-Token: the executed envelope)",
                ),
                202: answer(NOT_YET, "not executed yet: a confirm token or a queue entry"),
            },
            (403, 404, 409, 410),
            guarded=True,
        ),
    )
