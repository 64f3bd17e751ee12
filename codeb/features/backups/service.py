"""PostgreSQL backups (issue 10): each db component streams its WAL to a storage server
where Barman keeps it with base backups; a backup restores to any second of its recoverable
window into a new container on the storage server.

How: Barman on the storage server (roles/codeb_backup_storage) runs pg_receivewal on a
replication slot (a supervised service, so WAL ships from the first deploy on with an RPO of
seconds) and pg_basebackup for base backups (a systemd timer per component, so schedules run
while codeb is down). The db component keeps the stock postgres image: codeb adds a
replication role (its password stored encrypted here, sent to the db host only as a SCRAM
verifier) and a pg_hba line (roles/codeb_backup_source). codeb's scheduler reads Barman's
catalogue into the `backups` table (`backup_catalogue_sync`)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import logging
import os
import re
import secrets
from typing import Any

from codeb.errors import Conflict, NotFound, ValidationFailed
from codeb.executor.events import reported
from codeb.executor.runner import PlaybookRun
from codeb.executor.worker import JobFailed, JobResult, RunContext, describe_failure
from codeb.features.backups import as_project
from codeb.features.projects import service as projects
from codeb.features.servers import service as servers
from codeb.protection.tokens import Target
from codeb.secretbox import generate_password
from codeb.services import fleet, gate, operations, ports, scheduler
from codeb.services.context import SYSTEM, Actor, Deps
from codeb.services.health import wait_for_health
from codeb.store.models import (
    Backup,
    BackupRestore,
    BackupTarget,
    Container,
    Environment,
    PortAllocation,
    Project,
    Server,
)

log = logging.getLogger(__name__)
REPLICATION_ROLE = "codeb_backup"
DEFAULT_SCHEDULE = "daily"
# Base backups the storage server's timers take, per environment (CODEB_BACKUP_SCHEDULES
# replaces either): full weekly, a PostgreSQL 17 block-level incremental daily.
DEFAULT_SCHEDULES = {"full": "weekly", "incremental": "daily"}
# differential: a PostgreSQL 17 incremental whose parent is the latest completed *full* backup
# (Barman `backup --incremental <that full>`): a restore needs that full and this one only,
# never a chain of dailies; incremental builds on the latest backup, whatever its type.
TYPES = ("full", "incremental", "differential")


def schedules_for(settings: Any, environment: str) -> dict[str, str]:
    """The full and incremental schedules of an environment (OnCalendar expressions or off)."""
    configured = (getattr(settings, "backup_schedules", None) or {}).get(environment) or {}
    return {**DEFAULT_SCHEDULES, **configured}


def cadence(schedules: dict[str, str]) -> str:
    """How often some base backup is taken (what the backup age is held against)."""
    if schedules["incremental"] != "off":
        return schedules["incremental"]
    return schedules["full"] if schedules["full"] != "off" else DEFAULT_SCHEDULE


# The image restores run in: the same major version as the db component's.
POSTGRES_IMAGE = "docker.io/library/postgres:17"
STATUSES = ("running", "completed", "failed", "deleted")
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(Z|[+-]00:?00)?")


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = 4096) -> str:
    """PostgreSQL's SCRAM-SHA-256 verifier of `password` (what `CREATE ROLE ... PASSWORD`
    stores): the db host gets this, never the password."""
    salt = salt or os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(x: bytes) -> str:
        return base64.b64encode(x).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() + "Z" if value else None


# -- views ---------------------------------------------------------------------------------


def target_view(t: BackupTarget) -> dict[str, Any]:
    return {
        "id": t.id,
        "name": t.name,
        "project_id": t.project_id,
        "environment": t.environment,
        "component": t.component,
        "storage_server": t.storage_server,
        "db_server": t.db_server,
        "schedule": t.schedule,
        "status": t.status,
        "enabled_at": _iso(t.enabled_at),
        "synced_at": _iso(t.synced_at),
        "wal": {"first": t.wal_first, "last": t.wal_last, "last_at": _iso(t.wal_last_at)},
        "last_error": t.last_error,
    }


def recoverable_window(t: BackupTarget, now: dt.datetime) -> dict[str, str | None]:
    """From the end of the oldest completed backup to the newest WAL this side holds (now,
    while the receiver streams: a restore first closes the current WAL file)."""
    oldest = (
        Backup.select()
        .where((Backup.target_id == t.id) & (Backup.status == "completed"))
        .order_by(Backup.end_time)
        .first()
    )
    if oldest is None or oldest.end_time is None:
        return {"earliest": None, "latest": None}
    latest = now if t.status == "enabled" else (t.wal_last_at or oldest.end_time)
    return {"earliest": _iso(oldest.end_time), "latest": _iso(latest)}


def backup_view(b: Backup) -> dict[str, Any]:
    return {
        "id": b.id,
        "project_id": b.project_id,
        "environment": b.environment,
        "component": b.component,
        "type": b.type,
        "kind": b.kind,
        "status": b.status,
        "barman_id": b.barman_id,
        "started_at": _iso(b.started_at),
        "finished_at": _iso(b.finished_at),
        "size_bytes": b.size_bytes,
        "wal": {"begin": b.begin_wal, "end": b.end_wal},
        "begin_time": _iso(b.begin_time),
        "end_time": _iso(b.end_time),
        "location": b.location,
        "operation_id": b.operation_id,
        "verified_at": _iso(b.verified_at),
        "error": b.error,
        "created_at": _iso(b.created_at),
        "canary": {"token": b.canary, "written_at": _iso(b.canary_at)} if b.canary else None,
    }


def restore_view(r: BackupRestore) -> dict[str, Any]:
    return {
        "id": r.id,
        "backup_id": r.backup_id,
        "project_id": r.project_id,
        "environment": r.environment,
        "container_name": r.container_name,
        "server": r.server,
        "port": r.port,
        "volume": r.volume,
        "target_time": _iso(r.target_time),
        "mode": r.mode,
        "safety_backup_id": r.safety_backup_id,
        "after_backup_id": r.after_backup_id,
        "container_id": r.container_id,
        "status": r.status,
        "operation_id": r.operation_id,
        "error": r.error,
    }


# -- reading -------------------------------------------------------------------------------


def list_backups(
    project: str | None = None,
    environment: str | None = None,
    status: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> dict[str, Any]:
    query = Backup.select()
    if project:
        query = query.where(Backup.project == projects.find_project(project).id)
    if environment:
        query = query.where(Backup.environment == environment)
    if status:
        if status not in STATUSES:
            raise ValidationFailed(f"status must be one of {', '.join(STATUSES)}", {})
        query = query.where(Backup.status == status)
    else:
        query = query.where(Backup.status != "deleted")
    total = query.count()
    rows = query.order_by(Backup.created_at.desc(), Backup.id).limit(limit).offset(offset)
    return {"backups": [backup_view(b) for b in rows], "total": total}


def find_backup(backup_id: str) -> Backup:
    b = Backup.get_or_none((Backup.id == backup_id) & (Backup.status != "deleted"))
    if b is None:
        raise NotFound(f"backup {backup_id!r} not found", {"backup_id": backup_id})
    return b


def get_backup(deps: Deps, backup_id: str) -> dict[str, Any]:
    b = find_backup(backup_id)
    view = backup_view(b)
    t = BackupTarget.get_or_none(BackupTarget.id == b.target_id)
    view["recoverable_window"] = (
        recoverable_window(t, deps.clock.now()) if t else {"earliest": None, "latest": None}
    )
    view["target"] = target_view(t) if t else None
    return view


# -- where things are ------------------------------------------------------------------------


def _storage_server() -> Server:
    server = (
        Server.select()
        .where((Server.role == "storage") & (Server.status == "ready"))
        .order_by(Server.id)
        .first()
    )
    if server is None:
        raise Conflict(
            "no ready server with the role 'storage': register and bootstrap one first",
            {"role": "storage"},
        )
    return server


def _db_container(project: Project, environment: str) -> Container:
    c = (
        Container.select()
        .where(
            (Container.project == project.id)
            & (Container.environment == environment)
            & (Container.server_type == "db")
            & (Container.status != "removed")
        )
        .first()
    )
    if c is None:
        raise Conflict(
            f"{project.name}/{environment} has no db container: deploy it first",
            {"project": project.name, "environment": environment},
        )
    return c


def ensure_target(deps: Deps, project: Project, env: Environment) -> BackupTarget:
    """The environment's db component as a backup target (created with a new replication
    password, encrypted), pointing at where the db runs now. Inside a write transaction."""
    c = _db_container(project, env.name)
    db_server = Server.get_or_none((Server.ip == c.server_ip) & (Server.status != "deleted"))
    if db_server is None:
        raise Conflict(f"the db of {project.name}/{env.name} runs on no registered server", {})
    storage = _storage_server()
    t = BackupTarget.get_or_none(BackupTarget.name == c.container_name)
    if t is None:
        t = BackupTarget.create(
            id=f"bt_{secrets.token_hex(8)}",
            project=project.id,
            environment=env.name,
            name=c.container_name,
            storage_server=storage.name,
            db_server=db_server.name,
            db_port=c.port_external or env.db_port,
            replication_password=deps.box.encrypt(generate_password()),
            schedule=cadence(schedules_for(deps.settings, env.name)),
            created_at=deps.clock.now(),
        )
    elif (t.db_server, t.db_port) != (db_server.name, c.port_external or env.db_port):
        t.db_server, t.db_port, t.status = db_server.name, c.port_external or env.db_port, "pending"
        t.save()
    return t


# -- taking a backup -----------------------------------------------------------------------


def create_backup(
    deps: Deps,
    actor: Actor,
    body: dict[str, Any],
    confirmation: gate.Confirmation | None = None,
    kind: str = "manual",
) -> gate.Answer:
    """`POST /api/backups {project, environment, component?: db}` (backup_create, LOW): a
    base backup now; the first one of a component also sets up its WAL streaming."""
    project = projects.find_project(_required_str(body, "project"))
    env = projects.find_environment(project, _required_str(body, "environment"))
    component = body.get("component", "db")
    if component != "db":
        raise ValidationFailed("component must be 'db' (Redis copies are another issue)", {})
    unknown = sorted(set(body) - {"project", "environment", "component", "type"})
    if unknown:
        raise ValidationFailed(f"unknown fields: {', '.join(unknown)}", {"fields": unknown})
    backup_type = body.get("type", "full")
    if backup_type not in TYPES:
        raise ValidationFailed(
            "type must be 'full', 'incremental' (on the latest backup) or 'differential' (on "
            "the latest full backup)",
            {"type": backup_type, "allowed": list(TYPES)},
        )
    if backup_type in ("incremental", "differential"):
        t = BackupTarget.get_or_none(
            (BackupTarget.project == project.id) & (BackupTarget.environment == env.name)
        )
        parent = t and _parent_backup(t, backup_type)
        if not parent or t.status != "enabled":
            raise Conflict(
                f"an {backup_type} backup needs a completed "
                f"{'full ' if backup_type == 'differential' else ''}backup of the streaming db "
                "to build on: take a full one first",
                {"type": backup_type},
            )
    _db_container(project, env.name)
    _storage_server()
    return gate.guard(
        deps,
        actor,
        "backup_create",
        Target("environment", env.id, f"{project.name}/{env.name}", project.id, env.name),
        {"project_id": project.id, "environment": env.name, "kind": kind, "type": backup_type},
        effect=f"Takes a base backup of the db of {project.name}/{env.name} on the storage "
        "server (and sets up its WAL streaming the first time).",
        confirmation=confirmation,
        success_status=202,
    )


def _execute_create(deps: Deps, actor: Actor, target: Target, params: dict) -> dict:
    project = Project.get_by_id(params["project_id"])
    env = projects.find_environment(project, params["environment"])
    return start_backup(
        deps, actor, project, env, params.get("kind", "manual"), params.get("type", "full")
    )


def start_backup(
    deps: Deps,
    actor: Actor,
    project: Project,
    env: Environment,
    kind: str,
    backup_type: str = "full",
) -> dict[str, Any]:
    """Record a running backup and start its operation (inside the caller's transaction;
    the caller dispatches it after commit, as the gate does)."""
    t = ensure_target(deps, project, env)
    b = new_backup_row(deps, t, kind, backup_type)
    op = operations.create_operation(
        deps,
        actor,
        "backup",
        sorted({t.db_server, t.storage_server}),
        {"backup_id": b.id, "target_id": t.id},
        project_id=project.id,
    )
    b.operation_id = op.id
    b.save()
    return {"backup": backup_view(b), "operation": operations.operation_view(op)}


def new_backup_row(deps: Deps, t: BackupTarget, kind: str, backup_type: str = "full") -> Backup:
    """A running backup of a target, with the canary token codeb writes into the database's
    `codeb_canary` table just before the base backup starts (inside a write transaction)."""
    now = deps.clock.now()
    return Backup.create(
        id=f"bk_{secrets.token_hex(8)}",
        project=t.project_id,
        environment=t.environment,
        component="db",
        type=backup_type,
        kind=kind,
        status="running",
        location=f"{t.storage_server}:{t.name}",
        target_id=t.id,
        started_at=now,
        created_at=now,
        canary=secrets.token_hex(16),
    )


def _enable_run(deps: Deps, t: BackupTarget) -> PlaybookRun:
    password = deps.box.decrypt(t.replication_password)
    verifier = scram_verifier(password)
    project = Project.get_by_id(t.project_id)
    storage = Server.get(Server.name == t.storage_server)
    db_server = Server.get(Server.name == t.db_server)
    schedules = schedules_for(deps.settings, t.environment)
    return PlaybookRun(
        "backup_enable.yml",
        fleet.hosts_for(deps, sorted({t.db_server, t.storage_server})),
        extravars={
            "codeb_backup_source_container": t.name,
            "codeb_backup_source_superuser": projects.db_user_for(project.name),
            "codeb_backup_source_role": REPLICATION_ROLE,
            "codeb_backup_source_verifier": verifier,
            "codeb_backup_source_peers": [storage.ip],
            "codeb_backup_storage_servers": [
                {
                    "name": t.name,
                    "host": db_server.ip,
                    "port": t.db_port,
                    "password": password,
                    "description": f"codeb {project.name} {t.environment} db",
                    "schedule": schedules["full"],
                    "incremental": schedules["incremental"],
                }
            ],
        },
        secrets=(password, verifier),
        timeout_s=600,
    )


def _parse_utc(value: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(value.strip().replace(" ", "T"))
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return parsed


def _parse_barman_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    parsed = dt.datetime.fromisoformat(value)
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return parsed.replace(microsecond=0) + (
        dt.timedelta(seconds=1) if parsed.microsecond else dt.timedelta()
    )


def _parent_backup(t: BackupTarget, backup_type: str) -> Backup | None:
    """What an incremental builds on: the latest completed backup; a differential: the latest
    completed full one."""
    query = Backup.select().where(
        (Backup.target_id == t.id)
        & (Backup.status == "completed")
        & Backup.barman_id.is_null(False)
    )
    if backup_type == "differential":
        query = query.where(Backup.type == "full")
    return query.order_by(Backup.end_time.desc(), Backup.created_at.desc()).first()


def _apply_barman(b: Backup, info: dict[str, Any]) -> None:
    """What Barman's show-backup says about a backup, onto its row."""
    base = info.get("base_backup_information") or {}
    b.barman_id = info.get("backup_id") or b.barman_id
    # Barman calls a differential "incremental" (it is one, on a full parent): codeb's name stays.
    if info.get("backup_type") in TYPES and b.type != "differential":
        b.type = info["backup_type"]
    b.size_bytes = base.get("backup_size_with_wals_bytes") or base.get("backup_size_bytes")
    b.begin_wal, b.end_wal = base.get("begin_wal"), base.get("end_wal")
    b.begin_time = _parse_barman_time(base.get("begin_time"))
    # A backup is consistent from its end: the earliest second it restores to (rounded up).
    b.end_time = _parse_barman_time(base.get("end_time"))
    status = info.get("status")
    if status == "DONE":
        b.status, b.error = "completed", None
    elif status == "FAILED":
        b.status = "failed"
        b.error = info.get("error") or "Barman reports the backup FAILED"
    else:
        b.status = "running"


