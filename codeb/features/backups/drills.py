"""Restore drills (issue 11): a backup counts as verified only after it was restored into a
scratch PostgreSQL container on the storage server and checked there (never on the db
host): it accepts connections, `barman verify-backup` (pg_verifybackup against the backup's
manifest) passes, the canary row codeb wrote just before the backup is present with the
recorded value (the point in time, not only the files), and its tables and rows are
counted. Each drill is a `backup_drills` row (result, reason, every check, duration); only a
passed drill sets `backups.verified_at` (which `backup_verified` reads), a failed one clears
it. `POST /api/backups/:id/verify` (backup_verify, LOW) and the daily `backup_drills` job
(the newest completed backup of each db) start them."""

from __future__ import annotations

import datetime as dt
import secrets
import time
from typing import Any

from codeb.errors import Conflict, NotFound, ValidationFailed
from codeb.executor.events import reported
from codeb.executor.runner import PlaybookRun
from codeb.executor.worker import JobResult, RunContext, describe_failure
from codeb.features.backups import service as backups
from codeb.features.projects import service as projects
from codeb.protection.tokens import Target
from codeb.services import fleet, gate, operations, scheduler
from codeb.services.context import SYSTEM, Actor, Deps
from codeb.store.models import Backup, BackupDrill, BackupTarget, Project

DRILL_INTERVAL = dt.timedelta(days=1)
# Checks in the order a reason names the first that failed.
CHECKS = ("verify_backup", "recover", "connects", "canary_table", "canary", "counts")


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() + "Z" if value else None


def new_drill_id() -> str:
    """Ids sort by creation (the wall clock's milliseconds first): the newest of drills
    finished within one second (or under a frozen test clock) is the one with the greatest."""
    return f"dr_{int(time.time() * 1000):012x}{secrets.token_hex(4)}"


def drill_view(d: BackupDrill) -> dict[str, Any]:
    return {
        "id": d.id,
        "backup_id": d.backup_id,
        "project_id": d.project_id,
        "environment": d.environment,
        "component": d.component,
        "kind": d.kind,
        "status": d.status,
        "server": d.server,
        "started_at": _iso(d.started_at),
        "finished_at": _iso(d.finished_at),
        "duration_s": d.duration_s,
        "reason": d.reason,
        "checks": d.checks or {},
        "canary": {"expected": d.canary_expected, "found": d.canary_found},
        "tables": d.tables_count,
        "rows": d.rows_count,
        "operation_id": d.operation_id,
    }


def expected_canary(b: Backup) -> str | None:
    """The canary value recorded on the backup row when it was taken (None for a backup
    taken before codeb wrote canaries)."""
    value = getattr(b, "canary", None)
    return str(value) if value not in (None, "") else None


def list_drills(backup_id: str, limit: int = 20) -> dict[str, Any]:
    backups.find_backup(backup_id)
    rows = (
        BackupDrill.select()
        .where(BackupDrill.backup_id == backup_id)
        .order_by(BackupDrill.created_at.desc(), BackupDrill.id.desc())
        .limit(limit)
    )
    return {"drills": [drill_view(d) for d in rows]}


# -- starting one ------------------------------------------------------------------------------


def verify_backup(
    deps: Deps,
    actor: Actor,
    backup_id: str,
    confirmation: gate.Confirmation | None = None,
    kind: str = "manual",
) -> gate.Answer:
    """`POST /api/backups/:id/verify` (backup_verify, LOW): a restore drill of this backup."""
    b = backups.find_backup(backup_id)
    if b.status != "completed":
        raise Conflict(f"backup {b.id} is {b.status}, not completed", {"status": b.status})
    if b.barman_id is None or BackupTarget.get_or_none(BackupTarget.id == b.target_id) is None:
        raise Conflict(f"backup {b.id} is on no storage server", {"backup_id": b.id})
    if kind not in ("manual", "scheduled"):
        raise ValidationFailed("kind must be manual or scheduled", {"kind": kind})
    return gate.guard(
        deps,
        actor,
        "backup_verify",
        Target("backup", b.id, b.id, b.project_id, b.environment),
        {"backup_id": b.id, "kind": kind},
        effect=f"Restores backup {b.id} ({b.environment}) into a scratch container on the "
        "storage server, checks it and removes the container; nothing live is touched.",
        confirmation=confirmation,
        success_status=202,
    )


