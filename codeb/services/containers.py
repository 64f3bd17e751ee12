"""Containers end to end: deploy an environment (its app, and on first deploy its PostgreSQL
and Redis), start/stop/restart/remove them and delete volumes, all through the Protection
Layer; preview any of it as a check-mode run; follow the work as operations."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import socket
import time
from typing import Any

import httpx

from codeb.errors import Conflict, NotFound, ValidationFailed
from codeb.executor.events import reported
from codeb.executor.runner import PlaybookRun
from codeb.executor.worker import (
    OUTCOME_STATUS,
    JobFailed,
    JobResult,
    RunContext,
    describe_failure,
)
from codeb.protection.tokens import Target
from codeb.render.units import EnvironmentUnits, plan_environment
from codeb.services import operations, projects, protection, servers
from codeb.services.context import Actor, Deps
from codeb.store.models import Container, Environment, Project, Server

IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$")
COMPONENT_SERVER = {"app": "app", "db": "db", "redis": "cache"}
INTERNAL_PORT = {"db": 5432, "redis": 6379}
ACTIONS = ("start", "stop", "restart")
HEALTH_DEADLINE_S = 60


def _iso(value: Any) -> str | None:
    return value.isoformat() + "Z" if value else None


def container_view(c: Container) -> dict:
    return {
        "id": c.id,
        "project_id": c.project_id,
        "environment": c.environment,
        "server_type": c.server_type,
        "server_ip": c.server_ip,
        "container_name": c.container_name,
        "image": c.image,
        "previous_image": c.previous_image,
        "port_external": c.port_external,
        "port_internal": c.port_internal,
        "volume": c.volume,
        "status": c.status,
        "health_status": c.health_status,
        "health_checked_at": _iso(c.health_checked_at),
        "last_operation_id": c.last_operation_id,
        "created_at": _iso(c.created_at),
        "updated_at": _iso(c.updated_at),
    }


# -- reading ---------------------------------------------------------------------------


def list_containers(project: str | None = None, environment: str | None = None) -> dict:
    query = Container.select().where(Container.status != "removed")
    if project:
        query = query.where(Container.project == projects.find_project(project).id)
    if environment:
        query = query.where(Container.environment == environment)
    rows = query.order_by(Container.project, Container.environment, Container.server_type)
    return {"containers": [container_view(c) for c in rows]}


def find_container(container_id: str) -> Container:
    c = Container.get_or_none((Container.id == container_id) & (Container.status != "removed"))
    if c is None:
        raise NotFound(f"container {container_id!r} not found", {"container_id": container_id})
    return c


def get_container(deps: Deps, container_id: str, live: bool = False) -> dict:
    c = find_container(container_id)
    view = container_view(c)
    if live:
        view["live"] = _inspect(deps, c)
    return view


def _inspect(deps: Deps, c: Container) -> dict:
    server = _server_by_ip(c.server_ip)
    outcome, records = servers.run_now(
        deps, "inspect.yml", [server.name],
        extravars={"codeb_inspect_unit": c.container_name}, timeout_s=60,
    )  # fmt: skip
    if outcome.status != "successful":
        return {"error": describe_failure(outcome, records)}
    return reported(records, "codeb_inspect")


def _server_by_ip(ip: str) -> Server:
    server = Server.get_or_none((Server.ip == ip) & (Server.status != "deleted"))
    if server is None:
        raise Conflict(f"no registered server has the address {ip}", {"server_ip": ip})
    return server


# -- deploy ----------------------------------------------------------------------------


def _role_server(role: str) -> Server:
    server = (
        Server.select()
        .where((Server.role == role) & (Server.status == "ready"))
        .order_by(Server.id)
        .first()
    )
    if server is None:
        raise Conflict(
            f"no ready server with the role {role!r}: register and bootstrap one first",
            {"role": role},
        )
    return server


def _environment(project: Project, name: str) -> Environment:
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


def environment_units(
    deps: Deps, project: Project, env: Environment, image: str
) -> EnvironmentUnits:
    """Everything the three units are rendered from, secrets decrypted (never logged)."""
    app, db, cache = (_role_server(r) for r in ("app", "db", "cache"))
    return EnvironmentUnits(
        project=project.name,
        environment=env.name,
        app_image=image,
        app_port=env.app_port,
        app_env=projects.env_file_for(deps, project, env),
        db_user=projects.db_user_for(project.name),
        db_password=deps.box.decrypt(env.db_password),
        db_name=projects.db_name_for(project.name, env.name),
        db_port=env.db_port,
        redis_password=deps.box.decrypt(env.redis_password),
        redis_port=env.redis_port,
        app_server=app.name,
        db_server=db.name,
        cache_server=cache.name,
    )


def plan_hash(plan: dict) -> str:
    """Identifies a plan exactly (secret contents included, hashed, never shown)."""
    return hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()


def deploy(
    deps: Deps,
    actor: Actor,
    body: dict[str, Any],
    confirmation: protection.Confirmation | None = None,
    preview: bool = False,
    expected_plan: str | None = None,
) -> protection.Answer | dict:
    project = projects.find_project(str(body.get("project", "")))
    env = _environment(project, str(body.get("environment", "")))
    image = body.get("image")
    if not isinstance(image, str) or not IMAGE.match(image):
        raise ValidationFailed("image is not a valid image reference", {"field": "image"})
    units = environment_units(deps, project, env, image)
    plan = plan_environment(deps.settings.templates_dir, units)
    current = plan_hash(plan)
    if preview:
        return _preview(deps, "deploy.yml", units, {"codeb_plan": plan}, current)
    if expected_plan and expected_plan != current:
        raise PlanChanged(current)
    operation = f"deploy_{env.name}"
    target = Target(
        "environment",
        env.id,
        f"{project.name}/{env.name}",
        project_id=project.id,
        environment=env.name,
    )
    params = {"image": image}
    if expected_plan:
        params["plan_hash"] = expected_plan
    return protection.guard(
        deps,
        actor,
        operation,
        target,
        params,
        effect=(
            f"Deploys {image} to the {env.name} environment of {project.name!r} "
            "(and its PostgreSQL and Redis if they are not running yet); a version that "
            "fails its health check is rolled back."
        ),
        confirmation=confirmation,
        success_status=202,
    )


class PlanChanged(Conflict):
    code = "plan_changed"

    def __init__(self, current: str) -> None:
        super().__init__(
            "the state changed since the preview: preview again",
            {"current_plan_hash": current},
        )


def _execute_deploy(deps: Deps, actor: Actor, target: Target, params: dict[str, Any]) -> dict:
    project = Project.get_by_id(target.project_id)
    env = _environment(project, target.environment)
    units = environment_units(deps, project, env, params["image"])
    plan = plan_environment(deps.settings.templates_dir, units)
    if params.get("plan_hash") and params["plan_hash"] != plan_hash(plan):
        raise PlanChanged(plan_hash(plan))
    names = sorted({units.app_server, units.db_server, units.cache_server})
    op = operations.create_operation(
        deps,
        actor,
        "deploy",
        names,
        {
            "project_id": project.id,
            "environment": env.name,
            "image": params["image"],
            "plan_hash": params.get("plan_hash"),
        },
        project_id=project.id,
    )
    return {"operation": operations.operation_view(op)}


for _env in ("staging", "production", "preview"):
    protection.register_executor(f"deploy_{_env}", _execute_deploy)


class DeployJob:
    """Place the units, check the app's health; a failing new version is rolled back."""

    def run(self, ctx: RunContext) -> JobResult:
        deps, params = ctx.deps, ctx.operation.params
        project = Project.get_by_id(params["project_id"])
        env = _environment(project, params["environment"])
        app_row = _row(project.id, env.name, "app")
        previous = app_row.image if app_row and app_row.status == "running" else None
        units = environment_units(deps, project, env, params["image"])
        plan = plan_environment(deps.settings.templates_dir, units)
        if params.get("plan_hash") and params["plan_hash"] != plan_hash(plan):
            raise JobFailed("the state changed since the preview; nothing was deployed")
        if env.name == "production":
            _require_tested_image(ctx, project, units)
        outcome, records = ctx.run(_deploy_run(deps, units, plan))
        if outcome.status != "successful":
            return JobResult(
                OUTCOME_STATUS.get(outcome.status, "failed"),
                describe_failure(outcome, records),
                dict(ctx.cleanup),
            )
        # The app's dependencies first: a fresh PostgreSQL runs initdb before it listens.
        for name, port in (
            (units.db_server, units.db_port),
            (units.cache_server, units.redis_port),
        ):
            if not _wait_listening(_server_ip(name), port, ctx):
                return JobResult(
                    "failed",
                    f"nothing listens on {name}:{port} after the deploy",
                    dict(ctx.cleanup),
                )
        app_ip = _server_ip(units.app_server)
        healthy = _wait_healthy(app_ip, units.app_port, ctx)
        result: dict[str, Any] = {
            "image": units.app_image,
            "healthy": healthy,
            "url": f"http://{app_ip}:{units.app_port}/",
        }
        if healthy:
            image_id = reported(records, "codeb_images").get(units.app_server, {}).get(
                units.app_image
            ) or _inspect_image(ctx, units.app_server, units.app_image)
            _record(deps, ctx.operation.id, units, "healthy", previous, image_id)
            return JobResult("succeeded", None, {**result, "image_id": image_id})
        if previous is None or previous == units.app_image:
            _record(deps, ctx.operation.id, units, "unhealthy", previous)
            return JobResult("failed", f"{units.app_image} failed its health check", result)
        # Roll back to what ran before, the same way it was deployed.
        old = environment_units_for_image(deps, params, previous)
        back, _ = ctx.run(
            _deploy_run(deps, old, plan_environment(deps.settings.templates_dir, old))
        )
        back_healthy = back.status == "successful" and _wait_healthy(app_ip, old.app_port, ctx)
        _record(deps, ctx.operation.id, old, "healthy" if back_healthy else "unhealthy", None)
        result.update(rolled_back_to=previous, rollback_healthy=back_healthy)
        return JobResult(
            "failed",
            f"{units.app_image} failed its health check; rolled back to {previous}"
            + ("" if back_healthy else " (which is not healthy either)"),
            result,
        )


