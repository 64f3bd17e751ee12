"""A replica of what an environment ALREADY runs, placed on a server autoscaling added (the
runner job `scale_place`, one per environment, locking only the new server).

Scaling is not a deploy. A production deploy brings a new image to production, so the
Protection Layer requires that image to be tested in staging (`staging_tested`,
`health_check_passed`, and the deploy job checks it by image id). A scale-up brings no new
image: it adds one more replica of the image production runs now, so that gate is not its
business (staging may well run the next version already). It must not become a way around the
gate either (no sequence of cheaper operations reaches the effect of a dearer one), so the
image it places is never chosen by anyone: it is read from the registry, and it must be the
very image the environment runs, by id, before anything starts on the new server:

- the environment's running app replicas must agree on one image and one recorded image id
  (replicas in the middle of a deploy, or with no recorded id, are refused: scale after it);
- the image is pulled on the new server first, with nothing started; a probe then reads the
  id the tag names there, and a tag naming anything else (retagged, re-pushed) stops the step
  before any container runs;
- the deploy run is bound to the state that probe saw (`codeb_expected_state`): if the tag
  moved in between, the run refuses before it changes anything;
- it touches only the new server (the running replicas are not redeployed);
- before the replica is recorded (and so before the proxies send it requests), the
  environment must still run that image, and no deploy of it may be under way that would not
  also reach the new server.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from codeb.executor.events import reported
from codeb.executor.runner import PlaybookRun
from codeb.executor.worker import JobFailed, JobResult, RunContext, describe_failure
from codeb.render.units import EnvironmentUnits, HostPlan, plan_environment
from codeb.services import fleet
from codeb.services.context import Deps
from codeb.services.health import wait_for_health
from codeb.store.models import Container, Environment, Operation, Project, Server

SCALE_PLACE = "scale_place"
IN_FLIGHT = ("queued", "running")
HEALTH_DEADLINE_S = 120


@dataclass(frozen=True)
class Source:
    """What an environment's app runs now: one image reference and the image id it names."""

    image: str
    image_id: str
    replicas: int


def _bare(image_id: str | None) -> str | None:
    return image_id.removeprefix("sha256:") if image_id else None


def replica_source(project: Project, env: Environment) -> Source | None:
    """The image (and its id) every running app replica of `env` runs; None when none runs.
    Raises JobFailed when the replicas do not say one image unambiguously."""
    rows = list(
        Container.select().where(
            (Container.project == project.id)
            & (Container.environment == env.name)
            & (Container.server_type == "app")
            & (Container.status == "running")
        )
    )
    if not rows:
        return None
    where = f"{project.name}/{env.name}"
    images = sorted({r.image for r in rows})
    if len(images) != 1:
        raise JobFailed(
            f"the app replicas of {where} run different images ({', '.join(images)}): a "
            "scale-up adds a replica of one image only; scale once a deploy settled them"
        )
    ids = {_bare(r.image_id) for r in rows}
    if None in ids or len(ids) != 1:
        raise JobFailed(
            f"the app replicas of {where} do not record one image id for {images[0]} "
            f"({', '.join(sorted(str(i)[:19] for i in ids))}): a scale-up places only the "
            "exact image the environment runs; deploy it again to record it"
        )
    return Source(images[0], ids.pop() or "", len(rows))


def deploys_in_flight(project: Project, env: Environment) -> list[Operation]:
    """Deploys of `env` queued or running (they may change what it runs)."""
    ops = Operation.select().where(
        (Operation.project == project.id)
        & (Operation.kind == "deploy")
        & Operation.status.in_(list(IN_FLIGHT))
    )
    return [op for op in ops if (op.params or {}).get("environment") == env.name]


def _probe_plan(host_plan: HostPlan) -> dict[str, Any]:
    """Without file contents: the probe compares paths, modes and checksums only."""
    return {
        **host_plan,
        "files": [{k: v for k, v in f.items() if k != "content"} for f in host_plan["files"]],
    }


def _pull_plan(host_plan: HostPlan) -> dict[str, Any]:
    """The app's image pulled and its env file placed, no unit: nothing starts. (The role
    pulls missing images only for a host where some file differs; the env file, placed by the
    real run anyway, is that file. It names no unit here: a placed file's unit is restarted.)"""
    return {
        "dirs": host_plan["dirs"],
        "files": [{**f, "unit": ""} for f in host_plan["files"] if f["secret"]],
        "units": [],
        "images": host_plan["images"],
        "containers": [],
    }