def _execute_verify(deps: Deps, actor: Actor, target: Target, params: dict) -> dict:
    b = backups.find_backup(params["backup_id"])
    t = BackupTarget.get_by_id(b.target_id)
    now = deps.clock.now()
    d = BackupDrill.create(
        id=new_drill_id(),
        project=b.project_id,
        environment=b.environment,
        component="db",
        backup_id=b.id,
        kind=params.get("kind", "manual"),
        status="running",
        server=t.storage_server,
        canary_expected=expected_canary(b),
        created_at=now,
    )
    op = operations.create_operation(
        deps, actor, "backup_drill", [t.storage_server], {"drill_id": d.id},
        project_id=b.project_id,
    )  # fmt: skip
    d.operation_id = op.id
    d.save()
    return {"drill": drill_view(d), "operation": operations.operation_view(op)}


# -- judging one -------------------------------------------------------------------------------


def judge(
    report: dict[str, Any], expected: str | None
) -> tuple[bool, str | None, dict, str | None]:
    """(passed, reason, checks, canary found) from the module's report: every check must
    pass and, when a canary was recorded with the backup, a canary row must hold it."""
    checks: dict[str, dict[str, Any]] = {
        k: {"ok": bool(v.get("ok")), "detail": str(v.get("detail") or "")[-1500:]}
        for k, v in (report.get("checks") or {}).items()
        if isinstance(v, dict)
    }
    found: str | None = None
    rows = report.get("canary")
    if checks.get("canary_table", {}).get("ok"):
        values = [
            str(v)
            for row in (rows if isinstance(rows, list) else [])
            if isinstance(row, dict)
            for v in row.values()
            if v is not None
        ]
        if expected is None:
            checks["canary"] = {"ok": True, "detail": "no canary was recorded with this backup"}
        elif expected in values:
            found = expected
            checks["canary"] = {"ok": True, "detail": ""}
        else:
            checks["canary"] = {
                "ok": False,
                "detail": f"no codeb_canary row holds {expected!r}"
                + (f" (found {', '.join(values[-3:])})" if values else " (the table is empty)"),
            }
    elif "canary_table" in checks and expected is None:
        # A backup from before canaries: no table to find is what is expected.
        checks["canary_table"]["ok"] = True
        checks["canary_table"]["detail"] = "no canary was recorded with this backup"
    for name in ("verify_backup", "recover", "connects", "counts"):
        if name not in checks:
            checks[name] = {"ok": False, "detail": "not reached"}
    order = [*CHECKS, *sorted(set(checks) - set(CHECKS))]
    failed = [name for name in order if name in checks and not checks[name]["ok"]]
    if not failed:
        return True, None, checks, found
    first = failed[0]
    detail = checks[first]["detail"].strip().splitlines()
    reason = f"{first} failed" + (f": {detail[-1][:300]}" if detail else "")
    if first == "verify_backup" and detail:
        # pg_verifybackup names the damaged file early; its last line is a summary.
        reason = f"verify_backup failed: {' / '.join(x.strip() for x in detail[-3:])[:500]}"
    return False, reason, checks, found


