"""Projects and their environments: creation allocates ports, generates passwords (stored
encrypted) and renders the .env files; the deletes are dangerous and go through protection."""

from __future__ import annotations

import json
import secrets
from typing import Any

from peewee import IntegrityError

from codeb.errors import Conflict, NotFound, ValidationFailed
from codeb.protection.tokens import Target
from codeb.render import EnvFileValues, render_env_file
from codeb.secretbox import generate_password
from codeb.services import fleet, gate, ports
from codeb.services.context import Actor, Deps
from codeb.services.validation import validate_choice, validate_dns_label
from codeb.store.db import ThreadCache
from codeb.store.models import Environment, Project

PROJECT_TYPES = ("nextjs", "remix", "nodejs", "static")
# PostgreSQL identifiers stop at 63 bytes; "<user>_preview" must fit.
PROJECT_NAME_MAX = 48
DB_NAME_SUFFIX = {"staging": "staging", "production": "prod", "preview": "preview"}
DEFAULT_ENVIRONMENTS = ("staging", "production")
UPDATABLE_FIELDS = ("type", "git_repo")


def db_user_for(project_name: str) -> str:
    # A deleted project's name carries `~<id>` (deleted_project_name); its database and
    # user keep the name it had, which restores of its retained backups need.
    return project_name.split("~", 1)[0].replace("-", "_")


def db_name_for(project_name: str, environment: str) -> str:
    suffix = "dev" if environment == "local" else DB_NAME_SUFFIX[environment]
    return f"{db_user_for(project_name)}_{suffix}"


def new_id(prefix: str) -> str:
    # An underscore never occurs in a project name, so an id can't be mistaken for a name.
    return f"{prefix}_{secrets.token_hex(8)}"


def project_view(project: Project, environments: list[Environment] | None = None) -> dict:
    envs = environments if environments is not None else active_environments(project)
    return {
        "id": project.id,
        "name": project.name,
        "type": project.type,
        "git_repo": project.git_repo,
        "status": project.status,
        "created_at": project.created_at.isoformat() + "Z",
        "updated_at": project.updated_at.isoformat() + "Z",
        "environments": {env.name: environment_ports(env) for env in envs},
    }


def environment_ports(env: Environment) -> dict:
    return {
        "app_port": env.app_port,
        "db_port": env.db_port,
        "redis_port": env.redis_port,
        "redis_db": env.redis_db,
    }


def environment_view(env: Environment, project: Project) -> dict:
    return {
        "id": env.id,
        "project_id": project.id,
        "project": project.name,
        "name": env.name,
        **environment_ports(env),
        "domain": env.domain,
        "status": env.status,
        "db_name": db_name_for(project.name, env.name),
        "db_user": db_user_for(project.name),
        "created_at": env.created_at.isoformat() + "Z",
        # Where its components run (server names; codeb/services/fleet.py).
        "placement": {c: names for c, names in sorted(fleet.placed(env).items())},
    }


def _env_order(env: Environment) -> int:
    return ports.ENVIRONMENTS.index(env.name)


def active_environments(project: Project) -> list[Environment]:
    envs = Environment.select().where(
        (Environment.project == project.id) & (Environment.status == "active")
    )
    return sorted(envs, key=_env_order)


def find_project(ref: str) -> Project:
    """A project by id or by name; deleted projects are gone for the API."""
    project = (
        Project.select()
        .where(((Project.id == ref) | (Project.name == ref)) & (Project.status != "deleted"))
        .first()
    )
    if project is None:
        raise NotFound(f"project {ref!r} not found", {"project": ref})
    return project


def find_environment(project: Project, name: str) -> Environment:
    """An active environment of a project by name (404 naming both otherwise)."""
    env = Environment.get_or_none(
        (Environment.project == project.id)
        & (Environment.name == name)
        & (Environment.status == "active")
    )
    if env is None:
        raise NotFound(
            f"project {project.name!r} has no {name} environment",
            {"project": project.name, "environment": name},
        )
    return env