def environment_units_for_image(deps: Deps, params: dict, image: str) -> EnvironmentUnits:
    project = Project.get_by_id(params["project_id"])
    env = _environment(project, params["environment"])
    return environment_units(deps, project, env, image)


def _deploy_run(deps: Deps, units: EnvironmentUnits, plan: dict) -> PlaybookRun:
    names = sorted({units.app_server, units.db_server, units.cache_server})
    return PlaybookRun(
        "deploy.yml",
        servers.targets_of(deps, names),
        extravars={"codeb_plan": plan},
        secrets=units.secrets,
        limit=",".join(names),
    )


def _server_ip(name: str) -> str:
    return Server.get(Server.name == name).ip


def _wait_healthy(ip: str, port: int, ctx: RunContext) -> bool:
    """GET /health on the app's port until it answers 200, within a deadline."""
    deadline = time.monotonic() + HEALTH_DEADLINE_S
    url = f"http://{ip}:{port}/health"
    while time.monotonic() < deadline and not ctx.canceled:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False


def _wait_listening(ip: str, port: int, ctx: RunContext) -> bool:
    deadline = time.monotonic() + HEALTH_DEADLINE_S
    while time.monotonic() < deadline and not ctx.canceled:
        try:
            with socket.create_connection((ip, port), timeout=2):
                return True
        except OSError:
            time.sleep(0.5)
    return False


