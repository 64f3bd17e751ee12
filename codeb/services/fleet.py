"""The fleet: the registered servers, looked up one way, and placement, which server each
component of an environment runs on.

Lookups (one name per idea):

- `find_server(ip)`: the server a request names by address (404 when unknown or deleted).
- `server_named(name)`: the server a plan or an operation names (registry names are the
  plans' keys and the runs' host names; 409 when it is no longer registered).
- `container_server(c)`: the server a container row runs on (409 when no longer registered).
- `hosts_for(deps, names)`: the executor's Hosts for registry names, each checked against
  CODEB_ALLOWED_NETWORKS before anything connects.

Placement. An environment has three components: `app`, `db` and `redis` (a `redis`
component runs on a `cache` server: `ROLE_OF`). `db` and `redis` are placed on exactly one
server each (their volume lives there, so they never move once a container exists); `app` on
one or more servers (replicas: one container per server, all deployed by one run). A
component is placed

- explicitly: a deploy's `servers` field (`{"app": ["app1", "app2"], "db": "db1"}`), or its
  `replicas` count (the app keeps its servers and gets more, least loaded first);
- else on the least loaded server of its role (`choose`): a `ready` server before one that is
  not, then the lowest load, then the oldest registration (lowest id). A server's load is the
  number of components placed on it for active environments (each placement counts one,
  whatever its size); it is counted once per decision and grows with each choice made in it,
  so replicas spread.

An environment's db and redis are placed when it is created, if a server of the role is
registered (its .env files name their hosts from then on); otherwise at its first deploy.
The app is placed at its first deploy. A placement is remembered (`placements` table) and
only changes by request: an explicit choice, more replicas, or removing a replica's container
(`DELETE /api/containers/:id`, which releases its placement). A server holding placements is
not deleted or given another role (`placed_on`).

`decide` is the pure decision (what the request asks, what is recorded, what holds data);
`resolve` reads its inputs from the database, `record` writes its outcome.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from peewee import fn

from codeb.config import Settings
from codeb.errors import Conflict, NotFound, ValidationFailed
from codeb.executor.inventory import Host
from codeb.executor.worker import JobFailed
from codeb.services.context import Deps
from codeb.services.validation import validate_dns_label, validate_ip
from codeb.store.models import Container, Environment, Placement, Project, Server

COMPONENTS = ("app", "db", "redis")
# The server role each component runs on.
ROLE_OF = {"app": "app", "db": "db", "redis": "cache"}
# Components with data: placed on one server, never moved once a container (or its volume)
# exists there.
SINGLE = ("db", "redis")
MAX_REPLICAS = 50

Placed = dict[str, list[str]]  # component -> registry names of its servers, sorted


# -- lookups ---------------------------------------------------------------------------


def find_server(ip: str) -> Server:
    """The server a request names by address; deleted servers are gone for the API."""
    try:
        normalized = validate_ip(ip)
    except ValidationFailed:
        raise NotFound(f"server {ip!r} not found", {"ip": ip}) from None
    server = Server.get_or_none((Server.ip == normalized) & (Server.status != "deleted"))
    if server is None:
        raise NotFound(f"server {ip!r} not found", {"ip": ip})
    return server


def server_named(name: str) -> Server:
    """The server a plan, a placement or an operation names."""
    server = Server.get_or_none((Server.name == name) & (Server.status != "deleted"))
    if server is None:
        raise Conflict(f"no registered server is named {name!r}", {"server": name})
    return server


def container_server(c: Container) -> Server:
    """The server a container row runs on."""
    server = Server.get_or_none((Server.ip == c.server_ip) & (Server.status != "deleted"))
    if server is None:
        raise Conflict(
            f"no registered server has the address {c.server_ip}", {"server_ip": c.server_ip}
        )
    return server


def allowed_networks(settings: Settings) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [
        ipaddress.ip_network(part.strip(), strict=False)
        for part in settings.allowed_networks.split(",")
        if part.strip()
    ]


def ensure_allowed(settings: Settings, ip: str) -> None:
    """codeb opens connections only to networks its configuration allows."""
    addr = ipaddress.ip_address(ip)
    if not any(addr in net for net in allowed_networks(settings)):
        raise JobFailed(
            f"{ip} is outside CODEB_ALLOWED_NETWORKS ({settings.allowed_networks}); "
            "codeb will not connect to it"
        )


def hosts_for(deps: Deps, names: Iterable[str]) -> list[Host]:
    """The executor's Hosts for registry names (a run's targets)."""
    wanted = set(names)
    servers = list(Server.select().where(Server.name.in_(wanted)))
    if len(servers) != len(wanted):
        missing = sorted(wanted - {s.name for s in servers})
        raise JobFailed(f"servers not in the registry: {', '.join(missing)}")
    for s in servers:
        ensure_allowed(deps.settings, s.ip)
    return [Host(s.name, s.ip, s.role, s.ssh_user, s.ssh_port) for s in servers]


# -- the decision (pure) -----------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A server a component may be placed on, as the decision sees it."""

    server_id: int
    name: str
    ready: bool
    load: int


