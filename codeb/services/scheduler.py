"""Periodic work in the serving process.

Features declare jobs (a `Job` in their declarations, gathered at start-up into
`deps.schedules`); the `Scheduler` runs each one when it is due. The state of every job is a
row of `schedules`: a process runs a job only after claiming it with one conditional UPDATE
(due now, and no live lease), so two codeb processes over one database never run a job twice
for one due time; a holder that crashed leaves a lease that expires and is taken over. Time
comes from `deps.clock`: `tick()` runs what is due now, so a test drives it with a
FrozenClock; the thread only calls `tick()` every `CODEB_SCHEDULER_TICK_S` seconds. Each run
is a row of the operation log (`scheduled_job`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from codeb.config import SettingError, env_name, parse_interval
from codeb.protection import audit
from codeb.services.context import SYSTEM, Deps
from codeb.store.models import Schedule

log = logging.getLogger("codeb.scheduler")

LOG_OPERATION = "scheduled_job"
# A log row and the API show at most this much of a job's result and error.
MAX_RESULT_CHARS = 2000
MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class Job:
    """A periodic job. `run(deps)` does the work and returns a small JSON result (never
    secrets); raising fails the run, which is retried one interval later. `lease` is how
    long a run may take before another process may assume its holder died."""

    name: str
    description: str
    interval: dt.timedelta
    run: Callable[[Deps], dict[str, Any]]
    enabled: bool = True
    lease: dt.timedelta = dt.timedelta(minutes=10)


def by_name(jobs: Iterable[Job]) -> dict[str, Job]:
    """The jobs by name; two jobs with one name are a wiring mistake."""
    out: dict[str, Job] = {}
    for job in jobs:
        if job.name in out:
            raise ValueError(f"two scheduled jobs are named {job.name!r}")
        out[job.name] = job
    return out


def configured(jobs: dict[str, Job], schedules: dict[str, Any]) -> dict[str, Job]:
    """The jobs with the operator's intervals (CODEB_SCHEDULES) applied; an unknown name
    stops the start with a message naming the setting."""
    unknown = sorted(set(schedules) - set(jobs))
    if unknown:
        raise SettingError(
            f"{env_name('schedules')}: no job named {', '.join(unknown)} "
            f"(jobs: {', '.join(sorted(jobs))})"
        )
    out = {}
    for name, job in jobs.items():
        if name in schedules:
            interval = parse_interval(schedules[name])
            if interval is None:
                job = dataclasses.replace(job, enabled=False)
            else:
                job = dataclasses.replace(job, interval=interval)
        out[name] = job
    return out


def _short(value: Any, limit: int = MAX_RESULT_CHARS) -> Any:
    # Through JSON and back: what is stored is exactly what the API will show.
    text = json.dumps(value, default=str, separators=(",", ":"))
    return json.loads(text) if len(text) <= limit else {"truncated": text[:limit]}


class Scheduler:
    """Runs the declared jobs (`deps.schedules`, or `jobs`). `tick()` is the whole algorithm;
    `start()` adds a daemon thread that calls it every `tick_s` seconds until `shutdown()`."""

    def __init__(self, deps: Deps, jobs: dict[str, Job] | None = None) -> None:
        self._deps = deps
        declared = by_name(deps.schedules) if jobs is None else jobs
        self.jobs = configured(declared, deps.settings.schedules)
        # Unique per instance: two schedulers in one process are two lease holders.
        self.owner = f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(4)}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tick_lock = threading.Lock()
        self._synced = False

    # -- the algorithm --------------------------------------------------------------------

    def sync(self) -> None:
        """Give every job its row (first run due now) and pull a stored next run that is
        further away than the job's interval (the operator shortened it) back in."""
        with self._connection():
            now = self._deps.clock.now()
            with self._deps.write():
                for job in self.jobs.values():
                    Schedule.insert(name=job.name, next_run_at=now).on_conflict_ignore().execute()
                    Schedule.update(next_run_at=now + job.interval).where(
                        (Schedule.name == job.name) & (Schedule.next_run_at > now + job.interval)
                    ).execute()
        self._synced = True

    @contextlib.contextmanager
    def _connection(self) -> Iterator[None]:
        """This thread's connection: opened (and closed after) only if it has none."""
        db = self._deps.db
        opened = db.is_closed()
        if opened:
            db.connect()
        try:
            yield
        finally:
            if opened:
                db.close()

    def tick(self) -> list[str]:
        """Run every enabled job that is due now and that this process could claim; returns
        their names. Opens (and closes) a connection of its own if the thread has none."""
        with self._tick_lock, self._connection():
            if not self._synced:
                self.sync()
            ran, due = [], self._due()
            for job in self.jobs.values():
                if job.enabled and job.name in due and self._claim(job):
                    self._run(job)
                    ran.append(job.name)
            return ran

    def _due(self) -> set[str]:
        """A plain read first: most ticks find nothing due and take no write lock."""
        now = self._deps.clock.now()
        query = Schedule.select(Schedule.name).where(
            (Schedule.next_run_at <= now)
            & (Schedule.lease_owner.is_null() | (Schedule.lease_expires_at <= now))
        )
        return {row.name for row in query}

    def _claim(self, job: Job) -> bool:
        """One conditional UPDATE: it matches only if the job is due and no live lease holds
        it, so of two processes ticking at once exactly one gets the row."""
        now = self._deps.clock.now()
        with self._deps.write():
            claimed = (
                Schedule.update(
                    lease_owner=self.owner,
                    lease_expires_at=now + job.lease,
                    last_started_at=now,
                )
                .where(
                    (Schedule.name == job.name)
                    & (Schedule.next_run_at <= now)
                    & (Schedule.lease_owner.is_null() | (Schedule.lease_expires_at <= now))
                )
                .execute()
            )
        return claimed == 1

    def _run(self, job: Job) -> None:
        started = self._deps.clock.now()
        try:
            result, error = _short(job.run(self._deps) or {}), None
        except Exception as exc:  # any failure: recorded, retried next interval
            log.exception("scheduled job %s failed", job.name)
            result, error = None, f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        now = self._deps.clock.now()
        status = "failed" if error else "succeeded"
        with self._deps.write():
            # Only the lease holder records; a run that outlived its lease (taken over by
            # another process) still leaves its log row.
            Schedule.update(
                next_run_at=started + job.interval,
                last_finished_at=now,
                last_status=status,
                last_result=result,
                last_error=error,
                lease_owner=None,
                lease_expires_at=None,
            ).where((Schedule.name == job.name) & (Schedule.lease_owner == self.owner)).execute()
            audit.record(
                self._deps.db,
                operation=LOG_OPERATION,
                danger_level=0,
                status="failed" if error else "executed",
                requested_by=SYSTEM.requested_by,
                key_name="scheduler",
                now=now,
                target=job.name,
                details={"job": job.name, "status": status, "result": result, "error": error},
                executed=not error,
            )

    # -- the thread ----------------------------------------------------------------------

    def start(self, tick_s: float) -> None:
        """Give every job its row, then tick every `tick_s` seconds in a daemon thread (0: no
        thread; `tick()` still works)."""
        self.sync()
        if tick_s <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._loop, args=(tick_s,), name="codeb-scheduler", daemon=True
        )
        self._thread.start()

    def _loop(self, tick_s: float) -> None:
        # wait() returns at once when shutdown() sets the event: a stop never waits a tick.
        while not self._stop.wait(tick_s):
            try:
                self.tick()
            except Exception:  # a database hiccup must not end periodic work
                log.exception("scheduler tick failed")

    def shutdown(self, timeout: float = 30) -> None:
        """Stop the thread; a job running now finishes first (bounded by `timeout`)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None


# -- what GET /api/schedules shows -------------------------------------------------------


def views(jobs: dict[str, Job], now: dt.datetime) -> list[dict[str, Any]]:
    """Each job with its row, by name. A lease past its expiry (a holder that died) is not
    shown as running."""
    rows = {r.name: r for r in Schedule.select().where(Schedule.name.in_(list(jobs)))}
    return [_view(job, rows.get(job.name), now) for job in sorted(jobs.values(), key=_name)]


def _name(job: Job) -> str:
    return job.name


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat() + "Z"


def _view(job: Job, row: Schedule | None, now: dt.datetime) -> dict[str, Any]:
    running = (
        row is not None
        and row.lease_owner is not None
        and row.lease_expires_at is not None
        and row.lease_expires_at > now
    )
    return {
        "name": job.name,
        "description": job.description,
        "interval_s": int(job.interval.total_seconds()),
        "enabled": job.enabled,
        "running": running,
        "last_run": None
        if row is None or row.last_started_at is None
        else {
            "started_at": _iso(row.last_started_at),
            "finished_at": None if running else _iso(row.last_finished_at),
            "status": "running" if running else row.last_status,
            "result": None if running else row.last_result,
            "error": None if running else row.last_error,
        },
        "next_run_at": _iso(row.next_run_at) if job.enabled and row is not None else None,
    }
