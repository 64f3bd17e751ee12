"""Redis copies (issue 11): each cache component's data copied to the storage server on a
schedule (hourly) or on request, restored into a new Redis container there (LOW), and
drilled (restored into a scratch container, DBSIZE and the canary key compared).

How (roles/codeb_redis_backup): on the cache host codeb writes a canary key, then
- with the AOF off, asks for a BGSAVE and waits until INFO persistence says it completed
  (rdb_bgsave_in_progress back to 0 and rdb_saves moved on; LASTSAVE's one-second
  resolution can report an older save): the copy is the RDB (format `rdb`);
- with `appendonly yes` (codeb's caches), asks for a BGREWRITEAOF and waits until it
  completed (aof_rewrites moved on): the copy is the WHOLE multi-part appendonlydir/ (the
  manifest, the base and the incr files it names) as one tar (format `aof`).
The copy travels through the control machine (a directory of the run, removed after) to the
storage server, kept 0600. A restore of an RDB starts Redis on it alone with `appendonly no`
and then turns the AOF on (`CONFIG SET appendonly yes`): the live config says appendonly
yes, and Redis started that way on an RDB without an AOF comes up EMPTY. A restore of an
AOF copy unpacks appendonlydir/ and starts with appendonly yes (off, it would be ignored)."""

from __future__ import annotations

import datetime as dt
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codeb.errors import Conflict, NotFound, ValidationFailed
from codeb.executor.events import reported
from codeb.executor.runner import PlaybookRun
from codeb.executor.worker import JobResult, RunContext, describe_failure
from codeb.features.backups import drills, objectstore
from codeb.features.projects import service as projects
from codeb.protection.tokens import Target
from codeb.providers.objectstore import ObjectStoreError
from codeb.services import fleet, gate, operations, ports, scheduler
from codeb.services.context import SYSTEM, Actor, Deps
from codeb.store.models import (
    BackupDrill,
    Container,
    Environment,
    Project,
    RedisCopy,
    Server,
)

SCHEDULE = "hourly"
PERIOD = dt.timedelta(hours=1)
STATUSES = ("running", "completed", "failed", "deleted")
REDIS_IMAGE = "docker.io/library/redis:8"
CANARY_KEY = "codeb:canary"


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() + "Z" if value else None


def copy_view(c: RedisCopy) -> dict[str, Any]:
    return {
        "id": c.id,
        "project_id": c.project_id,
        "environment": c.environment,
        "component": c.component,
        "source": c.source,
        "source_server": c.source_server,
        "storage_server": c.storage_server,
        "kind": c.kind,
        "format": c.format,
        "status": c.status,
        "size_bytes": c.size_bytes,
        "keys": c.keys,
        "canary": c.canary,
        "started_at": _iso(c.started_at),
        "finished_at": _iso(c.finished_at),
        "verified_at": _iso(c.verified_at),
        "error": c.error,
        "operation_id": c.operation_id,
    }


def list_copies(
    project: str | None = None, environment: str | None = None, limit: int = 50, offset: int = 0
) -> dict[str, Any]:
    query = RedisCopy.select().where(RedisCopy.status != "deleted")
    if project:
        query = query.where(RedisCopy.project == projects.find_project(project).id)
    if environment:
        query = query.where(RedisCopy.environment == environment)
    total = query.count()
    rows = query.order_by(RedisCopy.created_at.desc(), RedisCopy.id.desc()).limit(limit)
    return {"copies": [copy_view(c) for c in rows.offset(offset)], "total": total}


def find_copy(copy_id: str) -> RedisCopy:
    c = RedisCopy.get_or_none((RedisCopy.id == copy_id) & (RedisCopy.status != "deleted"))
    if c is None:
        raise NotFound(f"Redis copy {copy_id!r} not found", {"copy_id": copy_id})
    return c


def _storage() -> Server:
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


