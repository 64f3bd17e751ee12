"""Autoscaling's use cases: its settings (the policy, the cloud, the Vultr API key stored
encrypted), the check (the policy evaluated on live stats of the app pool, answered with its
inputs and reasons, acting on nothing), scale up and down through the Protection Layer
(`scale_up` LOW, `scale_down` MEDIUM), the history, and the scheduled check that acts only
when autoscaling is enabled. The runs themselves (create, wait, bootstrap, place, drain,
delete) and the orphan sweep are in codeb/features/scaling/jobs.py."""

from __future__ import annotations

import contextvars
import dataclasses
import datetime as dt
import hashlib
import re
from typing import Any

from codeb.errors import Conflict, NotFound, ServiceUnavailable, ValidationFailed
from codeb.executor.events import reported
from codeb.executor.worker import describe_failure
from codeb.features.scaling.policy import Decision, Policy, Pool, Sample, decide
from codeb.features.scaling.settings import (
    CloudSettings,
    cloud_from,
    merge_cloud,
    merge_policy,
    policy_from,
)
from codeb.protection.tokens import Target
from codeb.providers.cloud import CloudProvider, Vultr
from codeb.services import fleet, gate, operations
from codeb.services.context import SYSTEM, Actor, Deps
from codeb.services.scheduler import Job
from codeb.store.models import (
    Container,
    Operation,
    ScalingEvent,
    ScalingSample,
    ScalingSettings,
    Server,
)

SCALE_UP, SCALE_DOWN = "scale_up", "scale_down"
PROVIDER = "vultr"
IN_FLIGHT = ("queued", "running")
_API_KEY = re.compile(r"[A-Za-z0-9_\-.=+/]{16,200}")
# The key a configure request carries, handed to its applier in the same request (never
# through the gate's params, which are logged and stored).
_PENDING_KEY: contextvars.ContextVar[str | None] = contextvars.ContextVar("vultr_key", default=None)


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() + "Z" if value else None


# -- settings ----------------------------------------------------------------------------


def _row() -> ScalingSettings | None:
    return ScalingSettings.get_or_none(ScalingSettings.id == 1)


def current(deps: Deps) -> tuple[Policy, CloudSettings, bool]:
    """The policy, the cloud settings and whether an API key is stored."""
    row = _row()
    if row is None:
        return Policy(), CloudSettings(), False
    return policy_from(row.policy), cloud_from(row.cloud), bool(row.api_key)


def policy_view(deps: Deps) -> dict[str, Any]:
    policy, cloud, has_key = current(deps)
    return {
        "policy": policy.view(),
        "cloud": cloud.view(),
        "api_key_set": has_key,
        "configured": has_key and cloud.complete,
        "pool": pool_view(deps, policy),
    }


