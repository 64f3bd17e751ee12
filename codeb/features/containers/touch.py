"""Which hosts of an environment a deploy touches (issue 15).

A deploy probes and applies only the hosts whose part of the plan may differ from what runs
there. A host is left untouched only when all of these hold:

- a deploy applied exactly this host's part of the plan (its hash is recorded in
  `applied_host_plans`, by operation and time);
- since then no operation other than deploys of this environment that succeeded and
  read-only drift checks that succeeded targeted the host (anything else, of any kind, and
  anything queued or running, counts);
- no drift check saw drift there or could not reach it since (the drift check, and a live
  read that finds drift, forget the host's records);
- a cheap live check from the controller passes now, without Ansible: each app replica
  there answers GET /health with 200, its PostgreSQL answers the protocol's SSLRequest and
  its Redis answers PING (a port that merely accepts a connection is not enough: something
  else may hold it).

Otherwise it is touched (probed and applied) as before. A deploy that did not succeed
forgets the records of every host of its environment; `repair: true` touches every host (how
drift made by hand outside the plan's files is undone)."""

from __future__ import annotations

import datetime as dt
import socket
from dataclasses import dataclass, field
from typing import Any

import httpx

from codeb.render.units import EnvironmentUnits
from codeb.services import fleet
from codeb.services.context import Deps
from codeb.services.health import health_client
from codeb.store.models import AppliedHostPlan, Environment, Operation, Server

# How long the live check waits for one answer: the hosts are on the controller's network
# and answer in milliseconds; a host that does not is touched (and its probe says why).
LIVE_TIMEOUT_S = 1.0
# What a deploy of this environment that succeeded, or a drift check that succeeded, may
# have done on a host: nothing a record does not already account for.
HARMLESS = ("deploy", "drift_check")
# PostgreSQL's SSLRequest (length 8, code 80877103): a server answers one byte, S or N.
SSL_REQUEST = (8).to_bytes(4, "big") + (80877103).to_bytes(4, "big")


@dataclass
class Selection:
    """The hosts a deploy touches, and those it leaves, each with why."""

    touch: dict[str, str] = field(default_factory=dict)  # host -> why it is touched
    untouched: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def hosts(self) -> list[str]:
        return sorted(self.touch)

    def binding(self) -> dict[str, str]:
        """What a plan hash binds of the selection: each untouched host and the deploy whose
        record let it be left."""
        return {h: u["operation_id"] for h, u in sorted(self.untouched.items())}

    def view(self) -> dict[str, Any]:
        return {
            "touched": [{"host": h, "reason": r} for h, r in sorted(self.touch.items())],
            "untouched": [
                {"host": h, "reason": u["reason"], "operation_id": u["operation_id"]}
                for h, u in sorted(self.untouched.items())
            ],
        }


def host_hashes(plan: dict[str, Any], plan_hash: Any) -> dict[str, str]:
    """The hash of each host's part of a plan (`plan_hash` identifies a plan exactly)."""
    return {host: plan_hash(part) for host, part in plan.items()}


def _iso(value: dt.datetime) -> str:
    return value.replace(microsecond=0).isoformat() + "Z"


def select(
    deps: Deps,
    env: Environment,
    units: EnvironmentUnits,
    hashes: dict[str, str],
    repair: bool = False,
    operation_id: str | None = None,
) -> Selection:
    """Decide per host of the plan (`hashes`: host -> hash of its part) whether a deploy
    touches it. `operation_id`: the deploy deciding (its own operation does not count)."""
    selection = Selection()
    if repair:
        selection.touch = {h: "repair requested" for h in hashes}
        return selection
    records = {
        r.host: r
        for r in AppliedHostPlan.select().where(
            (AppliedHostPlan.environment_id == env.id) & AppliedHostPlan.host.in_(list(hashes))
        )
    }
    since = min((r.applied_at for r in records.values()), default=None)
    later = _operations_since(since, operation_id) if since else []
    for host in sorted(hashes):
        record = records.get(host)
        if record is None:
            selection.touch[host] = "no deploy of this plan recorded on it"
            continue
        if record.plan_hash != hashes[host]:
            selection.touch[host] = f"its part of the plan changed since {record.operation_id}"
            continue
        other = _other_operation(later, host, record, env)
        if other is not None:
            why = f"{other.kind} {other.id} targeted it since {record.operation_id}"
            selection.touch[host] = why
            continue
        unhealthy = _live_check(units, host)
        if unhealthy:
            selection.touch[host] = unhealthy
            continue
        selection.untouched[host] = {
            "reason": f"plan unchanged since operation {record.operation_id} at "
            f"{_iso(record.applied_at)}, healthy",
            "operation_id": record.operation_id,
            "applied_at": _iso(record.applied_at),
        }
    return selection