class PlacementRefused(Conflict):
    code = "placement_refused"


def choose(candidates: Iterable[Candidate], exclude: Collection[str] = ()) -> Candidate | None:
    """The least loaded candidate: ready first, then the lowest load, then the lowest id."""
    pool = [c for c in candidates if c.name not in exclude]
    return min(pool, key=lambda c: (not c.ready, c.load, c.server_id), default=None)


def decide(
    current: Mapping[str, Sequence[str]],
    candidates: Mapping[str, Sequence[Candidate]],
    holding: Mapping[str, Collection[str]],
    requested: Mapping[str, Sequence[str]] | None = None,
    replicas: int | None = None,
    components: Sequence[str] = COMPONENTS,
) -> Placed:
    """Where each of `components` runs after this request.

    `current`: the recorded placement. `candidates`: per component, the servers of its role
    with their loads. `holding`: per component, the servers where a container of it exists
    (for db/redis also a removed container's volume). `requested`: an explicit choice per
    component (names already checked to be servers of its role). `replicas`: the number of app
    servers wanted. Raises PlacementRefused when the request would move data, drop a replica
    that still has a container, or needs servers that do not exist."""
    requested = requested or {}
    loads = {c.name: c.load for cs in candidates.values() for c in cs}
    out: Placed = {}

    def pick(component: str, exclude: Collection[str]) -> str:
        pool = [
            Candidate(c.server_id, c.name, c.ready, loads.get(c.name, c.load))
            for c in candidates.get(component, ())
        ]
        chosen = choose(pool, exclude)
        if chosen is None:
            role = ROLE_OF[component]
            have = len(pool)
            raise PlacementRefused(
                f"no {role} server to place the {component} on: register one "
                f"(POST /api/servers with role {role!r})"
                if not have
                else f"the {component} wants more {role} servers than the {have} registered",
                {"component": component, "role": role, "servers": have},
            )
        loads[chosen.name] = loads.get(chosen.name, chosen.load) + 1
        return chosen.name

    for component in components:
        now = sorted(current.get(component, ()))
        held = set(holding.get(component, ()))
        wanted = sorted(dict.fromkeys(requested.get(component, ())))
        if component in SINGLE:
            if len(wanted) > 1:
                raise ValidationFailed(
                    f"the {component} runs on one server", {"field": f"servers.{component}"}
                )
            if wanted and now and wanted != now and held:
                raise PlacementRefused(
                    f"the {component} is placed on {now[0]} and its data lives there; codeb "
                    "does not move it",
                    {"component": component, "placed_on": now[0], "requested": wanted[0]},
                )
            out[component] = wanted or now or [pick(component, ())]
            continue
        if wanted and replicas is not None:
            raise ValidationFailed(
                "give either servers.app or replicas, not both", {"field": "replicas"}
            )
        if wanted:
            target = wanted
        elif replicas is not None:
            if replicas < len(now):
                raise PlacementRefused(
                    f"the {component} runs on {len(now)} servers; replicas only adds servers: "
                    "remove a replica with DELETE /api/containers/:id",
                    {"component": component, "servers": now, "replicas": replicas},
                )
            target = list(now)
            while len(target) < replicas:
                target.append(pick(component, target))
            target = sorted(target)
        else:
            target = now or [pick(component, ())]
        dropped = sorted(set(now) - set(target))
        still = [name for name in dropped if name in held]
        if still:
            raise PlacementRefused(
                f"the {component} still has a container on {', '.join(still)}: remove that "
                "replica first (DELETE /api/containers/:id)",
                {"component": component, "servers": still},
            )
        out[component] = target
    return out


