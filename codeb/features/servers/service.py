"""The server registry: register, bootstrap, change a role, delete; live statistics and the
inventory export. Looking servers up and what is placed on them: codeb/services/fleet.py."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from peewee import IntegrityError

from codeb.config import Settings
from codeb.errors import (
    Conflict,
    NotFound,
    ServiceUnavailable,
    ValidationFailed,
)
from codeb.executor.events import EventRecord, reported
from codeb.executor.identity import ensure_ssh_key
from codeb.executor.inventory import Host, SshSettings, build_inventory
from codeb.executor.runner import PlaybookRun, RunOutcome, run_playbook
from codeb.executor.worker import JobFailed, PlaybookJob, describe_failure
from codeb.protection.tokens import Target
from codeb.services import fleet, gate, operations
from codeb.services.context import Actor, Deps
from codeb.services.fleet import find_server
from codeb.services.validation import validate_choice, validate_dns_label, validate_ip
from codeb.store.models import Container, Operation, Server

SERVER_ROLES = ("control", "app", "db", "cache", "storage", "proxy", "dns")
_SSH_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")  # fullmatch only


def _ssh_settings(body: dict[str, Any]) -> tuple[str, int]:
    user = body.get("ssh_user", "root")
    port = body.get("ssh_port", 22)
    if not isinstance(user, str) or not _SSH_USER.fullmatch(user):
        raise ValidationFailed("ssh_user is not a valid user name", {"field": "ssh_user"})
    if isinstance(port, float) and port.is_integer():
        port = int(port)  # JSON has one number type: 2222.0 is 2222
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValidationFailed("ssh_port must be an integer 1-65535", {"field": "ssh_port"})
    return user, port


def server_view(server: Server) -> dict:
    return {
        "id": server.id,
        "name": server.name,
        "ip": server.ip,
        "role": server.role,
        "ssh_user": server.ssh_user,
        "ssh_port": server.ssh_port,
        "provider": server.provider,
        "provider_id": server.provider_id,
        "status": server.status,
        "facts": server.facts,
        "created_at": server.created_at.isoformat() + "Z",
        "updated_at": server.updated_at.isoformat() + "Z",
    }


def register_server(
    deps: Deps,
    actor: Actor,
    body: dict[str, Any],
    confirmation: gate.Confirmation | None = None,
) -> gate.Answer:
    """Register a server through the gate (`server_register`) and, unless `bootstrap` is
    false, start the bootstrap run that checks it and records what it found. Executed at once,
    it answers the server and the operation (if any): 201 registered, 202 with a run."""
    name = validate_dns_label(body.get("name"), "name")
    ip = validate_ip(body.get("ip"))
    role = validate_choice(body.get("role"), SERVER_ROLES, "role")
    ssh_user, ssh_port = _ssh_settings(body)
    params = {
        "name": name,
        "ip": ip,
        "role": role,
        "ssh_user": ssh_user,
        "ssh_port": ssh_port,
        "provider": body.get("provider", "manual"),
        "provider_id": body.get("provider_id"),
        "bootstrap": bool(body.get("bootstrap", True)),
    }
    _refuse_clash(name, ip)
    answer = gate.guard(
        deps,
        actor,
        "server_register",
        Target("server", ip, name, server_ip=ip),
        params,
        effect=f"Registers server {name!r} ({ip}, {role})"
        + (" and runs its bootstrap." if params["bootstrap"] else "."),
        confirmation=confirmation,
        success_status=201,
    )
    return _unwrapped(answer)


def _unwrapped(answer: gate.Answer, pick: str | None = None) -> gate.Answer:
    """An immediate run keeps this route's own answer (the envelope is for confirmations):
    the result (or its `pick` part), 202 when it started a run, else 200/201 as it was."""
    body = answer.body
    if answer.status not in (200, 201, 202) or body.get("status") != "executed":
        return answer
    if "result" not in body or "entry" in body:  # a confirmation's envelope stays
        return answer
    result = body["result"]
    started = isinstance(result.get("operation"), dict)
    status = 202 if started else (answer.status if answer.status != 202 else 200)
    return gate.Answer(status, result[pick] if pick else result)


def _still_registered(target: Target) -> Server:
    """The server an applier acts on, as it is now (it may have gone since the request)."""
    server = Server.get_or_none((Server.id == int(target.ref)) & (Server.status != "deleted"))
    if server is None:
        raise NotFound("the server no longer exists", {"server": target.name})
    return server


def _refuse_clash(name: str, ip: str) -> None:
    clash = Server.select().where((Server.name == name) | (Server.ip == ip)).first()
    if clash is not None:
        field = "name" if clash.name == name else "ip"
        raise Conflict(
            f"a server with this {field} is already registered",
            {"field": field, "server": clash.name},
        )


def _execute_register(
    deps: Deps, actor: Actor, target: Target, params: dict[str, Any]
) -> dict[str, Any]:
    now = deps.clock.now()
    _refuse_clash(params["name"], params["ip"])
    fields = {k: params[k] for k in ("name", "ip", "role", "ssh_user", "ssh_port", "provider")}
    try:
        with deps.db.atomic():
            server = Server.create(
                **fields,
                provider_id=params.get("provider_id"),
                status="bootstrapping" if params["bootstrap"] else "registered",
                created_at=now,
                updated_at=now,
            )
    except IntegrityError:
        raise Conflict("a server with this name or ip is already registered") from None
    op = None
    if params["bootstrap"]:
        op = operations.create_operation(
            deps, actor, "server_bootstrap", [server.name], {"ip": server.ip}, server_id=server.id
        )
    return {
        "server": server_view(server),
        "operation": operations.operation_view(op) if op is not None else None,
    }


def list_servers(role: str | None = None) -> list[dict]:
    query = Server.select().where(Server.status != "deleted").order_by(Server.id)
    if role:
        query = query.where(Server.role == role)
    return [server_view(s) for s in query]


def get_server(ip: str) -> dict:
    return server_view(find_server(ip))


def bootstrap_server(
    deps: Deps, actor: Actor, ip: str, confirmation: gate.Confirmation | None = None
) -> gate.Answer:
    """Run the bootstrap again (after fixing a server, or to refresh what it reports), through
    the gate (`server_bootstrap`). Executed at once, it answers the operation (202)."""
    server = find_server(ip)
    answer = gate.guard(
        deps,
        actor,
        "server_bootstrap",
        Target("server", str(server.id), server.name, server_ip=server.ip),
        {"ip": server.ip},
        effect=f"Runs the bootstrap playbook on {server.name!r} ({server.ip}).",
        confirmation=confirmation,
    )
    return _unwrapped(answer, "operation")


def _execute_bootstrap(
    deps: Deps, actor: Actor, target: Target, params: dict[str, Any]
) -> dict[str, Any]:
    server = _still_registered(target)
    op = operations.create_operation(
        deps, actor, "server_bootstrap", [server.name], {"ip": server.ip}, server_id=server.id
    )
    return {"operation": operations.operation_view(op)}


def update_server(
    deps: Deps,
    actor: Actor,
    ip: str,
    body: dict[str, Any],
    confirmation: gate.Confirmation | None = None,
) -> gate.Answer:
    """Give a server another role through the gate (`server_update`) and, unless `bootstrap`
    is false, run its bootstrap: it installs only what the new role needs beyond what the
    server has (nothing is removed). 200 updated, 202 with the bootstrap run."""
    role = validate_choice(body.get("role"), SERVER_ROLES, "role")
    server = find_server(ip)
    params = {"role": role, "bootstrap": bool(body.get("bootstrap", True))}
    answer = gate.guard(
        deps,
        actor,
        "server_update",
        Target("server", str(server.id), server.name, server_ip=server.ip),
        params,
        effect=f"Changes the role of {server.name!r} ({server.ip}) from {server.role} to {role}"
        + (" and runs its bootstrap." if params["bootstrap"] else "."),
        confirmation=confirmation,
    )
    return _unwrapped(answer)


def _execute_update(
    deps: Deps, actor: Actor, target: Target, params: dict[str, Any]
) -> dict[str, Any]:
    server = _still_registered(target)
    if params["role"] != server.role:
        # They were placed there for its old role; a new role would orphan them.
        _refuse_while_in_use(
            server, f"as a {server.role} server; stop or move them before changing its role"
        )
    server.role = params["role"]
    server.updated_at = deps.clock.now()
    if params["bootstrap"]:
        server.status = "bootstrapping"
    server.save()
    op = None
    if params["bootstrap"]:
        op = operations.create_operation(
            deps, actor, "server_bootstrap", [server.name], {"ip": server.ip}, server_id=server.id
        )
    return {
        "server": server_view(server),
        "operation": operations.operation_view(op) if op is not None else None,
    }


def _refuse_while_in_use(server: Server, what_to_do: str) -> None:
    """A server running containers, or holding placed components (a db's volume lives where
    it is placed), is not deleted or given another role from under them."""
    running = (
        Container.select()
        .where((Container.server_ip == server.ip) & (Container.status == "running"))
        .count()
    )
    placed = fleet.placed_on(server)
    if running or placed:
        parts = [f"{running} container(s) run on {server.name}"] if running else []
        if placed:
            names = ", ".join(
                f"{p['project']}/{p['environment']} {p['component']}" for p in placed[:5]
            )
            more = f" and {len(placed) - 5} more" if len(placed) > 5 else ""
            parts.append(f"{len(placed)} component(s) are placed on it ({names}{more})")
        raise Conflict(
            " and ".join(parts) + what_to_do,
            {
                "server": server.name,
                "running_containers": running,
                "placed_components": placed,
            },
        )


def ssh_public_key(deps: Deps) -> dict:
    return {"public_key": ensure_ssh_key(deps.settings.resolved_ssh_key_file)}


def delete_server(
    deps: Deps, actor: Actor, ip: str, confirmation: gate.Confirmation | None = None
) -> gate.Answer:
    """CRITICAL: queued; needs approval by another admin and the 48 h cooldown. Executing it
    takes the server out of the registry (nothing on the host is touched)."""
    server = find_server(ip)
    target = Target("server", str(server.id), server.name, server_ip=server.ip)
    return gate.guard(
        deps,
        actor,
        "server_delete",
        target,
        effect=(
            f"Removes server {server.name!r} ({server.ip}, {server.role}) from the registry; "
            "codeb will no longer manage what runs on it."
        ),
        confirmation=confirmation,
    )


def _execute_server_delete(
    deps: Deps, actor: Actor, target: Target, params: dict[str, Any]
) -> dict:
    server = _still_registered(target)
    _refuse_while_in_use(server, "; stop or move them first")
    # The row stays for the record; its name and address step aside so they can be reused.
    server.facts = {**(server.facts or {}), "deleted_name": server.name, "deleted_ip": server.ip}
    server.name = f"{server.name}~{server.id}"[:63]
    server.ip = f"deleted-{server.id}"
    server.status = "deleted"
    server.updated_at = deps.clock.now()
    server.save()
    return {"server": target.name, "deleted": True}


# The Protection Layer's appliers of this module (plain data, gathered by the feature package).
APPLIERS: dict[str, gate.Applier] = {
    "server_register": _execute_register,
    "server_bootstrap": _execute_bootstrap,
    "server_update": _execute_update,
    "server_delete": _execute_server_delete,
}


# -- executor jobs ---------------------------------------------------------------------


def run_now(
    deps: Deps, playbook: str, names: list[str], **options: Any
) -> tuple[RunOutcome, list[EventRecord]]:
    """A short read-only run answered synchronously (stats, live state, previews): no
    operation and no lock, since it changes nothing. `options` are PlaybookRun's."""
    try:
        targets = fleet.hosts_for(deps, names)
    except JobFailed as exc:
        raise Conflict(str(exc), {"servers": names}) from None
    options.setdefault("limit", ",".join(names))
    records: list[EventRecord] = []
    outcome = run_playbook(
        PlaybookRun(playbook, targets, **options),
        ssh=ssh_settings(deps.settings),
        work_dir=deps.settings.data_dir / "runs",
        on_event=records.append,
    )
    return outcome, records