def _operations_since(since: dt.datetime, operation_id: str | None) -> list[Operation]:
    query = Operation.select().where(
        (Operation.created_at >= since)
        | (Operation.finished_at >= since)
        | Operation.status.in_(("queued", "running"))
    )
    return [op for op in query if op.id != operation_id]


def _other_operation(
    later: list[Operation], host: str, record: AppliedHostPlan, env: Environment
) -> Operation | None:
    """The first operation that may have changed `host` after `record` was written."""
    server = Server.get_or_none(Server.name == host)
    for op in later:
        if op.id == record.operation_id:
            continue
        if (
            op.created_at < record.applied_at
            and op.finished_at is not None
            and op.finished_at < record.applied_at
        ):
            continue
        targets = op.targets or []
        if host not in targets and (server is None or op.server_id != server.id):
            continue
        if op.kind in HARMLESS and op.status == "succeeded" and _harmless(op, env):
            continue
        return op
    return None


def _harmless(op: Operation, env: Environment) -> bool:
    """A drift check that succeeded (it forgets the records of hosts where it saw drift), or
    a deploy of this same environment that succeeded (it left the host as its record says,
    or applied it and wrote a newer record)."""
    if op.kind == "drift_check":
        return True
    params = op.params or {}
    return str(op.project_id) == str(env.project_id) and params.get("environment") == env.name


def _live_check(units: EnvironmentUnits, host: str) -> str | None:
    """Why the containers of the environment on `host` are not known healthy now (None:
    they are): checked from the controller, no Ansible."""
    ip = fleet.server_named(host).ip
    if host in units.servers_of("app"):
        url = f"http://{ip}:{units.app_port}/health"
        try:
            status = health_client().get(url, timeout=LIVE_TIMEOUT_S).status_code
        except httpx.HTTPError as exc:
            return f"its app does not answer /health ({type(exc).__name__})"
        if status != 200:
            return f"its app answers /health with {status}"
    is_db = host in units.servers_of("db")
    if is_db and not _answers(ip, units.db_port, SSL_REQUEST, (b"S", b"N")):
        return f"its PostgreSQL does not answer on port {units.db_port}"
    if host in units.servers_of("redis") and not _answers(
        ip, units.redis_port, b"PING\r\n", (b"+", b"-")
    ):
        return f"its Redis does not answer on port {units.redis_port}"
    return None


def _answers(ip: str, port: int, hello: bytes, first: tuple[bytes, ...]) -> bool:
    """A server of the expected protocol answers `hello` with a reply starting with one of
    `first`."""
    try:
        with socket.create_connection((ip, port), timeout=LIVE_TIMEOUT_S) as sock:
            sock.settimeout(LIVE_TIMEOUT_S)
            sock.sendall(hello)
            return sock.recv(1)[:1] in first
    except OSError:
        return False


def record(
    deps: Deps,
    env: Environment,
    hashes: dict[str, str],
    touched: list[str],
    operation_id: str,
) -> None:
    """After a deploy that succeeded: what it applied on each host it touched; records of
    hosts no longer in the plan are dropped."""
    now = deps.clock.now()
    with deps.write():
        AppliedHostPlan.delete().where(
            (AppliedHostPlan.environment_id == env.id) & AppliedHostPlan.host.not_in(list(hashes))
        ).execute()
        for host in touched:
            AppliedHostPlan.insert(
                environment_id=env.id,
                host=host,
                plan_hash=hashes[host],
                operation_id=operation_id,
                applied_at=now,
            ).on_conflict(
                conflict_target=[AppliedHostPlan.environment_id, AppliedHostPlan.host],
                update={
                    AppliedHostPlan.plan_hash: hashes[host],
                    AppliedHostPlan.operation_id: operation_id,
                    AppliedHostPlan.applied_at: now,
                },
            ).execute()


def forget_environment(deps: Deps, environment_id: str) -> None:
    """After a deploy that did not succeed: its next deploy probes every host."""
    with deps.write():
        AppliedHostPlan.delete().where(AppliedHostPlan.environment_id == environment_id).execute()


def forget_hosts(deps: Deps, hosts: list[str] | set[str]) -> None:
    """Hosts where drift was seen (or that could not be read): every environment's next
    deploy touches them."""
    if not hosts:
        return
    with deps.write():
        AppliedHostPlan.delete().where(AppliedHostPlan.host.in_(sorted(hosts))).execute()