def cache_container(project: Project, environment: str) -> Container:
    c = (
        Container.select()
        .where(
            (Container.project == project.id)
            & (Container.environment == environment)
            & (Container.server_type == "redis")
            & (Container.status == "running")
        )
        .first()
    )
    if c is None or not c.volume:
        raise Conflict(
            f"{project.name}/{environment} has no running Redis with a volume to copy",
            {"project": project.name, "environment": environment},
        )
    return c


def _new_id() -> str:
    return f"rc_{secrets.token_hex(8)}"


# -- copying ---------------------------------------------------------------------------------


def create_copy(
    deps: Deps,
    actor: Actor,
    body: dict[str, Any],
    confirmation: gate.Confirmation | None = None,
    kind: str = "manual",
) -> gate.Answer:
    """`POST /api/backups/redis {project, environment}` (redis_copy_create, LOW)."""
    unknown = sorted(set(body) - {"project", "environment"})
    if unknown:
        raise ValidationFailed(f"unknown fields: {', '.join(unknown)}", {"fields": unknown})
    for field in ("project", "environment"):
        if not isinstance(body.get(field), str) or not body[field]:
            raise ValidationFailed(f"{field} is required", {"field": field})
    project = projects.find_project(body["project"])
    env = projects.find_environment(project, body["environment"])
    cache_container(project, env.name)
    _storage()
    return gate.guard(
        deps,
        actor,
        "redis_copy_create",
        Target("environment", env.id, f"{project.name}/{env.name}", project.id, env.name),
        {"project_id": project.id, "environment": env.name, "kind": kind},
        effect=f"Copies the Redis data of {project.name}/{env.name} (a completed BGSAVE) to "
        "the storage server.",
        confirmation=confirmation,
        success_status=202,
    )


def _execute_copy(deps: Deps, actor: Actor, target: Target, params: dict) -> dict:
    project = Project.get_by_id(params["project_id"])
    c = cache_container(project, params["environment"])
    server = fleet.container_server(c)
    storage = _storage()
    now = deps.clock.now()
    copy = RedisCopy.create(
        id=_new_id(),
        project=project.id,
        environment=params["environment"],
        source=c.container_name,
        source_server=server.name,
        storage_server=storage.name,
        kind=params.get("kind", "manual"),
        format="rdb",
        status="running",
        canary=f"cn_{secrets.token_hex(8)}",
        started_at=now,
        created_at=now,
    )
    op = operations.create_operation(
        deps, actor, "redis_copy", sorted({server.name, storage.name}), {"copy_id": copy.id},
        project_id=project.id,
    )  # fmt: skip
    copy.operation_id = op.id
    copy.save()
    return {"copy": copy_view(copy), "operation": operations.operation_view(op)}


class CopyJob:
    def run(self, ctx: RunContext) -> JobResult:
        deps = ctx.deps
        copy = RedisCopy.get_by_id(ctx.operation.params["copy_id"])
        c = Container.get_or_none(Container.container_name == copy.source)
        stage = deps.settings.data_dir / "runs" / f"redis-{copy.id}"
        stage.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            outcome, records = ctx.run(
                PlaybookRun(
                    "redis_copy.yml",
                    fleet.hosts_for(deps, sorted({copy.source_server, copy.storage_server})),
                    extravars={
                        "codeb_redis_backup_container": copy.source,
                        "codeb_redis_backup_conf": f"/etc/codeb/redis/{copy.source}.conf",
                        "codeb_redis_backup_volume": c.volume if c else "",
                        "codeb_redis_backup_canary": copy.canary,
                        "codeb_redis_backup_stage": str(stage),
                        "codeb_redis_backup_copy_id": copy.id,
                        "codeb_redis_backup_source": copy.source,
                    },
                    timeout_s=3600,
                )
            )
            snap = reported(records, "codeb_redis_snapshot")
            stored = reported(records, "codeb_redis_stored")
            # The copy of record goes into the storage server's S3 store (its environment's
            # bucket); the copy is completed only when the object reads back whole.
            uploaded, upload_error = None, None
            aof = snap.get("format") == "aof"
            if outcome.status == "successful" and snap and stored:
                try:
                    staged = stage / f"{copy.id}.{'tar' if aof else 'rdb'}"
                    uploaded = objectstore.put_redis_copy(deps, ctx.run, copy, staged)
                except ObjectStoreError as exc:
                    upload_error = exc.message
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        with deps.write():
            copy = RedisCopy.get_by_id(copy.id)
            copy.finished_at = deps.clock.now()
            if uploaded is not None:
                copy.status, copy.error = "completed", None
                copy.format = "aof" if aof else "rdb"
                copy.keys = int(snap.get("keys") or 0)
                copy.size_bytes = int(snap.get("size") or 0)
                copy.path = uploaded.url
            else:
                copy.status = "failed"
                copy.error = upload_error or describe_failure(outcome, records)
            copy.save()
        if copy.status != "completed":
            return JobResult("failed", copy.error, {"copy": copy_view(copy)})
        return JobResult("succeeded", None, {"copy": copy_view(copy)})


