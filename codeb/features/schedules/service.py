"""Periodic work as the API sees it: every job's last and next run, and "run it now" (which
goes through the Protection Layer like every other change)."""

from __future__ import annotations

from typing import Any

from codeb.errors import Conflict, NotFound
from codeb.protection.tokens import Target
from codeb.services import gate, scheduler
from codeb.services.context import Actor, Deps
from codeb.store.models import Schedule


def _jobs(deps: Deps) -> dict[str, scheduler.Job]:
    if deps.scheduler is not None:
        return deps.scheduler.jobs
    # An app built without the runtime: the same jobs, nothing running them here.
    return scheduler.configured(scheduler.by_name(deps.schedules), deps.settings.schedules)


def list_schedules(deps: Deps) -> dict[str, Any]:
    """Every job: its interval, whether it runs, its last run and its next run."""
    return {"schedules": scheduler.views(_jobs(deps), deps.clock.now())}


def run_now(
    deps: Deps,
    actor: Actor,
    name: str,
    confirmation: gate.Confirmation | None = None,
) -> gate.Answer:
    """Make a job due now (schedule_run, LOW): the next tick of a scheduler runs it, under
    the same lease as a periodic run, so it never runs twice at once. A run in progress
    counts as that run."""
    job = _jobs(deps).get(name)
    if job is None:
        raise NotFound(f"no scheduled job named {name!r}", {"job": name})
    if not job.enabled:
        raise Conflict(f"{name} is turned off (CODEB_SCHEDULES)", {"job": name})
    return gate.guard(
        deps,
        actor,
        "schedule_run",
        Target("schedule", name, name),
        {"job": name},
        effect=f"Runs the periodic job {name} at the scheduler's next tick: {job.description}",
        confirmation=confirmation,
    )


def _execute_run_now(deps: Deps, actor: Actor, target: Target, params: dict) -> dict:
    name = params["job"]
    now = deps.clock.now()
    Schedule.insert(name=name, next_run_at=now).on_conflict_ignore().execute()
    Schedule.update(next_run_at=now).where(Schedule.name == name).execute()
    jobs = _jobs(deps)
    if name not in jobs:  # confirmed from a queue entry after the job went away
        return {}
    return {"schedule": scheduler.views({name: jobs[name]}, now)[0]}


APPLIERS: dict[str, gate.Applier] = {"schedule_run": _execute_run_now}