class BackupJob:
    """Sets up WAL streaming when the target is not enabled yet, then takes the backup."""

    def run(self, ctx: RunContext) -> JobResult:
        deps, params = ctx.deps, ctx.operation.params
        b = Backup.get_by_id(params["backup_id"])
        t = BackupTarget.get_by_id(params["target_id"])
        if t.status != "enabled":
            outcome, records = ctx.run(_enable_run(deps, t))
            if outcome.status != "successful":
                error = describe_failure(outcome, records)
                with deps.write():
                    t.status, t.last_error = "failed", error
                    t.save()
                    b.status, b.error, b.finished_at = "failed", error, deps.clock.now()
                    b.save()
                return JobResult("failed", f"WAL streaming could not be set up: {error}", {})
            with deps.write():
                t.status, t.last_error, t.enabled_at = "enabled", None, deps.clock.now()
                t.schedule = cadence(schedules_for(deps.settings, t.environment))
                t.save()
        b = take_backup(ctx, t, b)
        if b.status != "completed":
            return JobResult("failed", b.error or f"the backup ended {b.status}", {})
        return JobResult("succeeded", None, {"backup": backup_view(b)})


def _incremental_parent(t: BackupTarget, b: Backup) -> str:
    """Barman's --incremental argument: `latest`, or the latest full backup's Barman id for a
    differential (`none` when it is gone since the request: the role then fails the backup,
    saying so)."""
    if b.type != "differential":
        return "latest"
    parent = _parent_backup(t, "differential")
    return parent.barman_id if parent is not None else "none"