# -- restoring -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Staged:
    """A restore's or a drill's directory of the run on the control machine (0700), the copy
    read into it from the store (None: a copy made before the store, read from the storage
    server's disk by the role), or why the store could not give it (nothing touched yet)."""

    dir: Path
    copy: Path | None
    error: str | None


@contextmanager
def staged_from_store(deps: Deps, copy: RedisCopy, ctx: RunContext) -> Iterator[Staged]:
    """The stage of one run (restore, in-place restore, drill) with the copy read from the
    store into it (_from_store); removed with whatever is in it when the block ends, however
    it ends."""
    stage = deps.settings.data_dir / "runs" / f"redis-{copy.id}-{ctx.operation.id}"
    stage.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        try:
            staged = Staged(stage, _from_store(deps, copy, stage), None)
        except ObjectStoreError as exc:
            staged = Staged(stage, None, exc.message)
        yield staged
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _from_store(deps: Deps, copy: RedisCopy, stage: Path) -> Path | None:
    """A restore's or a drill's copy, read from the S3 store (the copy of record) into a
    directory of the run on the control machine and proven whole (size and SHA-256 as put,
    the size codeb recorded), on its way to the host that loads it. None for a copy made
    before the store existed (its path is the storage server's disk copy: the role reads
    that). Raises ObjectStoreError with the store's reason."""
    if not (copy.path or "").startswith("s3://"):
        return None
    stage.mkdir(mode=0o700, parents=True, exist_ok=True)
    dest = stage / f"{copy.id}.{'tar' if copy.format == 'aof' else 'rdb'}"
    objectstore.get_redis_copy(deps, copy, dest)
    return dest


def restore_copy(
    deps: Deps,
    actor: Actor,
    copy_id: str,
    body: dict[str, Any],
    confirmation: gate.Confirmation | None = None,
) -> gate.Answer:
    """`POST /api/backups/redis/:id/restore {into?: new|in_place}`. `new` (redis_restore_new,
    LOW): a new Redis container on the storage server, with the environment's password and a
    port from its Redis range; the live cache is not touched. `in_place` (redis_restore,
    HIGH: two confirmations typing the container's name, a copy of it must exist; no
    cooldown, an incident can't wait): the live cache's data replaced by the copy."""
    copy = find_copy(copy_id)
    unknown = sorted(set(body) - {"into"})
    if unknown:
        raise ValidationFailed(f"unknown fields: {', '.join(unknown)}", {"fields": unknown})
    into = body.get("into", "new")
    if into not in ("new", "in_place"):
        raise ValidationFailed("into must be 'new' or 'in_place'", {"into": into})
    if copy.status != "completed":
        raise Conflict(f"copy {copy.id} is {copy.status}, not completed", {"status": copy.status})
    if into == "in_place":
        return _restore_in_place(deps, actor, copy, confirmation)
    return gate.guard(
        deps,
        actor,
        "redis_restore_new",
        Target("backup", copy.id, copy.id, copy.project_id, copy.environment),
        {"copy_id": copy.id},
        effect=f"Restores Redis copy {copy.id} of {copy.source} into a new Redis container on "
        "the storage server; the live cache is not touched.",
        confirmation=confirmation,
        success_status=202,
    )


