"""Backups of db components (issue 10): WAL streamed to a storage server by Barman, base
backups on the storage server's own timers and on request, point-in-time restore into a new
container or in place (HIGH), delete (HIGH). Use cases in codeb.features.backups.service."""

from __future__ import annotations

from codeb.api.declare import Op, answer, paging, path, query
from codeb.features.backups import drills, metrics, redis, retention, schemas, status
from codeb.features.backups import service as backups
from codeb.features.protection.schemas import NOT_YET, ProtectionExecuted
from codeb.services.ports import ENVIRONMENTS
from codeb.wiring import Configurator

BACKUP = path("backup_id")
STARTED = answer(
    (ProtectionExecuted, *NOT_YET),
    "an operation started (LOW, or confirmed), or not executed yet (confirm token, queue entry)",
)


def includeme(config: Configurator) -> None:
    # Imported here so a service import never pulls in Falcon (the HTTP layer).
    from codeb.features.backups import api

    config.add_appliers(backups.APPLIERS)
    config.add_runner_jobs(backups.JOBS)
    config.add_schedules(backups.SCHEDULES)
    # Restore drills and alarms (issue 11).
    config.add_appliers(drills.APPLIERS)
    config.add_runner_jobs(drills.JOBS)
    config.add_schedules((*drills.SCHEDULES, *status.SCHEDULES))
    # Redis copies (issue 11).
    config.add_appliers(redis.APPLIERS)
    config.add_runner_jobs(redis.JOBS)
    config.add_schedules(redis.SCHEDULES)
    # A deleted project's backups are kept for the retention period, then removed.
    config.add_runner_jobs(retention.JOBS)
    config.add_schedules(retention.SCHEDULES)
    config.add_metrics(metrics.METRICS)
    config.add_route(
        "/api/backups",
        api.Backups,
        get=Op(
            "Backups, newest first, optionally of one project / environment / status",
            {200: answer(schemas.BackupList, "backups and their total")},
            (404, 422),
            params=(
                query("project", maxLength=100),
                query("environment", enum=list(ENVIRONMENTS)),
                query("status", enum=list(backups.STATUSES)),
                query(
                    "deleted",
                    enum=["true", "false"],
                    description="true: the backups of deleted projects, kept for the "
                    "retention period (30 days), each with retained_until",
                ),
                *paging(),
            ),
        ),
        post=Op(
            "Take a base backup of an environment's db now (backup_create, LOW); the first "
            "one also sets up WAL streaming to the storage server",
            {202: STARTED},
            (403, 404, 409, 422),
            body=schemas.BackupCreateRequest,
            guarded=True,
        ),
    )
    config.add_route(
        "/api/backups/status",
        api.BackupsStatus,
        get=Op(
            "Backup alarms per environment and component: the newest backup's age against "
            "its schedule, WAL shipping (receiver, last WAL, gaps) and the last restore "
            "drill, each ok, warning or alarm with the reason",
            {200: answer(schemas.BackupStatus, "the status of every backed-up component")},
            (404, 422),
            params=(query("project", maxLength=100),),
        ),
    )
    copy = path("copy_id")
    config.add_route(
        "/api/backups/redis",
        api.RedisCopies,
        get=Op(
            "Copies of cache components' Redis data on the storage server, newest first",
            {200: answer(schemas.RedisCopyList, "copies and their total")},
            (404, 422),
            params=(
                query("project", maxLength=100),
                query("environment", enum=list(ENVIRONMENTS)),
                *paging(),
            ),
        ),
        post=Op(
            "Copy an environment's Redis data (a completed BGSAVE and a canary key) to the "
            "storage server now (redis_copy_create, LOW)",
            {202: STARTED},
            (403, 404, 409, 422),
            body=schemas.RedisCopyRequest,
            guarded=True,
        ),
    )
    config.add_route(
        "/api/backups/redis/{copy_id}/restore",
        api.RedisCopyRestore,
        params=(copy,),
        post=Op(
            "Restore a Redis copy: into a new Redis container on the storage server "
            "(redis_restore_new, LOW; loaded with appendonly no, then the AOF turned on), or "
            "in_place over the live cache (redis_restore, HIGH: queued, two confirmations "
            "typing the container's name, no cooldown)",
            {202: STARTED},
            (403, 404, 409, 422),
            body=schemas.RedisRestoreRequest,
            guarded=True,
        ),
    )
    config.add_route(
        "/api/backups/redis/{copy_id}/verify",
        api.RedisCopyVerify,
        params=(copy,),
        post=Op(
            "A restore drill of a Redis copy (redis_verify, LOW): a scratch container on the "
            "storage server, DBSIZE and the canary key compared; a pass sets verified_at",
            {202: STARTED},
            (403, 404, 409),
            guarded=True,
        ),
    )
    config.add_route(
        "/api/backups/{backup_id}/verify",
        api.BackupVerify,
        params=(BACKUP,),
        post=Op(
            "A restore drill (backup_verify, LOW): restore the backup into a scratch "
            "PostgreSQL container on the storage server, check connections, barman "
            "verify-backup, the canary row, count tables and rows, remove it; only a passed "
            "drill sets verified_at",
            {202: STARTED},
            (403, 404, 409),
            guarded=True,
        ),
    )
    config.add_route(
        "/api/backups/{backup_id}/drills",
        api.BackupDrills,
        params=(BACKUP,),
        get=Op(
            "The restore drills of a backup, newest first: result, reason, each check, "
            "canary, tables and rows, duration",
            {200: answer(schemas.DrillList, "the drills")},
            (404, 422),
            params=(query("limit", type="integer", minimum=1, maximum=200),),
        ),
    )
    config.add_route(
        "/api/backups/{backup_id}",
        api.BackupItem,
        params=(BACKUP,),
        get=Op(
            "A backup: status, times, size, WAL range, recoverable window",
            {200: answer(schemas.Backup, "the backup")},
            (404,),
        ),
        delete=Op(
            "Delete a backup from the storage server (backup_delete, HIGH: queued)",
            {202: STARTED},
            (403, 404, 409),
            guarded=True,
        ),
    )
    config.add_route(
        "/api/backups/{backup_id}/restore",
        api.BackupRestore,
        params=(BACKUP,),
        post=Op(
            "Restore a backup, to a second of its recoverable window: into a new PostgreSQL "
            "container on the storage server (backup_restore_new, LOW); a deleted project's "
            "retained backup into 'project': the project registered again under its name "
            "with the restored data as that environment's db (LOW; 409 while a live project "
            "has the name); or in_place over the "
            "environment's live data (backup_restore, HIGH: queued, two confirmations typing "
            "the environment's name, no cooldown; a safety backup first, the app restarted "
            "and health-checked after)",
            {202: STARTED},
            (403, 404, 409, 422),
            body=schemas.RestoreRequest,
            guarded=True,
        ),
    )