def _row(project_id: str, environment: str, component: str) -> Container | None:
    return Container.get_or_none(
        (Container.project == project_id)
        & (Container.environment == environment)
        & (Container.server_type == component)
        & (Container.status != "removed")
    )


def _inspect_image(ctx: RunContext, server: str, image: str) -> str | None:
    """The id podman gives `image` on `server`: what exactly a tag means there, now."""
    _, records = ctx.run(
        PlaybookRun(
            "inspect.yml",
            servers.targets_of(ctx.deps, [server]),
            limit=server,
            extravars={"codeb_inspect_image": image},
            timeout_s=120,
        )
    )
    image_id = reported(records, "codeb_inspect").get("image_id")
    return image_id.removeprefix("sha256:") if image_id else None


def _require_tested_image(ctx: RunContext, project: Project, units: EnvironmentUnits) -> None:
    """staging_tested by digest: the tag must still name the image that passed in staging."""
    staging = _row(project.id, "staging", "app")
    if staging is None or staging.image != units.app_image or not staging.image_id:
        raise JobFailed(f"{units.app_image} has no tested image id in staging; deploy it there")
    now_id = _inspect_image(ctx, units.app_server, units.app_image)
    if now_id != staging.image_id:
        raise JobFailed(
            f"{units.app_image} now names image {str(now_id)[:19]} on {units.app_server}, not "
            f"{staging.image_id[:19]} which passed in staging: test it in staging again"
        )