def _execute_restore(deps: Deps, actor: Actor, target: Target, params: dict) -> dict:
    copy = find_copy(params["copy_id"])
    port = ports.allocate_port(deps.db, copy.environment, "redis", copy.project_id)
    name = f"{copy.source}-restore-{secrets.token_hex(3)}"
    op = operations.create_operation(
        deps, actor, "redis_restore", [copy.storage_server],
        {"copy_id": copy.id, "name": name, "port": port}, project_id=copy.project_id,
    )  # fmt: skip
    return {
        "restore": {"copy_id": copy.id, "container": name, "port": port},
        "operation": operations.operation_view(op),
    }


def _live_cache(copy: RedisCopy) -> Container:
    c = (
        Container.select()
        .where(
            (Container.container_name == copy.source)
            & (Container.server_type == "redis")
            & (Container.status != "removed")
        )
        .first()
    )
    if c is None or not c.volume:
        raise Conflict(
            f"{copy.source} is not deployed (removed, or no volume): restore into a new "
            "container, or deploy the environment first",
            {"source": copy.source},
        )
    return c


def _restore_in_place(
    deps: Deps, actor: Actor, copy: RedisCopy, confirmation: gate.Confirmation | None
) -> gate.Answer:
    c = _live_cache(copy)
    return gate.guard(
        deps,
        actor,
        "redis_restore",
        Target("container", c.id, c.container_name, project_id=c.project_id,
               environment=c.environment, server_ip=c.server_ip),
        {"copy_id": copy.id},
        effect=f"Replaces the live data of {c.container_name} with Redis copy {copy.id} (taken "
        f"{_iso(copy.finished_at)}); every key written since is lost. The cache is stopped "
        "while the copy loads.",
        confirmation=confirmation,
        success_status=202,
    )  # fmt: skip


def _execute_restore_in_place(deps: Deps, actor: Actor, target: Target, params: dict) -> dict:
    copy = find_copy(params["copy_id"])
    c = _live_cache(copy)
    server = fleet.container_server(c)
    op = operations.create_operation(
        deps, actor, "redis_restore_in_place", sorted({server.name, copy.storage_server}),
        {"copy_id": copy.id, "container_id": c.id}, project_id=copy.project_id,
    )  # fmt: skip
    return {
        "restore": {"copy_id": copy.id, "container": c.container_name, "mode": "in_place"},
        "operation": operations.operation_view(op),
    }


class InPlaceRestoreJob:
    def run(self, ctx: RunContext) -> JobResult:
        deps, params = ctx.deps, ctx.operation.params
        copy = RedisCopy.get_by_id(params["copy_id"])
        c = Container.get_by_id(params["container_id"])
        server = fleet.container_server(c)
        with staged_from_store(deps, copy, ctx) as staged:
            if staged.error is not None:  # nothing on the cache host was touched
                return JobResult("failed", staged.error, {})
            # The copy read from the store goes straight to the cache host; only a copy made
            # before the store is fetched from the storage server's disk (its play runs only
            # when the storage server is among the run's hosts).
            hosts = [server.name] if staged.copy else sorted({server.name, copy.storage_server})
            outcome, records = ctx.run(
                PlaybookRun(
                    "redis_restore_in_place.yml",
                    fleet.hosts_for(deps, hosts),
                    extravars={
                        "codeb_redis_backup_container": c.container_name,
                        "codeb_redis_backup_conf": f"/etc/codeb/redis/{c.container_name}.conf",
                        "codeb_redis_backup_volume": c.volume,
                        "codeb_redis_backup_stage": str(staged.dir),
                        "codeb_redis_backup_copy_id": copy.id,
                        "codeb_redis_backup_format": copy.format or "rdb",
                        "codeb_redis_backup_source": copy.source,
                        "codeb_redis_backup_image": REDIS_IMAGE,
                    },
                    timeout_s=3600,
                )
            )
        if outcome.status != "successful":
            return JobResult("failed", describe_failure(outcome, records), {})
        restored = reported(records, "codeb_redis_restore")
        return JobResult(
            "succeeded",
            None,
            {
                "restore": {
                    "copy_id": copy.id,
                    "container": c.container_name,
                    "mode": "in_place",
                    "keys": int(restored.get("keys") or 0),
                    "canary_matches": restored.get("canary") == copy.canary,
                }
            },
        )