def take_backup(ctx: RunContext, t: BackupTarget, b: Backup) -> Backup:
    """Run one base backup of an enabled target for the running row `b`: first the canary
    row on the db host (codeb_canary: b.canary and the database's time), then Barman's backup
    on the storage server; the row ends `completed` only when Barman says DONE, else
    `failed` with the reason."""
    deps = ctx.deps
    project = Project.get_by_id(t.project_id)
    outcome, records = ctx.run(
        PlaybookRun(
            "backup_backup.yml",
            fleet.hosts_for(deps, sorted({t.db_server, t.storage_server})),
            extravars={
                "codeb_backup_storage_server": t.name,
                "codeb_backup_storage_backup_name": b.id,
                "codeb_backup_source_container": t.name,
                "codeb_backup_source_superuser": projects.db_user_for(project.name),
                "codeb_backup_source_database": projects.db_name_for(project.name, t.environment),
                "codeb_backup_source_canary": b.canary or "",
                "codeb_backup_storage_incremental": b.type in ("incremental", "differential"),
                "codeb_backup_storage_incremental_parent": _incremental_parent(t, b),
            },
            timeout_s=3600,
        )
    )
    info = reported(records, "codeb_backup")
    canary = reported(records, "codeb_canary")
    with deps.write():
        b = Backup.get_by_id(b.id)
        b.finished_at = deps.clock.now()
        if canary.get("written_at"):
            b.canary_at = _parse_utc(canary["written_at"])
        elif b.canary:
            b.canary = None  # not written: nothing for a drill to look for
        if outcome.status == "successful" and info:
            _apply_barman(b, info)
        else:
            b.status, b.error = "failed", describe_failure(outcome, records)
        b.save()
    return b