# -- reading and writing placements -------------------------------------------------------


def _active_placements():
    return (
        Placement.select()
        .join(Environment)
        .switch(Placement)
        .join(Server)
        .where((Environment.status == "active") & (Server.status != "deleted"))
    )


def placed(env: Environment) -> Placed:
    """The recorded placement of an environment: component -> server names (sorted)."""
    out: Placed = {}
    rows = (
        Placement.select(Placement.component, Server.name)
        .join(Server)
        .where((Placement.environment == env.id) & (Server.status != "deleted"))
        .order_by(Server.name)
        .tuples()
    )
    for component, name in rows:
        out.setdefault(component, []).append(name)
    return out


def candidates(role: str) -> list[Candidate]:
    """Every registered server of a role with its load."""
    loads = dict(
        _active_placements()
        .select(Placement.server, fn.COUNT(Placement.id))
        .where(Server.role == role)
        .group_by(Placement.server)
        .tuples()
    )
    servers = Server.select().where((Server.role == role) & (Server.status != "deleted"))
    return [
        Candidate(s.id, s.name, s.status == "ready", loads.get(s.id, 0))
        for s in servers.order_by(Server.id)
    ]


def _holding(project: Project, env: Environment) -> dict[str, set[str]]:
    """Per component, the servers where a container of the environment (or, for db/redis, a
    removed container's volume) exists."""
    name_of = {s.ip: s.name for s in Server.select().where(Server.status != "deleted")}
    out: dict[str, set[str]] = {}
    rows = Container.select().where(
        (Container.project == project.id) & (Container.environment == env.name)
    )
    for c in rows:
        if c.status != "removed" or (c.server_type in SINGLE and c.volume):
            if c.server_ip in name_of:
                out.setdefault(c.server_type, set()).add(name_of[c.server_ip])
    return out


def parse_request(body: Mapping[str, Any]) -> tuple[dict[str, list[str]], int | None]:
    """A deploy's `servers` ({"app": name or [names], "db": name, "redis": name}) and
    `replicas` (1-50), checked against the registry: each name a server of the component's
    role. Bad input is a 422 naming the field."""
    raw, replicas = body.get("servers"), body.get("replicas")
    requested: dict[str, list[str]] = {}
    if isinstance(raw, dict):
        raw = {k: v for k, v in raw.items() if v is not None}  # a component left out
    if raw is not None:
        if not isinstance(raw, dict) or not raw:
            raise ValidationFailed(
                "servers must be an object naming servers per component (app, db, redis)",
                {"field": "servers"},
            )
        unknown = sorted(set(raw) - set(COMPONENTS))
        if unknown:
            raise ValidationFailed(
                f"servers has unknown components: {', '.join(map(str, unknown))}",
                {"field": "servers", "allowed": list(COMPONENTS)},
            )
        for component, value in raw.items():
            field = f"servers.{component}"
            names = [value] if isinstance(value, str) else value
            if not isinstance(names, list) or not names or len(names) > MAX_REPLICAS:
                raise ValidationFailed(
                    f"{field} must be a server name or a list of 1-{MAX_REPLICAS} names",
                    {"field": field},
                )
            if component in SINGLE and len(names) != 1:
                raise ValidationFailed(f"the {component} runs on one server", {"field": field})
            checked = [validate_dns_label(n, field) for n in names]
            if len(set(checked)) != len(checked):
                raise ValidationFailed(f"{field} names a server twice", {"field": field})
            for name in checked:
                server = Server.get_or_none((Server.name == name) & (Server.status != "deleted"))
                if server is None:
                    raise ValidationFailed(
                        f"no registered server is named {name!r}", {"field": field, "server": name}
                    )
                if server.role != ROLE_OF[component]:
                    raise ValidationFailed(
                        f"{name} is a {server.role} server; the {component} runs on "
                        f"{ROLE_OF[component]} servers",
                        {"field": field, "server": name, "role": server.role},
                    )
            requested[component] = sorted(checked)
    if replicas is not None and (
        isinstance(replicas, bool)
        or not isinstance(replicas, int)
        or not 1 <= replicas <= MAX_REPLICAS
    ):
        raise ValidationFailed(
            f"replicas must be an integer 1-{MAX_REPLICAS}", {"field": "replicas"}
        )
    return requested, replicas