# Written inside double quotes into an apt.conf file on the server: nothing that could end
# the string or start another statement.
_APT_PROXY = re.compile(r"https?://[^\s\"';\\{}]+")


def _build_bootstrap(deps: Deps, op: Operation) -> PlaybookRun:
    targets = fleet.hosts_for(deps, op.targets)
    proxy = deps.settings.apt_proxy
    if proxy and not _APT_PROXY.fullmatch(proxy):
        raise JobFailed("CODEB_APT_PROXY must be an http:// or https:// URL")
    password = urlsplit(proxy).password if proxy else None
    return PlaybookRun(
        playbook="bootstrap.yml",
        targets=targets,
        limit=",".join(op.targets),
        # Each server gets what its role runs (roles/codeb_bootstrap/vars/main.yml).
        extravars={
            "codeb_bootstrap_server_roles": {t.name: [t.role] for t in targets},
            "codeb_bootstrap_apt_proxy": proxy,
        },
        secrets=(password,) if password else (),
        timeout_s=deps.settings.run_timeout_s,
    )


def _finish_bootstrap(
    deps: Deps, op: Operation, outcome: RunOutcome, records: list[EventRecord]
) -> dict:
    facts = reported(records, "codeb_facts")
    unreachable = {r.host for r in records if r.event == "runner_on_unreachable"}
    now = deps.clock.now()
    for server in Server.select().where(Server.name.in_(op.targets)):
        found = facts.get(server.name)
        if outcome.status == "successful" and found:
            server.status, server.facts = "ready", {**found, "checked_at": now.isoformat() + "Z"}
        elif server.name in unreachable:
            server.status = "unreachable"
        else:
            server.status = "bootstrap_failed"
        server.updated_at = now
        server.save()
    return {"facts": facts}


