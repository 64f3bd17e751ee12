"""The runs of autoscaling (runner jobs `scale_up` and `scale_down`) and the orphan sweep.

Scale up: create the instance (tagged codeb + codeb-autoscaled, user_data authorising codeb's
SSH key) -> wait until the cloud says it is ready and SSH answers (ready_timeout_s) -> pin its
host key -> register it (role app) -> bootstrap it (the servers feature's bootstrap run) ->
place a replica of what each scaling environment runs on it (`scale_place`, place.py: the
very image it runs, by id; not a deploy, so not behind a production deploy's staging gate,
and never a new image) -> let the proxies follow (the domains feature's apply) -> health.
Any failure deletes the instance it created and unregisters what it registered; the event
says at which step it failed. Each step is a row of the event's `steps` with its duration.

Scale down: drain (the server's app replicas leave the registry's upstreams and the proxies
are applied again, then drain_s for requests in flight) -> stop and remove its containers ->
delete the instance -> unregister.

Orphans: an instance tagged codeb-autoscaled that no registered server and no scale-up in
flight accounts for (codeb was killed mid scale-up) is deleted, never left billing."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

from codeb.errors import CodebError
from codeb.executor.identity import ensure_ssh_key
from codeb.executor.worker import JobFailed, JobResult, RunContext
from codeb.features.scaling import place, service
from codeb.providers.cloud import AUTOSCALED_TAG, CODEB_TAG, CloudError, Instance, InstanceSpec
from codeb.services import fleet, operations
from codeb.services.context import SYSTEM, Deps
from codeb.services.health import wait_for_health
from codeb.store.models import Container, Environment, Operation, Project, ScalingEvent, Server

FINAL = ("succeeded", "failed", "canceled", "timeout", "interrupted")


class StepFailed(Exception):
    pass


def user_data(public_key: str) -> str:
    """cloud-init: root trusts codeb's key (codeb logs in as root, as with any server)."""
    key = public_key.strip()
    return (
        "#cloud-config\n"
        "disable_root: false\n"
        "ssh_pwauth: false\n"
        "users:\n"
        "  - name: root\n"
        "    ssh_authorized_keys:\n"
        f"      - {key}\n"
    )


class Steps:
    """The event's steps, written as they happen (a crash leaves where it was)."""

    def __init__(self, deps: Deps, event_id: int) -> None:
        self.deps = deps
        self.event_id = event_id
        self.done: list[dict[str, Any]] = []

    def _save(self, **fields: Any) -> None:
        with self.deps.write():
            ScalingEvent.update(steps=list(self.done), **fields).where(
                ScalingEvent.id == self.event_id
            ).execute()

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        entry: dict[str, Any] = {"step": name, "status": "running"}
        self.done.append(entry)
        self._save(status="running")
        t0 = time.monotonic()
        try:
            detail = fn()
        except BaseException as exc:
            entry.update(status="failed", seconds=round(time.monotonic() - t0, 2),
                         error=_message(exc))  # fmt: skip
            self._save(failed_step=name)
            raise
        entry.update(status="succeeded", seconds=round(time.monotonic() - t0, 2))
        if detail:
            entry["detail"] = detail
        self._save()
        return detail


def _message(exc: BaseException) -> str:
    if isinstance(exc, StepFailed | CodebError | JobFailed):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"[:500]


def _event(event_id: int) -> ScalingEvent:
    return ScalingEvent.get_by_id(event_id)


def _finish(deps: Deps, event_id: int, status: str, error: str | None = None, **fields) -> None:
    with deps.write():
        ScalingEvent.update(status=status, error=error, finished_at=deps.clock.now(),
                            **fields).where(ScalingEvent.id == event_id).execute()  # fmt: skip


# -- waiting -----------------------------------------------------------------------------------


def wait_ready(
    cloud: Any, instance_id: str, timeout_s: float, poll_s: float, ssh_port: int,
    cancel: threading.Event,
) -> Instance:  # fmt: skip
    """Until the cloud says active/running/ok with a real address and SSH answers there."""
    deadline = time.monotonic() + timeout_s
    last: Instance | None = None
    while time.monotonic() < deadline and not cancel.is_set():
        last = cloud.get_instance(instance_id)
        if last is None:
            raise StepFailed(f"instance {instance_id} disappeared at the cloud")
        if last.ready and _ssh_answers(last.main_ip, ssh_port):
            return last
        cancel.wait(poll_s)
    if cancel.is_set():
        raise StepFailed("canceled")
    seen = (
        f"status {last.status}, power {last.power_status}, server {last.server_status}, "
        f"address {last.main_ip}"
        if last
        else "never read"
    )
    raise StepFailed(f"the instance was not ready after {timeout_s:g} s ({seen})")


