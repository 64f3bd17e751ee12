"""Backup alarms (issue 11): `GET /api/backups/status`, per environment and component, each
part `ok`, `warning` or `alarm` with the reason: the newest backup's age against its
schedule (and whether the newest attempt failed), WAL shipping (is the receiver running on
the storage server, what `barman check` says fails, when WAL last arrived, gaps) and the
last restore drill (result and age). A missing backup, a schedule that did not run, a
stopped receiver or a failed drill is an alarm within one period of the job that sees it:
`backup_wal_check` reads every storage server's receivers each minute.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from codeb.errors import Conflict
from codeb.executor.events import reported
from codeb.executor.worker import describe_failure
from codeb.features.projects import service as projects
from codeb.features.servers import service as servers
from codeb.services import scheduler
from codeb.services.context import Deps
from codeb.store.models import (
    Backup,
    BackupDrill,
    BackupTarget,
    Project,
    RedisCopy,
    WalCheck,
)

LEVELS = ("ok", "warning", "alarm")
# How often each cache component's data is copied to the storage server.
CACHE_SCHEDULE = "hourly"
WAL_CHECK_INTERVAL = dt.timedelta(minutes=1)
# A WAL check older than this is itself a warning: the job has not run.
WAL_CHECK_STALE = 5 * WAL_CHECK_INTERVAL
# The drill schedule (drills.DRILL_INTERVAL); a drill older than twice it is a warning.
DRILL_PERIOD = dt.timedelta(days=1)
_PERIODS = {
    "hourly": dt.timedelta(hours=1),
    "daily": dt.timedelta(days=1),
    "weekly": dt.timedelta(weeks=1),
    "monthly": dt.timedelta(days=31),
}
_EVERY = re.compile(r"^(\d+)\s*(m|min|h|d|w)$")
_UNITS = {"m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def schedule_period(schedule: str | None) -> dt.timedelta:
    """How often a schedule fires: systemd's hourly/daily/weekly/monthly, or `<n>m|h|d|w`;
    anything else (a full OnCalendar expression) counts as daily."""
    value = (schedule or "daily").strip().lower()
    if value in _PERIODS:
        return _PERIODS[value]
    m = _EVERY.match(value)
    if m:
        return dt.timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])
    return _PERIODS["daily"]


def grace(period: dt.timedelta) -> dt.timedelta:
    """Time a scheduled run may take beyond its period (the run itself, timer jitter)."""
    return max(dt.timedelta(minutes=10), period / 12)


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() + "Z" if value else None


def _age(now: dt.datetime, then: dt.datetime | None) -> float | None:
    return round((now - then).total_seconds(), 1) if then else None


def _human(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _part(level: str, reason: str | None, **facts: Any) -> dict[str, Any]:
    return {"status": level, "reason": reason, **facts}


def worst(parts: list[dict[str, Any]]) -> str:
    return max((p["status"] for p in parts), key=LEVELS.index, default="ok")


# -- the parts ---------------------------------------------------------------------------------


def backup_part(
    now: dt.datetime, newest: dt.datetime | None, schedule: str | None, last_failed: Any
) -> dict[str, Any]:
    """The newest completed backup (or copy) against its schedule; a failed attempt newer
    than it is an alarm (a failed upload must not look like a success)."""
    period = schedule_period(schedule)
    facts = {
        "schedule": schedule,
        "period_s": period.total_seconds(),
        "newest_at": _iso(newest),
        "age_s": _age(now, newest),
    }
    if newest is None:
        return _part("alarm", "no completed backup", **facts)
    age = now - newest
    if last_failed is not None:
        when, error = last_failed
        if when is not None and when > newest:
            return _part(
                "alarm", f"the last backup failed ({_iso(when)}): {error or 'no reason given'}",
                **facts,
            )  # fmt: skip
    if age > period + grace(period):
        return _part(
            "alarm",
            f"the newest backup is {_human(age.total_seconds())} old; the {schedule} schedule "
            "did not run",
            **facts,
        )
    return _part("ok", None, **facts)


def wal_part(now: dt.datetime, t: BackupTarget, check: WalCheck | None) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "target_status": t.status,
        "receiver": check.receiver if check else None,
        "checked_at": _iso(check.checked_at) if check else None,
        "last_wal_at": _iso(check.last_wal_at if check else t.wal_last_at),
        "last_wal_age_s": _age(now, check.last_wal_at if check else t.wal_last_at),
        "receiver_restarts": check.failures if check else None,
        "stopped_since": _iso(check.stopped_since) if check else None,
    }
    if t.status != "enabled":
        return _part(
            "alarm", f"WAL streaming is not set up ({t.status}): {t.last_error or 'pending'}",
            **facts,
        )  # fmt: skip
    if check is None:
        return _part("warning", "the WAL receiver has not been checked yet", **facts)
    if now - check.checked_at > WAL_CHECK_STALE:
        age = _human((now - check.checked_at).total_seconds())
        return _part("warning", f"the WAL receiver was last checked {age} ago", **facts)
    if check.receiver != "streaming":
        since = f" since {_iso(check.stopped_since)}" if check.stopped_since else ""
        return _part(
            "alarm",
            f"the WAL receiver on {t.storage_server} is {check.receiver}{since}: "
            f"{check.detail or 'no detail'}",
            **facts,
        )
    if check.detail:
        return _part("alarm", check.detail, **facts)
    return _part("ok", None, **facts)


def drill_part(now: dt.datetime, d: BackupDrill | None) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "drill_id": d.id if d else None,
        "result": d.status if d else None,
        "finished_at": _iso(d.finished_at) if d else None,
        "age_s": _age(now, d.finished_at) if d else None,
        "duration_s": d.duration_s if d else None,
    }
    if d is None:
        return _part("warning", "no restore drill yet", **facts)
    if d.status == "failed":
        return _part("alarm", f"the last restore drill failed: {d.reason}", **facts)
    if d.status == "running":
        return _part("ok", None, **facts)
    if d.finished_at and now - d.finished_at > 2 * DRILL_PERIOD:
        age = _human((now - d.finished_at).total_seconds())
        return _part("warning", f"the last passed restore drill is {age} old", **facts)
    return _part("ok", None, **facts)


def _last_drill(backup_ids: list[str]) -> BackupDrill | None:
    if not backup_ids:
        return None
    return (
        BackupDrill.select()
        .where(BackupDrill.backup_id.in_(backup_ids) & (BackupDrill.status != "running"))
        .order_by(BackupDrill.finished_at.desc(), BackupDrill.id.desc())
        .first()
    )


def db_status(now: dt.datetime, t: BackupTarget) -> dict[str, Any]:
    rows = list(Backup.select().where((Backup.target_id == t.id) & (Backup.status != "deleted")))
    done = [b for b in rows if b.status == "completed"]
    newest = max((b.end_time or b.finished_at for b in done), default=None)
    failed = [b for b in rows if b.status == "failed"]
    last_failed = max(((b.finished_at, b.error) for b in failed if b.finished_at), default=None)
    parts = {
        "backup": backup_part(now, newest, t.schedule, last_failed),
        "wal": wal_part(now, t, WalCheck.get_or_none(WalCheck.target_id == t.id)),
        "drill": drill_part(now, _last_drill([b.id for b in rows])),
    }
    return {
        "project_id": t.project_id,
        "environment": t.environment,
        "component": "db",
        "name": t.name,
        "status": worst(list(parts.values())),
        "reasons": [p["reason"] for p in parts.values() if p["reason"]],
        **parts,
    }


def cache_status(
    now: dt.datetime, project_id: str, environment: str, source: str, schedule: str
) -> dict[str, Any]:
    rows = list(
        RedisCopy.select().where(
            (RedisCopy.project == project_id)
            & (RedisCopy.environment == environment)
            & (RedisCopy.source == source)
            & (RedisCopy.status != "deleted")
        )
    )
    done = [c for c in rows if c.status == "completed"]
    newest = max((c.finished_at for c in done if c.finished_at), default=None)
    last_failed = max(
        ((c.finished_at, c.error) for c in rows if c.status == "failed" and c.finished_at),
        default=None,
    )
    parts = {
        "backup": backup_part(now, newest, schedule, last_failed),
        "drill": drill_part(now, _last_drill([c.id for c in rows])),
    }
    return {
        "project_id": project_id,
        "environment": environment,
        "component": "cache",
        "name": source,
        "status": worst(list(parts.values())),
        "reasons": [p["reason"] for p in parts.values() if p["reason"]],
        **parts,
    }


def backup_status(deps: Deps, project: str | None = None) -> dict[str, Any]:
    """`GET /api/backups/status`: every backed-up component of live projects."""
    now = deps.clock.now()
    query = (
        BackupTarget.select()
        .join(Project, on=(BackupTarget.project == Project.id))
        .where(Project.status != "deleted")
    )
    if project:
        query = query.where(BackupTarget.project == projects.find_project(project).id)
    components = [db_status(now, t) for t in query.order_by(BackupTarget.name)]
    names = {p.id: p.name for p in Project.select(Project.id, Project.name)}
    caches = (
        RedisCopy.select(RedisCopy.project, RedisCopy.environment, RedisCopy.source)
        .join(Project, on=(RedisCopy.project == Project.id))
        .where(Project.status != "deleted")
        .distinct()
    )
    if project:
        caches = caches.where(RedisCopy.project == projects.find_project(project).id)
    for c in caches:
        components.append(cache_status(now, c.project_id, c.environment, c.source, CACHE_SCHEDULE))
    environments: dict[str, dict[str, Any]] = {}
    for comp in components:
        comp["project"] = names.get(comp["project_id"])
        key = f"{comp['project']}/{comp['environment']}"
        env = environments.setdefault(
            key,
            {"project": comp["project"], "environment": comp["environment"], "components": []},
        )
        env["components"].append(comp)
    for env in environments.values():
        env["status"] = worst(env["components"])
    overall = worst(components)
    return {
        "status": overall,
        "checked_at": _iso(now),
        "alarms": sum(c["status"] == "alarm" for c in components),
        "warnings": sum(c["status"] == "warning" for c in components),
        "environments": [environments[k] for k in sorted(environments)],
    }


# -- the WAL check -----------------------------------------------------------------------------


# barman check's name for "is pg_receivewal running" (the JSON output says
# receive_wal_running, the text output "receive-wal running").
RECEIVER_CHECK = "receive_wal_running"
# What the storage server's WAL state module reports when the receiver's bursts keep failing
# (roles/codeb_backup_drill/library/codeb_wal_state.py).
BURSTS_CHECK = "wal_bursts"


def _check_name(name: str) -> str:
    return name.replace("-", "_").replace(" ", "_").lower()


def receiver_of(state: dict[str, Any]) -> tuple[str, str | None]:
    """(receiver, detail) from the storage server's report of one Barman server. Whether
    pg_receivewal runs is what `barman check` says (barman cron may run it too); the
    supervised unit's state says why not."""
    unit = str(state.get("unit") or "unknown")
    failing = {_check_name(k): v for k, v in (state.get("failing") or {}).items()}
    gaps = state.get("gaps") or []
    if RECEIVER_CHECK in failing or (unit != "active" and not state.get("check_rc") == 0):
        failing.pop(RECEIVER_CHECK, None)
        others = f"; barman check also fails: {', '.join(sorted(failing))}" if failing else ""
        receiver = "failed" if unit == "failed" else "stopped"
        return receiver, (
            f"pg_receivewal is not running (codeb-barman-receive-wal is {unit}){others}"
        )
    bursts = failing.pop(BURSTS_CHECK, None)
    if bursts:
        # The receiver runs but cannot fetch: no WAL arrives, as with a stopped one.
        return "failed", f"the WAL receiver's bursts fail: {bursts}"
    problems = [f"barman check fails: {k} ({v})" for k, v in sorted(failing.items())]
    if gaps:
        problems.append(f"WAL segments missing: {', '.join(gaps[:5])}")
    return "streaming", "; ".join(problems) or None