def _env_file(
    deps: Deps, project: Project, env: Environment, hosts: dict[str, str | None] | None = None
) -> str:
    """The environment's .env file. The db and Redis hosts are where they are placed (`hosts`,
    or the recorded placement); one not placed yet (no server of its role was registered when
    the environment was created) is the CODEB_DEFAULT_DB_HOST / CODEB_DEFAULT_CACHE_HOST
    placeholder until its first deploy places it."""
    box = deps.box
    hosts = hosts if hosts is not None else fleet.data_hosts(env)
    return render_env_file(
        deps.settings.templates_dir,
        EnvFileValues(
            environment=env.name,
            app_port=env.app_port,
            db_user=db_user_for(project.name),
            db_password=box.decrypt(env.db_password),
            db_name=db_name_for(project.name, env.name),
            db_host=hosts["db"] or deps.settings.default_db_host,
            db_port=env.db_port,
            cache_host=hosts["redis"] or deps.settings.default_cache_host,
            redis_port=env.redis_port,
            redis_db=env.redis_db,
            redis_password=box.decrypt(env.redis_password),
        ),
    )


def env_file_for(
    deps: Deps, project: Project, env: Environment, hosts: dict[str, str | None] | None = None
) -> str:
    """An environment's .env file (holds secrets: for the deploy, never for an answer), with
    the db and Redis on `hosts` (`fleet.data_hosts`; default: as placed)."""
    return _env_file(deps, project, env, hosts)


def _local_env_file(deps: Deps, project: Project) -> str:
    return render_env_file(
        deps.settings.templates_dir,
        EnvFileValues(
            environment="local",
            app_port=3000,
            db_user=db_user_for(project.name),
            db_password=deps.box.decrypt(project.local_db_password),
            db_name=db_name_for(project.name, "local"),
        ),
    )


def _new_environment(deps: Deps, project: Project, name: str) -> Environment:
    allocated = ports.allocate_ports(deps.db, name, project.id)
    env = Environment(
        id=new_id("env"),
        project=project.id,
        name=name,
        app_port=allocated["app"],
        db_port=allocated["db"],
        redis_port=allocated["redis"],
        # Every environment has a Redis of its own, so database 0 is always free.
        redis_db=0,
        db_password=deps.box.encrypt(generate_password()),
        redis_password=deps.box.encrypt(generate_password()),
        created_at=deps.clock.now(),
    )
    env.save(force_insert=True)
    # Its db and Redis go to the least loaded servers of their roles now, if there are any:
    # the .env files answered at creation name where they will run.
    fleet.place_new_environment(deps, env)
    return env


def create_project(
    deps: Deps,
    actor: Actor,
    body: dict[str, Any],
    confirmation: gate.Confirmation | None = None,
) -> gate.Answer:
    """Create a project with its staging and production environments (and preview on request),
    through the gate (LOW unless configured stricter). The answer is the only place the
    generated passwords are ever shown."""
    name = validate_dns_label(body.get("name"), "name", PROJECT_NAME_MAX)
    params = {
        "name": name,
        "type": validate_choice(body.get("type", "nodejs"), PROJECT_TYPES, "type"),
        "git_repo": body.get("git_repo"),
        "preview": bool(body.get("preview")),
    }
    return gate.guard(
        deps,
        actor,
        "project_create",
        Target("project", name, name),
        params,
        effect=f"Creates project {name!r} with its environments, ports and passwords.",
        confirmation=confirmation,
        success_status=201,
    )