# -- restoring -----------------------------------------------------------------------------


def _parse_target_time(value: Any) -> dt.datetime:
    if not isinstance(value, str) or not _TIME.fullmatch(value):
        raise ValidationFailed(
            "target_time must be an ISO 8601 UTC time to the second, e.g. 2026-11-30T15:18:42Z",
            {"target_time": value if isinstance(value, str) else None},
        )
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "T"))
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return parsed


def restore_backup(
    deps: Deps,
    actor: Actor,
    backup_id: str,
    body: dict[str, Any],
    confirmation: gate.Confirmation | None = None,
) -> gate.Answer:
    """`POST /api/backups/:id/restore {target_time?, into?}`: `new` (default) into a new
    container on the storage server (backup_restore_new, LOW); `in_place` replaces the
    environment's live data (backup_restore, HIGH: queued, two confirmations typing the
    environment's name, a completed backup; no cooldown) after a safety backup."""
    b = find_backup(backup_id)
    unknown = sorted(set(body) - {"target_time", "into", "project"})
    if unknown:
        raise ValidationFailed(f"unknown fields: {', '.join(unknown)}", {"fields": unknown})
    into = body.get("into", "new")
    if into not in ("new", "in_place", "project"):
        raise ValidationFailed("into must be 'new', 'in_place' or 'project'", {"into": into})
    if "project" in body and into != "project":
        raise ValidationFailed("project names the new project of into 'project'", {"into": into})
    if b.status != "completed":
        raise Conflict(f"backup {b.id} is {b.status}, not completed", {"status": b.status})
    t = BackupTarget.get_or_none(BackupTarget.id == b.target_id)
    if t is None:
        raise Conflict(f"backup {b.id} has no storage target", {})
    params: dict[str, Any] = {"backup_id": b.id, "target_time": None}
    if body.get("target_time") is not None:
        when = _parse_target_time(body["target_time"])
        now = deps.clock.now()
        if b.end_time is None or when < b.end_time or when > now:
            window = {"earliest": _iso(b.end_time), "latest": _iso(now)}
            raise ValidationFailed(
                f"target_time is outside this backup's recoverable window "
                f"({window['earliest']} .. {window['latest']})",
                {"target_time": body["target_time"], "recoverable_window": window},
            )
        params["target_time"] = when.isoformat()
    if into == "project":  # a deleted project's backup as a new project: as_project.py
        return as_project.request(deps, actor, b, t, body, params, confirmation)
    project = Project.get_by_id(b.project_id)
    if into == "in_place":
        env = projects.find_environment(project, b.environment)
        _db_container(project, env.name)
        params["into"] = "in_place"
        return gate.guard(
            deps,
            actor,
            "backup_restore",
            Target("environment", env.id, f"{project.name}/{env.name}", project.id, env.name),
            params,
            effect=f"Replaces the live data of the db of {project.name}/{env.name} with backup "
            f"{b.id}"
            + (f" as of {params['target_time']}Z" if params["target_time"] else " (latest)")
            + ": a safety backup of the current state first (the restore can be undone with "
            "it), then the db rebuilt from the restored copy, streaming reset, a new base "
            "backup, the app restarted and health-checked.",
            confirmation=confirmation,
            success_status=202,
        )
    return gate.guard(
        deps,
        actor,
        "backup_restore_new",
        Target("backup", b.id, b.id, project.id, b.environment),
        params,
        effect=f"Restores backup {b.id} of {project.name}/{b.environment}"
        + (f" to {params['target_time']}Z" if params["target_time"] else "")
        + " into a new PostgreSQL container on the storage server; the live database is "
        "not touched.",
        confirmation=confirmation,
        success_status=202,
    )