class DrillJob:
    def run(self, ctx: RunContext) -> JobResult:
        deps = ctx.deps
        d = BackupDrill.get_by_id(ctx.operation.params["drill_id"])
        b = Backup.get_by_id(d.backup_id)
        t = BackupTarget.get_by_id(b.target_id)
        # A deleted project's name carries `~<id>`; its db user and database kept the name.
        name = Project.get_by_id(b.project_id).name.split("~")[0]
        with deps.write():
            d.started_at = deps.clock.now()
            d.save()
        outcome, records = ctx.run(
            PlaybookRun(
                "backup_drill.yml",
                fleet.hosts_for(deps, [t.storage_server]),
                extravars={
                    "codeb_backup_drill_action": "drill",
                    "codeb_backup_drill_server": t.name,
                    "codeb_backup_drill_backup_id": b.barman_id,
                    "codeb_backup_drill_scratch": f"{t.name}-drill-{secrets.token_hex(3)}",
                    "codeb_backup_drill_superuser": projects.db_user_for(name),
                    "codeb_backup_drill_database": projects.db_name_for(name, b.environment),
                    "codeb_backup_drill_image": backups.POSTGRES_IMAGE,
                    # A local image if present (the test fleet has no registry), else pulled.
                    "codeb_backup_drill_pull": "missing",
                },
                timeout_s=3600,
            )
        )
        report = reported(records, "codeb_drill")
        with deps.write():
            d = BackupDrill.get_by_id(d.id)
            b = Backup.get_by_id(b.id)
            d.finished_at = deps.clock.now()
            if outcome.status == "successful" and report:
                passed, reason, checks, found = judge(report, d.canary_expected)
                d.checks, d.canary_found = checks, found
                d.tables_count, d.rows_count = report.get("tables"), report.get("rows")
                d.duration_s = report.get("duration_s")
            else:
                passed, reason = False, describe_failure(outcome, records)
            if d.duration_s is None and d.started_at is not None:
                d.duration_s = (d.finished_at - d.started_at).total_seconds()
            d.status, d.reason = ("passed" if passed else "failed"), reason
            d.save()
            # Only a passed drill verifies; a failed one withdraws an earlier verification.
            b.verified_at = d.finished_at if passed else None
            b.save()
        if not passed:
            return JobResult("failed", f"restore drill failed: {reason}", {"drill": drill_view(d)})
        return JobResult("succeeded", None, {"drill": drill_view(d)})


# -- the schedule ------------------------------------------------------------------------------


def scheduled_drills(deps: Deps) -> dict[str, Any]:
    """The daily `backup_drills` job: a drill of the newest completed backup of each
    enabled db target whose newest backup has no drill within the interval."""
    now = deps.clock.now()
    started: list[str] = []
    skipped: list[dict[str, str]] = []
    targets = (
        BackupTarget.select()
        .join(Project, on=(BackupTarget.project == Project.id))
        .where((BackupTarget.status == "enabled") & (Project.status != "deleted"))
        .order_by(BackupTarget.name)
    )
    for t in targets:
        b = (
            Backup.select()
            .where(
                (Backup.target_id == t.id)
                & (Backup.status == "completed")
                & Backup.barman_id.is_null(False)
            )
            .order_by(Backup.end_time.desc(nulls="LAST"), Backup.created_at.desc())
            .first()
        )
        if b is None:
            continue
        recent = BackupDrill.select().where(
            (BackupDrill.backup_id == b.id)
            & ((BackupDrill.status == "running") | (BackupDrill.created_at > now - DRILL_INTERVAL))
        )
        if recent.exists():
            continue
        try:
            answer = verify_backup(deps, SYSTEM, b.id, None, kind="scheduled")
        except (Conflict, NotFound, ValidationFailed) as exc:
            skipped.append({"backup": b.id, "reason": exc.message})
            continue
        if answer.started_operation:
            started.append(answer.started_operation)
        else:
            skipped.append({"backup": b.id, "reason": str(answer.body.get("status"))})
    return {"started": started, "skipped": skipped}


APPLIERS: dict[str, gate.Applier] = {"backup_verify": _execute_verify}
JOBS = {"backup_drill": DrillJob()}
SCHEDULES: tuple[scheduler.Job, ...] = (
    scheduler.Job(
        name="backup_drills",
        description="A restore drill of the newest completed backup of each db (into a "
        "scratch container on the storage server); only a passed drill verifies a backup.",
        interval=DRILL_INTERVAL,
        run=scheduled_drills,
    ),
)
