"""The state requirements, read from the tables that later issues fill (`backups`,
`containers`). Each predicate answers for one target, the operation's parameters and the
`Context` (the injected clock's now and the limits from the settings), so the gate decides
with the same now for the cooldowns and for the age of a backup; a predicate answers a
bool or a `Fact` that says what it found."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from peewee import Expression, fn

from codeb.protection.decision import Fact
from codeb.protection.rules import STATE_REQUIREMENTS
from codeb.protection.tokens import Target
from codeb.store.models import Backup, BackupTarget, Container, Project, RedisCopy

RUNNING = ("running",)
# CODEB_BACKUP_VERIFIED_MAX_AGE_HOURS' default: a CRITICAL delete stands on a verified
# backup at most a week old (the daily drills verify the newest backup each day).
DEFAULT_VERIFIED_MAX_AGE = dt.timedelta(days=7)


@dataclass(frozen=True)
class Context:
    """What predicates read besides the store: the gate's now (its injected clock) and the
    oldest a verified backup may be. `now=None` (a predicate called alone, without the
    gate) checks no age."""

    now: dt.datetime | None = None
    verified_max_age: dt.timedelta = DEFAULT_VERIFIED_MAX_AGE


UNTIMED = Context()


def _projects_of(target: Target) -> list[str]:
    """The projects a target concerns: its own, or those with containers on its server."""
    if target.project_id:
        return [target.project_id]
    if target.server_ip:
        query = (
            Container.select(Container.project)
            .join(Project)
            .where((Container.server_ip == target.server_ip) & (Project.status != "deleted"))
            .distinct()
        )
        return [row.project_id for row in query]
    return []


def _backup_where(target: Target, project_id: str) -> Expression:
    where = (Backup.project == project_id) & (Backup.status == "completed")
    if target.environment and target.project_id:
        where &= Backup.environment == target.environment
    return where


def _redis_container(target: Target) -> Container | None:
    if target.kind != "container":
        return None
    c = Container.get_or_none(Container.id == target.ref)
    return c if c is not None and c.server_type == "redis" else None


def backup_exists(target: Target, params: dict[str, Any], ctx: Context = UNTIMED) -> bool:
    cache = _redis_container(target)
    if cache is not None:
        # A Redis volume's backup is a copy of that Redis's data, not the db's backup.
        return (
            RedisCopy.select()
            .where((RedisCopy.source == cache.container_name) & (RedisCopy.status == "completed"))
            .exists()
        )
    projects = _projects_of(target)
    if not projects:
        # A server with nothing on it has nothing to lose; a project target always has one.
        return target.project_id is None and target.server_ip is not None
    return all(Backup.select().where(_backup_where(target, p)).exists() for p in projects)


def _databases_of(target: Target) -> list[Container]:
    """The db containers a target concerns: its project's (or environment's), or those on
    its server (every one of them must have a verified backup). A db container's own
    target (db_drop of its volume, kept after the container was removed) is that db."""
    if target.kind == "container":
        own = Container.get_or_none(Container.id == target.ref)
        if own is not None and own.server_type == "db":
            return [own]
    where = (Container.server_type == "db") & (Container.status != "removed")
    if target.project_id:
        where &= Container.project == target.project_id
        if target.environment and target.kind != "project":
            where &= Container.environment == target.environment
    elif target.server_ip:
        where &= Container.server_ip == target.server_ip
    else:
        return []
    return list(Container.select().where(where))


def age_words(delta: dt.timedelta) -> str:
    """An age as an operator reads it: 9d 2h, 5h 07m."""
    minutes = max(0, int(delta.total_seconds()) // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    return f"{days}d {hours}h" if days else f"{hours}h {minutes:02d}m"


# A backup's own time: the end of the base backup (the earliest point it restores to), else
# when codeb saw it finish, else the row's creation.
_BACKUP_TIME = fn.COALESCE(Backup.end_time, Backup.finished_at, Backup.created_at)


def _newest_verified(where: Expression) -> dt.datetime | None:
    """The time of the newest completed, drill-verified backup matching `where`."""
    row = (
        Backup.select(_BACKUP_TIME.alias("taken"))
        .where(where & (Backup.status == "completed") & Backup.verified_at.is_null(False))
        .order_by(_BACKUP_TIME.desc())
        .first()
    )
    taken = row.taken if row is not None else None
    if isinstance(taken, str):  # SQLite hands a COALESCE back as text
        taken = dt.datetime.fromisoformat(taken)
    return taken


def _verified_fact(found: dict[str, dt.datetime | None], ctx: Context) -> Fact:
    """Met when every named database has a verified backup no older than the limit; else
    what was found for each one that has not (none, or the newest one's age)."""
    limit = ctx.verified_max_age
    missing = []
    for name, taken in found.items():
        if taken is None:
            missing.append(f"{name}: no drill-verified completed backup")
        elif ctx.now is not None and ctx.now - taken > limit:
            age = age_words(ctx.now - taken)
            missing.append(
                f"{name}: the newest verified backup is {age} old (taken {taken.isoformat()}Z), "
                f"older than the limit of {age_words(limit)} (CODEB_BACKUP_VERIFIED_MAX_AGE_HOURS)"
            )
    return Fact(not missing, "; ".join(missing))


def backup_verified(target: Target, params: dict[str, Any], ctx: Context = UNTIMED) -> Fact:
    """A backup that a restore drill verified, no older than `ctx.verified_max_age`, for
    every database the target concerns (by the db component's own backups); a project with
    no db container yet: one of the project's (environment's) backups."""
    projects = _projects_of(target)
    if not projects:
        return Fact(target.project_id is None and target.server_ip is not None)
    databases = _databases_of(target)
    if databases:
        targets = {
            t.name: t.id
            for t in BackupTarget.select().where(
                BackupTarget.name.in_([c.container_name for c in databases])
            )
        }
        found = {
            c.container_name: (
                _newest_verified(Backup.target_id == targets[c.container_name])
                if c.container_name in targets
                else None
            )
            for c in databases
        }
        return _verified_fact(found, ctx)
    return _verified_fact(
        {f"project {p}": _newest_verified(_backup_where(target, p)) for p in projects}, ctx
    )


def container_stopped(target: Target, params: dict[str, Any], ctx: Context = UNTIMED) -> bool:
    """The target container is not running; for other targets, none of theirs is."""
    if target.kind == "container":
        where = Container.id == target.ref
    elif target.project_id:
        where = Container.project == target.project_id
        if target.environment:
            where &= Container.environment == target.environment
    elif target.server_ip:
        where = Container.server_ip == target.server_ip
    else:
        return True
    return not Container.select().where(where & Container.status.in_(RUNNING)).exists()


def _staging_with_image(target: Target, params: dict[str, Any]) -> Expression | None:
    image = params.get("image")
    if not target.project_id or not isinstance(image, str) or not image:
        return None
    return (
        (Container.project == target.project_id)
        & (Container.environment == "staging")
        & (Container.image == image)
        & Container.status.in_(RUNNING)
    )


def staging_tested(target: Target, params: dict[str, Any], ctx: Context = UNTIMED) -> bool:
    where = _staging_with_image(target, params)
    return where is not None and Container.select().where(where).exists()


def health_check_passed(target: Target, params: dict[str, Any], ctx: Context = UNTIMED) -> bool:
    """The image runs in staging and every staging replica running it is healthy (one sick
    replica of several is not a tested image)."""
    where = _staging_with_image(target, params)
    if where is None:
        return False
    states = [row.health_status for row in Container.select(Container.health_status).where(where)]
    return bool(states) and all(state == "healthy" for state in states)


Predicate = Callable[[Target, dict[str, Any], Context], "bool | Fact"]
PREDICATES: dict[str, Predicate] = {
    "backup_exists": backup_exists,
    "backup_verified": backup_verified,
    "container_stopped": container_stopped,
    "staging_tested": staging_tested,
    "health_check_passed": health_check_passed,
}
assert set(PREDICATES) == STATE_REQUIREMENTS


def evaluate(
    names: Iterable[str], target: Target, params: dict[str, Any], ctx: Context
) -> dict[str, bool | Fact]:
    """The state facts a decision needs (only those the rule requires), at `ctx.now`."""
    return {name: PREDICATES[name](target, params, ctx) for name in names if name in PREDICATES}