def _execute_restore_new(deps: Deps, actor: Actor, target: Target, params: dict) -> dict:
    b = find_backup(params["backup_id"])
    t = BackupTarget.get_by_id(b.target_id)
    if params.get("into") == "project":
        return as_project.execute(deps, actor, b, t, params, restore_view)
    port = ports.allocate_port(deps.db, b.environment, "db", b.project_id)
    name = f"{t.name}-restore-{secrets.token_hex(3)}"
    when = dt.datetime.fromisoformat(params["target_time"]) if params["target_time"] else None
    r = BackupRestore.create(
        id=f"rs_{secrets.token_hex(8)}",
        backup=b.id,
        project=b.project_id,
        environment=b.environment,
        container_name=name,
        server=t.storage_server,
        port=port,
        volume=f"{name}-data",
        target_time=when,
        created_at=deps.clock.now(),
    )
    op = operations.create_operation(
        deps, actor, "backup_restore", [t.storage_server], {"restore_id": r.id},
        project_id=b.project_id,
    )  # fmt: skip
    r.operation_id = op.id
    r.save()
    return {"restore": restore_view(r), "operation": operations.operation_view(op)}


def _restore_run(deps: Deps, r: BackupRestore, replication_user: str = "") -> PlaybookRun:
    """Barman's recover of r's backup (to r's target time) into r's container on the storage
    server; with `replication_user`, the copy also accepts its replication connections."""
    b = Backup.get_by_id(r.backup_id)
    t = BackupTarget.get_by_id(b.target_id)
    project = Project.get_by_id(b.project_id)
    when = r.target_time.strftime("%Y-%m-%d %H:%M:%S+00:00") if r.target_time else ""
    return PlaybookRun(
        "backup_restore.yml",
        fleet.hosts_for(deps, [t.storage_server]),
        extravars={
            "codeb_backup_storage_server": t.name,
            "codeb_backup_storage_backup_id": b.barman_id,
            "codeb_backup_storage_target_time": when,
            "codeb_backup_storage_restore_name": r.container_name,
            "codeb_backup_storage_restore_port": r.port,
            "codeb_backup_storage_restore_superuser": projects.db_user_for(project.name),
            "codeb_backup_storage_restore_replication_user": replication_user,
            "codeb_backup_storage_image": POSTGRES_IMAGE,
            # A local image if present (the test fleet has no registry), else pulled.
            "codeb_backup_storage_pull": "missing",
        },
        timeout_s=3600,
    )


class RestoreJob:
    def run(self, ctx: RunContext) -> JobResult:
        deps = ctx.deps
        r = BackupRestore.get_by_id(ctx.operation.params["restore_id"])
        try:
            outcome, records = ctx.run(_restore_run(deps, r))
            error = None if outcome.status == "successful" else describe_failure(outcome, records)
        except JobFailed as exc:  # before any run (a host codeb may not reach): the row says so
            error = str(exc)
        with deps.write():
            r = BackupRestore.get_by_id(r.id)
            r.status, r.error = ("running", None) if error is None else ("failed", error)
            r.save()
            if r.mode == "project":  # registered as the new project's db, or it is retired
                as_project.settle(deps, r, POSTGRES_IMAGE)
        if r.status != "running":
            return JobResult("failed", r.error, {"restore": restore_view(r)})
        return JobResult("succeeded", None, {"restore": restore_view(r)})


def _execute_restore_in_place(deps: Deps, actor: Actor, target: Target, params: dict) -> dict:
    """The confirmed in-place restore: a row for the scratch copy the live db is rebuilt from
    (a port of the environment's db range, released when it is gone) and the operation."""
    b = find_backup(params["backup_id"])
    t = BackupTarget.get_by_id(b.target_id)
    project = Project.get_by_id(b.project_id)
    db = _db_container(project, b.environment)
    apps = _app_containers(project.id, b.environment)
    port = ports.allocate_port(deps.db, b.environment, "db", b.project_id)
    name = f"{t.name}-inplace-{secrets.token_hex(3)}"
    when = dt.datetime.fromisoformat(params["target_time"]) if params["target_time"] else None
    r = BackupRestore.create(
        id=f"rs_{secrets.token_hex(8)}",
        backup=b.id,
        project=b.project_id,
        environment=b.environment,
        container_name=name,
        server=t.storage_server,
        port=port,
        volume=f"{name}-data",
        target_time=when,
        mode="in_place",
        created_at=deps.clock.now(),
    )
    hosts = {t.storage_server, t.db_server, *(fleet.container_server(a).name for a in apps)}
    op = operations.create_operation(
        deps, actor, "backup_restore_in_place", sorted(hosts),
        {"restore_id": r.id, "db_container_id": db.id}, project_id=b.project_id,
    )  # fmt: skip
    r.operation_id = op.id
    r.save()
    return {"restore": restore_view(r), "operation": operations.operation_view(op)}


