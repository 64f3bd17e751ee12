"""The figures codeb's own state holds, read at scrape time from the database (so they are
right whichever codeb process did the work, and survive restarts): operations, the runner's
queue, the protection queue, servers and scheduled jobs. A handful of aggregate queries per
scrape; no SSH, no playbook."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from peewee import Case, fn
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.metrics_core import Metric

from codeb.metrics import FeatureCollector
from codeb.store.db import is_sqlite
from codeb.store.models import Operation, OperationLog, ProtectionQueue, Schedule, Server

# Operation durations range from a second (a no-op container action) to the run timeout.
DURATION_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
FINISHED = ("succeeded", "failed", "canceled", "timeout", "interrupted")
SCHEDULED_JOB_LOG = "scheduled_job"  # codeb.services.scheduler.LOG_OPERATION
LEVELS = ("SAFE", "LOW", "MEDIUM", "HIGH", "CRITICAL")


def epoch(value: dt.datetime | None) -> float | None:
    """A stored (naive UTC) datetime as Unix seconds."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


def _seconds_between(db: Any, start: Any, end: Any) -> Any:
    if is_sqlite(db):
        return (fn.julianday(end) - fn.julianday(start)) * 86400.0
    return fn.date_part("epoch", end - start)


def operations(deps: Any) -> Iterator[Metric]:
    db = deps.db
    total = CounterMetricFamily(
        "codeb_operations",
        "Operations (playbook runs) by kind and status; finished ones by their outcome",
        labels=["kind", "status"],
    )
    for kind, status, count in (
        Operation.select(Operation.kind, Operation.status, fn.COUNT(Operation.id))
        .group_by(Operation.kind, Operation.status)
        .tuples()
    ):
        total.add_metric([kind, status], count)
    yield total

    seconds = _seconds_between(db, Operation.started_at, Operation.finished_at)
    columns = [Operation.kind, Operation.status, fn.COUNT(Operation.id), fn.SUM(seconds)]
    columns += [fn.SUM(Case(None, [(seconds <= le, 1)], 0)) for le in DURATION_BUCKETS]
    histogram = HistogramMetricFamily(
        "codeb_operation_duration_seconds",
        "How long finished operations ran (started to finished), by kind and outcome",
        labels=["kind", "outcome"],
    )
    query = (
        Operation.select(*columns)
        .where(
            Operation.status.in_(FINISHED),
            Operation.started_at.is_null(False),
            Operation.finished_at.is_null(False),
        )
        .group_by(Operation.kind, Operation.status)
        .tuples()
    )
    for kind, status, count, total_s, *in_buckets in query:
        buckets = [
            (repr(float(le)), int(n or 0))
            for le, n in zip(DURATION_BUCKETS, in_buckets, strict=True)
        ]
        buckets.append(("+Inf", int(count)))
        histogram.add_metric([kind, status], buckets, sum_value=float(total_s or 0.0))
    yield histogram

    runner = GaugeMetricFamily(
        "codeb_runner_operations",
        "Operations waiting for a runner (queued) or holding one (running)",
        labels=["state"],
    )
    waiting = dict.fromkeys(("queued", "running"), 0)
    for status, count in (
        Operation.select(Operation.status, fn.COUNT(Operation.id))
        .where(Operation.status.in_(tuple(waiting)))
        .group_by(Operation.status)
        .tuples()
    ):
        waiting[status] = count
    for state, count in waiting.items():
        runner.add_metric([state], count)
    yield runner
    oldest = (
        Operation.select(fn.MIN(Operation.created_at)).where(Operation.status == "queued").scalar()
    )
    wait = GaugeMetricFamily(
        "codeb_runner_oldest_queued_age_seconds",
        "How long the oldest queued operation has waited for a runner (0: none waits)",
    )
    wait.add_metric([], _age(deps, oldest))
    yield wait


def _age(deps: Any, since: dt.datetime | None) -> float:
    if since is None:
        return 0.0
    return max(0.0, (deps.clock.now() - since).total_seconds())


def protection_queue(deps: Any) -> Iterator[Metric]:
    pending = GaugeMetricFamily(
        "codeb_protection_queue_pending",
        "Requests waiting for people (confirmation, approval, cooldown), by operation and level",
        labels=["operation", "level"],
    )
    age = GaugeMetricFamily(
        "codeb_protection_queue_oldest_pending_age_seconds",
        "Age of the oldest pending request, by operation",
        labels=["operation"],
    )
    rows = (
        ProtectionQueue.select(
            ProtectionQueue.operation,
            ProtectionQueue.danger_level,
            fn.COUNT(ProtectionQueue.id),
            fn.MIN(ProtectionQueue.created_at),
        )
        .where(ProtectionQueue.status == "pending")
        .group_by(ProtectionQueue.operation, ProtectionQueue.danger_level)
        .tuples()
    )
    oldest: dict[str, dt.datetime] = {}
    for operation, level, count, first in rows:
        name = LEVELS[level] if 0 <= level < len(LEVELS) else str(level)
        pending.add_metric([operation, name], count)
        if first is not None and (operation not in oldest or first < oldest[operation]):
            oldest[operation] = first
    for operation, first in oldest.items():
        age.add_metric([operation], _age(deps, first))
    yield pending
    yield age