class ScalePlaceJob:
    """Params: project_id, environment, server_id, image, image_id (what the scale-up read;
    read again here: anything else fails the run)."""

    def run(self, ctx: RunContext) -> JobResult:
        deps, params = ctx.deps, ctx.operation.params
        project = Project.get_by_id(params["project_id"])
        env = Environment.get(
            (Environment.project == project.id) & (Environment.name == params["environment"])
        )
        server = Server.get_by_id(params["server_id"])
        if server.status != "ready" or server.role != "app":
            raise JobFailed(f"{server.name} is not a ready app server ({server.status})")
        source = self._same_source(project, env, params)
        placement = fleet.placed(env)
        app = sorted({*placement.get("app", []), server.name})
        from codeb.features.containers.service import environment_units

        units = environment_units(deps, project, env, source.image, {**placement, "app": app})
        host = server.name
        plan = plan_environment(deps.settings.templates_dir, units, ("app",))[host]
        pulled = self._pull_then_probe(ctx, units, host, plan)
        seen = _bare(pulled["images"].get(source.image))
        if seen != source.image_id:
            raise JobFailed(
                f"{source.image} names image {str(seen)[:19]} on {host}, but "
                f"{project.name}/{env.name} runs {source.image_id[:19]}: a scale-up places "
                "only the image the environment already runs (nothing was started there)"
            )
        if ctx.canceled:
            ctx.note_stopped()
            return JobResult("canceled", "canceled by request", {})
        outcome, records = ctx.run(
            PlaybookRun(
                "deploy.yml",
                fleet.hosts_for(deps, [host]),
                extravars={"codeb_plan": {host: plan},
                           "codeb_expected_state": {host: pulled["state"]}},
                secrets=units.secrets,
                limit=host,
            )
        )  # fmt: skip
        if outcome.status != "successful" or ctx.canceled:
            raise JobFailed(
                f"placing {source.image} on {host}: " + describe_failure(outcome, records)
            )
        ran = _bare(reported(records, "codeb_images").get(host, {}).get(source.image))
        if ran != source.image_id:
            raise JobFailed(f"{source.image} named {str(ran)[:19]} on {host} when it started")
        if not self._healthy(ctx, server.ip, units.app_port):
            raise JobFailed(f"{project.name}/{env.name} on {host} does not answer /health")
        # Recorded only now: the proxies follow the rows, so no request reaches the replica
        # before this point, and none does if the environment moved meanwhile.
        self._same_source(project, env, params, also_not_deploying=server.name)
        row = self._record(deps, ctx.operation.id, project, env, server, units, source)
        return JobResult(
            "succeeded",
            None,
            {"environment": f"{project.name}/{env.name}", "server": host, "image": source.image,
             "image_id": source.image_id, "container": row.id,
             "url": f"http://{server.ip}:{units.app_port}/"},
        )  # fmt: skip

    @staticmethod
    def _same_source(
        project: Project, env: Environment, params: dict[str, Any], also_not_deploying: str = ""
    ) -> Source:
        source = replica_source(project, env)
        where = f"{project.name}/{env.name}"
        if source is None:
            raise JobFailed(f"no app replica of {where} runs any more: nothing to scale")
        if (source.image, source.image_id) != (params["image"], params["image_id"]):
            raise JobFailed(
                f"{where} runs {source.image} ({source.image_id[:19]}) now, not "
                f"{params['image']} ({str(params['image_id'])[:19]}) as when the scale-up "
                "began: a scale-up never places another image than the environment's"
            )
        if also_not_deploying:
            # A deploy that names the new server waits for this run and then reaches it too;
            # one that does not would leave this replica behind.
            busy = [
                op.id
                for op in deploys_in_flight(project, env)
                if also_not_deploying not in (op.targets or [])
            ]
            if busy:
                raise JobFailed(f"a deploy of {where} is under way ({', '.join(busy)})")
        return source

    @staticmethod
    def _pull_then_probe(
        ctx: RunContext, units: EnvironmentUnits, host: str, plan: HostPlan
    ) -> dict[str, Any]:
        """Pull (nothing starts), then read the id the tag names and the state digest the
        real run is bound to."""
        deps = ctx.deps
        targets = fleet.hosts_for(deps, [host])
        outcome, records = ctx.run(
            PlaybookRun("deploy.yml", targets, extravars={"codeb_plan": {host: _pull_plan(plan)}},
                        secrets=units.secrets, limit=host)
        )  # fmt: skip
        if outcome.status != "successful":
            raise JobFailed(f"pulling {units.app_image} on {host}: "
                            + describe_failure(outcome, records))  # fmt: skip
        outcome, records = ctx.run(
            PlaybookRun("deploy_probe.yml", targets,
                        extravars={"codeb_plan": {host: _probe_plan(plan)}},
                        secrets=units.secrets, limit=host, timeout_s=300),
            primary=False,
        )  # fmt: skip
        state = reported(records, "codeb_state").get(host)
        if outcome.status != "successful" or not state:
            raise JobFailed(f"probing {host}: " + describe_failure(outcome, records))
        return {"images": reported(records, "codeb_images").get(host, {}), "state": state}

    @staticmethod
    def _healthy(ctx: RunContext, ip: str, port: int) -> bool:
        url = f"http://{ip}:{port}/health"
        return wait_for_health(url, ctx, HEALTH_DEADLINE_S, 0.5, 3) == 200

    @staticmethod
    def _record(
        deps: Deps,
        op_id: str,
        project: Project,
        env: Environment,
        server: Server,
        units: EnvironmentUnits,
        source: Source,
    ) -> Container:
        now = deps.clock.now()
        with deps.write():
            app = sorted({*fleet.placed(env).get("app", []), server.name})
            fleet.record(deps, env, {"app": app})
            return Container.create(
                id=f"ctr_{secrets.token_hex(8)}",
                project=project.id,
                environment=env.name,
                server_type="app",
                server_ip=server.ip,
                container_name=units.name("app"),
                image=source.image,
                image_id=source.image_id,
                port_external=units.app_port,
                port_internal=units.app_port,
                status="running",
                health_status="healthy",
                health_checked_at=now,
                last_operation_id=op_id,
                created_at=now,
                updated_at=now,
            )


JOBS = {SCALE_PLACE: ScalePlaceJob()}