def _app_containers(project_id: str, environment: str) -> list[Container]:
    return list(
        Container.select().where(
            (Container.project == project_id)
            & (Container.environment == environment)
            & (Container.server_type == "app")
            & (Container.status == "running")
        )
    )


APP_HEALTH_DEADLINE_S = 90


def _app_healthy(ctx: RunContext, c: Container) -> bool:
    """GET /health on the app container's port until 200, within a deadline."""
    url = f"http://{c.server_ip}:{c.port_external}/health"
    return wait_for_health(url, ctx, APP_HEALTH_DEADLINE_S, 1, 2) == 200


class InPlaceRestoreJob:
    """backup_restore (HIGH), confirmed: (1) a safety backup of the current state, completed
    before anything is touched; (2) Barman recovers the chosen backup (to the target time)
    into a scratch container on the storage server; (3) on the db host the live database is
    stopped, its data set aside and rebuilt from the scratch copy with pg_basebackup, started
    and checked (a failure puts the old data back); the storage server resets its WAL
    receiver to the new timeline and removes the scratch copy; (4) a new base backup proves
    the chain (its WAL arrives on the new timeline); (5) the app is restarted and must answer
    its health check."""

    def run(self, ctx: RunContext) -> JobResult:
        deps, params = ctx.deps, ctx.operation.params
        r = BackupRestore.get_by_id(params["restore_id"])
        b = Backup.get_by_id(r.backup_id)
        t = BackupTarget.get_by_id(b.target_id)
        project = Project.get_by_id(b.project_id)
        db = Container.get_by_id(params["db_container_id"])
        steps: dict[str, Any] = {}

        def fail(error: str, copy_made: bool = False) -> JobResult:
            with deps.write():
                row = BackupRestore.get_by_id(r.id)
                row.status, row.error = "failed", error
                row.save()
                if not copy_made:  # no scratch copy holds the port
                    PortAllocation.delete().where(PortAllocation.port == row.port).execute()
            return JobResult("failed", error, {"restore": restore_view(row), "steps": steps})

        # 1. The safety backup: the current state, restorable, before anything is touched.
        with deps.write():
            safety = new_backup_row(deps, t, "safety")
            safety.operation_id = ctx.operation.id
            safety.save()
            r.safety_backup_id = safety.id
            r.save()
        safety = take_backup(ctx, t, safety)
        steps["safety_backup"] = {"id": safety.id, "status": safety.status}
        if safety.status != "completed":
            return fail(
                f"the safety backup {safety.id} did not complete ({safety.error}); the live "
                "data was not touched"
            )
        # 2. The scratch copy (as of the target time) on the storage server.
        user = projects.db_user_for(project.name)
        outcome, records = ctx.run(_restore_run(deps, r, replication_user=user))
        steps["recovered_copy"] = outcome.status
        if outcome.status != "successful":
            return fail(
                "recovering the backup failed, the live data was not touched: "
                + describe_failure(outcome, records),
                copy_made=True,
            )
        # 3. The live data replaced; the WAL receiver follows the new timeline.
        storage = Server.get(Server.name == t.storage_server)
        db_server = fleet.container_server(db)
        outcome, records = ctx.run(
            PlaybookRun(
                "backup_restore_in_place.yml",
                fleet.hosts_for(deps, sorted({db_server.name, storage.name})),
                extravars={
                    "codeb_backup_source_container": db.container_name,
                    "codeb_backup_source_superuser": user,
                    "codeb_backup_source_volume": db.volume or f"{db.container_name}-data",
                    "codeb_backup_source_image": db.image,
                    "codeb_backup_source_copy_host": storage.ip,
                    "codeb_backup_source_copy_port": r.port,
                    "codeb_backup_storage_server": t.name,
                    "codeb_backup_storage_restore_name": r.container_name,
                },
                timeout_s=3600,
            )
        )
        steps["live_data_replaced"] = outcome.status
        if outcome.status != "successful":
            return fail(
                "replacing the live data failed (the db host put the previous data back "
                "when it could): " + describe_failure(outcome, records),
                copy_made=True,
            )
        with deps.write():
            row = BackupRestore.get_by_id(r.id)
            row.status = "replaced"
            row.save()
            PortAllocation.delete().where(PortAllocation.port == row.port).execute()
            after = new_backup_row(deps, t, "after_restore")
            after.operation_id = ctx.operation.id
            after.save()
            row.after_backup_id = after.id
            row.save()
        # 4. The chain: a new base backup on the new timeline, its WAL received.
        after = take_backup(ctx, t, after)
        steps["after_backup"] = {"id": after.id, "status": after.status}
        if after.status != "completed":
            return fail(
                f"the data was restored but the backup after it ({after.id}) did not "
                f"complete: {after.error}",
                copy_made=True,  # released already
            )
        # 5. The app restarted and healthy.
        sick = []
        for app in _app_containers(project.id, b.environment):
            server = fleet.container_server(app)
            outcome, records = ctx.run(
                PlaybookRun(
                    "container.yml",
                    fleet.hosts_for(deps, [server.name]),
                    extravars={
                        "codeb_container_host": server.name,
                        "codeb_container_action": "restart",
                        "codeb_container_unit": app.container_name,
                    },
                    limit=server.name,
                )
            )
            if outcome.status != "successful" or not _app_healthy(ctx, app):
                sick.append(app.container_name)
        steps["app_restarted"] = {"unhealthy": sick}
        if sick:
            return fail(
                f"the data was restored and backed up, but the app is not healthy after its "
                f"restart: {', '.join(sick)}",
                copy_made=True,  # released already
            )
        with deps.write():
            row = BackupRestore.get_by_id(r.id)
            row.status, row.error = "completed", None
            row.save()
        return JobResult("succeeded", None, {"restore": restore_view(row), "steps": steps})