def _last_stats() -> dict[str, tuple[float, dict]]:
    """The statistics `GET /api/servers/:ip/stats` read last, per server, with their
    monotonic time. A scrape never reads a host itself."""
    from codeb.features.servers import service as servers

    cache = getattr(servers, "_STATS_CACHE", None)
    lock = getattr(servers, "_STATS_LOCK", None)
    if not isinstance(cache, dict) or lock is None:
        return {}
    with lock:
        return dict(cache)


def fleet(deps: Any) -> Iterator[Metric]:
    import time

    status = GaugeMetricFamily(
        "codeb_server_status",
        "1 for each server's registry status (ready, unreachable, bootstrap_failed, ...)",
        labels=["server", "role", "status"],
    )
    reachable = GaugeMetricFamily(
        "codeb_server_reachable",
        "1 if codeb's last contact with the server worked, 0 if the server was unreachable",
        labels=["server", "role"],
    )
    names: dict[str, str] = {}
    for name, role, state in (
        Server.select(Server.name, Server.role, Server.status)
        .where(Server.status != "deleted")
        .order_by(Server.name)
        .tuples()
    ):
        names[name] = role
        status.add_metric([name, role, state], 1)
        reachable.add_metric([name, role], 0 if state == "unreachable" else 1)
    yield status
    yield reachable

    figures = {
        "codeb_server_cpu_percent": ("CPU busy (last read)", ("cpu", "percent")),
        "codeb_server_load1": ("1-minute load average (last read)", ("load", "1m")),
        "codeb_server_memory_used_bytes": ("Memory in use (last read)",
                                           ("memory", "used_bytes")),
        "codeb_server_memory_total_bytes": ("Memory (last read)", ("memory", "total_bytes")),
        "codeb_server_disk_used_bytes": ("Disk in use on / (last read)", ("disk", "used_bytes")),
        "codeb_server_disk_total_bytes": ("Disk size of / (last read)", ("disk", "total_bytes")),
        "codeb_server_containers_running": ("Containers running (last read)",
                                            ("containers", "running")),
    }  # fmt: skip
    families = {
        name: GaugeMetricFamily(name, text, labels=["server"])
        for name, (text, _) in figures.items()
    }
    age = GaugeMetricFamily(
        "codeb_server_stats_age_seconds",
        "How old the last statistics read from the server are",
        labels=["server"],
    )
    now = time.monotonic()
    for name, (read_at, stats) in sorted(_last_stats().items()):
        if name not in names:
            continue
        age.add_metric([name], max(0.0, now - read_at))
        for metric, (_, (group, key)) in figures.items():
            value = (stats.get(group) or {}).get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                families[metric].add_metric([name], float(value))
    yield from families.values()
    yield age


def schedules(deps: Any) -> Iterator[Metric]:
    last_success = GaugeMetricFamily(
        "codeb_scheduler_job_last_success_timestamp_seconds",
        "When each periodic job last finished successfully (Unix time; absent: never)",
        labels=["job"],
    )
    last_failed = GaugeMetricFamily(
        "codeb_scheduler_job_last_run_failed",
        "1 if the job's last run failed",
        labels=["job"],
    )
    next_run = GaugeMetricFamily(
        "codeb_scheduler_job_next_run_timestamp_seconds",
        "When each periodic job is due next (Unix time)",
        labels=["job"],
    )
    succeeded = dict(
        OperationLog.select(OperationLog.target, fn.MAX(OperationLog.created_at))
        .where(OperationLog.operation == SCHEDULED_JOB_LOG, OperationLog.status == "executed")
        .group_by(OperationLog.target)
        .tuples()
    )
    for row in Schedule.select().order_by(Schedule.name):
        when = succeeded.get(row.name)
        if row.last_status == "succeeded" and row.last_finished_at is not None:
            when = max(filter(None, (when, row.last_finished_at)))
        if when is not None:
            last_success.add_metric([row.name], epoch(when) or 0.0)
        last_failed.add_metric([row.name], 1 if row.last_status == "failed" else 0)
        next_run.add_metric([row.name], epoch(row.next_run_at) or 0.0)
    yield last_success
    yield last_failed
    yield next_run


def collect(deps: Any) -> Iterator[Metric]:
    yield from operations(deps)
    yield from protection_queue(deps)
    yield from fleet(deps)
    yield from schedules(deps)


STATE = FeatureCollector(
    "state",
    collect,
    "operations, runner queue, protection queue, servers and scheduled jobs, from the database",
)