def resolve(
    project: Project,
    env: Environment,
    requested: Mapping[str, Sequence[str]] | None = None,
    replicas: int | None = None,
) -> Placed:
    """Where a deploy of `env` runs: the recorded placement, changed as requested, completed
    with the least loaded servers. Changes nothing (`record` does, when the deploy executes)."""
    return decide(
        placed(env),
        {component: candidates(ROLE_OF[component]) for component in COMPONENTS},
        _holding(project, env),
        requested,
        replicas,
    )


def require_ready(placement: Placed) -> None:
    """A deploy runs only on servers that finished their bootstrap."""
    for component in COMPONENTS:
        for name in placement.get(component, ()):
            server = server_named(name)
            if server.status != "ready":
                raise Conflict(
                    f"the {component} is placed on {name}, which is not ready "
                    f"({server.status}): bootstrap it first (POST /api/servers/{server.ip}"
                    "/bootstrap)",
                    {"component": component, "server": name, "status": server.status},
                )


def record(deps: Deps, env: Environment, placement: Mapping[str, Sequence[str]]) -> None:
    """Make the recorded placement of `env` exactly `placement` for the components it names
    (inside the caller's transaction)."""
    now = deps.clock.now()
    for component, names in placement.items():
        servers = {name: server_named(name) for name in names}
        rows = list(
            Placement.select().where(
                (Placement.environment == env.id) & (Placement.component == component)
            )
        )
        keep = {s.id for s in servers.values()}
        for row in rows:
            if row.server_id not in keep:
                row.delete_instance()
        have = {row.server_id for row in rows}
        for server in servers.values():
            if server.id not in have:
                Placement.create(
                    environment=env.id, component=component, server=server.id, created_at=now
                )


def place_new_environment(deps: Deps, env: Environment) -> None:
    """At creation: the db and redis on the least loaded servers of their roles, when any is
    registered (else at the first deploy)."""
    current = placed(env)
    for component in SINGLE:
        if component in current:
            continue
        chosen = choose(candidates(ROLE_OF[component]))
        if chosen is not None:
            record(deps, env, {component: [chosen.name]})


def release(env: Environment, component: str, server: Server) -> None:
    """A replica's container was removed: the app is no longer placed on that server."""
    Placement.delete().where(
        (Placement.environment == env.id)
        & (Placement.component == component)
        & (Placement.server == server.id)
    ).execute()


def addresses(
    env: Environment, component: str, placement: Mapping[str, Sequence[str]] | None = None
) -> list[str]:
    """The addresses of the servers a component of `env` is placed on (`placement`, or the
    recorded one), in the order of their names: the app's are a proxy's upstreams."""
    where = placement if placement is not None else placed(env)
    return [server_named(name).ip for name in where.get(component) or []]


def data_hosts(
    env: Environment, placement: Mapping[str, Sequence[str]] | None = None
) -> dict[str, str | None]:
    """Where the .env files point: `{"db": ip or None, "redis": ip or None}` (None: not
    placed yet)."""
    where = placement if placement is not None else placed(env)
    return {c: next(iter(addresses(env, c, where)), None) for c in SINGLE}


def placed_on(server: Server) -> list[dict[str, str]]:
    """The components placed on a server for active environments (a server holding any is
    not deleted or given another role)."""
    rows = (
        Placement.select(Project.name, Environment.name, Placement.component)
        .join(Environment)
        .join(Project)
        .where((Placement.server == server.id) & (Environment.status == "active"))
        .order_by(Project.name, Environment.name, Placement.component)
        .tuples()
    )
    return [{"project": p, "environment": e, "component": c} for p, e, c in rows]