# -- deleting ------------------------------------------------------------------------------


def delete_backup(
    deps: Deps,
    actor: Actor,
    backup_id: str,
    confirmation: gate.Confirmation | None = None,
) -> gate.Answer:
    """`DELETE /api/backups/:id` (backup_delete, HIGH): only this backup of this component."""
    b = find_backup(backup_id)
    if b.status == "running":
        raise Conflict(f"backup {b.id} is still running", {"status": b.status})
    return gate.guard(
        deps,
        actor,
        "backup_delete",
        Target("backup", b.id, b.id, b.project_id, b.environment),
        {"backup_id": b.id},
        effect=f"Deletes backup {b.id} ({b.environment}) from the storage server for good.",
        confirmation=confirmation,
        success_status=202,
    )


def _execute_delete(deps: Deps, actor: Actor, target: Target, params: dict) -> dict:
    b = find_backup(params["backup_id"])
    t = BackupTarget.get_or_none(BackupTarget.id == b.target_id)
    if b.barman_id is None or t is None:  # never reached the storage server
        b.status, b.deleted_at = "deleted", deps.clock.now()
        b.save()
        return {"backup": backup_view(b)}
    op = operations.create_operation(
        deps, actor, "backup_delete", [t.storage_server], {"backup_id": b.id},
        project_id=b.project_id,
    )  # fmt: skip
    return {"backup": backup_view(b), "operation": operations.operation_view(op)}


class DeleteJob:
    def run(self, ctx: RunContext) -> JobResult:
        deps = ctx.deps
        b = Backup.get_by_id(ctx.operation.params["backup_id"])
        t = BackupTarget.get_by_id(b.target_id)
        outcome, records = ctx.run(
            PlaybookRun(
                "backup_delete.yml",
                fleet.hosts_for(deps, [t.storage_server]),
                extravars={
                    "codeb_backup_storage_server": t.name,
                    "codeb_backup_storage_backup_id": b.barman_id,
                },
                timeout_s=600,
            )
        )
        if outcome.status != "successful":
            return JobResult("failed", describe_failure(outcome, records), {})
        with deps.write():
            b.status, b.deleted_at = "deleted", deps.clock.now()
            b.save()
        return JobResult("succeeded", None, {"backup": backup_view(b)})


# -- the catalogue ---------------------------------------------------------------------------


def sync_catalogue(deps: Deps) -> dict[str, Any]:
    """Read Barman's catalogue on every storage server and make the `backups` rows say it:
    backups the timers took (kind `scheduled`), statuses, WAL state of each target."""
    targets = list(BackupTarget.select().where(BackupTarget.status == "enabled"))
    by_storage: dict[str, list[BackupTarget]] = {}
    for t in targets:
        by_storage.setdefault(t.storage_server, []).append(t)
    summary: dict[str, Any] = {"targets": len(targets), "found": 0, "updated": 0, "errors": {}}
    for storage, group in sorted(by_storage.items()):
        outcome, records = servers.run_now(
            deps,
            "backup_catalogue.yml",
            [storage],
            extravars={"codeb_backup_storage_names": [t.name for t in group]},
            timeout_s=300,
        )
        if outcome.status != "successful":
            summary["errors"][storage] = describe_failure(outcome, records)
            continue
        catalogue = reported(records, "codeb_backup_catalogue")
        with deps.write():
            for t in group:
                found, updated = _sync_target(deps, t, catalogue.get(t.name) or {})
                summary["found"] += found
                summary["updated"] += updated
    return summary


