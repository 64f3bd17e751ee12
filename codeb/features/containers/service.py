"""Containers end to end: deploy an environment (its app, and on first deploy its PostgreSQL
and Redis), start/stop/restart/remove them and delete volumes, all through the Protection
Layer; preview any of it as a check-mode run; follow the work as operations.

Where each component runs is its placement (codeb/services/fleet.py): the app on one or more
app servers (one container per server, all placed by one run, each health-checked), the db
and Redis on one server each. A container row is one container on one server."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any

from codeb.errors import Conflict, NotFound, ValidationFailed
from codeb.executor.events import EventRecord, host_tasks, reported
from codeb.executor.runner import PlaybookRun, RunOutcome
from codeb.executor.worker import (
    OUTCOME_STATUS,
    JobFailed,
    JobResult,
    RunContext,
    describe_failure,
)
from codeb.features.containers import touch
from codeb.features.projects import service as projects
from codeb.features.servers import service as servers
from codeb.protection.tokens import Target
from codeb.render.units import COMPONENTS, EnvironmentUnits, HostPlan, plan_environment
from codeb.services import fleet, gate, operations, scheduler
from codeb.services.context import SYSTEM, Actor, Deps
from codeb.services.health import wait_for_health
from codeb.store.models import Container, Environment, Operation, Project, Server

NO_RUN = RunOutcome("successful", 0)  # no host needed touching: no playbook ran

IMAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}")  # fullmatch only
PLAN_HASH = re.compile(r"[0-9a-f]{64}")  # fullmatch only
INTERNAL_PORT = {"db": 5432, "redis": 6379}
ACTIONS = ("start", "stop", "restart")
HEALTH_DEADLINE_S = 60
# How often the controller asks a restarted app for /health (and a db or Redis port): the
# answer usually comes within a few hundred ms of the restart, so a 0.5 s poll cost 0.25 s
# of every deploy on average; each miss is one refused connection.
HEALTH_POLL_S = 0.05
# roles/codeb_quadlet/tasks/main.yml: the one task that places, reloads and restarts.
APPLY_TASK = "Place the files, reload systemd and restart what changed"
# How long a probe settling the registry waits for units half-way through a (re)start that a
# stopped run left to systemd.
SETTLE_S = 30


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
        "image_id": c.image_id,
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


def _volume_holder(container_id: str) -> Container:
    """The row a volume delete names: a live container, or a removed one whose volume was kept
    (removing a container never removes its volume, so this is how that volume goes). Refused
    while another container on that server uses the same volume (a redeploy took it over)."""
    c = Container.get_or_none(Container.id == container_id)
    if c is None or (c.status == "removed" and not c.volume):
        raise NotFound(f"container {container_id!r} not found", {"container_id": container_id})
    if c.status == "removed":
        user = Container.get_or_none(
            (Container.volume == c.volume)
            & (Container.server_ip == c.server_ip)
            & (Container.status != "removed")
        )
        if user is not None:
            raise Conflict(
                f"the volume {c.volume} is used by {user.container_name}",
                {"volume": c.volume, "container_id": user.id},
            )
    return c


def get_container(deps: Deps, container_id: str, live: bool = False) -> dict:
    c = find_container(container_id)
    view = container_view(c)
    if live:
        view["live"] = _live(deps, c)
    return view


def _live(deps: Deps, c: Container) -> dict:
    """What runs on the host, read now, and how it differs from this row (drift)."""
    server = fleet.container_server(c)
    units = _registry_units(deps, c)
    plan = plan_environment(deps.settings.templates_dir, units, (c.server_type,))
    plan = {server.name: plan[server.name]} if server.name in plan else {}
    outcome, records = servers.run_now(
        deps, "deploy_probe.yml", [server.name], extravars={"codeb_plan": _probe_plan(plan)},
        secrets=units.secrets, timeout_s=60,
    )  # fmt: skip
    if outcome.status != "successful":
        return {"error": describe_failure(outcome, records)}
    info = reported(records, "codeb_probe").get(server.name, {}).get(c.container_name)
    if info is None:
        return {"error": f"the probe did not report {c.container_name}"}
    drift = drift_of(c, info)
    if drift:
        touch.forget_hosts(deps, [server.name])  # the next deploy touches it
    return {
        "unit": {"ActiveState": info["active"], "SubState": info["sub"], "LoadState": info["load"]},
        "container": {
            "running": info["running"],
            "image": info["image"],
            "image_id": info["image_id"],
            "unit_image": info["unit_image"],
        },
        "drift": drift,
        "in_sync": not drift,
    }


def drift_of(c: Container, info: dict) -> list[str]:
    """How what the probe saw for a container differs from its row (empty: in sync)."""
    drift: list[str] = []
    if c.status == "running" and not info["running"]:
        drift.append("the registry says running; the container is not running")
    if c.status != "running" and info["running"]:
        drift.append(f"the registry says {c.status}; the container is running")
    if info["running"] and info["image"] and info["image"] != c.image:
        drift.append(f"the registry says {c.image}; the container runs {info['image']}")
    if info["running"] and c.image_id and info["image_id"] and info["image_id"] != c.image_id:
        drift.append(
            f"the registry says image id {c.image_id[:12]}; "
            f"the container runs {info['image_id'][:12]}"
        )
    if info["unit_image"] and info["unit_image"] != c.image:
        drift.append(f"the unit file names {info['unit_image']}, not {c.image}")
    # The probe's own findings (files changed by hand, a unit never reloaded or restarted);
    # whether it runs at all is the registry's comparison above.
    drift.extend(d for d in info["drift"] if d != "not running")
    return drift


def _registry_units(deps: Deps, c: Container) -> EnvironmentUnits:
    """The units of a container's environment as the registry describes them: placed where
    the placement says, the app also on every server holding one of its containers."""
    project = Project.get_by_id(c.project_id)
    env = projects.find_environment(project, c.environment)
    apps = _rows(project.id, env.name, "app")
    image = c.image if c.server_type == "app" else (apps[0].image if apps else c.image)
    placement = fleet.placed(env)
    on = {s.ip: s.name for s in Server.select().where(Server.status != "deleted")}
    for row in [*apps, c]:
        component = row.server_type
        if row.server_ip in on and on[row.server_ip] not in placement.get(component, []):
            if component == "app" or not placement.get(component):
                placement[component] = sorted([*placement.get(component, []), on[row.server_ip]])
    return environment_units(deps, project, env, image, placement)


def _probe_plan(plan: dict[str, HostPlan]) -> dict:
    """A plan without file contents: all the probe compares is paths, modes and checksums
    (secret files' contents need not travel for a read)."""
    return {
        host: {
            **hp,
            "files": [{k: v for k, v in f.items() if k != "content"} for f in hp["files"]],
        }
        for host, hp in plan.items()
    }


# -- deploy ----------------------------------------------------------------------------


def environment_units(
    deps: Deps,
    project: Project,
    env: Environment,
    image: str,
    placement: fleet.Placed | None = None,
) -> EnvironmentUnits:
    """Everything the units are rendered from, secrets decrypted (never logged), placed as
    `placement` says (default: as recorded). The app's .env file names the placed db and
    Redis hosts."""
    placement = placement if placement is not None else fleet.placed(env)
    missing = [c for c in fleet.COMPONENTS if not placement.get(c)]
    if missing:
        raise Conflict(
            f"the {', '.join(missing)} of {project.name}/{env.name} is not placed on any "
            "server: deploy the environment first",
            {"project": project.name, "environment": env.name, "unplaced": missing},
        )
    hosts = fleet.data_hosts(env, placement)
    return EnvironmentUnits(
        project=project.name,
        environment=env.name,
        app_image=image,
        app_port=env.app_port,
        app_env=projects.env_file_for(deps, project, env, hosts),
        db_user=projects.db_user_for(project.name),
        db_password=deps.box.decrypt(env.db_password),
        db_name=projects.db_name_for(project.name, env.name),
        db_port=env.db_port,
        redis_password=deps.box.decrypt(env.redis_password),
        redis_port=env.redis_port,
        app_servers=tuple(placement["app"]),
        db_server=placement["db"][0],
        cache_server=placement["redis"][0],
    )


def plan_hash(plan: dict) -> str:
    """Identifies a plan exactly (secret contents included, hashed, never shown)."""
    return hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()


def deploy_plan_hash(
    plan: dict, from_state: dict[str, str], untouched: dict[str, str] | None = None
) -> str:
    """A deploy plan goes from one state to another: the hash binds the files it places (its
    target) and, per host, the digest of the state the probe saw when it was computed (what
    was placed and what ran), so a plan previewed from another state never applies. It also
    binds which hosts the deploy leaves untouched (`untouched`: host -> the deploy whose
    record let it be left; see touch.py): a plan previewed for another selection never
    applies either."""
    if untouched:
        return plan_hash({"to": plan_hash(plan), "from": from_state, "untouched": untouched})
    return plan_hash({"to": plan_hash(plan), "from": from_state})


def _select(
    deps: Deps,
    env: Environment,
    units: EnvironmentUnits,
    plan: dict,
    repair: bool,
    operation_id: str | None = None,
) -> tuple[dict[str, str], touch.Selection]:
    """The hash of each host's part of the plan, and which hosts a deploy of it touches."""
    hashes = touch.host_hashes(plan, plan_hash)
    return hashes, touch.select(deps, env, units, hashes, repair, operation_id)


def _part(plan: dict, hosts: list[str]) -> dict:
    return {h: plan[h] for h in hosts}


def _probe_state(deps: Deps, units: EnvironmentUnits, plan: dict) -> dict[str, str]:
    """The state digest of every host of a plan, read now (a short read-only run)."""
    names = sorted(plan)
    outcome, records = servers.run_now(
        deps, "deploy_probe.yml", names, extravars={"codeb_plan": _probe_plan(plan)},
        secrets=units.secrets, timeout_s=120,
    )  # fmt: skip
    state = reported(records, "codeb_state")
    if outcome.status != "successful" or set(state) != set(names):
        raise Conflict(
            "could not read the hosts' state to check the plan: "
            + describe_failure(outcome, records),
            {"servers": names},
        )
    return state


def deploy(
    deps: Deps,
    actor: Actor,
    body: dict[str, Any],
    confirmation: gate.Confirmation | None = None,
    preview: bool = False,
    expected_plan: str | None = None,
) -> gate.Answer | dict:
    project = projects.find_project(str(body.get("project", "")))
    env = projects.find_environment(project, str(body.get("environment", "")))
    image = body.get("image")
    if not isinstance(image, str) or not IMAGE.fullmatch(image):
        raise ValidationFailed("image is not a valid image reference", {"field": "image"})
    if expected_plan and not PLAN_HASH.fullmatch(expected_plan):
        # Checked before the hosts are read: a malformed value costs no probe.
        raise ValidationFailed(
            "X-Plan-Hash must be the plan_hash a preview answered", {"field": "X-Plan-Hash"}
        )
    repair = body.get("repair", False)
    if not isinstance(repair, bool):
        raise ValidationFailed("repair must be true or false", {"field": "repair"})
    requested, replicas = fleet.parse_request(body)
    # Where it runs: as recorded, changed as requested, the rest on the least loaded servers.
    # Decided here, bound to the request (the confirm token binds it, the plan names its
    # hosts) and recorded when the deploy executes.
    placement = fleet.resolve(project, env, requested, replicas)
    fleet.require_ready(placement)
    units = environment_units(deps, project, env, image, placement)
    plan = plan_environment(deps.settings.templates_dir, units)
    if not (preview or expected_plan):
        # The job selects the hosts when it runs; here the selection only serves a preview
        # or the plan hash it binds (each live check is a request to a host).
        return _guard_deploy(deps, actor, project, env, image, placement, repair, confirmation)
    _, selection = _select(deps, env, units, plan, repair)
    touched = selection.hosts
    if preview:
        # Check mode on exactly the hosts the apply would touch; the others are listed.
        answer = _preview(
            deps, "deploy.yml", units, {"codeb_plan": _part(plan, touched)},
            lambda records: deploy_plan_hash(
                plan, reported(records, "codeb_state"), selection.binding()
            ),
            hosts=touched,
        )  # fmt: skip
        return {**answer, **selection.view()}
    # expected_plan from here on.
    from_state = _probe_state(deps, units, _part(plan, touched)) if touched else {}
    current = deploy_plan_hash(plan, from_state, selection.binding())
    if expected_plan != current:
        raise PlanChanged(current)
    # The state the plan starts from travels with it: the run checks each host is still in
    # it before it changes anything (see roles/codeb_quadlet/tasks/probe.yml).
    bound = {
        "plan_hash": expected_plan,
        "from_state": from_state,
        "untouched": selection.binding(),
    }
    return _guard_deploy(deps, actor, project, env, image, placement, repair, confirmation, bound)


def _guard_deploy(
    deps: Deps,
    actor: Actor,
    project: Project,
    env: Environment,
    image: str,
    placement: dict,
    repair: bool,
    confirmation: gate.Confirmation | None,
    bound: dict[str, Any] | None = None,
) -> gate.Answer | dict:
    """The deploy request through the Protection Layer; `bound`: what a plan hash binds."""
    target = Target(
        "environment",
        env.id,
        f"{project.name}/{env.name}",
        project_id=project.id,
        environment=env.name,
    )
    params: dict[str, Any] = {"image": image, "servers": placement}
    if repair:
        params["repair"] = True
    params.update(bound or {})
    return gate.guard(
        deps,
        actor,
        f"deploy_{env.name}",
        target,
        params,
        effect=(
            f"Deploys {image} to the {env.name} environment of {project.name!r} on "
            f"{', '.join(placement['app'])} (and its PostgreSQL on {placement['db'][0]} and "
            f"Redis on {placement['redis'][0]} if they are not running yet); a version that "
            "fails its health check is rolled back."
            + (" Every host is probed and repaired, changed or not." if repair else "")
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
    env = projects.find_environment(project, target.environment)
    # The placement the request decided (and a confirmation bound), checked again against
    # what is recorded now, then recorded: the run and its rows follow it.
    placement = fleet.resolve(project, env, params.get("servers") or {})
    fleet.require_ready(placement)
    units = environment_units(deps, project, env, params["image"], placement)
    plan = plan_environment(deps.settings.templates_dir, units)
    if params.get("plan_hash"):
        _, selection = _select(deps, env, units, plan, bool(params.get("repair")))
        current = deploy_plan_hash(plan, params.get("from_state") or {}, selection.binding())
        if params["plan_hash"] != current:
            raise PlanChanged(current)
    fleet.record(deps, env, placement)
    names = units.servers
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
            "from_state": params.get("from_state"),
            "repair": bool(params.get("repair")),
        },
        project_id=project.id,
    )
    return {"operation": operations.operation_view(op)}


class DeployJob:
    """Place the units, check the app's health; a failing new version is rolled back. After
    a run that did not succeed (failed, canceled, timed out) every host it touched is either
    as it was or its rows say exactly what it runs (see `_settle`)."""

    def run(self, ctx: RunContext) -> JobResult:
        """The deploy; one that did not succeed (or raised) forgets what was applied on
        every host of its environment, so the next deploy probes them all."""
        params = ctx.operation.params
        try:
            result = self._run(ctx)
        except BaseException:
            _forget_environment(ctx.deps, params)
            raise
        if result.status != "succeeded":
            _forget_environment(ctx.deps, params)
        return result

    def _run(self, ctx: RunContext) -> JobResult:
        deps, params = ctx.deps, ctx.operation.params
        project = Project.get_by_id(params["project_id"])
        env = projects.find_environment(project, params["environment"])
        previous = _running_image(project.id, env.name)
        units = environment_units(deps, project, env, params["image"])
        plan = plan_environment(deps.settings.templates_dir, units)
        from_state = params.get("from_state") or {}
        hashes, selection = _select(
            deps, env, units, plan, bool(params.get("repair")), ctx.operation.id
        )
        if params.get("plan_hash") and params["plan_hash"] != deploy_plan_hash(
            plan, from_state, selection.binding()
        ):
            raise JobFailed("the state changed since the preview; nothing was deployed")
        if env.name == "production":
            _require_tested_image(ctx, project, units)
            if ctx.canceled:
                ctx.note_stopped()
                return JobResult("canceled", "canceled by request", {})
        touched = selection.hosts
        if touched:
            outcome, records = ctx.run(
                _deploy_run(
                    deps, units, _part(plan, touched), expected_state=from_state, limit=touched
                )
            )
        else:
            outcome, records = NO_RUN, []  # every host is as its record says: no playbook
        if outcome.status != "successful" or ctx.canceled:
            return _settle(ctx, units, previous, describe_failure(outcome, records), outcome)
        # The app's dependencies first: a fresh PostgreSQL runs initdb before it listens.
        for name, port in (
            (units.db_server, units.db_port),
            (units.cache_server, units.redis_port),
        ):
            if not _wait_listening(_server_ip(name), port, ctx):
                error = f"nothing listens on {name}:{port} after the deploy"
                return _settle(ctx, units, previous, error, outcome)
        # Every replica must answer its health check.
        ips = {name: _server_ip(name) for name in units.app_servers}
        health = {name: _wait_healthy(ip, units.app_port, ctx) for name, ip in ips.items()}
        healthy = all(health.values())
        if ctx.canceled:
            return _settle(ctx, units, previous, "canceled by request", outcome)
        urls = [f"http://{ips[name]}:{units.app_port}/" for name in units.app_servers]
        result: dict[str, Any] = {
            "image": units.app_image,
            "healthy": healthy,
            "url": urls[0],
            "urls": urls,
            "servers": list(units.app_servers),
            "playbook_ran": bool(touched),
            **selection.view(),
        }
        if len(units.app_servers) > 1:
            result["unhealthy_servers"] = [name for name, ok in health.items() if not ok]
        images = reported(records, "codeb_images")
        if healthy:
            image_ids = {
                name: images.get(name, {}).get(units.app_image)
                or _recorded_image_id(project.id, env.name, name, units.app_image, touched)
                or _inspect_image(ctx, name, units.app_image)
                for name in units.app_servers
            }
            _record(deps, ctx.operation.id, units, health, previous, image_ids)
            touch.record(deps, env, hashes, touched, ctx.operation.id)
            ids = sorted({i for i in image_ids.values() if i})
            return JobResult(
                "succeeded", None, {**result, "image_id": ids[0] if len(ids) == 1 else ids}
            )
        if previous is None or previous == units.app_image:
            image_ids = {
                name: images.get(name, {}).get(units.app_image) for name in units.app_servers
            }
            _record(deps, ctx.operation.id, units, health, previous, image_ids)
            return JobResult("failed", f"{units.app_image} failed its health check", result)
        # Roll back to what ran before, the same way it was deployed.
        old = environment_units_for_image(deps, params, previous)
        back, back_records = ctx.run(
            _deploy_run(deps, old, plan_environment(deps.settings.templates_dir, old)),
            primary=False,
        )
        back_health = {
            name: back.status == "successful" and _wait_healthy(ip, old.app_port, ctx)
            for name, ip in ips.items()
        }
        back_healthy = all(back_health.values())
        old_images = reported(back_records, "codeb_images")
        old_ids = {name: old_images.get(name, {}).get(previous) for name in old.app_servers}
        _record(deps, ctx.operation.id, old, back_health, None, old_ids)
        result.update(rolled_back_to=previous, rollback_healthy=back_healthy)
        return JobResult(
            "failed",
            f"{units.app_image} failed its health check; rolled back to {previous}"
            + ("" if back_healthy else " (which is not healthy either)"),
            result,
        )


def _forget_environment(deps: Deps, params: dict[str, Any]) -> None:
    env = Environment.get_or_none(
        (Environment.project == params["project_id"])
        & (Environment.name == params["environment"])
        & (Environment.status == "active")
    )
    if env is not None:
        touch.forget_environment(deps, env.id)


def _recorded_image_id(
    project_id: str, environment: str, server: str, image: str, touched: list[str]
) -> str | None:
    """The image id the row of an untouched replica recorded (its host runs what its record
    says: nothing to read there)."""
    if server in touched:
        return None
    row = _row_on(project_id, environment, "app", _server_ip(server))
    return row.image_id if row is not None and row.image == image else None


def _settle(
    ctx: RunContext,
    units: EnvironmentUnits,
    previous: str | None,
    error: str,
    outcome: RunOutcome,
) -> JobResult:
    """After a deploy that did not succeed: roll back the hosts a failed run changed (when a
    version ran before), then probe every reachable host of the plan and make the rows say
    what runs there. A canceled or timed-out run is not rolled back (it was asked to stop):
    its hosts are probed and the rows follow them; a rerun converges. What was done is
    recorded in the result's `registry`."""
    deps = ctx.deps
    if ctx.canceled:
        ctx.note_stopped()
        status, error = "canceled", "canceled by request"
    else:
        status = OUTCOME_STATUS.get(outcome.status, "failed")
        status = "failed" if status == "succeeded" else status
    names = units.servers
    records = ctx.primary_records
    unreachable = sorted({r.host for r in records if r.event == "runner_on_unreachable"})
    reachable = [n for n in names if n not in unreachable]
    touched = _touched_hosts(records, reachable)
    rolled_back: list[str] = []
    if status == "failed" and previous and previous != units.app_image and touched:
        old = environment_units_for_image(deps, ctx.operation.params, previous)
        back, _ = ctx.run(
            _deploy_run(
                deps, old, plan_environment(deps.settings.templates_dir, old), limit=touched
            ),
            primary=False,
        )
        if back.status == "successful":
            rolled_back = touched
    probed, seen = _probe_hosts(ctx, units, reachable)
    changes = _reconcile(deps, ctx.operation.id, units, seen)
    registry = {
        "action": "rolled_back" if rolled_back else "reconciled",
        "rolled_back": rolled_back,
        "probed": probed,
        "unreachable": unreachable,
        # Hosts the run changed that could not be read afterwards: their rows were left
        # as they were and may be wrong until the next run there.
        "unverified": sorted(set(touched) - set(probed)),
        "containers": changes,
    }
    return JobResult(status, error, {"registry": registry, **ctx.cleanup})


def _touched_hosts(records: list[EventRecord], hosts: list[str]) -> list[str]:
    """Hosts on which the run changed something, or was stopped in the middle of a task."""
    ran = host_tasks(records)
    # A task that failed after it changed something (codeb_quadlet_apply placed the files,
    # then a restart failed) touched its host too.
    failed_changed = {r.host for r in records if r.task == APPLY_TASK and r.failed and r.changed}
    return [
        h
        for h in hosts
        if h in failed_changed
        or any(t["status"] in ("changed", "interrupted") for t in ran.get(h, []))
    ]


def _probe_hosts(
    ctx: RunContext,
    units: EnvironmentUnits,
    hosts: list[str],
    components: tuple[str, ...] = COMPONENTS,
) -> tuple[list[str], dict[str, dict]]:
    """What the environment's containers run on `hosts`, once units half-way through a start
    or stop have settled. Not cancellable: it is how a canceled run ends."""
    if not hosts:
        return [], {}
    plan = plan_environment(ctx.deps.settings.templates_dir, units, components)
    _, records = ctx.run(
        PlaybookRun(
            "deploy_probe.yml",
            fleet.hosts_for(ctx.deps, hosts),
            extravars={"codeb_plan": _probe_plan(plan), "codeb_probe_settle_s": SETTLE_S},
            secrets=units.secrets,
            limit=",".join(hosts),
            timeout_s=SETTLE_S + 120,
        ),
        cancellable=False,
        primary=False,
    )
    seen = reported(records, "codeb_probe")
    return sorted(h for h in hosts if h in seen), seen


def _reconcile(
    deps: Deps,
    op_id: str,
    units: EnvironmentUnits,
    seen: dict[str, dict],
) -> dict[str, dict]:
    """Make the environment's rows say what the probe saw. A row whose container still runs
    the image it recorded keeps its health; any other is no longer known healthy (so
    `staging_tested` never decides from a version that was not checked). The changes are
    keyed by component, or `<component>@<server>` for an app on several servers."""
    now = deps.clock.now()
    ports = {"app": units.app_port, "db": units.db_port, "redis": units.redis_port}
    changes: dict[str, dict] = {}
    with deps.write():
        project = Project.get(Project.name == units.project)
        for component, host in _component_hosts(units):
            info = seen.get(host, {}).get(units.name(component))
            if info is None:
                continue  # not probed: the host is unreachable, or was not touched
            key = component if len(units.servers_of(component)) == 1 else f"{component}@{host}"
            server_ip = _server_ip(host)
            row = _row_on(project.id, units.environment, component, server_ip)
            if row is None and not (info["running"] or info["unit_file_present"]):
                continue  # nothing there and nothing recorded
            is_new = row is None
            if row is None:
                row = Container(
                    id=f"ctr_{secrets.token_hex(8)}",
                    project=project.id,
                    environment=units.environment,
                    server_type=component,
                    created_at=now,
                    container_name=units.name(component),
                    server_ip=server_ip,
                    port_external=ports[component],
                    port_internal=INTERNAL_PORT.get(component, units.app_port),
                    volume=units.volume(component) if component != "app" else None,
                    image=info["unit_image"] or info["wanted_image"],
                )
            before = (row.status, row.image, row.image_id)
            if info["running"]:
                same = row.image == info["image"] and (
                    not row.image_id or row.image_id == info["image_id"]
                )
                if component == "app" and row.image != info["image"]:
                    row.previous_image = row.image if not is_new else None
                row.status, row.image, row.image_id = "running", info["image"], info["image_id"]
            else:
                same = False
                row.status = "stopped"
                row.image = info["unit_image"] or row.image
            if not same:
                row.health_status, row.health_checked_at = None, None
            if is_new or before != (row.status, row.image, row.image_id):
                row.last_operation_id = op_id
                row.updated_at = now
            row.save(force_insert=is_new)
            changes[key] = {
                "status": row.status,
                "image": row.image,
                "changed": is_new or before != (row.status, row.image, row.image_id),
            }
    return changes


def environment_units_for_image(deps: Deps, params: dict, image: str) -> EnvironmentUnits:
    project = Project.get_by_id(params["project_id"])
    env = projects.find_environment(project, params["environment"])
    return environment_units(deps, project, env, image)


def _deploy_run(
    deps: Deps,
    units: EnvironmentUnits,
    plan: dict,
    expected_state: dict[str, str] | None = None,
    limit: list[str] | None = None,
) -> PlaybookRun:
    names = limit or units.servers
    extravars: dict[str, Any] = {"codeb_plan": plan}
    if expected_state:
        extravars["codeb_expected_state"] = expected_state
    return PlaybookRun(
        "deploy.yml",
        fleet.hosts_for(deps, names),
        extravars=extravars,
        secrets=units.secrets,
        limit=",".join(names),
    )


def _server_ip(name: str) -> str:
    return fleet.server_named(name).ip


def _component_hosts(units: EnvironmentUnits) -> list[tuple[str, str]]:
    """(component, server) for every container of the environment."""
    return [(c, host) for c in COMPONENTS for host in units.servers_of(c)]


def _wait_healthy(ip: str, port: int, ctx: RunContext) -> bool:
    """GET /health on the app's port until it answers 200, within a deadline."""
    url = f"http://{ip}:{port}/health"
    return wait_for_health(url, ctx, HEALTH_DEADLINE_S, HEALTH_POLL_S, 0.8) == 200


def _wait_listening(ip: str, port: int, ctx: RunContext) -> bool:
    deadline = time.monotonic() + HEALTH_DEADLINE_S
    while time.monotonic() < deadline and not ctx.canceled:
        try:
            with socket.create_connection((ip, port), timeout=0.8):
                return True
        except OSError:
            ctx.cancel.wait(HEALTH_POLL_S)
    return False


def _rows(project_id: str, environment: str, component: str) -> list[Container]:
    """The containers of a component (the app: one per server), oldest first."""
    return list(
        Container.select()
        .where(
            (Container.project == project_id)
            & (Container.environment == environment)
            & (Container.server_type == component)
            & (Container.status != "removed")
        )
        .order_by(Container.created_at, Container.id)
    )


def _row_on(project_id: str, environment: str, component: str, server_ip: str) -> Container | None:
    """The container of a component on one server."""
    return next(
        (c for c in _rows(project_id, environment, component) if c.server_ip == server_ip), None
    )


def _running_image(project_id: str, environment: str) -> str | None:
    """What the app runs now (the oldest running replica's image): a failed deploy goes back
    to it."""
    running = [c for c in _rows(project_id, environment, "app") if c.status == "running"]
    return running[0].image if running else None


def _inspect_image(ctx: RunContext, server: str, image: str) -> str | None:
    """The id podman gives `image` on `server`: what exactly a tag means there, now."""
    _, records = ctx.run(
        PlaybookRun(
            "inspect.yml",
            fleet.hosts_for(ctx.deps, [server]),
            limit=server,
            extravars={"codeb_inspect_image": image},
            timeout_s=120,
        )
    )
    image_id = reported(records, "codeb_inspect").get("image_id")
    return image_id.removeprefix("sha256:") if image_id else None


def _require_tested_image(ctx: RunContext, project: Project, units: EnvironmentUnits) -> None:
    """staging_tested by digest: on every server production runs on, the tag must still name
    an image that passed in staging (the id a staging replica of this image recorded)."""
    tested = {
        c.image_id
        for c in _rows(project.id, "staging", "app")
        if c.image == units.app_image and c.image_id
    }
    if not tested:
        raise JobFailed(f"{units.app_image} has no tested image id in staging; deploy it there")
    for server in units.app_servers:
        now_id = _inspect_image(ctx, server, units.app_image)
        if now_id not in tested:
            passed = ", ".join(sorted(i[:19] for i in tested))
            raise JobFailed(
                f"{units.app_image} now names image {str(now_id)[:19]} on {server}, not "
                f"{passed} which passed in staging: test it in staging again"
            )


def _record(
    deps: Deps,
    op_id: str,
    units: EnvironmentUnits,
    health: dict[str, bool],
    previous: str | None,
    image_ids: dict[str, str | None],
) -> None:
    """The containers as they now run: the db, Redis, and the app on each of its servers
    (`health` and `image_ids` per app server)."""
    now = deps.clock.now()
    images = {"app": units.app_image, "db": units.postgres_image, "redis": units.redis_image}
    ports = {"app": units.app_port, "db": units.db_port, "redis": units.redis_port}
    with deps.write():
        project = Project.get(Project.name == units.project)
        for component, host in _component_hosts(units):
            server_ip = _server_ip(host)
            row = _row_on(project.id, units.environment, component, server_ip)
            if row is None and component != "app":
                # One db and one Redis per environment: its row follows it.
                rows = _rows(project.id, units.environment, component)
                row = rows[0] if rows else None
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
            row.server_ip = server_ip
            row.container_name = units.name(component)
            row.image = images[component]
            row.port_external = ports[component]
            row.port_internal = INTERNAL_PORT.get(component, units.app_port)
            row.volume = units.volume(component) if component != "app" else None
            row.status = "running"
            row.last_operation_id = op_id
            row.updated_at = now
            if component == "app":
                row.health_status = "healthy" if health.get(host) else "unhealthy"
                row.health_checked_at = now
                row.image_id = image_ids.get(host)
            row.save(force_insert=is_new)


# -- lifecycle -------------------------------------------------------------------------


def container_action(
    deps: Deps,
    actor: Actor,
    container_id: str,
    action: str,
    confirmation: gate.Confirmation | None = None,
    preview: bool = False,
    expected_plan: str | None = None,
) -> gate.Answer | dict:
    """start/restart (LOW), stop (MEDIUM), remove (MEDIUM, the container stopped first),
    volume_delete (HIGH). Removing a container never removes its volume."""
    c = _volume_holder(container_id) if action == "volume_delete" else find_container(container_id)
    server = fleet.container_server(c)
    extravars = _action_vars(c, server, action)
    state = plan_hash({"action": action, "container": container_view(c), "vars": extravars})
    if preview:
        return _preview(deps, "container.yml", None, extravars, state, server.name)
    if expected_plan and expected_plan != state:
        raise PlanChanged(state)
    operation = {"remove": "container_remove", "volume_delete": "volume_delete"}.get(
        action, f"container_{action}"
    )
    if action == "volume_delete" and c.server_type == "db":
        # A database's volume is the database: deleting it is a db_drop (CRITICAL), never a
        # cheaper volume delete (no sequence of cheaper operations reaches a dearer effect).
        operation = "db_drop"
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
    return gate.guard(
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
    volume_delete = params["action"] == "volume_delete"
    c = _volume_holder(target.ref) if volume_delete else find_container(target.ref)
    server = fleet.container_server(c)
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


AFTER_ACTION = {"start": "running", "restart": "running", "stop": "stopped", "remove": "removed"}


class ContainerActionJob:
    def run(self, ctx: RunContext) -> JobResult:
        deps, params = ctx.deps, ctx.operation.params
        c = Container.get_by_id(params["container_id"])
        server = fleet.container_server(c)
        extravars = _action_vars(c, server, params["action"])
        outcome, records = ctx.run(
            PlaybookRun(
                "container.yml",
                fleet.hosts_for(deps, [server.name]),
                extravars=extravars,
                limit=server.name,
            )
        )
        if outcome.status != "successful" or ctx.canceled:
            if ctx.canceled:
                ctx.note_stopped()
            registry = (
                {"action": "unchanged"}
                if params["action"] == "volume_delete"
                else _settle_container(ctx, c, server, params["action"])
            )
            return JobResult(
                "canceled" if ctx.canceled else OUTCOME_STATUS.get(outcome.status, "failed"),
                describe_failure(outcome, records),
                {**ctx.cleanup, "registry": registry},
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
            if params["action"] == "remove" and c.server_type == "app":
                _release_replica(c, server)
        return JobResult("succeeded", None, {"container": container_view(c)})


def _release_replica(c: Container, server: Server) -> None:
    """A removed app container is a replica gone: its environment's app is no longer placed
    on that server (the db and Redis stay placed: their volume stays)."""
    env = Environment.get_or_none(
        (Environment.project == c.project_id)
        & (Environment.name == c.environment)
        & (Environment.status == "active")
    )
    if env is not None:
        fleet.release(env, "app", server)


def _settle_container(ctx: RunContext, c: Container, server: Server, action: str) -> dict:
    """After a start/stop/restart/remove that did not succeed: read the container on its host
    and make its row say what is there."""
    try:
        units = _registry_units(ctx.deps, c)
    except (Conflict, NotFound) as exc:
        return {"action": "unverified", "reason": str(exc)}
    _, seen = _probe_hosts(ctx, units, [server.name], (c.server_type,))
    info = seen.get(server.name, {}).get(c.container_name)
    if info is None:
        return {"action": "unverified", "reason": f"{server.name} could not be read"}
    with ctx.deps.write():
        row = Container.get_by_id(c.id)
        if info["running"]:
            if row.image != info["image"] or (row.image_id and row.image_id != info["image_id"]):
                row.health_status, row.health_checked_at = None, None
            row.status, row.image, row.image_id = "running", info["image"], info["image_id"]
        else:
            gone = action == "remove" and not info["unit_file_present"]
            row.status = "removed" if gone else "stopped"
            row.health_status, row.health_checked_at = None, None
        row.last_operation_id = ctx.operation.id
        row.updated_at = ctx.deps.clock.now()
        row.save()
    return {"action": "reconciled", "container": {"status": row.status, "image": row.image}}


# -- preview ---------------------------------------------------------------------------


def _preview(
    deps: Deps,
    playbook: str,
    units: EnvironmentUnits | None,
    extravars: dict[str, Any],
    current: str | Callable[[list[EventRecord]], str],
    server: str | None = None,
    hosts: list[str] | None = None,
) -> dict:
    """Run the playbook in check mode with diff: what would change, changing nothing.
    `current` is the plan hash, or computes it from the run's records (a deploy's hash binds
    the state its probe saw)."""
    if hosts is not None:
        names = hosts
    elif units:
        names = units.servers
    else:
        names = [server] if server else []
    if not names:
        # No host to touch: nothing would change (a deploy whose hosts all hold their plan).
        done = current if isinstance(current, str) else current([])
        return {"preview": True, "plan_hash": done, "changes": [], "restarts": [], "changed": False}
    outcome, records = servers.run_now(
        deps, playbook, names, extravars=extravars, secrets=units.secrets if units else (),
        check=True, diff=True, timeout_s=300,
    )  # fmt: skip
    if outcome.status != "successful":
        raise Conflict(
            "the preview run failed: " + describe_failure(outcome, records),
            {"plan_hash": current if isinstance(current, str) else None},
        )
    if not isinstance(current, str):
        current = current(records)
    changes, restarts = [], []
    looped = {(r.host, r.task) for r in records if r.event.startswith("runner_item_")}
    for rec in records:
        if not rec.changed or rec.event not in ("runner_on_ok", "runner_item_on_ok"):
            continue
        if rec.event == "runner_on_ok" and (rec.host, rec.task) in looped:
            continue  # a loop's summary repeats its items
        item = rec.data.get("item_label")
        diff = rec.data.get("diff")
        if rec.task == APPLY_TASK:
            # One module call per host: a change per file it would place (with its diff;
            # a secret file's content never shown) and per unit it would restart or start.
            diffs = {d.get("after_header", "").split(" ")[0]: d for d in diff or []}
            units = [*rec.data.get("restarted", []), *rec.data.get("started", [])]
            changes.extend(
                {"host": rec.host, "task": rec.task, "item": path, "diff": diffs.get(path)}
                for path in [*rec.data.get("placed", []), *units] or [None]
            )
            restarts.extend(f"{rec.host}: {unit}" for unit in rec.data.get("restarted", []))
            continue
        changes.append({"host": rec.host, "task": rec.task, "item": item, "diff": diff})
        if rec.task and rec.task.startswith("Restart"):
            restarts.append(f"{rec.host}: {item or rec.task}")
    return {
        "preview": True,
        "plan_hash": current,
        "changes": changes,
        "restarts": restarts,
        "changed": bool(changes),
    }


# -- drift check -----------------------------------------------------------------------


def drift_check(
    deps: Deps, actor: Actor, confirmation: gate.Confirmation | None = None
) -> gate.Answer:
    """Compare what runs on the hosts with every container row (read-only; SAFE). Built to
    be called by a scheduler as well as over the API: it starts one operation whose result
    lists the containers whose host state differs from the registry."""
    target = Target("containers", "all", "all containers")
    return gate.guard(
        deps,
        actor,
        "container_drift_check",
        target,
        {},
        effect="Reads every container's state on its host and reports what differs from the "
        "registry; changes nothing.",
        confirmation=confirmation,
        success_status=202,
    )


def _execute_drift_check(deps: Deps, actor: Actor, target: Target, params: dict) -> dict:
    names = sorted(
        {
            s.name
            for s in Server.select().where(
                Server.ip.in_(_tracked().select(Container.server_ip)) & (Server.status != "deleted")
            )
        }
    )
    op = operations.create_operation(deps, actor, "drift_check", names, {})
    return {"operation": operations.operation_view(op)}


def _tracked():
    return Container.select().where(Container.status != "removed")


def _scheduled_drift_check(deps: Deps) -> dict[str, Any]:
    """The periodic drift check: through the gate as codeb itself, only when there is
    something to compare (no operation for an empty registry)."""
    tracked = _tracked().count()
    if not tracked:
        return {"containers": 0, "note": "nothing to check"}
    answer = drift_check(deps, SYSTEM)
    operation = answer.started_operation
    if operation is None:
        # A configured stricter rule (a token or a queue entry) is not the scheduler's to
        # confirm: the run fails and says so.
        raise RuntimeError(f"the Protection Layer did not run it: {answer.body.get('status')}")
    return {"containers": tracked, "operation": operation}


# Periodic work of this feature (gathered by its feature package; nothing registers on import).
SCHEDULES: tuple[scheduler.Job, ...] = (
    scheduler.Job(
        name="container_drift_check",
        description="Starts a drift_check operation comparing every container's host state "
        "with the registry (skipped while no container is registered).",
        interval=dt.timedelta(minutes=15),
        run=_scheduled_drift_check,
    ),
)


def _merge_plans(plans: list[dict[str, HostPlan]]) -> dict[str, dict]:
    merged: dict[str, dict] = {}
    for plan in plans:
        for host, hp in plan.items():
            into = merged.setdefault(
                host, {"dirs": [], "files": [], "units": [], "images": [], "containers": []}
            )
            into["dirs"] += [d for d in hp["dirs"] if d not in into["dirs"]]
            into["files"] += hp["files"]
            into["units"] += hp["units"]
            into["images"] += [i for i in hp["images"] if i not in into["images"]]
            into["containers"] += hp["containers"]
    return merged


class DriftCheckJob:
    """One read-only probe of every host holding a container; a row drifts when what runs
    there (or what its files say) is not what the row says."""

    def run(self, ctx: RunContext) -> JobResult:
        deps = ctx.deps
        rows = list(_tracked().order_by(Container.project, Container.environment))
        by_env: dict[tuple[str, str], list[Container]] = {}
        for c in rows:
            by_env.setdefault((c.project_id, c.environment), []).append(c)
        plans, secret_values, skipped = [], [], []
        for group in by_env.values():
            try:
                units = _registry_units(deps, group[0])
            except (Conflict, NotFound) as exc:
                skipped += [{"container_id": c.id, "reason": str(exc)} for c in group]
                continue
            components = tuple(dict.fromkeys(c.server_type for c in group))
            plans.append(plan_environment(deps.settings.templates_dir, units, components))
            secret_values += units.secrets
        plan = _merge_plans(plans)
        if not plan:
            return JobResult("succeeded", None, {"checked": 0, "drifted": [], "skipped": skipped})
        hosts = sorted(plan)
        outcome, records = ctx.run(
            PlaybookRun(
                "deploy_probe.yml",
                fleet.hosts_for(deps, hosts),
                extravars={"codeb_plan": _probe_plan(plan)},
                secrets=tuple(secret_values),
                limit=",".join(hosts),
                timeout_s=300,
            )
        )
        seen = reported(records, "codeb_probe")
        name_of = {s.ip: s.name for s in Server.select()}
        drifted, checked, unreachable = [], 0, set()
        for c in rows:
            host = name_of.get(c.server_ip)
            info = seen.get(host or "", {}).get(c.container_name)
            if info is None:
                if host in hosts:
                    unreachable.add(host)
                continue
            checked += 1
            drift = drift_of(c, info)
            if drift:
                drifted.append(
                    {
                        "container_id": c.id,
                        "container_name": c.container_name,
                        "project_id": c.project_id,
                        "environment": c.environment,
                        "server_ip": c.server_ip,
                        "drift": drift,
                    }
                )
        # A host where drift was seen, or that could not be read, is touched by every next
        # deploy (touch.py): what was applied there is no longer known to hold.
        forget = {name_of.get(d["server_ip"]) for d in drifted} | unreachable
        if outcome.status != "successful" or ctx.canceled:
            forget |= set(hosts)
        touch.forget_hosts(deps, {h for h in forget if h})
        result = {
            "checked": checked,
            "drifted": drifted,
            "unreachable": sorted(unreachable),
            "skipped": skipped,
        }
        if ctx.canceled or (outcome.status != "successful" and not seen):
            return JobResult(
                OUTCOME_STATUS.get(outcome.status, "failed"),
                describe_failure(outcome, records),
                result,
            )
        return JobResult("succeeded", None, result)


# -- after a crash ---------------------------------------------------------------------


def reconcile_after_crash(deps: Deps, interrupted: list[Operation]) -> list[str]:
    """Runs a crash interrupted may have changed containers half-way: for each, an
    operation that reads the hosts and makes the rows say what runs there (after the
    remote_cleanup operations that stop their leftover work, which are started first)."""
    started = []
    for op in interrupted:
        if op.kind not in ("deploy", "container_action"):
            continue
        with deps.db.connection_context(), deps.write():
            again = operations.create_operation(
                deps, SYSTEM, "container_reconcile", list(op.targets or []),
                {"interrupted_operation": op.id, "kind": op.kind, **(op.params or {})},
                project_id=op.project_id,
            )  # fmt: skip
        operations.dispatch(deps, again.id)
        started.append(again.id)
    return started


class ReconcileJob:
    """The rows of what an interrupted run touched, made to say what the hosts run."""

    def run(self, ctx: RunContext) -> JobResult:
        params = ctx.operation.params
        if params["kind"] == "container_action":
            c = Container.get_or_none(Container.id == params["container_id"])
            if c is None:
                return JobResult("succeeded", None, {"registry": {"action": "unchanged"}})
            registry = _settle_container(ctx, c, fleet.container_server(c), params["action"])
        else:
            project = Project.get_by_id(params["project_id"])
            env = projects.find_environment(project, params["environment"])
            apps = _rows(project.id, env.name, "app")
            # The rows' own image: the environment as registered, compared with the hosts.
            units = environment_units(
                ctx.deps, project, env, apps[0].image if apps else params["image"]
            )
            names = units.servers
            probed, seen = _probe_hosts(ctx, units, names)
            registry = {
                "action": "reconciled",
                "probed": probed,
                "unverified": sorted(set(names) - set(probed)),
                "containers": _reconcile(ctx.deps, ctx.operation.id, units, seen),
            }
        return JobResult("succeeded", None, {"registry": registry})


# What this module performs, by name: the Protection Layer's appliers (one per rule) and the
# runner's jobs. Plain data, gathered by the feature package; nothing registers on import.
APPLIERS: dict[str, gate.Applier] = {
    "deploy_staging": _execute_deploy,
    "deploy_production": _execute_deploy,
    "deploy_preview": _execute_deploy,
    "container_start": _execute_action,
    "container_stop": _execute_action,
    "container_restart": _execute_action,
    "container_remove": _execute_action,
    "volume_delete": _execute_action,
    "db_drop": _execute_action,
    "container_drift_check": _execute_drift_check,
}

JOBS = {
    "deploy": DeployJob(),
    "container_action": ContainerActionJob(),
    "drift_check": DriftCheckJob(),
    "container_reconcile": ReconcileJob(),
}