def _record(
    deps: Deps,
    op_id: str,
    units: EnvironmentUnits,
    health: str,
    previous: str | None,
    image_id: str | None = None,
) -> None:
    """The three containers as they now run."""
    now = deps.clock.now()
    images = {"app": units.app_image, "db": units.postgres_image, "redis": units.redis_image}
    ports = {"app": units.app_port, "db": units.db_port, "redis": units.redis_port}
    server_names = {"app": units.app_server, "db": units.db_server, "redis": units.cache_server}
    with deps.write():
        project = Project.get(Project.name == units.project)
        for component in ("app", "db", "redis"):
            row = _row(project.id, units.environment, component)
            is_new = row is None
            if row is None:
                row = Container(
                    id=f"ctr_{secrets.token_hex(8)}",
                    project=project.id,
                    environment=units.environment,
                    server_type=component,
                    created_at=now,
                )
            if component == "app" and row.image and row.image != images["app"]:
                row.previous_image = previous or row.previous_image
            row.server_ip = _server_ip(server_names[component])
            row.container_name = units.name(component)
            row.image = images[component]
            row.port_external = ports[component]
            row.port_internal = INTERNAL_PORT.get(component, units.app_port)
            row.volume = units.volume(component) if component != "app" else None
            row.status = "running"
            row.last_operation_id = op_id
            row.updated_at = now
            if component == "app":
                row.health_status, row.health_checked_at = health, now
                row.image_id = image_id
            row.save(force_insert=is_new)


# -- lifecycle -------------------------------------------------------------------------


def container_action(
    deps: Deps,
    actor: Actor,
    container_id: str,
    action: str,
    confirmation: protection.Confirmation | None = None,
    preview: bool = False,
    expected_plan: str | None = None,
) -> protection.Answer | dict:
    """start/restart (LOW), stop (MEDIUM), remove (MEDIUM, the container stopped first),
    volume_delete (HIGH). Removing a container never removes its volume."""
    c = find_container(container_id)
    server = _server_by_ip(c.server_ip)
    extravars = _action_vars(c, server, action)
    state = plan_hash({"action": action, "container": container_view(c), "vars": extravars})
    if preview:
        return _preview(deps, "container.yml", None, extravars, state, server.name)
    if expected_plan and expected_plan != state:
        raise PlanChanged(state)
    operation = {"remove": "container_remove", "volume_delete": "volume_delete"}.get(
        action, f"container_{action}"
    )
    target = Target(
        "container",
        c.id,
        c.container_name,
        project_id=c.project_id,
        environment=c.environment,
        server_ip=c.server_ip,
    )
    params: dict[str, Any] = {"action": action}
    if expected_plan:
        params["plan_hash"] = expected_plan
    effects = {
        "start": f"Starts {c.container_name} on {server.name}.",
        "restart": f"Restarts {c.container_name} on {server.name}.",
        "stop": f"Stops {c.container_name} on {server.name}: its service goes down.",
        "remove": f"Removes {c.container_name} from {server.name}; its volume is kept.",
        "volume_delete": f"Deletes the volume {c.volume} on {server.name} and all its data.",
    }
    return protection.guard(
        deps,
        actor,
        operation,
        target,
        params,
        effect=effects[action],
        confirmation=confirmation,
        success_status=202,
    )


def _action_vars(c: Container, server: Server, action: str) -> dict[str, Any]:
    if action == "volume_delete":
        if not c.volume:
            raise Conflict(f"{c.container_name} has no volume", {"container_id": c.id})
        return {
            "codeb_container_host": server.name,
            "codeb_container_action": action,
            "codeb_container_volume": c.volume,
        }
    extravars: dict[str, Any] = {
        "codeb_container_host": server.name,
        "codeb_container_action": action,
        "codeb_container_unit": c.container_name,
    }
    if action == "remove":
        extravars["codeb_container_remove_files"] = _component_files(c)
    return extravars