def _ssh_answers(ip: str, port: int) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=3) as conn:
            conn.settimeout(3)
            return conn.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def pin_host_key(deps: Deps, ip: str, port: int) -> str:
    """Record the new server's host key (replacing whatever an earlier server at this address
    left: cloud addresses are reused), so every later run checks it."""
    known = deps.settings.data_dir / "ssh" / "known_hosts"
    known.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    known.touch(mode=0o600, exist_ok=True)
    scan = subprocess.run(
        ["ssh-keyscan", "-T", "10", "-t", "ed25519", "-p", str(port), ip],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    lines = [ln for ln in scan.stdout.splitlines() if ln and not ln.startswith("#")]
    if not lines:
        raise StepFailed(f"no ed25519 host key could be read from {ip}:{port}")
    host = ip if port == 22 else f"[{ip}]:{port}"
    forget_host_key(deps, ip, port)
    with known.open("a") as fh:
        fh.write("".join(ln + "\n" for ln in lines))
    fp = subprocess.run(
        ["ssh-keygen", "-l", "-F", host, "-f", str(known)],
        capture_output=True, text=True, timeout=10, check=False,
    )  # fmt: skip
    found = [ln.split()[-1] for ln in fp.stdout.splitlines() if "SHA256:" in ln]
    return found[0] if found else "recorded"


def forget_host_key(deps: Deps, ip: str, port: int) -> None:
    known = deps.settings.data_dir / "ssh" / "known_hosts"
    if known.exists():
        host = ip if port == 22 else f"[{ip}]:{port}"
        subprocess.run(["ssh-keygen", "-R", host, "-f", str(known)],
                       capture_output=True, timeout=10, check=False)  # fmt: skip
        known.with_name(known.name + ".old").unlink(missing_ok=True)


def run_sub(ctx: RunContext, kind: str, targets: list[str], params: dict, **kw: Any) -> Operation:
    """Start another operation (a bootstrap, a deploy, a proxy apply) as codeb and wait for
    its end; the scale operation's cancel cancels it."""
    deps = ctx.deps
    with deps.write():
        op = operations.create_operation(deps, SYSTEM, kind, targets, params, **kw)
    dispatch(ctx, op.id)
    return wait_operation(ctx, op.id)


def _worker(ctx: RunContext) -> Any:
    # The worker's own deps predate it (start_runtime adds the worker to a copy): the job
    # reaches the worker running it.
    return ctx.deps.worker or ctx._worker


def dispatch(ctx: RunContext, op_id: str) -> None:
    operations.dispatch(dataclasses.replace(ctx.deps, worker=_worker(ctx)), op_id)


def wait_operation(ctx: RunContext, op_id: str) -> Operation:
    deadline = time.monotonic() + ctx.deps.settings.run_timeout_s + 120
    while time.monotonic() < deadline:
        op = Operation.get_by_id(op_id)
        if op.status in FINAL:
            return op
        if ctx.canceled:
            _worker(ctx).cancel(op_id)
        ctx.cancel.wait(0.5) if not ctx.canceled else time.sleep(0.5)
    raise StepFailed(f"operation {op_id} did not end in time")


def _wait_for_other(ctx: RunContext, op_id: str) -> None:
    """Until another's operation ended (a cancel of this run stops the wait, never theirs)."""
    deadline = time.monotonic() + ctx.deps.settings.run_timeout_s + 120
    while Operation.get_by_id(op_id).status not in FINAL:
        if ctx.canceled:
            raise StepFailed("canceled")
        if time.monotonic() > deadline:
            raise StepFailed(f"operation {op_id} did not end in time")
        ctx.cancel.wait(1)


def _require_succeeded(op: Operation, what: str) -> dict[str, Any]:
    if op.status != "succeeded":
        raise StepFailed(f"{what} {op.status} (operation {op.id}): {op.error or 'no reason'}")
    return {"operation": op.id}


# -- scale up --------------------------------------------------------------------------------


def _scaling_environments(names: tuple[str, ...]) -> list[tuple[Project, Environment]]:
    """Every active environment named in the settings (the ones whose app runs nowhere are
    skipped when placing)."""
    envs = (
        Environment.select(Environment, Project)
        .join(Project)
        .where((Environment.name.in_(list(names))) & (Environment.status == "active"))
        .order_by(Project.name, Environment.name)
    )
    return [(env.project, env) for env in envs]


def place_on(ctx: RunContext, server: Server, names: tuple[str, ...]) -> dict[str, Any]:
    """A replica of what each scaling environment runs now on `server` (see place.py: never
    another image, and so not subject to the staging gate of a production deploy). A deploy
    of the environment under way is waited for first: it may change what runs."""
    placed = []
    for project, env in _scaling_environments(names):
        for busy in place.deploys_in_flight(project, env):
            _wait_for_other(ctx, busy.id)
        source = place.replica_source(project, env)
        if source is None or server.name in fleet.placed(env).get("app", []):
            continue
        op = run_sub(
            ctx, place.SCALE_PLACE, [server.name],
            {"project_id": project.id, "environment": env.name, "server_id": server.id,
             "image": source.image, "image_id": source.image_id},
            project_id=project.id,
        )  # fmt: skip
        if op.status != "succeeded":
            raise StepFailed(
                f"placing {project.name}/{env.name} on {server.name} {op.status} "
                f"(operation {op.id}): {op.error or 'no reason'}"
            )
        placed.append({"environment": f"{project.name}/{env.name}", "image": source.image,
                       "image_id": source.image_id, "port": env.app_port,
                       "operation": op.id})  # fmt: skip
    return {"placed": placed}


def proxies_follow(ctx: RunContext) -> dict[str, Any]:
    """The proxies serve what the database says now (the domains feature's apply): run it
    when the rendered configuration differs, and wait for it."""
    from codeb.features.domains import service as domains

    deps = ctx.deps
    for _ in range(3):
        busy = (
            Operation.select()
            .where((Operation.kind == domains.APPLY) & Operation.status.in_(["queued", "running"]))
            .first()
        )
        if busy is not None:
            _wait_for_other(ctx, busy.id)
            continue
        reason = domains.sync_reason(deps)
        if reason is None:
            return {"proxies": "in sync"}
        targets = [s.name for s in domains.proxy_servers()] + [
            s.name for s in domains.dns_servers()
        ]
        op = run_sub(ctx, domains.APPLY, targets, {"reason": f"autoscaling: {reason}"})
        _require_succeeded(op, "the proxy apply")
        return {"proxies": "applied", "operation": op.id}
    raise StepFailed("the proxies' configuration kept changing")


def health(ctx: RunContext, server: Server, placed: list[dict[str, Any]]) -> dict[str, Any]:
    """Each placed app answers /health on the new server."""
    checked = []
    for item in placed:
        url = f"http://{server.ip}:{item['port']}/health"
        status = wait_for_health(url, ctx, 60, 1, 3)
        if status != 200:
            raise StepFailed(f"{item['environment']} on {server.name}: GET {url} -> {status}")
        checked.append(item["environment"])
    return {"healthy": checked}


class ScaleUpJob:
    def run(self, ctx: RunContext) -> JobResult:
        deps = ctx.deps
        event_id = ctx.operation.params["event_id"]
        event = _event(event_id)
        _, cloud_settings, _ = service.current(deps)
        steps = Steps(deps, event_id)
        cloud = service.cloud_client(deps)
        state: dict[str, Any] = {}
        try:
            inst = steps.run("create", lambda: self._create(deps, cloud, event, cloud_settings))
            state["instance"] = inst["instance_id"]
            ready = steps.run("wait_ready", lambda: self._wait(ctx, cloud, state["instance"],
                                                              cloud_settings))  # fmt: skip
            ip = ready["ip"]
            steps.run(
                "pin_host_key",
                lambda: {"fingerprint": pin_host_key(deps, ip, cloud_settings.ssh_port)},
            )
            server = steps.run("register",
                               lambda: self._register(deps, event, ip, cloud_settings))  # fmt: skip
            state["server_id"] = server["server_id"]
            srv = Server.get_by_id(state["server_id"])
            steps.run("bootstrap", lambda: self._bootstrap(ctx, srv))
            srv = Server.get_by_id(state["server_id"])
            state["placing"] = True
            placed = steps.run("place", lambda: place_on(ctx, srv, cloud_settings.environments))
            steps.run("proxy", lambda: proxies_follow(ctx))
            steps.run("health", lambda: health(ctx, srv, placed["placed"]))
        except Exception as exc:
            cleanup = discard(ctx, deps, cloud, state.get("instance"), state.get("server_id"))
            failed = _event(event_id).failed_step
            status = "canceled" if ctx.canceled else "failed"
            error = f"failed at {failed}: {_message(exc)}; {cleanup['summary']}"
            _finish(deps, event_id, status, error)
            return JobResult(status, error, {"scaling": service.event_view(_event(event_id)),
                                             "cleanup": cleanup})  # fmt: skip
        finally:
            getattr(cloud, "close", lambda: None)()
        _finish(deps, event_id, "succeeded", server_name=srv.name)
        return JobResult("succeeded", None, {"scaling": service.event_view(_event(event_id)),
                                             "server": srv.name, "ip": srv.ip})  # fmt: skip

    @staticmethod
    def _create(deps: Deps, cloud: Any, event: ScalingEvent, cs: Any) -> dict[str, Any]:
        public = ensure_ssh_key(deps.settings.resolved_ssh_key_file)
        spec = InstanceSpec(
            label=event.label,
            hostname=event.label,
            region=cs.region,
            plan=cs.plan,
            os_id=cs.os_id,
            ssh_key_ids=tuple(cs.ssh_key_ids),
            user_data=user_data(public),
            tags=(CODEB_TAG, AUTOSCALED_TAG),
        )
        inst = cloud.create_instance(spec)
        with deps.write():
            ScalingEvent.update(instance_id=inst.id).where(ScalingEvent.id == event.id).execute()
        return {"instance_id": inst.id, "tries": getattr(cloud, "attempts", None)}

    @staticmethod
    def _wait(ctx: RunContext, cloud: Any, instance_id: str, cs: Any) -> dict[str, Any]:
        inst = wait_ready(cloud, instance_id, cs.ready_timeout_s, cs.poll_s, cs.ssh_port,
                          ctx.cancel)  # fmt: skip
        return {"ip": inst.main_ip}

    @staticmethod
    def _register(deps: Deps, event: ScalingEvent, ip: str, cs: Any) -> dict[str, Any]:
        fleet.ensure_allowed(deps.settings, ip)
        now = deps.clock.now()
        with deps.write():
            clash = Server.get_or_none((Server.ip == ip) | (Server.name == event.label))
            if clash is not None:
                raise StepFailed(f"{ip} or {event.label} is already registered ({clash.name})")
            server = Server.create(
                name=event.label, ip=ip, role="app", ssh_user="root", ssh_port=cs.ssh_port,
                provider=service.PROVIDER, provider_id=_event(event.id).instance_id,
                status="bootstrapping", created_at=now, updated_at=now,
            )  # fmt: skip
            ScalingEvent.update(server_name=server.name).where(
                ScalingEvent.id == event.id
            ).execute()
        return {"server_id": server.id, "name": server.name, "ip": ip}

    @staticmethod
    def _bootstrap(ctx: RunContext, server: Server) -> dict[str, Any]:
        op = run_sub(ctx, "server_bootstrap", [server.name], {"ip": server.ip},
                     server_id=server.id)  # fmt: skip
        detail = _require_succeeded(op, "the bootstrap")
        if Server.get_by_id(server.id).status != "ready":
            raise StepFailed(f"{server.name} is not ready after its bootstrap")
        return detail


def _drop_server_rows(deps: Deps, server: Server) -> list[str]:
    """Take the server's app replicas out of the registry: its app containers marked removed,
    its app placements released. Returns the environments touched."""
    touched = []
    with deps.write():
        rows = Container.select().where(
            (Container.server_ip == server.ip) & (Container.server_type == "app")
            & (Container.status != "removed")
        )  # fmt: skip
        for c in rows:
            c.status, c.health_status, c.updated_at = "removed", None, deps.clock.now()
            c.save()
        for env in Environment.select().where(Environment.status == "active"):
            if server.name in fleet.placed(env).get("app", []):
                fleet.release(env, "app", server)
                touched.append(env.id)
    return touched


def _unregister(deps: Deps, server: Server) -> None:
    """As a server delete does: the row stays for the record, its name and address step
    aside so they can be reused."""
    with deps.write():
        s = Server.get_by_id(server.id)
        s.facts = {**(s.facts or {}), "deleted_name": s.name, "deleted_ip": s.ip,
                   "deleted_by": "autoscaling"}  # fmt: skip
        s.name = f"{s.name}~{s.id}"[:63]
        s.ip = f"deleted-{s.id}"
        s.status = "deleted"
        s.updated_at = deps.clock.now()
        s.save()
    forget_host_key(deps, server.ip, server.ssh_port)


def discard(
    ctx: RunContext | None, deps: Deps, cloud: Any, instance_id: str | None,
    server_id: int | None,
) -> dict[str, Any]:  # fmt: skip
    """Undo a scale-up that did not finish: unregister the server (its replicas leave the
    proxies) and delete the instance. Never raises: it says what it could not do."""
    out: dict[str, Any] = {}
    if server_id is not None:
        server = Server.get_or_none((Server.id == server_id) & (Server.status != "deleted"))
        if server is not None:
            touched = _drop_server_rows(deps, server)
            _unregister(deps, server)
            out["unregistered"] = server.name
            if touched and ctx is not None:
                try:
                    proxies_follow(ctx)
                except Exception as exc:  # the scheduled domain_sync retries
                    out["proxies"] = _message(exc)
    if instance_id:
        try:
            cloud.delete_instance(instance_id)
            out["instance_deleted"] = instance_id
        except CloudError as exc:
            out["instance_error"] = str(exc)
    parts = []
    if "instance_deleted" in out:
        parts.append(f"instance {instance_id} deleted")
    elif instance_id:
        parts.append(f"instance {instance_id} NOT deleted ({out['instance_error']}); the orphan "
                     "sweep retries")  # fmt: skip
    else:
        parts.append("no instance was created")
    if "unregistered" in out:
        parts.append(f"{out['unregistered']} unregistered")
    out["summary"] = ", ".join(parts)
    return out


# -- scale down --------------------------------------------------------------------------------


class ScaleDownJob:
    def run(self, ctx: RunContext) -> JobResult:
        deps = ctx.deps
        params = ctx.operation.params
        event_id = params["event_id"]
        _, cs, _ = service.current(deps)
        steps = Steps(deps, event_id)
        server = Server.get_by_id(params["server_id"])
        cloud = service.cloud_client(deps)
        try:
            reasons = service.removable(server)
            if reasons:
                raise StepFailed("refused: " + "; ".join(reasons))
            containers = [
                c.id
                for c in Container.select().where(
                    (Container.server_ip == server.ip) & (Container.status != "removed")
                )
            ]
            steps.run("drain", lambda: self._drain(ctx, server, cs.drain_s))
            steps.run("stop", lambda: self._stop(ctx, server, containers))
            steps.run("delete_instance", lambda: self._delete(cloud, server))
            steps.run("unregister", lambda: _unregister(deps, server) or {"server": server.name})
        except Exception as exc:
            failed = _event(event_id).failed_step
            error = f"failed at {failed}: {_message(exc)}"
            _finish(deps, event_id, "failed", error)
            return JobResult("failed", error, {"scaling": service.event_view(_event(event_id))})
        finally:
            getattr(cloud, "close", lambda: None)()
        _finish(deps, event_id, "succeeded")
        return JobResult("succeeded", None, {"scaling": service.event_view(_event(event_id))})

    @staticmethod
    def _drain(ctx: RunContext, server: Server, drain_s: float) -> dict[str, Any]:
        with ctx.deps.write():
            Server.update(status="draining", updated_at=ctx.deps.clock.now()).where(
                Server.id == server.id
            ).execute()
        touched = _drop_server_rows(ctx.deps, server)
        proxies = proxies_follow(ctx)
        ctx.cancel.wait(drain_s)  # requests in flight finish
        return {"environments": len(touched), **proxies, "waited_s": drain_s}

    @staticmethod
    def _stop(ctx: RunContext, server: Server, containers: list[str]) -> dict[str, Any]:
        stopped = []
        for cid in containers:
            op = run_sub(ctx, "container_action", [server.name],
                         {"container_id": cid, "action": "remove"})  # fmt: skip
            _require_succeeded(op, f"removing container {cid}")
            stopped.append(cid)
        return {"removed": stopped}

    @staticmethod
    def _delete(cloud: Any, server: Server) -> dict[str, Any]:
        inst = cloud.get_instance(server.provider_id)
        if inst is not None and AUTOSCALED_TAG not in inst.tags:
            raise StepFailed(f"instance {server.provider_id} is not tagged {AUTOSCALED_TAG}")
        cloud.delete_instance(server.provider_id)
        return {"instance_deleted": server.provider_id}


# -- orphans ------------------------------------------------------------------------------------


_SWEEP_LOCK = threading.Lock()


def sweep_orphans(deps: Deps, trigger: str = "scheduled") -> dict[str, Any]:
    """Instances tagged codeb-autoscaled that nothing accounts for are deleted: no scale-up
    in flight created them and no registered server came out of a finished one. A server a
    killed scale-up left registered is unregistered first (its replicas leave the proxies at
    the next domain_sync). Scale-up events left running by a dead process are closed."""
    if not _SWEEP_LOCK.acquire(blocking=False):
        return {"skipped": "a sweep is running"}
    try:
        return _sweep(deps, trigger)
    finally:
        _SWEEP_LOCK.release()


def _sweep(deps: Deps, trigger: str) -> dict[str, Any]:
    cloud = service.cloud_client(deps)
    try:
        instances = cloud.list_instances(AUTOSCALED_TAG)
        deleted, kept = [], 0
        for inst in instances:
            event = (
                ScalingEvent.select()
                .where((ScalingEvent.kind == "up")
                       & ((ScalingEvent.instance_id == inst.id)
                          | (ScalingEvent.label == inst.label)))
                .order_by(ScalingEvent.id.desc())
                .first()
            )  # fmt: skip
            if event is not None and service.in_flight_operation(event):
                kept += 1
                continue
            server = Server.get_or_none(
                (Server.provider_id == inst.id) & (Server.status != "deleted")
            )
            if server is not None and (event is None or event.status == "succeeded"):
                kept += 1  # serving (or registered by hand with this instance: adopted)
                continue
            cleanup = discard(None, deps, cloud, inst.id, server.id if server else None)
            step = event.failed_step or _last_step(event) if event else None
            with deps.write():
                ScalingEvent.create(
                    kind="orphan", trigger=trigger, requested_by="codeb",
                    status="deleted" if "instance_deleted" in cleanup else "failed",
                    label=inst.label, instance_id=inst.id,
                    server_name=cleanup.get("unregistered"),
                    decision={"reason": "tagged codeb-autoscaled, not accounted for"
                              + (f" (scale-up event {event.id} {event.status} at {step})"
                                 if event else "")},
                    error=cleanup.get("instance_error"),
                    started_at=deps.clock.now(), finished_at=deps.clock.now(),
                )  # fmt: skip
                if event is not None and event.status in service.IN_FLIGHT:
                    ScalingEvent.update(
                        status="failed", finished_at=deps.clock.now(), failed_step=step,
                        error=f"interrupted at {step} (codeb stopped); {cleanup['summary']}",
                    ).where(ScalingEvent.id == event.id).execute()  # fmt: skip
            deleted.append(inst.id)
        _close_dead_events(deps)
        return {"instances": len(instances), "kept": kept, "deleted": deleted}
    finally:
        getattr(cloud, "close", lambda: None)()


def _last_step(event: ScalingEvent) -> str | None:
    steps = event.steps or []
    return steps[-1]["step"] if steps else "create"


def _close_dead_events(deps: Deps) -> None:
    """Scale events whose operation ended without closing them (a killed process)."""
    for event in ScalingEvent.select().where(
        ScalingEvent.kind.in_(["up", "down"]) & ScalingEvent.status.in_(service.IN_FLIGHT)
    ):
        op = Operation.get_or_none(Operation.id == event.operation_id)
        if op is None or op.status not in service.IN_FLIGHT:
            with deps.write():
                ScalingEvent.update(
                    status="failed", finished_at=deps.clock.now(),
                    failed_step=event.failed_step or _last_step(event),
                    error=f"interrupted at {_last_step(event)} (operation "
                          f"{op.status if op else 'missing'})",
                ).where(ScalingEvent.id == event.id).execute()  # fmt: skip


class _StartupSweep:
    """At start-up, one sweep in the background (a restart after a kill finds orphans)."""

    def __init__(self, deps: Deps) -> None:
        self.thread = threading.Thread(target=self._run, args=(deps,), name="scaling-orphans",
                                       daemon=True)  # fmt: skip
        self.result: dict[str, Any] | None = None
        self.thread.start()

    def _run(self, deps: Deps) -> None:
        import logging

        try:
            with deps.db.connection_context():
                if service.current(deps)[2]:
                    self.result = sweep_orphans(deps, trigger="startup")
        except Exception:
            logging.getLogger("codeb.scaling").exception("the start-up orphan sweep failed")

    def shutdown(self) -> None:
        self.thread.join(timeout=60)


def start_sweep(deps: Deps) -> _StartupSweep | None:
    return _StartupSweep(deps) if deps.worker is not None else None


JOBS = {service.SCALE_UP: ScaleUpJob(), service.SCALE_DOWN: ScaleDownJob(), **place.JOBS}
