"""A deleted project's retained backup restored as a new project (issue 11): `POST
/api/backups/:id/restore {into: "project", project?, target_time?}` (backup_restore_new, LOW,
as a project create is).

codeb registers the project again under the name it had (its environments, ports and
passwords as a project create gives them, its type and git repository as they were), and
Barman recovers the backup on the storage server into that environment's own db container,
`<project>-<environment>-db` with its volume `<...>-data`, published on the environment's db
port: the names a deploy gives a db. The environment keeps the deleted environment's db
password (the restored data's role has it), its db is placed on the storage server, and once
the data accepts writes a `containers` row records it: the new project's .env files (in the
answer, the only place they are shown, as a project create's) reach the restored data.

Why the same name: a physical restore keeps the database's roles and names (the user `shop`,
the database `shop_staging`), which codeb derives from the project's name; another name is
a 422 saying so. A live project of that name is a 409; a backup of a live project is a 409
(restore it into a new container or in place). A failed restore retires the project it was
to become (deleted, its ports released), so no half-made project stays active."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from codeb.errors import Conflict, ValidationFailed
from codeb.features.projects import service as projects
from codeb.protection.tokens import Target
from codeb.services import fleet, gate, operations, ports
from codeb.services.context import Actor, Deps
from codeb.services.validation import validate_dns_label
from codeb.store.models import (
    Backup,
    BackupRestore,
    BackupTarget,
    Container,
    Environment,
    Placement,
    Project,
    Server,
)

POSTGRES_PORT = 5432


def original_name(project: Project) -> str:
    """The name a deleted project had (`shop~0123456789ab` was `shop`)."""
    return project.name.split("~", 1)[0]


def request(
    deps: Deps,
    actor: Actor,
    b: Backup,
    t: BackupTarget,
    body: dict[str, Any],
    params: dict[str, Any],
    confirmation: gate.Confirmation | None,
) -> gate.Answer:
    """Checks what can be checked before the gate: a deleted project's backup, the name, no
    live project of that name, a storage server still registered."""
    old = Project.get_by_id(b.project_id)
    if old.status != "deleted":
        raise Conflict(
            f"backup {b.id} belongs to the live project {old.name!r}: into 'project' restores "
            "a deleted project's retained backup; restore this one into a new container "
            "(into 'new') or in place",
            {"project": old.name, "into": "project"},
        )
    had = original_name(old)
    name = validate_dns_label(body.get("project", had), "project", projects.PROJECT_NAME_MAX)
    if name != had:
        raise ValidationFailed(
            f"the restored database keeps its user and name ({projects.db_user_for(had)}, "
            f"{projects.db_name_for(had, b.environment)}), which codeb derives from the "
            f"project's name: the new project takes the name {had!r}",
            {"project": name, "name": had},
        )
    if Project.select().where((Project.name == name) & (Project.status != "deleted")).exists():
        raise Conflict(f"a project named {name!r} already exists", {"name": name})
    if Server.get_or_none((Server.name == t.storage_server) & (Server.status != "deleted")) is None:
        raise Conflict(
            f"the storage server {t.storage_server!r} holding backup {b.id} is not registered",
            {"server": t.storage_server},
        )
    params.update(into="project", project=name)
    return gate.guard(
        deps,
        actor,
        "backup_restore_new",
        Target("backup", b.id, b.id, old.id, b.environment),
        params,
        effect=f"Creates project {name!r} again (its environments, ports and passwords) and "
        f"restores backup {b.id}"
        + (f" to {params['target_time']}Z" if params["target_time"] else "")
        + f" as the db of {name}/{b.environment}, on the storage server {t.storage_server}.",
        confirmation=confirmation,
        success_status=202,
    )


def _deleted_environment(old: Project, name: str) -> Environment | None:
    return (
        Environment.select()
        .where((Environment.project == old.id) & (Environment.name == name))
        .order_by(Environment.created_at.desc())
        .first()
    )


def execute(
    deps: Deps,
    actor: Actor,
    b: Backup,
    t: BackupTarget,
    params: dict[str, Any],
    restore_view: Callable[[BackupRestore], dict[str, Any]],
) -> dict[str, Any]:
    """Inside the gate's transaction: the project as a project create makes it, the restored
    environment's db password and placement, the restore row and its operation."""
    old = Project.get_by_id(b.project_id)
    name = params["project"]
    made = projects.APPLIERS["project_create"](
        deps,
        actor,
        Target("project", name, name),
        {"name": name, "type": old.type, "git_repo": old.git_repo,
         "preview": b.environment == "preview"},
    )  # fmt: skip
    project = Project.get_by_id(made["project"]["id"])
    env = Environment.get(
        (Environment.project == project.id)
        & (Environment.name == b.environment)
        & (Environment.status == "active")
    )
    before = _deleted_environment(old, b.environment)
    if before is None:
        raise Conflict(
            f"the deleted project has no {b.environment} environment to take the db password from",
            {"environment": b.environment},
        )
    env.db_password = before.db_password  # the restored role's password, still encrypted
    env.save()
    storage = Server.get(Server.name == t.storage_server)
    fleet.record(deps, env, {"db": [storage.name]})
    container = f"{name}-{b.environment}-db"
    stale = BackupRestore.get_or_none(BackupRestore.container_name == container)
    if stale is not None:
        if stale.status not in ("failed", "removed"):
            raise Conflict(
                f"a restore named {container} already exists ({stale.status})",
                {"restore_id": stale.id},
            )
        stale.container_name = f"{container}~{stale.id[-8:]}"  # frees the name, keeps the row
        stale.save()
    r = BackupRestore.create(
        id=projects.new_id("rs"),
        backup=b.id,
        project=project.id,
        environment=env.name,
        container_name=container,
        server=t.storage_server,
        port=env.db_port,
        volume=f"{container}-data",
        target_time=(
            dt.datetime.fromisoformat(params["target_time"]) if params["target_time"] else None
        ),
        mode="project",
        created_at=deps.clock.now(),
    )
    op = operations.create_operation(
        deps, actor, "backup_restore", [t.storage_server], {"restore_id": r.id},
        project_id=project.id,
    )  # fmt: skip
    r.operation_id = op.id
    r.save()
    env_files = dict(made["env_files"])
    env_files[env.name] = projects.env_file_for(deps, project, env)  # the db where it runs
    return {
        "restore": restore_view(r),
        "project": projects.project_view(project),
        "env_files": env_files,
        "operation": operations.operation_view(op),
    }