def _component_files(c: Container) -> list[str]:
    if c.server_type == "redis":
        return [f"/etc/codeb/redis/{c.container_name}.conf"]
    return [f"/etc/codeb/env/{c.container_name}.env"]


def _execute_action(deps: Deps, actor: Actor, target: Target, params: dict[str, Any]) -> dict:
    c = find_container(target.ref)
    server = _server_by_ip(c.server_ip)
    extravars = _action_vars(c, server, params["action"])
    if params.get("plan_hash"):
        state = plan_hash(
            {"action": params["action"], "container": container_view(c), "vars": extravars}
        )
        if state != params["plan_hash"]:
            raise PlanChanged(state)
    op = operations.create_operation(
        deps,
        actor,
        "container_action",
        [server.name],
        {"container_id": c.id, "action": params["action"]},
        project_id=c.project_id,
    )
    return {"operation": operations.operation_view(op)}


for _op in (
    "container_start",
    "container_stop",
    "container_restart",
    "container_remove",
    "volume_delete",
):
    protection.register_executor(_op, _execute_action)

AFTER_ACTION = {"start": "running", "restart": "running", "stop": "stopped", "remove": "removed"}


class ContainerActionJob:
    def run(self, ctx: RunContext) -> JobResult:
        deps, params = ctx.deps, ctx.operation.params
        c = Container.get_by_id(params["container_id"])
        server = _server_by_ip(c.server_ip)
        extravars = _action_vars(c, server, params["action"])
        outcome, records = ctx.run(
            PlaybookRun(
                "container.yml",
                servers.targets_of(deps, [server.name]),
                extravars=extravars,
                limit=server.name,
            )
        )
        if outcome.status != "successful":
            return JobResult(
                OUTCOME_STATUS.get(outcome.status, "failed"),
                describe_failure(outcome, records),
                dict(ctx.cleanup),
            )
        with deps.write():
            c = Container.get_by_id(params["container_id"])
            if params["action"] == "volume_delete":
                c.volume = None
            else:
                c.status = AFTER_ACTION[params["action"]]
            if params["action"] in ("stop", "remove"):
                c.health_status = None
            c.last_operation_id = ctx.operation.id
            c.updated_at = deps.clock.now()
            c.save()
        return JobResult("succeeded", None, {"container": container_view(c)})


# -- preview ---------------------------------------------------------------------------


def _preview(
    deps: Deps,
    playbook: str,
    units: EnvironmentUnits | None,
    extravars: dict[str, Any],
    current: str,
    server: str | None = None,
) -> dict:
    """Run the playbook in check mode with diff: what would change, changing nothing."""
    if units:
        names = sorted({units.app_server, units.db_server, units.cache_server})
    else:
        names = [server] if server else []
    outcome, records = servers.run_now(
        deps, playbook, names, extravars=extravars, secrets=units.secrets if units else (),
        check=True, diff=True, timeout_s=300,
    )  # fmt: skip
    if outcome.status != "successful":
        raise Conflict(
            "the preview run failed: " + describe_failure(outcome, records),
            {"plan_hash": current},
        )
    changes, restarts = [], []
    looped = {(r.host, r.task) for r in records if r.event.startswith("runner_item_")}
    for rec in records:
        if not rec.changed or rec.event not in ("runner_on_ok", "runner_item_on_ok"):
            continue
        if rec.event == "runner_on_ok" and (rec.host, rec.task) in looped:
            continue  # a loop's summary repeats its items
        item = rec.data.get("item_label")
        changes.append(
            {"host": rec.host, "task": rec.task, "item": item, "diff": rec.data.get("diff")}
        )
        if rec.task and rec.task.startswith("Restart"):
            restarts.append(f"{rec.host}: {item or rec.task}")
    return {
        "preview": True,
        "plan_hash": current,
        "changes": changes,
        "restarts": restarts,
        "changed": bool(changes),
    }


JOBS = {"deploy": DeployJob(), "container_action": ContainerActionJob()}
