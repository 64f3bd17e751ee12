"""The state requirements, read from the tables that later issues fill (`backups`,
`containers`). Each predicate answers for one target and the operation's parameters."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from peewee import Expression

from codeb.protection.rules import STATE_REQUIREMENTS
from codeb.protection.tokens import Target
from codeb.store.models import Backup, BackupTarget, Container, Project, RedisCopy

RUNNING = ("running",)


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


def backup_exists(target: Target, params: dict[str, Any]) -> bool:
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
    its server (every one of them must have a verified backup)."""
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


def backup_verified(target: Target, params: dict[str, Any]) -> bool:
    """A backup that a restore drill verified, for every database the target concerns (by
    the db component's own backups); a project with no db container yet: one of the
    project's (environment's) backups."""
    projects = _projects_of(target)
    if not projects:
        return target.project_id is None and target.server_ip is not None
    databases = _databases_of(target)
    if databases:
        targets = {
            t.name: t.id
            for t in BackupTarget.select().where(
                BackupTarget.name.in_([c.container_name for c in databases])
            )
        }
        return all(
            c.container_name in targets
            and Backup.select()
            .where(
                (Backup.target_id == targets[c.container_name])
                & (Backup.status == "completed")
                & Backup.verified_at.is_null(False)
            )
            .exists()
            for c in databases
        )
    return all(
        Backup.select().where(_backup_where(target, p) & Backup.verified_at.is_null(False)).exists()
        for p in projects
    )


def container_stopped(target: Target, params: dict[str, Any]) -> bool:
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


def staging_tested(target: Target, params: dict[str, Any]) -> bool:
    where = _staging_with_image(target, params)
    return where is not None and Container.select().where(where).exists()


def health_check_passed(target: Target, params: dict[str, Any]) -> bool:
    """The image runs in staging and every staging replica running it is healthy (one sick
    replica of several is not a tested image)."""
    where = _staging_with_image(target, params)
    if where is None:
        return False
    states = [row.health_status for row in Container.select(Container.health_status).where(where)]
    return bool(states) and all(state == "healthy" for state in states)


PREDICATES: dict[str, Callable[[Target, dict[str, Any]], bool]] = {
    "backup_exists": backup_exists,
    "backup_verified": backup_verified,
    "container_stopped": container_stopped,
    "staging_tested": staging_tested,
    "health_check_passed": health_check_passed,
}
assert set(PREDICATES) == STATE_REQUIREMENTS


def evaluate(names: Iterable[str], target: Target, params: dict[str, Any]) -> dict[str, bool]:
    """The state facts a decision needs (only those the rule requires)."""
    return {name: PREDICATES[name](target, params) for name in names if name in PREDICATES}