def _execute_project_create(
    deps: Deps, actor: Actor, target: Target, params: dict[str, Any]
) -> dict:
    name = params["name"]
    wanted = [*DEFAULT_ENVIRONMENTS, *(["preview"] if params.get("preview") else [])]
    now = deps.clock.now()
    if Project.select().where(Project.name == name).exists():
        raise Conflict(f"a project named {name!r} already exists", {"name": name})
    try:
        with deps.db.atomic():  # a savepoint: a lost race on the name leaves nothing
            project = Project(
                id=new_id("prj"),
                name=name,
                type=params["type"],
                git_repo=params.get("git_repo"),
                local_db_password=deps.box.encrypt(generate_password()),
                created_at=now,
                updated_at=now,
            )
            project.save(force_insert=True)
            envs = [_new_environment(deps, project, env_name) for env_name in wanted]
    except IntegrityError:
        raise Conflict(f"a project named {name!r} already exists", {"name": name}) from None
    env_files = {"local": _local_env_file(deps, project)}
    env_files.update({env.name: _env_file(deps, project, env) for env in envs})
    return {
        "project": project_view(project, envs),
        "environments": {env.name: environment_ports(env) for env in envs},
        "env_files": env_files,
    }


def list_projects(limit: int = 100, offset: int = 0, status: str | None = None) -> dict:
    """One page of projects, each as project_view() shows it. Only the listed columns are read,
    as tuples: no model instances, and the encrypted passwords never leave the database."""
    query = Project.select(
        Project.id,
        Project.name,
        Project.type,
        Project.git_repo,
        Project.status,
        Project.created_at,
        Project.updated_at,
    ).where(Project.status != "deleted")
    if status:
        query = query.where(Project.status == status)
    total = query.count()
    rows = list(
        query.order_by(Project.created_at, Project.name).limit(limit).offset(offset).tuples()
    )
    envs_by_project: dict[str, dict[str, dict]] = {row[0]: {} for row in rows}
    if rows:
        env_rows = (
            Environment.select(
                Environment.project,
                Environment.name,
                Environment.app_port,
                Environment.db_port,
                Environment.redis_port,
                Environment.redis_db,
            )
            .where(
                Environment.project.in_(list(envs_by_project)) & (Environment.status == "active")
            )
            .tuples()
        )
        # The order of active_environments() (ports.ENVIRONMENTS), keys as environment_ports().
        for project_id, env_name, app_port, db_port, redis_port, redis_db in sorted(
            env_rows, key=lambda row: ports.ENVIRONMENTS.index(row[1])
        ):
            envs_by_project[project_id][env_name] = {
                "app_port": app_port,
                "db_port": db_port,
                "redis_port": redis_port,
                "redis_db": redis_db,
            }
    return {
        # The keys and their order of project_view().
        "projects": [
            {
                "id": project_id,
                "name": name,
                "type": kind,
                "git_repo": git_repo,
                "status": project_status,
                "created_at": created_at.isoformat() + "Z",
                "updated_at": updated_at.isoformat() + "Z",
                "environments": envs_by_project[project_id],
            }
            for project_id, name, kind, git_repo, project_status, created_at, updated_at in rows
        ],
        "total": total,
        "limit": limit,
        "offset": offset,
    }


# Per waitress thread, at most 16 pages (a page of 500 projects is about 200 kB).
_LIST_CACHE = ThreadCache(max_entries=16)


def list_projects_json(
    deps: Deps, limit: int = 100, offset: int = 0, status: str | None = None
) -> bytes:
    """list_projects() serialized as Falcon's JSON handler does (UTF-8, ensure_ascii=False). On
    SQLite the bytes are kept per thread until the next commit by anyone (any thread, any
    process): see codeb.store.db.ThreadCache. Other backends compute every time."""
    return _LIST_CACHE.get(
        deps.db,
        ("list_projects", limit, offset, status),
        lambda: json.dumps(list_projects(limit, offset, status), ensure_ascii=False).encode(),
    )


def get_project(ref: str) -> dict:
    return project_view(find_project(ref))


def update_project(
    deps: Deps,
    actor: Actor,
    ref: str,
    body: dict[str, Any],
    confirmation: gate.Confirmation | None = None,
) -> gate.Answer:
    """Change a project's descriptive fields. Name and status are not editable here: a rename
    would orphan databases, and a status change is what the protected delete is for."""
    forbidden = sorted(set(body) - set(UPDATABLE_FIELDS))
    if forbidden:
        raise ValidationFailed(
            f"these fields cannot be changed: {', '.join(forbidden)}",
            {"fields": forbidden, "updatable": list(UPDATABLE_FIELDS)},
        )
    changes: dict[str, Any] = {}
    if "type" in body:
        changes["type"] = validate_choice(body["type"], PROJECT_TYPES, "type")
    if "git_repo" in body:
        changes["git_repo"] = body["git_repo"]
    project = find_project(ref)
    if not changes:
        return gate.Answer(200, project_view(project))
    return gate.guard(
        deps,
        actor,
        "project_update",
        project_target(project),
        changes,
        effect=f"Changes {', '.join(sorted(changes))} of project {project.name!r}.",
        confirmation=confirmation,
    )