_STATS_CACHE: dict[str, tuple[float, dict]] = {}
_STATS_LOCK = threading.Lock()


def server_stats(deps: Deps, ip: str) -> dict:
    """Live figures gathered from the host by a read-only playbook, cached briefly."""
    server = find_server(ip)
    with _STATS_LOCK:
        cached = _STATS_CACHE.get(server.name)
    if cached and time.monotonic() - cached[0] < deps.settings.stats_cache_s:
        return {**cached[1], "cached": True}
    outcome, records = run_now(deps, "stats.yml", [server.name], timeout_s=60)
    stats = reported(records, "codeb_stats").get(server.name)
    if outcome.status != "successful" or not stats:
        raise ServiceUnavailable(
            f"could not read statistics from {server.name}: " + describe_failure(outcome, records),
            {"server": server.name},
        )
    answer = {
        "server": server.name,
        "ip": server.ip,
        "gathered_at": deps.clock.now().isoformat() + "Z",
        **stats,
    }
    with _STATS_LOCK:
        _STATS_CACHE[server.name] = (time.monotonic(), answer)
    return {**answer, "cached": False}


def ssh_settings(settings: Settings) -> SshSettings:
    key = settings.resolved_ssh_key_file
    ensure_ssh_key(key)
    # Host keys are pinned here on first contact; ssh cannot record them without the dir.
    known_hosts = settings.data_dir / "ssh" / "known_hosts"
    known_hosts.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    known_hosts.touch(mode=0o600, exist_ok=True)
    return SshSettings(private_key=key, known_hosts=known_hosts)


def _build_remote_cleanup(deps: Deps, op: Operation) -> PlaybookRun:
    return PlaybookRun(
        playbook="cancel.yml",
        targets=fleet.hosts_for(deps, op.targets),
        limit=",".join(op.targets),
        extravars={"codeb_cancel_operation_id": op.params["interrupted_operation"]},
        timeout_s=300,
    )


JOBS = {
    "server_bootstrap": PlaybookJob(build=_build_bootstrap, finish=_finish_bootstrap),
    # After a crash: stop what an interrupted run left running on its hosts.
    "remote_cleanup": PlaybookJob(build=_build_remote_cleanup, finish=lambda *args: None),
}


def export_inventory(deps: Deps, path: Path) -> Path:
    """Write the registry as an Ansible inventory, for runs made by hand when the API is down."""
    servers = Server.select().where(Server.status != "deleted").order_by(Server.id)
    targets = [Host(s.name, s.ip, s.role, s.ssh_user, s.ssh_port) for s in servers]
    content = "# Generated by `codeb inventory export`; codeb does not read this file.\n"
    content += yaml.safe_dump(
        build_inventory(targets, ssh_settings(deps.settings)), sort_keys=False
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path