def settle(deps: Deps, r: BackupRestore, image: str) -> None:
    """After the restore run (inside a write transaction): running, the environment's db is
    recorded as a container; failed, the project it was to become is retired."""
    project = Project.get_by_id(r.project_id)
    if r.status == "running":
        storage = Server.get(Server.name == r.server)
        now = deps.clock.now()
        c = Container.create(
            id=projects.new_id("ct"), project=project.id, environment=r.environment,
            server_type="db", server_ip=storage.ip, container_name=r.container_name,
            image=image, port_external=r.port, port_internal=POSTGRES_PORT,
            status="running", volume=r.volume, created_at=now, updated_at=now,
            last_operation_id=r.operation_id,
        )  # fmt: skip
        r.container_id = c.id
        r.save()
        return
    if project.status == "deleted":
        return
    Environment.update(status="deleted").where(
        (Environment.project == project.id) & (Environment.status != "deleted")
    ).execute()
    Placement.delete().where(
        Placement.environment.in_(
            Environment.select(Environment.id).where(Environment.project == project.id)
        )
    ).execute()
    ports.release_ports(project.id)
    project.name = projects.deleted_project_name(project)
    project.status = "deleted"
    project.updated_at = deps.clock.now()
    project.save()
    r.error = f"{r.error} (project {original_name(project)!r} retired: it had no data)"
    r.save()