def _live_project(project_id: str | None) -> Project:
    project = Project.get_or_none((Project.id == project_id) & (Project.status != "deleted"))
    if project is None:
        raise NotFound("the project no longer exists", {"project": project_id})
    return project


def _execute_project_update(
    deps: Deps, actor: Actor, target: Target, params: dict[str, Any]
) -> dict:
    project = _live_project(target.ref)
    for field, value in params.items():
        if field in UPDATABLE_FIELDS:
            setattr(project, field, value)
    project.updated_at = deps.clock.now()
    project.save()
    return project_view(project)


def project_target(project: Project) -> Target:
    return Target("project", project.id, project.name, project_id=project.id)


def delete_project(
    deps: Deps, actor: Actor, ref: str, confirmation: gate.Confirmation | None = None
) -> gate.Answer:
    """CRITICAL: queued; runs after a verified backup, another admin's approval, the cooldown
    and a final confirmation. Marks the project and its environments deleted and releases
    their ports; backups, volumes and container records stay."""
    project = find_project(ref)
    envs = ", ".join(e.name for e in active_environments(project)) or "none"
    return gate.guard(
        deps,
        actor,
        "project_delete",
        project_target(project),
        effect=(
            f"Deletes project {project.name!r} and its environments ({envs}) and releases their "
            "ports; backups, volumes and container records are kept."
        ),
        confirmation=confirmation,
    )


def deleted_project_name(project: Project) -> str:
    # `~` never occurs in a project name, so the name is free again; it still fits 63.
    return f"{project.name}~{project.id[-12:]}"


def _execute_project_delete(
    deps: Deps, actor: Actor, target: Target, params: dict[str, Any]
) -> dict:
    project = _live_project(target.ref)
    envs = [e.name for e in active_environments(project)]
    Environment.update(status="deleted").where(
        (Environment.project == project.id) & (Environment.status != "deleted")
    ).execute()
    released = ports.release_ports(project.id)
    name = project.name
    project.name = deleted_project_name(project)
    project.status = "deleted"
    project.updated_at = deps.clock.now()
    project.save()
    return {
        "project": {"id": project.id, "name": name, "status": "deleted"},
        "environments_deleted": envs,
        "ports_released": released,
    }


def list_environments(ref: str) -> dict:
    project = find_project(ref)
    return {"environments": [environment_view(e, project) for e in active_environments(project)]}


def get_environment(ref: str, env_name: str) -> dict:
    project = find_project(ref)
    return environment_view(_find_environment(project, env_name), project)


def _find_environment(project: Project, env_name: str) -> Environment:
    env = (
        Environment.select()
        .where(
            (Environment.project == project.id)
            & (Environment.name == env_name)
            & (Environment.status == "active")
        )
        .first()
    )
    if env is None:
        raise NotFound(
            f"environment {env_name!r} of project {project.name!r} not found",
            {"project": project.name, "environment": env_name},
        )
    return env


def create_environment(
    deps: Deps,
    actor: Actor,
    ref: str,
    body: dict[str, Any],
    confirmation: gate.Confirmation | None = None,
) -> gate.Answer:
    """Add an environment (typically preview) to a project; answers with its .env file."""
    env_name = validate_choice(body.get("name"), ports.ENVIRONMENTS, "name")
    project = find_project(ref)
    target = Target(
        "environment", f"{project.id}/{env_name}", f"{project.name}/{env_name}",
        project_id=project.id, environment=env_name,
    )  # fmt: skip
    return gate.guard(
        deps,
        actor,
        "environment_create",
        target,
        {"name": env_name},
        effect=f"Adds a {env_name} environment with its own ports to {project.name!r}.",
        confirmation=confirmation,
        success_status=201,
    )