class RestoreJob:
    def run(self, ctx: RunContext) -> JobResult:
        deps, params = ctx.deps, ctx.operation.params
        copy = RedisCopy.get_by_id(params["copy_id"])
        env = Environment.get_or_none(
            (Environment.project == copy.project_id) & (Environment.name == copy.environment)
        )
        if env is None:
            return JobResult("failed", "the environment of this copy no longer exists", {})
        password = deps.box.decrypt(env.redis_password)
        with staged_from_store(deps, copy, ctx) as staged:
            if staged.error is not None:
                return JobResult("failed", staged.error, {})
            outcome, records = ctx.run(
                PlaybookRun(
                    "redis_storage.yml",
                    fleet.hosts_for(deps, [copy.storage_server]),
                    extravars={
                        "codeb_redis_backup_action": "restore",
                        "codeb_redis_backup_copy_id": copy.id,
                        "codeb_redis_backup_format": copy.format or "rdb",
                        "codeb_redis_backup_source": copy.source,
                        "codeb_redis_backup_stage": str(staged.dir) if staged.copy else "",
                        "codeb_redis_backup_name": params["name"],
                        "codeb_redis_backup_port": params["port"],
                        "codeb_redis_backup_password": password,
                        "codeb_redis_backup_image": REDIS_IMAGE,
                    },
                    secrets=(password,),
                    timeout_s=3600,
                )
            )
        if outcome.status != "successful":
            return JobResult("failed", describe_failure(outcome, records), {})
        restored = reported(records, "codeb_redis_restore")
        return JobResult(
            "succeeded",
            None,
            {
                "restore": {
                    "copy_id": copy.id,
                    "container": params["name"],
                    "server": copy.storage_server,
                    "port": params["port"],
                    "keys": int(restored.get("keys") or 0),
                    "canary_matches": restored.get("canary") == copy.canary,
                }
            },
        )


# -- drills ----------------------------------------------------------------------------------


def verify_copy(
    deps: Deps,
    actor: Actor,
    copy_id: str,
    confirmation: gate.Confirmation | None = None,
    kind: str = "manual",
) -> gate.Answer:
    """`POST /api/backups/redis/:id/verify` (redis_verify, LOW): a restore drill."""
    copy = find_copy(copy_id)
    if copy.status != "completed":
        raise Conflict(f"copy {copy.id} is {copy.status}, not completed", {"status": copy.status})
    return gate.guard(
        deps,
        actor,
        "redis_verify",
        Target("backup", copy.id, copy.id, copy.project_id, copy.environment),
        {"copy_id": copy.id, "kind": kind},
        effect=f"Restores Redis copy {copy.id} into a scratch container on the storage "
        "server, compares DBSIZE and the canary key, and removes it.",
        confirmation=confirmation,
        success_status=202,
    )


def _execute_verify(deps: Deps, actor: Actor, target: Target, params: dict) -> dict:
    copy = find_copy(params["copy_id"])
    d = BackupDrill.create(
        id=drills.new_drill_id(),
        project=copy.project_id,
        environment=copy.environment,
        component="cache",
        backup_id=copy.id,
        kind=params.get("kind", "manual"),
        status="running",
        server=copy.storage_server,
        canary_expected=copy.canary,
        created_at=deps.clock.now(),
    )
    op = operations.create_operation(
        deps, actor, "redis_drill", [copy.storage_server], {"drill_id": d.id},
        project_id=copy.project_id,
    )  # fmt: skip
    d.operation_id = op.id
    d.save()
    return {"drill": drills.drill_view(d), "operation": operations.operation_view(op)}