def check_wal(deps: Deps) -> dict[str, Any]:
    """The `backup_wal_check` job: read every enabled target's receiver on its storage
    server into `wal_checks` (a stopped receiver is an alarm one minute later at most)."""
    targets = list(BackupTarget.select().where(BackupTarget.status == "enabled"))
    if not targets:
        return {"targets": 0, "note": "nothing to check"}
    by_storage: dict[str, list[BackupTarget]] = {}
    for t in targets:
        by_storage.setdefault(t.storage_server, []).append(t)
    summary: dict[str, Any] = {"targets": len(targets), "streaming": 0, "errors": {}}
    for storage, group in sorted(by_storage.items()):
        now = deps.clock.now()
        try:
            outcome, records = servers.run_now(
                deps,
                "backup_drill.yml",
                [storage],
                extravars={
                    "codeb_backup_drill_action": "wal",
                    "codeb_backup_drill_names": [t.name for t in group],
                },
                timeout_s=300,
            )
            error = None if outcome.status == "successful" else describe_failure(outcome, records)
            states = reported(records, "codeb_wal_state") if error is None else {}
        except Conflict as exc:  # the storage server is not registered or not ready
            error, states = f"the storage server could not be read: {exc.message}", {}
        with deps.write():
            for t in group:
                state = states.get(t.name) if isinstance(states, dict) else None
                if state is None:
                    receiver, detail, last, restarts = "unknown", error, None, 0
                else:
                    receiver, detail = receiver_of(state)
                    stamp = state.get("last_wal_time")
                    last = (
                        dt.datetime.fromtimestamp(stamp, dt.UTC).replace(tzinfo=None)
                        if stamp
                        else None
                    )
                    restarts = int(state.get("restarts") or 0)
                row = WalCheck.get_or_none(WalCheck.target_id == t.id)
                if row is None:
                    row = WalCheck(target_id=t.id)
                    row._new = True
                stopped_since = None
                if receiver != "streaming":
                    stopped_since = (
                        row.stopped_since
                        if getattr(row, "receiver", None) not in (None, "streaming")
                        and row.stopped_since
                        else now
                    )
                row.checked_at, row.receiver, row.detail = now, receiver, detail
                row.last_wal_at, row.failures, row.stopped_since = last, restarts, stopped_since
                row.save(force_insert=getattr(row, "_new", False))
                summary["streaming"] += receiver == "streaming"
        if error:
            summary["errors"][storage] = error
    return summary


SCHEDULES: tuple[scheduler.Job, ...] = (
    scheduler.Job(
        name="backup_wal_check",
        description="Reads each storage server's WAL receivers (unit state, barman check, "
        "newest WAL, gaps) so GET /api/backups/status alarms within a minute.",
        interval=WAL_CHECK_INTERVAL,
        run=check_wal,
    ),
)