def _sync_target(deps: Deps, t: BackupTarget, entry: dict[str, Any]) -> tuple[int, int]:
    found = updated = 0
    now = deps.clock.now()
    known = {b.barman_id: b for b in Backup.select().where(Backup.target_id == t.id)}
    for info in entry.get("backups", []):
        bid = info.get("backup_id")
        if not bid:
            continue
        b = known.get(bid) or Backup.get_or_none(
            (Backup.target_id == t.id) & (Backup.id == info.get("backup_name"))
        )
        is_new = b is None
        if b is None:
            b = Backup(
                id=f"bk_{secrets.token_hex(8)}",
                project=t.project_id,
                environment=t.environment,
                component=t.component,
                type="full",
                kind="scheduled",
                location=f"{t.storage_server}:{t.name}",
                target_id=t.id,
                created_at=now,
                started_at=now,
                finished_at=now,
            )
            found += 1
        elif b.status == "deleted":
            continue
        elif b.status == "failed" and info.get("status") != "DONE":
            # Failed here (its process killed, say): Barman may still list it as STARTED;
            # only a backup Barman finished (DONE) turns it around.
            continue
        before = (b.status, b.size_bytes, b.end_time)
        _apply_barman(b, info)
        if b.status != "running" and b.finished_at is None:
            b.finished_at = now
        if before != (b.status, b.size_bytes, b.end_time):
            updated += 1
        b.save(force_insert=is_new)
    # Backups Barman no longer has (retention): gone from the storage server.
    listed = {info.get("backup_id") for info in entry.get("backups", [])}
    for bid, b in known.items():
        if bid and bid not in listed and b.status == "completed":
            b.status, b.deleted_at, b.error = "deleted", now, "removed by the retention policy"
            b.save()
            updated += 1
    slot = entry.get("slot") or {}
    if slot.get("wal_status") == "lost":
        # max_slot_wal_keep_size gave up on a receiver that was away too long: the db host's
        # disk is safe, but WAL since the receiver's position is gone (a gap in the window).
        if not (t.last_error or "").startswith(SLOT_LOST):
            reason = slot.get("invalidation_reason") or "wal_removed"
            t.last_error = (
                f"{SLOT_LOST} (noticed {_iso(now)}, {reason}): WAL the storage server had not "
                "received is gone; the recoverable window has a gap until the next base "
                "backup, and the slot must be dropped and created again"
            )
            log.warning("backup target %s: %s", t.name, t.last_error)
    wal = entry.get("wal") or {}
    t.wal_first, t.wal_last = wal.get("first"), wal.get("last")
    if wal.get("last_time"):
        t.wal_last_at = dt.datetime.fromtimestamp(wal["last_time"], dt.UTC).replace(tzinfo=None)
    t.synced_at = now
    t.save()
    return found, updated


def _scheduled_sync(deps: Deps) -> dict[str, Any]:
    if not BackupTarget.select().where(BackupTarget.status == "enabled").exists():
        return {"targets": 0, "note": "nothing to sync"}
    return sync_catalogue(deps)


def _required_str(body: dict[str, Any], field: str) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value:
        raise ValidationFailed(f"{field} is required", {"field": field})
    return value


RETRY_AFTER_FAILURE = dt.timedelta(minutes=10)
SLOT_LOST = "the replication slot was invalidated by max_slot_wal_keep_size"


def ensure_streaming(deps: Deps) -> dict[str, Any]:
    """The periodic `backup_streaming` job: every running db whose WAL does not stream to a
    storage server yet (its first deploy, a storage server registered since, a db moved to
    another server, a set-up that failed more than 10 minutes ago) gets its first backup,
    which sets the streaming up; through the Protection Layer as codeb itself
    (backup_create, LOW)."""
    storage_ready = (Server.role == "storage") & (Server.status == "ready")
    if not Server.select().where(storage_ready).exists():
        return {"started": [], "note": "no ready storage server"}
    now = deps.clock.now()
    started: list[str] = []
    skipped: list[dict[str, str]] = []
    dbs = Container.select().where(
        (Container.server_type == "db") & (Container.status == "running")
    )
    for c in dbs.order_by(Container.project, Container.environment):
        t = BackupTarget.get_or_none(BackupTarget.name == c.container_name)
        db_server = Server.get_or_none(Server.ip == c.server_ip)
        if t is not None:
            moved = (
                db_server is not None
                and c.port_external is not None
                and (t.db_server, t.db_port) != (db_server.name, c.port_external)
            )
            if t.status == "enabled" and not moved:
                continue
            running = Backup.select().where(
                (Backup.target_id == t.id) & (Backup.status == "running")
            )
            if running.exists():
                continue
            last_failed = (
                Backup.select()
                .where((Backup.target_id == t.id) & (Backup.status == "failed"))
                .order_by(Backup.finished_at.desc())
                .first()
            )
            if (
                t.status == "failed"
                and last_failed is not None
                and last_failed.finished_at is not None
                and now - last_failed.finished_at < RETRY_AFTER_FAILURE
            ):
                continue
        project = Project.get_by_id(c.project_id)
        try:
            answer = create_backup(
                deps, SYSTEM, {"project": project.name, "environment": c.environment}, None,
                kind="first",
            )  # fmt: skip
        except (Conflict, NotFound, ValidationFailed) as exc:
            skipped.append({"db": c.container_name, "reason": exc.message})
            continue
        if answer.started_operation:
            started.append(answer.started_operation)
        else:
            # A stricter configured rule (a token, a queue entry) is not codeb's to confirm.
            skipped.append({"db": c.container_name, "reason": str(answer.body.get("status"))})
    return {"started": started, "skipped": skipped}


APPLIERS: dict[str, gate.Applier] = {
    "backup_create": _execute_create,
    "backup_restore_new": _execute_restore_new,
    "backup_restore": _execute_restore_in_place,
    "backup_delete": _execute_delete,
}

JOBS = {
    "backup": BackupJob(),
    "backup_restore": RestoreJob(),
    "backup_restore_in_place": InPlaceRestoreJob(),
    "backup_delete": DeleteJob(),
}

SCHEDULES: tuple[scheduler.Job, ...] = (
    scheduler.Job(
        name="backup_streaming",
        description="Sets up WAL streaming (and a first backup) for every running db that "
        "does not stream to a storage server yet: a first deploy, a new storage server, a "
        "moved db, a failed set-up (retried after 10 minutes).",
        interval=dt.timedelta(minutes=1),
        run=ensure_streaming,
    ),
    scheduler.Job(
        name="backup_catalogue_sync",
        description="Reads Barman's catalogue on each storage server into the backups table "
        "(backups the storage server's own timers took, statuses, WAL received).",
        interval=dt.timedelta(minutes=5),
        run=_scheduled_sync,
    ),
)