def judge(copy: RedisCopy, report: dict[str, Any]) -> tuple[bool, str | None, dict]:
    checks: dict[str, dict[str, Any]] = {}
    loaded = str(report.get("loaded")).lower() == "true"
    checks["load"] = {"ok": loaded, "detail": str(report.get("error") or "")[-500:]}
    keys = report.get("keys")
    keys = int(keys) if keys not in (None, "", "None") else None
    checks["dbsize"] = {
        "ok": loaded and keys == copy.keys,
        "detail": "" if keys == copy.keys else f"DBSIZE {keys}, the copy had {copy.keys}",
    }
    canary = report.get("canary")
    canary = None if canary in (None, "", "None") else str(canary)
    checks["canary"] = {
        "ok": loaded and canary == copy.canary,
        "detail": "" if canary == copy.canary else f"{CANARY_KEY} is {canary!r}",
    }
    failed = [k for k in ("load", "dbsize", "canary") if not checks[k]["ok"]]
    if not failed:
        return True, None, checks
    return False, f"{failed[0]} failed: {checks[failed[0]]['detail'] or 'no detail'}", checks


class DrillJob:
    def run(self, ctx: RunContext) -> JobResult:
        deps = ctx.deps
        d = BackupDrill.get_by_id(ctx.operation.params["drill_id"])
        copy = RedisCopy.get_by_id(d.backup_id)
        with deps.write():
            d.started_at = deps.clock.now()
            d.save()
        scratch = f"{copy.source}-drill-{secrets.token_hex(3)}"
        # A drill proves the copy of record: the object in the store, read back whole.
        with staged_from_store(deps, copy, ctx) as staged:
            fetch_error = staged.error
            if fetch_error is None:
                outcome, records = ctx.run(
                    PlaybookRun(
                        "redis_storage.yml",
                        fleet.hosts_for(deps, [copy.storage_server]),
                        extravars={
                            "codeb_redis_backup_action": "drill",
                            "codeb_redis_backup_copy_id": copy.id,
                            "codeb_redis_backup_format": copy.format or "rdb",
                            "codeb_redis_backup_source": copy.source,
                            "codeb_redis_backup_stage": str(staged.dir) if staged.copy else "",
                            "codeb_redis_backup_name": scratch,
                            "codeb_redis_backup_image": REDIS_IMAGE,
                        },
                        timeout_s=3600,
                    )
                )
        report = reported(records, "codeb_redis_drill") if fetch_error is None else {}
        with deps.write():
            d = BackupDrill.get_by_id(d.id)
            copy = RedisCopy.get_by_id(copy.id)
            d.finished_at = deps.clock.now()
            if fetch_error is not None:
                passed, reason = False, f"the copy could not be read from the store: {fetch_error}"
            elif outcome.status == "successful" and report:
                passed, reason, checks = judge(copy, report)
                d.checks = checks
                keys = report.get("keys")
                d.rows_count = int(keys) if str(keys).isdigit() else None  # DBSIZE
                d.canary_found = copy.canary if checks["canary"]["ok"] else None
            else:
                passed, reason = False, describe_failure(outcome, records)
            d.duration_s = (d.finished_at - d.started_at).total_seconds()
            d.status, d.reason = ("passed" if passed else "failed"), reason
            d.save()
            copy.verified_at = d.finished_at if passed else None
            copy.save()
        if not passed:
            view = drills.drill_view(d)
            return JobResult("failed", f"restore drill failed: {reason}", {"drill": view})
        return JobResult("succeeded", None, {"drill": drills.drill_view(d)})