def _execute_environment_create(
    deps: Deps, actor: Actor, target: Target, params: dict[str, Any]
) -> dict:
    project = _live_project(target.project_id)
    env_name = params["name"]
    if (
        Environment.select()
        .where((Environment.project == project.id) & (Environment.name == env_name))
        .exists()
    ):
        raise Conflict(
            f"project {project.name!r} already has a {env_name} environment",
            {"project": project.name, "environment": env_name},
        )
    try:
        with deps.db.atomic():
            env = _new_environment(deps, project, env_name)
    except IntegrityError:
        raise Conflict(
            f"project already has a {env_name} environment", {"environment": env_name}
        ) from None
    project.updated_at = deps.clock.now()
    project.save()
    return {
        "environment": environment_view(env, project),
        "env_file": _env_file(deps, project, env),
    }


def delete_environment(
    deps: Deps,
    actor: Actor,
    ref: str,
    env_name: str,
    confirmation: gate.Confirmation | None = None,
) -> gate.Answer:
    """HIGH: queued; runs after two confirmations (the second typing `<project>/<env>`), a
    backup of the environment and the 24 h cooldown. Marks it deleted and releases its ports;
    backups, volumes and container records stay."""
    project = find_project(ref)
    env = _find_environment(project, env_name)
    _refuse_last_environment(project, env)
    target = Target(
        "environment", env.id, f"{project.name}/{env.name}", project_id=project.id,
        environment=env.name,
    )  # fmt: skip
    return gate.guard(
        deps,
        actor,
        # Production holds the data the project exists for: deleting it costs what deleting
        # the project costs (rules.DOMINATED_BY keeps that true under configuration too).
        "environment_delete_production" if env.name == "production" else "environment_delete",
        target,
        effect=(
            f"Deletes the {env.name} environment of project {project.name!r} and releases its "
            "ports; backups, volumes and container records are kept."
        ),
        confirmation=confirmation,
    )


def _refuse_last_environment(project: Project, env: Environment) -> None:
    """Deleting every environment one by one would be a project delete at a lower price."""
    others = (
        Environment.select()
        .where(
            (Environment.project == project.id)
            & (Environment.status == "active")
            & (Environment.id != env.id)
        )
        .count()
    )
    if not others:
        raise Conflict(
            f"{env.name} is the last environment of {project.name!r}: deleting it would delete "
            f"the project; use DELETE /api/projects/{project.name} (CRITICAL) instead",
            {"reason": "last_environment", "project": project.name, "environment": env.name},
        )


def _execute_environment_delete(
    deps: Deps, actor: Actor, target: Target, params: dict[str, Any]
) -> dict:
    project = _live_project(target.project_id)
    env = Environment.get_or_none((Environment.id == target.ref) & (Environment.status == "active"))
    if env is None:
        raise NotFound("the environment no longer exists", {"environment": target.name})
    # Again at execution: two queued deletes may each have been the last but one.
    _refuse_last_environment(project, env)
    name = env.name
    released = ports.release_ports(project.id, name)
    # The deleted row steps aside (UNIQUE(project, name)) so the environment can be re-created.
    env.name = f"{name}~{env.id[-8:]}"
    env.status = "deleted"
    env.save()
    project.updated_at = deps.clock.now()
    project.save()
    return {
        "environment": {"id": env.id, "project": project.name, "name": name, "status": "deleted"},
        "ports_released": released,
    }


# The Protection Layer's appliers of this module (plain data, gathered by the feature package).
APPLIERS: dict[str, gate.Applier] = {
    "project_create": _execute_project_create,
    "environment_create": _execute_environment_create,
    "project_update": _execute_project_update,
    "project_delete": _execute_project_delete,
    "environment_delete": _execute_environment_delete,
    "environment_delete_production": _execute_environment_delete,
}