def _fingerprint(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def configure(
    deps: Deps, actor: Actor, body: dict[str, Any], confirmation: gate.Confirmation | None = None
) -> gate.Answer:
    """Change the policy, the cloud settings and/or the API key (`scaling_configure`). The
    key never enters the gate's parameters (they are logged): its fingerprint binds the
    request, and the key itself reaches the applier within this request only."""
    policy, cloud, _ = current(deps)
    # null (or absent) leaves a value as it is.
    changes_policy = {k: v for k, v in (body.get("policy") or {}).items() if v is not None}
    changes_cloud = {k: v for k, v in (body.get("cloud") or {}).items() if v is not None}
    if body.get("enabled") is not None:
        changes_policy = {**changes_policy, "enabled": bool(body["enabled"])}
    try:
        new_policy = merge_policy(policy, changes_policy)
        new_cloud = merge_cloud(cloud, changes_cloud)
    except ValueError as exc:
        # Each value passed the request's shape: what remains is a contradiction with the
        # other values (the stored ones included), e.g. scale-in above scale-out.
        raise Conflict(f"the settings would contradict each other: {exc}") from None
    key = body.get("api_key")
    params: dict[str, Any] = {"policy": new_policy.view(), "cloud": new_cloud.view()}
    if key is not None:
        if not isinstance(key, str) or not _API_KEY.fullmatch(key):
            raise ValidationFailed(
                "api_key must be 16-200 letters, digits or -_.=+/", {"field": "api_key"}
            )
        params["new_vultr_access_sha256"] = _fingerprint(key)
    reset = _PENDING_KEY.set(key)
    try:
        return gate.guard(
            deps,
            actor,
            "scaling_configure",
            Target("scaling", "settings", "autoscaling"),
            params,
            effect=(
                ("Enables" if new_policy.enabled else "Sets (disabled)")
                + " autoscaling of the app pool"
                + (" and stores a new Vultr API key." if key else ".")
            ),
            confirmation=confirmation,
        )
    finally:
        _PENDING_KEY.reset(reset)


def _execute_configure(
    deps: Deps, actor: Actor, target: Target, params: dict[str, Any]
) -> dict[str, Any]:
    row = _row() or ScalingSettings(id=1, policy={}, cloud={})
    if params.get("new_vultr_access_sha256"):
        key = _PENDING_KEY.get()
        if key is None or _fingerprint(key) != params["new_vultr_access_sha256"]:
            raise Conflict(
                "the API key travels only with the request that executes: send it again "
                "with the confirmed request (X-Confirm-Token)",
                {"field": "api_key"},
            )
        row.api_key = deps.box.encrypt(key)
    row.policy = params["policy"]
    row.cloud = params["cloud"]
    row.updated_at = deps.clock.now()
    if ScalingSettings.get_or_none(ScalingSettings.id == 1) is None:
        row.save(force_insert=True)
    else:
        row.save()
    return policy_view(deps)


def cloud_client(deps: Deps) -> CloudProvider:
    """The cloud's client with the stored key; 409 while autoscaling is not configured."""
    row = _row()
    _, cloud, has_key = current(deps)
    if row is None or not has_key:
        raise Conflict(
            "no Vultr API key is stored: PUT /api/scaling/policy with api_key",
            {"field": "api_key"},
        )
    try:
        key = deps.box.decrypt(row.api_key)
    except ValueError:
        raise ServiceUnavailable("the stored Vultr API key cannot be decrypted") from None
    return Vultr(key, base_url=cloud.api_url)


# -- the pool ------------------------------------------------------------------------------


def autoscaled_servers() -> list[Server]:
    """App servers codeb created by autoscaling: provider vultr and an `up` event that
    created their instance (only these may ever be removed by autoscaling)."""
    ids = [
        e.instance_id
        for e in ScalingEvent.select(ScalingEvent.instance_id).where(
            (ScalingEvent.kind == "up") & ScalingEvent.instance_id.is_null(False)
        )
    ]
    if not ids:
        return []
    return list(
        Server.select()
        .where(
            (Server.role == "app")
            & (Server.status != "deleted")
            & (Server.provider == PROVIDER)
            & Server.provider_id.in_(ids)
        )
        .order_by(Server.created_at.desc(), Server.id.desc())
    )


def app_servers() -> list[Server]:
    return list(
        Server.select()
        .where((Server.role == "app") & (Server.status == "ready"))
        .order_by(Server.id)
    )


def _last(kind: str) -> dt.datetime | None:
    """When the last scale of this kind ended: succeeded, or failed (a failing scale-up is not
    retried every 30 s, buying and deleting an instance each time)."""
    row = (
        ScalingEvent.select()
        .where(
            (ScalingEvent.kind == kind)
            & ScalingEvent.status.in_(["succeeded", "failed"])
            & ScalingEvent.finished_at.is_null(False)
        )
        .order_by(ScalingEvent.finished_at.desc())
        .first()
    )
    return row.finished_at if row else None


def pool(policy: Policy) -> Pool:
    auto = autoscaled_servers()
    return Pool(
        servers=len(app_servers()),
        autoscaled=len(auto),
        monthly_cost=len(auto) * policy.server_monthly_cost,
        last_added_at=_last("up"),
        last_removed_at=_last("down"),
    )


def pool_view(deps: Deps, policy: Policy) -> dict[str, Any]:
    p = pool(policy)
    return {
        "servers": p.servers,
        "autoscaled": [s.name for s in autoscaled_servers()],
        "monthly_cost": p.monthly_cost,
        "last_added_at": _iso(p.last_added_at),
        "last_removed_at": _iso(p.last_removed_at),
    }


# -- stats and the check --------------------------------------------------------------------


def sample_now(deps: Deps) -> Sample | None:
    """The app pool's load now, read from each ready app server by the stats playbook
    (roles/codeb_stats), stored as a sample; None when no app server answered."""
    from codeb.features.servers import service as servers

    names = [s.name for s in app_servers()]
    if not names:
        return None
    outcome, records = servers.run_now(deps, "stats.yml", names, timeout_s=90)
    stats = reported(records, "codeb_stats")
    per: dict[str, dict[str, float]] = {}
    for name, figures in stats.items():
        try:
            memory = figures["memory"]
            per[name] = {
                "cpu_pct": float(figures["cpu"]["percent"]),
                "mem_pct": round(100.0 * memory["used_bytes"] / memory["total_bytes"], 1),
            }
        except (KeyError, TypeError, ZeroDivisionError):
            continue
    if not per:
        raise ServiceUnavailable(
            "no app server answered the stats run: " + describe_failure(outcome, records),
            {"servers": names},
        )
    now = deps.clock.now()
    sample = Sample(
        at=now,
        cpu_pct=round(sum(v["cpu_pct"] for v in per.values()) / len(per), 1),
        mem_pct=round(sum(v["mem_pct"] for v in per.values()) / len(per), 1),
    )
    with deps.write():
        ScalingSample.create(at=now, cpu_pct=sample.cpu_pct, mem_pct=sample.mem_pct, servers=per)
        # A day of samples is plenty for windows of minutes.
        ScalingSample.delete().where(ScalingSample.at < now - dt.timedelta(days=1)).execute()
    return sample


def samples_for(policy: Policy, now: dt.datetime) -> list[Sample]:
    # The window and the sample taken at or before its start (see policy._window).
    since = now - dt.timedelta(
        seconds=max(policy.in_for_s, policy.out_for_s) + 2 * policy.sample_interval_s + 60
    )
    rows = ScalingSample.select().where(ScalingSample.at >= since).order_by(ScalingSample.at)
    return [Sample(r.at, r.cpu_pct, r.mem_pct) for r in rows]


POOL = Target("scaling", "app-pool", "app pool")


def check(deps: Deps, actor: Actor, confirmation: gate.Confirmation | None = None) -> gate.Answer:
    """The decision now, with its inputs and reasons; acts on nothing (`scaling_check`,
    SAFE). The gate records the request; then the pool's stats are read (outside any
    transaction) and the decision is recorded in the history."""
    answer = gate.guard(
        deps,
        actor,
        "scaling_check",
        POOL,
        {},
        effect="Reads the app pool's load and answers the autoscaling policy's decision.",
        confirmation=confirmation,
    )
    result = answer.body.get("result", answer.body)
    if not answer.executed or not isinstance(result, dict) or "event" not in result:
        return answer  # a confirm token or a queue entry (a raised rule)
    event_id = result["event"]["id"]
    policy, _, _ = current(deps)
    try:
        if app_servers():
            sample_now(deps)  # a check on demand reads the pool even while disabled
    except ServiceUnavailable as exc:
        with deps.write():
            ScalingEvent.update(status="failed", error=str(exc),
                                finished_at=deps.clock.now()).where(
                ScalingEvent.id == event_id).execute()  # fmt: skip
        raise
    now = deps.clock.now()
    # What the policy says, also while it is disabled (then the scheduler would not act).
    effective = dataclasses.replace(policy, enabled=True)
    decision = decide(effective, samples_for(policy, now), pool(policy), now)
    reasons = decision.reasons
    if not policy.enabled:
        reasons = (*reasons, "autoscaling is disabled: nothing acts on it")
    decision = Decision(decision.action, reasons, {**decision.inputs, "policy": policy.view()})
    with deps.write():
        ScalingEvent.update(status="decided", decision=decision.view(),
                            finished_at=deps.clock.now()).where(
            ScalingEvent.id == event_id).execute()  # fmt: skip
    event = ScalingEvent.get_by_id(event_id)
    return gate.Answer(200, {"decision": decision.view(), "event": event_view(event)})


def _execute_check(
    deps: Deps, actor: Actor, target: Target, params: dict[str, Any]
) -> dict[str, Any]:
    event = ScalingEvent.create(kind="check", trigger="api", requested_by=actor.who,
                                status="running", started_at=deps.clock.now())  # fmt: skip
    return {"event": event_view(event)}


# -- history -----------------------------------------------------------------------------


def event_view(e: ScalingEvent) -> dict[str, Any]:
    duration = None
    if e.finished_at and e.started_at:
        duration = round((e.finished_at - e.started_at).total_seconds(), 3)
    return {
        "id": e.id,
        "kind": e.kind,
        "trigger": e.trigger,
        "requested_by": e.requested_by,
        "status": e.status,
        "decision": e.decision,
        "steps": e.steps or [],
        "failed_step": e.failed_step,
        "error": e.error,
        "label": e.label,
        "instance_id": e.instance_id,
        "server": e.server_name,
        "operation_id": e.operation_id,
        "monthly_cost": e.monthly_cost,
        "started_at": _iso(e.started_at),
        "finished_at": _iso(e.finished_at),
        "duration_s": duration,
    }


def history(limit: int = 50, offset: int = 0, kind: str | None = None) -> dict[str, Any]:
    query = ScalingEvent.select()
    if kind:
        query = query.where(ScalingEvent.kind == kind)
    total = query.count()
    rows = query.order_by(ScalingEvent.id.desc()).limit(limit).offset(offset)
    return {"events": [event_view(e) for e in rows], "total": total}


# -- scale up / down through the gate -------------------------------------------------------


def in_flight() -> ScalingEvent | None:
    return (
        ScalingEvent.select()
        .where(ScalingEvent.kind.in_(["up", "down"]) & ScalingEvent.status.in_(IN_FLIGHT))
        .first()
    )


def _require_idle() -> None:
    busy = in_flight()
    if busy is not None:
        raise Conflict(
            f"a scale {busy.kind} is already {busy.status} (event {busy.id})",
            {"event": busy.id, "operation_id": busy.operation_id},
        )


def scale_up(
    deps: Deps,
    actor: Actor,
    trigger: str = "api",
    decision: dict[str, Any] | None = None,
    confirmation: gate.Confirmation | None = None,
) -> gate.Answer:
    """Add one app server (`scale_up`, LOW by default), within the policy's limits."""
    policy, cloud, _ = current(deps)
    # The limits are checked by the applier (after the gate: a raised rule queues first).
    return gate.guard(
        deps,
        actor,
        SCALE_UP,
        POOL,
        {"trigger": trigger, "decision": decision},
        effect=(
            f"Creates a {cloud.plan} server in {cloud.region} at Vultr (about "
            f"{policy.server_monthly_cost:g} a month), bootstraps it as an app server and "
            f"places the {'/'.join(cloud.environments)} app of every project on it."
        ),
        confirmation=confirmation,
    )


def _require_configured(cloud: CloudSettings, has_key: bool) -> None:
    if not has_key or not cloud.complete:
        missing = [n for n, ok in (("api_key", has_key), ("cloud.region", cloud.region),
                                   ("cloud.plan", cloud.plan), ("cloud.os_id", cloud.os_id))
                   if not ok]  # fmt: skip
        raise Conflict(
            f"autoscaling is not configured: set {', '.join(missing)} (PUT /api/scaling/policy)",
            {"missing": missing},
        )


def _require_within_limits(policy: Policy) -> None:
    p = pool(policy)
    if p.servers >= policy.max_servers:
        raise Conflict(
            f"the app pool has {p.servers} servers, the policy's maximum is {policy.max_servers}",
            {"servers": p.servers, "max_servers": policy.max_servers},
        )
    cost = p.monthly_cost + policy.server_monthly_cost
    if cost > policy.monthly_cost_cap:
        raise Conflict(
            f"another server would cost {cost:g} a month, over the cap of "
            f"{policy.monthly_cost_cap:g}",
            {"monthly_cost": cost, "monthly_cost_cap": policy.monthly_cost_cap},
        )


def new_label(cloud: CloudSettings) -> str:
    import secrets

    return f"{cloud.label_prefix}-{secrets.token_hex(4)}"


def _execute_scale_up(
    deps: Deps, actor: Actor, target: Target, params: dict[str, Any]
) -> dict[str, Any]:
    policy, cloud, has_key = current(deps)
    _require_configured(cloud, has_key)
    _require_within_limits(policy)
    _require_idle()
    now = deps.clock.now()
    event = ScalingEvent.create(
        kind="up",
        trigger=params.get("trigger") or "api",
        requested_by=actor.who,
        status="queued",
        decision=params.get("decision"),
        steps=[],
        label=new_label(cloud),
        monthly_cost=policy.server_monthly_cost,
        started_at=now,
    )
    op = operations.create_operation(deps, actor, SCALE_UP, [], {"event_id": event.id})
    event.operation_id = op.id
    event.save()
    return {"operation": operations.operation_view(op), "scaling": event_view(event)}


def removable(server: Server) -> list[str]:
    """Why autoscaling may not remove this server (empty: it may): only app servers it
    created, holding no volume and no db/cache component."""
    reasons = []
    if server.role != "app":
        reasons.append(f"{server.name} is a {server.role} server, not an app server")
    if server.provider != PROVIDER or server.id not in {s.id for s in autoscaled_servers()}:
        reasons.append(f"{server.name} was not created by autoscaling")
    held = Container.select().where(
        (Container.server_ip == server.ip)
        & ((Container.server_type != "app") | Container.volume.is_null(False))
        & ((Container.status != "removed") | Container.volume.is_null(False))
    )
    for c in held:
        reasons.append(
            f"{c.container_name} ({c.server_type}) "
            + ("keeps a volume" if c.volume else "runs")
            + f" on {server.name}"
        )
    for p in fleet.placed_on(server):
        if p["component"] != "app":
            reasons.append(
                f"the {p['project']}/{p['environment']} {p['component']} is placed on it"
            )
    return reasons


def _pick_server(name: str | None) -> Server:
    if name:
        server = Server.get_or_none((Server.name == name) & (Server.status != "deleted"))
        if server is None:
            raise NotFound(f"no server is named {name!r}", {"server": name})
        return server
    auto = autoscaled_servers()
    if not auto:
        raise Conflict("no app server was added by autoscaling: none may be removed")
    return auto[0]  # the newest


def scale_down(
    deps: Deps,
    actor: Actor,
    server: str | None = None,
    trigger: str = "api",
    decision: dict[str, Any] | None = None,
    confirmation: gate.Confirmation | None = None,
) -> gate.Answer:
    """Remove one app server autoscaling added (`scale_down`, MEDIUM by default): drained,
    its containers stopped, its instance deleted, unregistered. Anything else is refused,
    whatever the rule says (by the applier, after the gate)."""
    try:
        chosen: Server | None = _pick_server(server)
    except (Conflict, NotFound):
        chosen = None  # the applier says why, once the gate let the request through
    if chosen is not None:
        # Refused at once, whatever the rule says: not made by autoscaling, or holds data.
        policy, _, _ = current(deps)
        _refuse_unremovable(chosen, policy)
    params = {"trigger": trigger, "decision": decision,
              "server": chosen.name if chosen else server}  # fmt: skip
    if chosen is None:
        target, effect = POOL, "Removes an autoscaled app server (none matches now)."
    else:
        target = Target("server", str(chosen.id), chosen.name, server_ip=chosen.ip)
        effect = (
            f"Drains {chosen.name} ({chosen.ip}) from the proxies, stops its app containers, "
            "deletes its Vultr instance and removes it from the registry."
        )
    return gate.guard(
        deps, actor, SCALE_DOWN, target, params, effect=effect, confirmation=confirmation
    )


def _refuse_unremovable(server: Server, policy: Policy) -> None:
    reasons = removable(server)
    if reasons:
        raise Conflict(
            "autoscaling removes only app servers it created that hold no data: "
            + "; ".join(reasons),
            {"server": server.name, "reasons": reasons},
        )
    servers = len(app_servers())
    if servers <= policy.min_servers:
        raise Conflict(
            f"the app pool has {servers} servers, the policy's minimum is {policy.min_servers}",
            {"servers": servers, "min_servers": policy.min_servers},
        )


def _execute_scale_down(
    deps: Deps, actor: Actor, target: Target, params: dict[str, Any]
) -> dict[str, Any]:
    policy, cloud, has_key = current(deps)
    _require_configured(cloud, has_key)
    if target.kind == "server":
        server = Server.get_or_none((Server.id == int(target.ref)) & (Server.status != "deleted"))
        if server is None:
            raise NotFound("the server no longer exists", {"server": target.name})
    else:
        server = _pick_server(params.get("server"))
    _refuse_unremovable(server, policy)
    _require_idle()
    event = ScalingEvent.create(
        kind="down",
        trigger=params.get("trigger") or "api",
        requested_by=actor.who,
        status="queued",
        decision=params.get("decision"),
        steps=[],
        label=server.name,
        instance_id=server.provider_id,
        server_name=server.name,
        monthly_cost=-policy.server_monthly_cost,
        started_at=deps.clock.now(),
    )
    op = operations.create_operation(
        deps, actor, SCALE_DOWN, [], {"event_id": event.id, "server_id": server.id}
    )
    event.operation_id = op.id
    event.save()
    return {"operation": operations.operation_view(op), "scaling": event_view(event)}


# -- the scheduled check ---------------------------------------------------------------------


def _scheduled_check(deps: Deps) -> dict[str, Any]:
    """Every 30 s: find orphans (instances tagged as autoscaled that no server or running
    scale-up accounts for) and delete them; then, only when autoscaling is enabled, sample
    the pool, decide, and act on the decision through the gate as codeb."""
    from codeb.features.scaling import jobs

    policy, _, has_key = current(deps)
    out: dict[str, Any] = {}
    if has_key:
        out["orphans"] = jobs.sweep_orphans(deps, trigger="scheduled")
    if not policy.enabled:
        return {**out, "skipped": "autoscaling is disabled"}
    if in_flight() is not None:
        return {**out, "skipped": "a scale up or down is in flight"}
    if app_servers():
        sample_now(deps)
    now = deps.clock.now()
    decision = decide(policy, samples_for(policy, now), pool(policy), now)
    view = decision.view()
    out["decision"] = {"action": decision.action, "reasons": list(decision.reasons)}
    last = (
        ScalingEvent.select()
        .where((ScalingEvent.kind == "check") & (ScalingEvent.trigger == "scheduled"))
        .order_by(ScalingEvent.id.desc())
        .first()
    )
    # Every decision that acts, or says something new, is recorded (not 2880 "nothing to do"
    # rows a day).
    if (
        decision.action != "none"
        or last is None
        or (last.decision or {}).get("reasons") != list(decision.reasons)
    ):
        with deps.write():
            ScalingEvent.create(kind="check", trigger="scheduled", requested_by="codeb",
                                status="decided", decision=view, started_at=now,
                                finished_at=now)  # fmt: skip
    if decision.action == "none":
        return out
    try:
        if decision.action == "up":
            answer = scale_up(deps, SYSTEM, "scheduled", view)
        else:
            answer = scale_down(deps, SYSTEM, None, "scheduled", view)
    except Conflict as exc:
        with deps.write():
            ScalingEvent.create(kind=decision.action, trigger="scheduled", requested_by="codeb",
                                status="refused", decision=view, error=str(exc),
                                started_at=now, finished_at=deps.clock.now())  # fmt: skip
        return {**out, "refused": str(exc)}
    if answer.executed:
        return {**out, "acted": decision.action}
    # The rule asks a person (scale_down is MEDIUM by default): nothing happens until one
    # runs `codeb scaling down` and confirms.
    with deps.write():
        ScalingEvent.create(kind=decision.action, trigger="scheduled", requested_by="codeb",
                            status="awaiting_person", decision=view,
                            error=f"the {decision.action} rule needs a person's confirmation: "
                                  f"run `codeb scaling {decision.action}`",
                            started_at=now, finished_at=deps.clock.now())  # fmt: skip
    return {**out, "awaiting_person": decision.action}


SCHEDULES = (
    Job(
        "scaling_check",
        "Autoscaling: delete orphaned instances; when enabled, sample the app pool and act on "
        "the policy's decision",
        dt.timedelta(seconds=30),
        _scheduled_check,
        lease=dt.timedelta(minutes=30),
    ),
)

APPLIERS: dict[str, gate.Applier] = {
    "scaling_configure": _execute_configure,
    "scaling_check": _execute_check,
    SCALE_UP: _execute_scale_up,
    SCALE_DOWN: _execute_scale_down,
}


def in_flight_operation(event: ScalingEvent) -> bool:
    if not event.operation_id:
        return False
    op = Operation.get_or_none(Operation.id == event.operation_id)
    return op is not None and op.status in IN_FLIGHT