class DeleteJob:
    """Removes a copy from the storage server (the retention of a deleted project's data)."""

    def run(self, ctx: RunContext) -> JobResult:
        deps = ctx.deps
        copy = RedisCopy.get_by_id(ctx.operation.params["copy_id"])
        outcome, records = ctx.run(
            PlaybookRun(
                "redis_storage.yml",
                fleet.hosts_for(deps, [copy.storage_server]),
                extravars={
                    "codeb_redis_backup_action": "delete",
                    "codeb_redis_backup_copy_id": copy.id,
                    "codeb_redis_backup_source": copy.source,
                },
                timeout_s=600,
            )
        )
        if outcome.status != "successful":
            return JobResult("failed", describe_failure(outcome, records), {})
        try:
            objectstore.delete_redis_copy(deps, copy)
        except ObjectStoreError as exc:
            return JobResult("failed", exc.message, {})
        with deps.write():
            copy.status, copy.deleted_at = "deleted", deps.clock.now()
            copy.save()
        result: dict[str, Any] = {"copy": copy_view(copy)}
        # The last copy of a deleted project's environment on this storage server gone: its
        # bucket and its key go too (a live project's stay: its next copy uses them).
        project = Project.get_or_none(Project.id == copy.project_id)
        others = RedisCopy.select().where(
            (RedisCopy.project == copy.project_id)
            & (RedisCopy.environment == copy.environment)
            & (RedisCopy.storage_server == copy.storage_server)
            & RedisCopy.status.in_(("running", "completed", "failed"))
        )
        storage = Server.get_or_none(Server.name == copy.storage_server)
        if (project is None or project.status == "deleted") and not others.exists() and storage:
            try:
                result["store"] = objectstore.retire_environment(
                    deps, ctx.run, storage, copy.project_id, copy.environment
                )
            except ObjectStoreError as exc:
                return JobResult(
                    "failed", f"the copy is deleted; its bucket and key stay: {exc.message}", result
                )
        return JobResult("succeeded", None, result)


# -- the schedule ------------------------------------------------------------------------------


def scheduled_copies(deps: Deps) -> dict[str, Any]:
    """The hourly `redis_copies` job: every running cache component of a live project whose
    newest copy is older than the period (or running) gets one, through the gate as codeb."""
    if not Server.select().where((Server.role == "storage") & (Server.status == "ready")).exists():
        return {"started": [], "note": "no ready storage server"}
    now = deps.clock.now()
    started: list[str] = []
    skipped: list[dict[str, str]] = []
    caches = (
        Container.select()
        .join(Project, on=(Container.project == Project.id))
        .where(
            (Container.server_type == "redis")
            & (Container.status == "running")
            & (Project.status != "deleted")
        )
    )
    for c in caches:
        recent = RedisCopy.select().where(
            (RedisCopy.source == c.container_name)
            & (
                (RedisCopy.status == "running")
                | ((RedisCopy.status == "completed") & (RedisCopy.created_at > now - PERIOD))
            )
        )
        if recent.exists():
            continue
        project = Project.get_by_id(c.project_id)
        try:
            answer = create_copy(
                deps, SYSTEM, {"project": project.name, "environment": c.environment}, None,
                kind="scheduled",
            )  # fmt: skip
        except (Conflict, NotFound, ValidationFailed) as exc:
            skipped.append({"cache": c.container_name, "reason": exc.message})
            continue
        if answer.started_operation:
            started.append(answer.started_operation)
        else:
            skipped.append({"cache": c.container_name, "reason": str(answer.body.get("status"))})
    return {"started": started, "skipped": skipped}


APPLIERS: dict[str, gate.Applier] = {
    "redis_copy_create": _execute_copy,
    "redis_restore_new": _execute_restore,
    "redis_restore": _execute_restore_in_place,
    "redis_verify": _execute_verify,
}
JOBS = {
    "redis_copy": CopyJob(),
    "redis_restore": RestoreJob(),
    "redis_restore_in_place": InPlaceRestoreJob(),
    "redis_drill": DrillJob(),
}
SCHEDULES: tuple[scheduler.Job, ...] = (
    scheduler.Job(
        name="redis_copies",
        description="Copies each running cache component's Redis data (a completed BGSAVE) to "
        "the storage server when its newest copy is older than an hour.",
        interval=PERIOD,
        run=scheduled_copies,
    ),
)
