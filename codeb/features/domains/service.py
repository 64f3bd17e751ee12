"""Domains (issue 12): names served by the proxy servers (Caddy) for an environment, with
their records on the dns servers (PowerDNS Authoritative).

Everything is rendered from the database as a whole: the proxies' Caddyfile (every domain ->
`reverse_proxy` over the environment's app servers) and each zone's rrsets. A change writes
rows (through the Protection Layer) and starts a `domain_apply` operation that holds the
locks of every proxy and dns server; it renders what the database says *then*, so concurrent
changes never lose each other, and an apply that finds everything already in place is a
no-op. Records are published before Caddy is reloaded (before any certificate is asked for).
Status asks each authoritative server directly, the running Caddy, a real TLS handshake and
HTTP, each with its time."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import re
import secrets
import socket
import ssl
import tempfile
import time
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import idna
from dns import exception as dnsexception
from dns import flags as dnsflags
from dns import message as dnsmessage
from dns import query as dnsquery
from dns import rcode as dnsrcode
from dns import rdatatype as dnsrdatatype
from peewee import IntegrityError

from codeb.errors import CodebError, Conflict, NotFound, ValidationFailed
from codeb.executor.events import reported
from codeb.executor.inventory import Host
from codeb.executor.runner import PlaybookRun
from codeb.executor.worker import JobFailed, JobResult, RunContext, describe_failure
from codeb.features.projects.service import find_environment, find_project, new_id
from codeb.features.servers.service import run_now
from codeb.metrics import FeatureCollector
from codeb.protection.tokens import Target
from codeb.providers.dns import DnsError, PowerDns, RRset, Soa
from codeb.providers.dns.base import absolute
from codeb.providers.dns.challenge import Authoritative, PowerDnsTxt
from codeb.providers.proxy import (
    CaddyOptions,
    Site,
    acme,
    caddyfile_diff,
    hosts_in_config,
    render_caddyfile,
)
from codeb.providers.proxy.caddy import issuance_errors, upstream
from codeb.providers.proxy.probe import http_get, tls_certificate
from codeb.services import gate, operations, scheduler
from codeb.services.context import SYSTEM, Actor, Deps
from codeb.services.validation import CONTROL_CHARACTERS
from codeb.store.models import (
    AcmeAccount,
    Container,
    DnsZone,
    Domain,
    DomainCertificate,
    DomainServer,
    Operation,
    Project,
    Server,
    utcnow,
)

APPLY = "domain_apply"
RECORD_TTL = 60  # A/AAAA: a moved proxy is followed within a minute
NS_TTL = 3600
NEGATIVE_TTL = 60  # SOA minimum: an early NXDOMAIN is cached a minute, not an hour
PDNS_API_PORT = 8081
HEALTH_PATH = "/health"
MAX_NAME = 253
# Warn this long before a certificate expires: Caddy's internal leaves live 12 h (renewed
# at two thirds), ACME certificates 90 days (renewed 30 days before).
WARN_INTERNAL = dt.timedelta(hours=3)
WARN_ACME = dt.timedelta(days=14)
# Certificates codeb obtains itself (DNS-01, wildcards): renewed this long before they expire
# (or at two thirds of a shorter life), retried after a failure with a growing pause.
DNS01_PROVIDER = "powerdns"
RENEW_BEFORE = dt.timedelta(days=30)
RETRY_FIRST = dt.timedelta(minutes=5)
RETRY_MAX = dt.timedelta(hours=6)
# Where a proxy keeps them (roles/codeb_proxy: the key readable by the caddy group only).
CERT_DIR = "/etc/caddy/codeb-certs"
PLAN_HASH = re.compile(r"[0-9a-f]{64}")  # fullmatch only
_LDH = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# Characters that are never part of a host name, before IDNA (templates, paths, ports, ...).
_NEVER = re.compile(r"[\s{}%<>\"'`\\/:;,@#?&|$()\[\]!=+^~]")


# -- names (pure) ------------------------------------------------------------------------


def validate_domain(value: object, *, wildcard_allowed: bool = False) -> str:
    """A domain as codeb stores and renders it: IDNA (UTS #46) to punycode, lower case, no
    trailing dot, LDH labels of 1..63, at most 253 characters, at least two labels. A
    wildcard (`*.` in front only) only when a DNS-01 issuer is configured."""
    if not isinstance(value, str) or not value:
        raise ValidationFailed("domain is required", {"field": "domain"})
    if len(value) > MAX_NAME * 4:
        raise ValidationFailed(f"domain is longer than {MAX_NAME} characters", {"field": "domain"})
    if CONTROL_CHARACTERS.search(value) or any(
        unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Zs") for ch in value
    ):
        raise ValidationFailed(
            "domain must not contain control characters or spaces", {"field": "domain"}
        )
    if _NEVER.search(value):
        raise ValidationFailed(
            "domain may only hold letters, digits, hyphens and dots", {"field": "domain"}
        )
    name = value[:-1] if value.endswith(".") else value
    wildcard = name.startswith("*.")
    if wildcard:
        if not wildcard_allowed:
            raise ValidationFailed(
                "wildcard domains need the DNS-01 issuer (CODEB_ACME_DNS_PROVIDER=powerdns); "
                "Debian's Caddy has no DNS provider module",
                {"field": "domain", "reason": "wildcard_without_dns01"},
            )
        name = name[2:]
    if "*" in name:
        raise ValidationFailed("'*' is allowed only as the whole first label", {"field": "domain"})
    labels = name.split(".")
    if any(not label for label in labels):
        raise ValidationFailed("domain has an empty label ('..')", {"field": "domain"})
    if name.isascii():
        # A host name already (RFC 1123 labels; punycode labels pass as they are).
        ascii_name = name.lower()
    else:
        try:
            ascii_name = idna.encode(name, uts46=True, transitional=False).decode("ascii")
        except (idna.IDNAError, UnicodeError) as exc:
            raise ValidationFailed(
                f"domain is not a valid internationalised name: {exc}", {"field": "domain"}
            ) from None
        ascii_name = ascii_name.lower()
    labels = ascii_name.split(".")
    if len(labels) < 2:
        raise ValidationFailed("domain needs at least two labels", {"field": "domain"})
    for label in labels:
        if not _LDH.fullmatch(label):
            raise ValidationFailed(
                f"label {label!r} must be 1-63 letters, digits or inner hyphens",
                {"field": "domain"},
            )
    if labels[-1].isdigit():
        raise ValidationFailed("the top-level label cannot be numeric", {"field": "domain"})
    full = ("*." if wildcard else "") + ascii_name
    if len(full) > MAX_NAME:
        raise ValidationFailed(
            f"domain is {len(full)} characters as punycode; at most {MAX_NAME}",
            {"field": "domain"},
        )
    return full


def zone_for(name: str, zones: Iterable[str], explicit: str | None = None) -> str:
    """The zone a domain goes in: `explicit` (the name must be in it), else the longest zone
    codeb already holds that contains it, else the name without its first label (the name
    itself when it has only two)."""
    bare = name[2:] if name.startswith("*.") else name
    if explicit is not None:
        if bare != explicit and not bare.endswith("." + explicit):
            raise ValidationFailed(
                f"{name} is not inside the zone {explicit}", {"field": "zone", "zone": explicit}
            )
        return explicit
    inside = [z for z in zones if bare == z or bare.endswith("." + z)]
    if inside:
        return max(inside, key=len)
    labels = bare.split(".")
    return bare if len(labels) <= 2 else ".".join(labels[1:])


def record_names(name: str) -> str:
    """The owner name of a domain's records (a wildcard's is the wildcard itself)."""
    return absolute(name)


# -- what the database says ----------------------------------------------------------------


def proxy_servers() -> list[Server]:
    return list(
        Server.select()
        .where((Server.role == "proxy") & (Server.status == "ready"))
        .order_by(Server.id)
    )


def dns_servers() -> list[Server]:
    return list(
        Server.select()
        .where((Server.role == "dns") & (Server.status == "ready"))
        .order_by(Server.id)
    )


def app_upstreams(project: Project, environment: str) -> list[str]:
    """Every app server the environment's app component is placed on, with its port: read
    from the app containers codeb placed (any number of servers)."""
    rows = (
        Container.select(Container.server_ip, Container.port_external)
        .where(
            (Container.project == project.id)
            & (Container.environment == environment)
            & (Container.server_type == "app")
            & (Container.status != "removed")
        )
        .order_by(Container.server_ip)
    )
    env = find_environment(project, environment)
    ups = {
        upstream(row.server_ip, row.port_external or env.app_port)
        for row in rows
        if _is_ip(row.server_ip)
    }
    return sorted(ups)


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _sites(extra: Domain | None = None, without: str | None = None) -> list[Site]:
    rows = [
        d
        for d in Domain.select().join(Project).where(Domain.status != "deleting")
        if d.name != without
    ]
    if extra is not None:
        rows.append(extra)
    certs = {c.name: c for c in DomainCertificate.select() if c.fullchain}
    sites = []
    for d in rows:
        files: dict[str, str] = {}
        if is_wildcard(d.name):
            # Served only with a certificate codeb obtained (DNS-01): Caddy cannot order one.
            cert = certs.get(d.name)
            if cert is None:
                continue
            files = dict(zip(("cert_file", "key_file"), certificate_paths(cert), strict=True))
        sites.append(
            Site(
                domain=d.name,
                project=d.project.name,
                environment=d.environment,
                upstreams=tuple(app_upstreams(d.project, d.environment)),
                health_path=HEALTH_PATH,
                **files,
            )
        )
    return sites


def is_wildcard(name: str) -> bool:
    return name.startswith("*.")


def dns01_enabled(deps: Deps) -> bool:
    return deps.settings.acme_dns_provider == DNS01_PROVIDER


def certificate_paths(cert: DomainCertificate) -> tuple[str, str]:
    """The files on the proxies; named by the certificate's serial, so a renewed one is a
    new file (and a changed Caddyfile: the proxies are applied again, Caddy loads it)."""
    base = f"{CERT_DIR}/{cert.name.replace('*.', 'wildcard.')}-{(cert.serial or '0')[:16]}"
    return base + ".crt", base + ".key"


def caddy_options(deps: Deps) -> CaddyOptions:
    return CaddyOptions(tls=deps.settings.tls, acme_email=deps.settings.acme_email)


def render_config(deps: Deps, sites: list[Site]) -> str:
    return render_caddyfile(deps.settings.templates_dir, sites, caddy_options(deps))


def _proxy_addresses() -> list[str]:
    return [s.ip for s in proxy_servers()]


def soa_for(zone: str) -> Soa:
    return Soa(mname=f"ns1.{zone}", rname=f"hostmaster.{zone}", minimum=NEGATIVE_TTL)


def nameserver_rrsets(zone: str, servers: list[Server]) -> list[RRset]:
    """NS records naming ns1.., nsN. inside the zone, with their glue (the dns servers)."""
    out = [RRset.of(zone, "NS", [f"ns{i}.{zone}." for i in range(1, len(servers) + 1)], NS_TTL)]
    for i, server in enumerate(servers, start=1):
        rtype = "AAAA" if ipaddress.ip_address(server.ip).version == 6 else "A"
        out.append(RRset.of(f"ns{i}.{zone}", rtype, [server.ip], NS_TTL))
    return out


def address_rrsets(name: str, addresses: list[str]) -> list[RRset]:
    v4 = [a for a in addresses if ipaddress.ip_address(a).version == 4]
    v6 = [a for a in addresses if ipaddress.ip_address(a).version == 6]
    out = []
    if v4:
        out.append(RRset.of(name, "A", v4, RECORD_TTL))
    if v6:
        out.append(RRset.of(name, "AAAA", v6, RECORD_TTL))
    return out


def desired_zone(
    zone: DnsZone, dns: list[Server], proxies: list[str]
) -> dict[tuple[str, str], RRset]:
    """Every rrset codeb wants in `zone` (besides the SOA): NS + glue, and each live domain's
    A/AAAA pointing at the proxies."""
    want = {(r.name, r.type): r for r in nameserver_rrsets(zone.name, dns)}
    for domain in Domain.select().where((Domain.zone == zone.id) & (Domain.status != "deleting")):
        for rrset in address_rrsets(domain.name, proxies):
            want[(rrset.name, rrset.type)] = rrset
    return want


@dataclass
class ZoneChanges:
    zone: str
    replace: list[RRset] = field(default_factory=list)
    delete: list[tuple[str, str]] = field(default_factory=list)
    create: bool = False

    def view(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.create:
            out.append({"zone": self.zone, "changetype": "CREATE_ZONE"})
        out += [
            {"zone": self.zone, "name": r.name, "type": r.type, "ttl": r.ttl,
             "changetype": "REPLACE", "records": r.contents}
            for r in self.replace
        ]  # fmt: skip
        out += [
            {"zone": self.zone, "name": n, "type": t, "changetype": "DELETE"}
            for n, t in self.delete
        ]
        return out


def zone_changes(
    zone: str,
    current: list[RRset] | None,
    want: dict[tuple[str, str], RRset],
    managed: set[tuple[str, str]],
) -> ZoneChanges:
    """What turns `current` into `want`: rrsets to replace, and rrsets codeb manages (a
    domain's A/AAAA, NS glue) that should go. Records codeb never wrote are left alone."""
    changes = ZoneChanges(absolute(zone), create=current is None)
    have = {(r.name, r.type): r for r in current or []}
    for key, rrset in sorted(want.items()):
        now = have.get(key)
        if now is None or now.contents != rrset.contents or now.ttl != rrset.ttl:
            changes.replace.append(rrset)
    for key in sorted(managed - set(want)):
        if key in have:
            changes.delete.append(key)
    return changes


def _managed_keys(zone: DnsZone, dns: list[Server]) -> set[tuple[str, str]]:
    """(name, type) rrsets codeb may remove from a zone: every domain's (deleting ones too)
    A/AAAA and the nsN glue names."""
    keys = set()
    for domain in Domain.select().where(Domain.zone == zone.id):
        keys |= {(absolute(domain.name), "A"), (absolute(domain.name), "AAAA")}
    for i in range(1, len(dns) + 11):
        keys |= {(absolute(f"ns{i}.{zone.name}"), "A"), (absolute(f"ns{i}.{zone.name}"), "AAAA")}
    return keys


def targets_of(deps: Deps, names: list[str]) -> list[Host]:
    """The hosts a run acts on, each inside CODEB_ALLOWED_NETWORKS (checked before any
    connection is opened)."""
    servers = list(Server.select().where(Server.name.in_(names)))
    if len(servers) != len(set(names)):
        missing = sorted(set(names) - {s.name for s in servers})
        raise JobFailed(f"servers not in the registry: {', '.join(missing)}")
    networks = [
        ipaddress.ip_network(part.strip(), strict=False)
        for part in deps.settings.allowed_networks.split(",")
        if part.strip()
    ]
    for server in servers:
        if not any(ipaddress.ip_address(server.ip) in net for net in networks):
            raise JobFailed(
                f"{server.ip} is outside CODEB_ALLOWED_NETWORKS; codeb will not connect to it"
            )
    return [Host(s.name, s.ip, s.role, s.ssh_user, s.ssh_port) for s in servers]


# -- dns servers: key, address, client ------------------------------------------------------


def codeb_address(ip: str) -> str:
    """The address this machine uses to reach `ip` (what PowerDNS must allow): a UDP
    "connection" picks the route without sending anything."""
    family = socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.connect((ip, 53))
        return sock.getsockname()[0]


def _dns_state(deps: Deps, server: Server) -> DomainServer:
    """The dns server's row, with an API key generated (and stored encrypted) on first use."""
    state = DomainServer.get_or_none(DomainServer.server == server.id)
    if state is None:
        with deps.write():
            state = DomainServer.get_or_none(DomainServer.server == server.id)
            if state is None:
                state = DomainServer.create(
                    server=server.id,
                    kind="dns",
                    api_key=deps.box.encrypt(secrets.token_urlsafe(32)),
                    api_port=PDNS_API_PORT,
                    dns_port=53,
                    updated_at=deps.clock.now(),
                )
    return state


def dns_client(deps: Deps, server: Server, state: DomainServer | None = None) -> PowerDns:
    state = state or _dns_state(deps, server)
    host = f"[{server.ip}]" if ":" in server.ip else server.ip
    return PowerDns(
        f"http://{host}:{state.api_port}", deps.box.decrypt(state.api_key), name=server.name
    )


def _dns_config_hash(deps: Deps, server: Server, state: DomainServer, allow: str) -> str:
    key_digest = hashlib.sha256(deps.box.decrypt(state.api_key).encode()).hexdigest()
    return hashlib.sha256(
        f"{server.ip}|{state.api_port}|{state.dns_port}|{allow}|{key_digest}".encode()
    ).hexdigest()


# -- use cases ------------------------------------------------------------------------------


def _require_servers() -> tuple[list[Server], list[Server]]:
    proxies, dns = proxy_servers(), dns_servers()
    missing = [role for role, found in (("proxy", proxies), ("dns", dns)) if not found]
    if missing:
        raise Conflict(
            f"no ready {' and no ready '.join(missing)} server: register and bootstrap one "
            "first (POST /api/servers with that role)",
            {"missing_roles": missing},
        )
    return proxies, dns


def _target(name: str, project: Project | None, environment: str | None) -> Target:
    return Target(
        "domain",
        name,
        name,
        project_id=project.id if project else None,
        environment=environment,
    )


def create_domain(
    deps: Deps,
    actor: Actor,
    body: dict[str, Any],
    *,
    preview: bool = False,
    confirmation: gate.Confirmation | None = None,
    expected_plan: str | None = None,
) -> gate.Answer:
    """Point a domain at an environment (`domain_set`, LOW): validated before anything, then
    rows written and a `domain_apply` operation started (202). With `expected_plan` (a
    preview's plan_hash) only if it would still do exactly what was previewed."""
    if not isinstance(body, dict):
        raise ValidationFailed("the body must be a JSON object")
    unknown = sorted(set(body) - {"domain", "project", "environment", "zone"})
    if unknown:
        raise ValidationFailed(f"unknown fields: {', '.join(unknown)}", {"fields": unknown})
    name = validate_domain(body.get("domain"), wildcard_allowed=True)
    if is_wildcard(name) and not dns01_enabled(deps):
        # A valid name (the API's schema accepts it) that this installation cannot serve:
        # Debian's Caddy cannot order a wildcard certificate; codeb's DNS-01 issuer can.
        raise Conflict(
            "wildcard domains need the DNS-01 issuer (CODEB_ACME_DNS_PROVIDER=powerdns); "
            "Debian's Caddy has no DNS provider module",
            {"field": "domain", "reason": "wildcard_without_dns01"},
        )
    explicit_zone = None
    if body.get("zone") is not None:
        explicit_zone = validate_domain(body.get("zone"))
        if explicit_zone.startswith("*."):
            raise ValidationFailed("a zone cannot be a wildcard", {"field": "zone"})
    project_ref, env_name = body.get("project"), body.get("environment")
    if (
        not isinstance(project_ref, str)
        or not project_ref
        or CONTROL_CHARACTERS.search(project_ref)
    ):
        raise ValidationFailed("project is required", {"field": "project"})
    if not isinstance(env_name, str) or not re.fullmatch(r"[a-z][a-z0-9_-]{0,19}", env_name):
        raise ValidationFailed("environment is required", {"field": "environment"})
    project = find_project(project_ref)
    find_environment(project, env_name)
    _check_plan(expected_plan)
    _refuse_taken(name, project)
    zone = zone_for(name, [z.name for z in DnsZone.select()], explicit_zone)
    proxies, dns = _require_servers()
    params = {"domain": name, "zone": zone, "project_id": project.id, "environment": env_name}
    if preview:
        pending = Domain(name=name, project=project, environment=env_name, status="pending")
        return gate.Answer(200, _preview(deps, name, zone, _sites(extra=pending), add=True))
    if expected_plan:
        _require_plan(deps, expected_plan, name, zone, add=True, project=project,
                      environment=env_name)  # fmt: skip
        params["plan_hash"] = expected_plan
    answer = gate.guard(
        deps,
        actor,
        "domain_set",
        _target(name, project, env_name),
        params,
        effect=(
            f"Publishes {name} (zone {zone}) on {len(dns)} dns server(s) pointing at "
            f"{len(proxies)} proxy server(s), and serves it for {project.name}/{env_name}."
        ),
        confirmation=confirmation,
        success_status=201,
    )
    return _unwrapped(answer)


def _unwrapped(answer: gate.Answer) -> gate.Answer:
    body = answer.body
    if (
        answer.status in (200, 201, 202)
        and body.get("status") == "executed"
        and "entry" not in body
    ):
        result = body.get("result") or {}
        return gate.Answer(202 if isinstance(result.get("operation"), dict) else 200, result)
    return answer


def _refuse_taken(name: str, project: Project) -> None:
    taken = Domain.get_or_none(Domain.name == name)
    if taken is None:
        return
    if taken.project_id != project.id:
        # Never say whose it is beyond the fact: another project's name is not ours to show.
        raise Conflict(
            f"{name} belongs to another project", {"domain": name, "reason": "other_project"}
        )
    raise Conflict(
        f"{name} already points at {project.name}/{taken.environment}",
        {"domain": name, "environment": taken.environment, "status": taken.status},
    )


def _apply_targets() -> list[str]:
    return [s.name for s in proxy_servers()] + [s.name for s in dns_servers()]


def _execute_create(deps: Deps, actor: Actor, target: Target, params: dict[str, Any]) -> dict:
    project = Project.get_or_none(
        (Project.id == params["project_id"]) & (Project.status != "deleted")
    )
    if project is None:
        raise NotFound("the project no longer exists", {"project_id": params["project_id"]})
    find_environment(project, params["environment"])
    _refuse_taken(params["domain"], project)
    _require_servers()
    _require_plan(deps, params.get("plan_hash"), params["domain"], params["zone"], add=True,
                  project=project, environment=params["environment"])  # fmt: skip
    if deps.settings.tls == "acme" and not deps.settings.acme_email:
        raise Conflict(
            "ACME certificates need CODEB_ACME_EMAIL (or CODEB_TLS=internal)",
            {"setting": "CODEB_ACME_EMAIL"},
        )
    now = deps.clock.now()
    zone = DnsZone.get_or_none(DnsZone.name == params["zone"])
    if zone is None:
        zone = DnsZone.create(name=params["zone"], created_at=now)
    op = operations.create_operation(
        deps, actor, APPLY, _apply_targets(), {"domain": params["domain"], "action": "add"},
        project_id=project.id,
    )  # fmt: skip
    try:
        domain = Domain.create(
            id=new_id("dom"),
            name=params["domain"],
            zone=zone.id,
            project=project.id,
            environment=params["environment"],
            status="pending",
            last_operation_id=op.id,
            created_at=now,
            updated_at=now,
        )
    except IntegrityError:
        raise Conflict(
            f"{params['domain']} is already taken", {"domain": params["domain"]}
        ) from None
    return {"domain": domain_view(domain), "operation": operations.operation_view(op)}


def delete_domain(
    deps: Deps,
    actor: Actor,
    name: str,
    *,
    preview: bool = False,
    confirmation: gate.Confirmation | None = None,
    expected_plan: str | None = None,
) -> gate.Answer:
    """Take a domain offline (`domain_delete`, MEDIUM): its site and its records go. With
    `expected_plan`, only if that is still exactly what the preview showed."""
    _check_plan(expected_plan)
    domain = find_domain(name)
    if preview:
        return gate.Answer(
            200,
            _preview(deps, domain.name, domain.zone.name, _sites(without=domain.name), add=False),
        )
    params: dict[str, Any] = {"domain": domain.name}
    if expected_plan:
        _require_plan(deps, expected_plan, domain.name, domain.zone.name, add=False)
        params["plan_hash"] = expected_plan
    answer = gate.guard(
        deps,
        actor,
        "domain_delete",
        _target(domain.name, domain.project, domain.environment),
        params,
        effect=(
            f"Takes {domain.name} offline: removes its site from the proxies and its records "
            f"from the dns servers ({domain.project.name}/{domain.environment})."
        ),
        confirmation=confirmation,
    )
    return _unwrapped(answer)


def _execute_delete(deps: Deps, actor: Actor, target: Target, params: dict[str, Any]) -> dict:
    domain = Domain.get_or_none(Domain.name == params["domain"])
    if domain is None:
        raise NotFound(f"domain {params['domain']!r} not found", {"domain": params["domain"]})
    _require_plan(deps, params.get("plan_hash"), domain.name, domain.zone.name, add=False)
    op = operations.create_operation(
        deps, actor, APPLY, _apply_targets(), {"domain": domain.name, "action": "delete"},
        project_id=domain.project_id,
    )  # fmt: skip
    domain.status, domain.last_operation_id = "deleting", op.id
    domain.updated_at = deps.clock.now()
    domain.save()
    return {"domain": domain_view(domain), "operation": operations.operation_view(op)}


def find_domain(name: str) -> Domain:
    try:
        normalized = validate_domain(name, wildcard_allowed=True)
    except ValidationFailed:
        raise NotFound(f"domain {name!r} not found", {"domain": name}) from None
    domain = Domain.get_or_none(Domain.name == normalized)
    if domain is None:
        raise NotFound(f"domain {name!r} not found", {"domain": name})
    return domain


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() + "Z" if value else None


def domain_view(domain: Domain, now: dt.datetime | None = None) -> dict[str, Any]:
    return {
        "id": domain.id,
        "domain": domain.name,
        "unicode": _unicode(domain.name),
        "zone": domain.zone.name,
        "project": domain.project.name,
        "environment": domain.environment,
        "status": domain.status,
        "last_error": domain.last_error,
        "last_operation_id": domain.last_operation_id,
        "created_at": _iso(domain.created_at),
        "updated_at": _iso(domain.updated_at),
        "applied_at": _iso(domain.applied_at),
        "certificate": _certificate_view(domain, now or utcnow()),
    }


def _certificate_view(domain: Domain, now: dt.datetime) -> dict[str, Any] | None:
    if domain.cert_checked_at is None:
        return None
    left = None
    if domain.cert_not_after is not None:
        left = round((domain.cert_not_after - now).total_seconds() / 86400, 2)
    expiring = _cert_warning(domain.cert_issuer, domain.cert_not_after, now)
    return {
        "issuer": domain.cert_issuer,
        "not_after": _iso(domain.cert_not_after),
        "days_left": left,
        "expiring_soon": expiring,
        "warning": f"the certificate expires in {left} days" if expiring else None,
        "error": domain.cert_error,
        "checked_at": _iso(domain.cert_checked_at),
    }


def _unicode(name: str) -> str:
    try:
        return idna.decode(name[2:] if name.startswith("*.") else name) if "xn--" in name else name
    except idna.IDNAError:
        return name


def list_domains(deps: Deps, project: str | None = None) -> dict[str, Any]:
    query = Domain.select().join(Project).order_by(Domain.name)
    if project:
        query = query.where(Domain.project == find_project(project).id)
    now = deps.clock.now()
    return {"domains": [domain_view(d, now) for d in query]}


def get_domain(name: str) -> dict[str, Any]:
    return domain_view(find_domain(name))


def list_zones(deps: Deps) -> dict[str, Any]:
    dns = dns_servers()
    zones = []
    for zone in DnsZone.select().order_by(DnsZone.name):
        count = Domain.select().where(Domain.zone == zone.id).count()
        zones.append(
            {
                "zone": zone.name,
                "domains": count,
                "soa": {
                    "mname": soa_for(zone.name).mname,
                    "rname": soa_for(zone.name).rname,
                    "negative_ttl": NEGATIVE_TTL,
                },
                "nameservers": [f"ns{i}.{zone.name}" for i in range(1, len(dns) + 1)],
                "created_at": _iso(zone.created_at),
            }
        )
    return {"zones": zones, "dns_servers": [{"name": s.name, "ip": s.ip} for s in dns]}


# -- preview ---------------------------------------------------------------------------------


def _preview(deps: Deps, name: str, zone_name: str, sites: list[Site], *, add: bool) -> dict:
    """What the change would do, changing nothing: the Caddyfile diff per proxy (against what
    codeb last placed there) and the rrset changes per dns server (against its live zone)."""
    new = render_config(deps, sites)
    proxies = []
    for server in proxy_servers():
        state = DomainServer.get_or_none(DomainServer.server == server.id)
        old = (state.applied_config if state else None) or ""
        proxies.append({"server": server.name, "diff": caddyfile_diff(old, new)})
    addresses = _proxy_addresses()
    dns = dns_servers()
    records = []
    zone = DnsZone.get_or_none(DnsZone.name == zone_name) or DnsZone(name=zone_name)
    want = {(r.name, r.type): r for r in nameserver_rrsets(zone_name, dns)}
    if zone.id is not None:
        want = desired_zone(zone, dns, addresses)
    managed = _managed_keys(zone, dns) if zone.id is not None else set()
    managed |= {(absolute(name), "A"), (absolute(name), "AAAA")}
    for key in [(absolute(name), "A"), (absolute(name), "AAAA")]:
        want.pop(key, None)
    if add:
        want.update({(r.name, r.type): r for r in address_rrsets(name, addresses)})
    for server in dns:
        entry: dict[str, Any] = {"server": server.name}
        try:
            state = DomainServer.get_or_none(DomainServer.server == server.id)
            if state is None:
                current = None
                entry["note"] = "not configured by codeb yet: the zone would be created"
            else:
                with dns_client(deps, server, state) as client:
                    current = client.get_rrsets(zone_name)
            entry["changes"] = zone_changes(zone_name, current, want, managed).view()
        except DnsError as exc:
            entry["error"] = exc.message
        records.append(entry)
    out: dict[str, Any] = {
        "preview": True,
        "action": "add" if add else "delete",
        "domain": name,
        "zone": zone_name,
        "caddyfile": proxies,
        "rrsets": records,
    }
    if add and is_wildcard(name):
        out["certificate"] = {
            "issuer_kind": "codeb_dns01",
            "directory": deps.settings.acme_directory,
            "names": [name],
            "note": "ordered after the records are published; the site is served once "
            "the certificate is issued",
        }
    # The plan: the file every proxy would get and what each proxy and zone holds now.
    state = {
        "out": out,
        "config": new,
        "applied": {
            s.name: (st.applied_hash if st else None)
            for s in proxy_servers()
            for st in [DomainServer.get_or_none(DomainServer.server == s.id)]
        },
    }
    out["plan_hash"] = hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()
    return out


class PlanChanged(Conflict):
    code = "plan_changed"

    def __init__(self, current: str) -> None:
        super().__init__(
            "the proxies, the zones or the domains changed since the preview: preview again",
            {"current_plan_hash": current},
        )


def _check_plan(expected: str | None) -> None:
    if expected and not PLAN_HASH.fullmatch(expected):
        raise ValidationFailed(
            "X-Plan-Hash must be the plan_hash a preview answered", {"field": "X-Plan-Hash"}
        )


def _require_plan(
    deps: Deps,
    expected: str | None,
    name: str,
    zone: str,
    *,
    add: bool,
    project: Project | None = None,
    environment: str | None = None,
) -> None:
    """With X-Plan-Hash: the change applies only if it would do exactly what was previewed."""
    if not expected:
        return
    if add:
        pending = Domain(name=name, project=project, environment=environment, status="pending")
        current = _preview(deps, name, zone, _sites(extra=pending), add=True)["plan_hash"]
    else:
        current = _preview(deps, name, zone, _sites(without=name), add=False)["plan_hash"]
    if current != expected:
        raise PlanChanged(current)


# -- certificates codeb obtains itself (ACME DNS-01, wildcards) ------------------------------


def _renew_window(cert: DomainCertificate) -> dt.timedelta:
    if cert.not_before is None or cert.not_after is None:
        return RENEW_BEFORE
    return min(RENEW_BEFORE, (cert.not_after - cert.not_before) / 3)


def certificate_due(cert: DomainCertificate | None, now: dt.datetime) -> bool:
    """Whether an order is due now: no certificate yet or inside the renewal window, and not
    waiting out the pause after a failed attempt."""
    if cert is not None and cert.fullchain and cert.not_after is not None:
        if cert.not_after - now > _renew_window(cert):
            return False
    return cert is None or cert.next_attempt_at is None or cert.next_attempt_at <= now


def _dns01_domains() -> list[Domain]:
    return [
        d
        for d in Domain.select().where(Domain.status != "deleting").order_by(Domain.name)
        if is_wildcard(d.name)
    ]


def certificates_due(deps: Deps) -> list[str]:
    if not dns01_enabled(deps):
        return []
    now = deps.clock.now()
    certs = {c.name: c for c in DomainCertificate.select()}
    return [d.name for d in _dns01_domains() if certificate_due(certs.get(d.name), now)]


def _acme_account(deps: Deps) -> AcmeAccount:
    directory = deps.settings.acme_directory
    account = AcmeAccount.get_or_none(AcmeAccount.directory == directory)
    if account is None:
        with deps.write():
            account = AcmeAccount.get_or_none(AcmeAccount.directory == directory)
            if account is None:
                account = AcmeAccount.create(
                    directory=directory,
                    account_key=deps.box.encrypt(acme.new_account_key()),
                    email=deps.settings.acme_email or None,
                    created_at=deps.clock.now(),
                )
    return account


def challenge_publisher(deps: Deps, dns: list[Server]) -> PowerDnsTxt:
    servers = []
    for server in dns:
        state = _dns_state(deps, server)
        servers.append(
            Authoritative(
                server.name,
                server.ip,
                state.dns_port,
                lambda server=server, state=state: dns_client(deps, server, state),
            )
        )
    return PowerDnsTxt(servers, [z.name for z in DnsZone.select()])


def obtain_certificates(deps: Deps, dns: list[Server]) -> dict[str, Any]:
    """Order every due certificate (records are already published: the CA's lookups and the
    challenge records go to codeb's own authoritative servers). Each outcome is recorded on
    its row: the certificate, or the error with when it happened and when to try again."""
    due = certificates_due(deps)
    if not due:
        return {}
    account = _acme_account(deps)
    publisher = challenge_publisher(deps, dns)
    bundle = deps.settings.acme_ca_bundle
    out: dict[str, Any] = {}
    for name in due:
        started = time.monotonic()
        try:
            issued = acme.issue(
                deps.settings.acme_directory,
                [name],
                publisher,
                account_key_pem=deps.box.decrypt(account.account_key),
                email=deps.settings.acme_email,
                ca_bundle=str(bundle) if bundle else None,
            )
        except acme.AcmeError as exc:
            _record_issuance(deps, name, error=exc.message)
            out[name] = {"issued": False, "error": exc.message}
            continue
        _record_issuance(deps, name, issued=issued)
        if account.uri != issued.account_uri:
            with deps.write():
                AcmeAccount.update(uri=issued.account_uri).where(
                    AcmeAccount.directory == account.directory
                ).execute()
        out[name] = {
            "issued": True,
            "issuer": issued.issuer,
            "not_after": _iso(issued.not_after),
            "seconds": round(time.monotonic() - started, 2),
        }
    return out


def _record_issuance(
    deps: Deps, name: str, *, issued: acme.Issued | None = None, error: str | None = None
) -> None:
    now = deps.clock.now()
    with deps.write():
        cert = DomainCertificate.get_or_none(DomainCertificate.name == name)
        new = cert is None
        if cert is None:
            cert = DomainCertificate(name=name, names=json.dumps([name]), attempts=0)
        if issued is not None:
            cert.fullchain = issued.fullchain_pem
            cert.private_key = deps.box.encrypt(issued.key_pem)
            cert.issuer = issued.issuer[:300]
            cert.serial = acme.serial_of(issued.fullchain_pem)
            cert.not_before, cert.not_after = issued.not_before, issued.not_after
            cert.issued_at, cert.attempts, cert.next_attempt_at = now, 0, None
        else:
            cert.attempts = (cert.attempts or 0) + 1
            cert.last_error = (error or "unknown error")[:2000]
            cert.last_error_at = now
            pause = min(RETRY_MAX, RETRY_FIRST * (2 ** min(cert.attempts - 1, 10)))
            cert.next_attempt_at = now + pause
        cert.updated_at = now
        cert.save(force_insert=new)


def certificate_files(deps: Deps, sites: list[Site]) -> list[dict[str, str]]:
    """What the proxies need besides the Caddyfile: each served certificate's files."""
    certs = {c.name: c for c in DomainCertificate.select() if c.fullchain}
    out = []
    for site in sites:
        if site.cert_file and site.domain in certs:
            cert = certs[site.domain]
            out.append(
                {
                    "cert_file": site.cert_file,
                    "key_file": site.key_file or "",
                    "cert": cert.fullchain,
                    "key": deps.box.decrypt(cert.private_key),
                }
            )
    return out


def _issuance_view(cert: DomainCertificate | None, now: dt.datetime) -> dict[str, Any]:
    if cert is None:
        return {"issuer_kind": "codeb_dns01", "state": "not ordered yet"}
    return {
        "issuer_kind": "codeb_dns01",
        "issuer": cert.issuer,
        "issued_at": _iso(cert.issued_at),
        "not_after": _iso(cert.not_after),
        "renew_after": _iso(cert.not_after - _renew_window(cert)) if cert.not_after else None,
        "last_error": cert.last_error,
        "last_error_at": _iso(cert.last_error_at),
        "attempts_since_success": cert.attempts,
        "next_attempt_at": _iso(cert.next_attempt_at),
    }


# -- the apply job -----------------------------------------------------------------------------


@dataclass
class DomainApplyJob:
    """Render the proxies' config and the zones from the database as they are now (the run
    holds every proxy's and dns server's lock), publish records, then the Caddyfile."""

    def run(self, ctx: RunContext) -> JobResult:
        deps = ctx.deps
        proxies, dns = proxy_servers(), dns_servers()
        if not proxies or not dns:
            raise JobFailed("no ready proxy or dns server")
        rendered_ids = [d.id for d in Domain.select(Domain.id).where(Domain.status != "deleting")]
        deleting_ids = [d.id for d in Domain.select(Domain.id).where(Domain.status == "deleting")]
        timings: dict[str, float] = {}
        result: dict[str, Any] = {"dns": {}, "proxy": {}, "timings_s": timings}
        try:
            started = time.monotonic()
            result["dns_configured"] = self._configure_dns(ctx, dns)
            timings["dns_configure"] = round(time.monotonic() - started, 2)
            started = time.monotonic()
            result["dns"] = self._publish(deps, dns, [s.ip for s in proxies])
            timings["dns_publish"] = round(time.monotonic() - started, 2)
            started = time.monotonic()
            # Wildcards: codeb orders their certificates itself (DNS-01), after the records
            # and before Caddy; a failed order leaves that one site out, not the others.
            result["certificates"] = obtain_certificates(deps, dns)
            timings["certificates"] = round(time.monotonic() - started, 2)
            started = time.monotonic()
            sites = _sites()
            caddyfile = render_config(deps, sites)
            result["proxy"] = self._apply_proxies(
                ctx, proxies, caddyfile, certificate_files(deps, sites)
            )
            timings["proxy"] = round(time.monotonic() - started, 2)
            served = {site.domain for site in sites}
            unserved = {
                d.id: d.name
                for d in Domain.select().where(Domain.id.in_(rendered_ids))
                if d.name not in served
            }
        except (JobFailed, CodebError) as exc:
            message = exc.message if isinstance(exc, CodebError) else str(exc)
            with deps.write():
                Domain.update(
                    status="failed", last_error=message[:2000], updated_at=deps.clock.now()
                ).where(Domain.id.in_(rendered_ids) & (Domain.status == "pending")).execute()
            return JobResult("canceled" if ctx.canceled else "failed", message, result)
        now = deps.clock.now()
        with deps.write():
            for domain_id, name in unserved.items():
                cert = DomainCertificate.get_or_none(DomainCertificate.name == name)
                reason = (cert.last_error if cert else None) or "not ordered yet"
                Domain.update(
                    status="failed",
                    last_error=f"no certificate for {name} (DNS-01): {reason}"[:2000],
                    updated_at=now,
                ).where(Domain.id == domain_id).execute()
            served_ids = [i for i in rendered_ids if i not in unserved]
            Domain.update(status="active", last_error=None, applied_at=now, updated_at=now).where(
                Domain.id.in_(served_ids) & (Domain.status.in_(["pending", "failed", "active"]))
            ).execute()
            gone = [
                d.name
                for d in Domain.select(Domain.name).where(
                    Domain.id.in_(deleting_ids) & (Domain.status == "deleting")
                )
            ]
            Domain.delete().where(
                Domain.id.in_(deleting_ids) & (Domain.status == "deleting")
            ).execute()
            # A removed wildcard's certificate and key go with it (no longer on any proxy).
            DomainCertificate.delete().where(DomainCertificate.name.in_(gone)).execute()
        return JobResult("succeeded", None, result)

    def _configure_dns(self, ctx: RunContext, dns: list[Server]) -> list[str]:
        """Run roles/codeb_dns where it never ran, or where the key/address changed, or where
        the API does not answer with the key."""
        deps = ctx.deps
        todo: list[tuple[Server, DomainServer, str]] = []
        for server in dns:
            state = _dns_state(deps, server)
            allow = codeb_address(server.ip)
            want = _dns_config_hash(deps, server, state, allow)
            if state.configured_hash == want:
                try:
                    with dns_client(deps, server, state) as client:
                        client.list_zones()
                    continue
                except DnsError:
                    pass
            todo.append((server, state, allow))
        if not todo:
            return []
        keys = [deps.box.decrypt(state.api_key) for _, state, _ in todo]
        per_host = {
            server.name: {
                "codeb_dns_api_key": key,
                "codeb_dns_api_allow_from": [allow],
                "codeb_dns_api_port": state.api_port,
                "codeb_dns_port": state.dns_port,
            }
            for (server, state, allow), key in zip(todo, keys, strict=True)
        }
        names = [s.name for s, _, _ in todo]
        for name in names:
            outcome, records = ctx.run(
                PlaybookRun(
                    playbook="domains_dns.yml",
                    targets=targets_of(deps, [name]),
                    limit=name,
                    extravars=per_host[name],
                    secrets=tuple(keys),
                    timeout_s=600,
                )
            )
            if outcome.status != "successful":
                raise JobFailed(
                    "configuring PowerDNS failed: " + describe_failure(outcome, records)
                )
        with deps.write():
            for server, state, allow in todo:
                DomainServer.update(
                    configured_hash=_dns_config_hash(deps, server, state, allow),
                    updated_at=deps.clock.now(),
                ).where(DomainServer.server == server.id).execute()
        # PowerDNS was (re)started: its API answers within a second or two.
        for server, state, _ in todo:
            _wait_api(deps, server, state)
        return names

    def _publish(self, deps: Deps, dns: list[Server], proxies: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for server in dns:
            state = _dns_state(deps, server)
            changed: list[dict[str, Any]] = []
            with dns_client(deps, server, state) as client:
                for zone in DnsZone.select().order_by(DnsZone.name):
                    want = desired_zone(zone, dns, proxies)
                    current = client.get_rrsets(zone.name)
                    created = current is None
                    if created:
                        # The SOA (real primary name, 60 s negative TTL) and NS are codeb's
                        # from the start: PowerDNS's default caches NXDOMAIN for an hour.
                        client.create_zone(
                            zone.name, soa_for(zone.name), nameserver_rrsets(zone.name, dns)
                        )
                        current = client.get_rrsets(zone.name)
                    changes = zone_changes(zone.name, current, want, _managed_keys(zone, dns))
                    changes.create = created
                    client.patch(zone.name, changes.replace, changes.delete)
                    changed += changes.view()
            out[server.name] = changed
        return out

    def _apply_proxies(
        self,
        ctx: RunContext,
        proxies: list[Server],
        caddyfile: str,
        certificates: list[dict[str, str]] | None = None,
    ) -> dict[str, Any]:
        deps = ctx.deps
        digest = hashlib.sha256(caddyfile.encode()).hexdigest()
        states = {s.name: DomainServer.get_or_none(DomainServer.server == s.id) for s in proxies}
        todo = [
            s.name for s in proxies if not states[s.name] or states[s.name].applied_hash != digest
        ]
        if not todo:
            return {"changed": [], "unchanged": [s.name for s in proxies]}
        outcome, records = ctx.run(
            PlaybookRun(
                playbook="domains_apply.yml",
                targets=targets_of(deps, todo),
                limit=",".join(todo),
                extravars={
                    "codeb_proxy_caddyfile": caddyfile,
                    "codeb_proxy_certificates": certificates or [],
                },
                secrets=tuple(_key_secrets(certificates or [])),
                timeout_s=300,
            )
        )
        if outcome.status != "successful":
            raise JobFailed(describe_failure(outcome, records))
        now = deps.clock.now()
        with deps.write():
            for server in proxies:
                if server.name not in todo:
                    continue
                fields = {
                    "applied_config": caddyfile,
                    "applied_hash": digest,
                    "applied_at": now,
                    "updated_at": now,
                }
                if states[server.name] is None:
                    DomainServer.create(server=server.id, kind="proxy", dns_port=53, **fields)
                else:
                    DomainServer.update(**fields).where(DomainServer.server == server.id).execute()
        return {"changed": todo, "unchanged": [s.name for s in proxies if s.name not in todo]}


def _key_secrets(certificates: list[dict[str, str]]) -> list[str]:
    """Every private key, whole and line by line (scrubbed from the run's stored events)."""
    out = []
    for cert in certificates:
        key = cert.get("key") or ""
        out += [key, key.strip()]
        out += [line for line in key.splitlines() if len(line) >= 16 and "PRIVATE" not in line]
    return out


def _wait_api(deps: Deps, server: Server, state: DomainServer, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with dns_client(deps, server, state) as client:
                client.list_zones()
            return
        except DnsError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


# -- status: each part checked live ----------------------------------------------------------

LEVELS = ("ok", "degraded", "down")


def _worst(*levels: str) -> str:
    return max(levels, key=LEVELS.index) if levels else "ok"


def _now_iso(deps: Deps) -> str:
    return deps.clock.now().isoformat() + "Z"


def _probe_name(name: str) -> str:
    """The name to ask for and to send as SNI: a wildcard's stand-in label."""
    return "codeb-status." + name[2:] if name.startswith("*.") else name


def check_dns(deps: Deps, domain: Domain, dns: list[Server], expected: list[str]) -> dict:
    """Ask every authoritative server directly (never a resolver): its answer, AA flag, TTL
    and the zone's SOA serial; whether they agree and point at the proxies."""
    qname = absolute(_probe_name(domain.name))
    want_v4 = sorted(a for a in expected if ipaddress.ip_address(a).version == 4)
    want_v6 = sorted(
        ipaddress.ip_address(a).compressed for a in expected if ipaddress.ip_address(a).version == 6
    )
    servers, reasons = [], []
    for server in dns:
        state = DomainServer.get_or_none(DomainServer.server == server.id)
        port = state.dns_port if state else 53
        entry: dict[str, Any] = {"server": server.name, "ip": server.ip, "answered": False}
        started = time.monotonic()
        try:
            answer = dnsquery.udp(
                dnsmessage.make_query(qname, "A"), server.ip, port=port, timeout=2
            )
            soa = dnsquery.udp(
                dnsmessage.make_query(absolute(domain.zone.name), "SOA"),
                server.ip,
                port=port,
                timeout=2,
            )
            # AAAA only asked when a proxy has an IPv6 address (else NODATA is expected).
            answer6 = (
                dnsquery.udp(dnsmessage.make_query(qname, "AAAA"), server.ip, port=port, timeout=2)
                if want_v6
                else None
            )
        except (dnsexception.DNSException, OSError) as exc:
            entry["error"] = f"did not answer: {type(exc).__name__}"
            reasons.append(f"authoritative server {server.name} ({server.ip}) did not answer")
            servers.append(entry)
            continue
        entry["latency_ms"] = round((time.monotonic() - started) * 1000, 1)
        addresses = sorted(
            r.address for rrset in answer.answer if rrset.rdtype == dnsrdatatype.A for r in rrset
        )
        addresses_v6 = sorted(
            ipaddress.ip_address(r.address).compressed
            for rrset in (answer6.answer if answer6 is not None else [])
            if rrset.rdtype == dnsrdatatype.AAAA
            for r in rrset
        )
        ttls = [rrset.ttl for rrset in answer.answer if rrset.rdtype == dnsrdatatype.A]
        serials = [
            r.serial for rrset in soa.answer if rrset.rdtype == dnsrdatatype.SOA for r in rrset
        ]
        entry.update(
            answered=True,
            rcode=dnsrcode.to_text(answer.rcode()),
            aa=bool(answer.flags & dnsflags.AA),
            addresses=addresses,
            ttl=ttls[0] if ttls else None,
            soa_serial=serials[0] if serials else None,
            matches_expected=addresses == want_v4 and addresses_v6 == want_v6,
        )
        if want_v6:
            entry["addresses_v6"] = addresses_v6
        if not entry["aa"]:
            reasons.append(f"{server.name} answered without the AA flag (not authoritative)")
        elif not entry["matches_expected"]:
            got = addresses + (addresses_v6 if want_v6 else [])
            reasons.append(
                f"{server.name} answers {got or entry['rcode']}, expected {want_v4 + want_v6}"
            )
        servers.append(entry)
    answered = [e for e in servers if e["answered"]]
    # Agreement is about the answers: each server holds its own copy of the zone (codeb
    # writes every one), so their SOA serials may differ without anything being wrong.
    agree = len({(tuple(e["addresses"]), tuple(e.get("addresses_v6", ()))) for e in answered}) <= 1
    good = [e for e in answered if e["aa"] and e["matches_expected"]]
    if not good:
        status = "down"
        if not answered:
            reasons.insert(0, "no authoritative server answered")
    elif len(good) < len(servers) or not agree:
        status = "degraded"
        if not agree:
            reasons.append("the authoritative servers disagree")
    else:
        status = "ok"
    return {
        "status": status,
        "checked_at": _now_iso(deps),
        "query": qname,
        "expected": want_v4 + want_v6,
        "agree": agree,
        "same_soa_serial": len({e["soa_serial"] for e in answered}) <= 1,
        "servers": servers,
        "reasons": reasons,
    }


def _inspect_proxies(deps: Deps, proxies: list[Server]) -> tuple[dict[str, dict], str | None]:
    outcome, records = run_now(deps, "domains_inspect.yml", [s.name for s in proxies], timeout_s=60)
    found = reported(records, "codeb_proxy")
    error = None if outcome.status == "successful" else describe_failure(outcome, records)
    return found, error


def check_proxy(
    deps: Deps, domain: Domain, proxies: list[Server], found: dict, error: str | None
) -> dict:
    """The route in each proxy's running Caddy config (read through its admin API), and its
    upstreams against the app servers codeb placed."""
    want = app_upstreams(domain.project, domain.environment)
    servers, reasons = [], []
    for server in proxies:
        running = found.get(server.name)
        if running is None:
            servers.append({"server": server.name, "route": None, "error": error or "no answer"})
            reasons.append(f"could not read the running config of {server.name}")
            continue
        hosts = hosts_in_config(running.get("config"))
        route = domain.name in hosts
        entry = {"server": server.name, "route": route, "upstreams": hosts.get(domain.name, [])}
        if not route:
            reasons.append(f"{server.name} has no route for {domain.name}")
        elif sorted(entry["upstreams"]) != want:
            reasons.append(f"{server.name} proxies to {entry['upstreams']}, codeb placed {want}")
        servers.append(entry)
    routed = [e for e in servers if e.get("route")]
    status = "down" if not routed else ("degraded" if reasons else "ok")
    return {"status": status, "checked_at": _now_iso(deps), "expected_upstreams": want,
            "servers": servers, "reasons": reasons}  # fmt: skip


def check_tls(deps: Deps, domain: Domain, proxies: list[Server], found: dict) -> dict:
    """A real handshake with SNI on each proxy: issuer, names, not-after, days left, and
    whether it verifies (the system's CAs, or the proxy's internal CA with tls internal)."""
    sni = _probe_name(domain.name)
    now = deps.clock.now()
    servers, reasons = [], []
    for server in proxies:
        root = (found.get(server.name) or {}).get("root_ca") or ""
        entry: dict[str, Any] = {"server": server.name}
        try:
            with tempfile.NamedTemporaryFile("w", suffix=".crt") as ca:
                cafile = None
                if is_wildcard(domain.name) and deps.settings.acme_ca_bundle:
                    # codeb's own DNS-01 certificate from a CA the system does not know (a
                    # test CA): the bundle configured for it holds its roots.
                    cafile = str(deps.settings.acme_ca_bundle)
                elif deps.settings.tls == "internal" and root.startswith("-----BEGIN"):
                    ca.write(root)
                    ca.flush()
                    cafile = ca.name
                facts = tls_certificate(server.ip, 443, sni, cafile=cafile, timeout=5)
        except (OSError, ssl.SSLError) as exc:
            entry["error"] = f"no TLS handshake: {exc.__class__.__name__}: {exc}"[:300]
            reasons.append(f"{server.name}: no TLS handshake for {sni}")
            servers.append(entry)
            continue
        internal = "Caddy Local Authority" in facts.issuer
        left = facts.not_after - now
        expiring = left < (WARN_INTERNAL if internal else WARN_ACME)
        entry.update(
            issuer=facts.issuer,
            internal_ca=internal,
            names=facts.names,
            covers=sni in facts.names or (f"*.{sni.split('.', 1)[1]}" in facts.names),
            not_after=facts.not_after.isoformat() + "Z",
            days_left=facts.days_left(now),
            trusted=facts.trusted,
            verify_error=facts.verify_error,
            expiring_soon=expiring,
        )
        if not facts.trusted:
            reasons.append(f"{server.name}: the certificate does not verify ({facts.verify_error})")
        if expiring:
            reasons.append(f"{server.name}: the certificate expires in {entry['days_left']} days")
        servers.append(entry)
    issuance = _last_issuance(domain, proxies, found, now)
    for entry in servers:
        failed = issuance["by_server"].get(entry["server"])
        if failed:
            entry["last_issuance_error"] = failed
    if issuance.get("last_error") and not [e for e in servers if "error" not in e]:
        reasons.append(f"last issuance error ({issuance['last_error_at']}): "
                       f"{issuance['last_error']}"[:500])  # fmt: skip
    good = [e for e in servers if "error" not in e]
    status = "down" if not good else ("degraded" if reasons else "ok")
    issuance.pop("by_server")
    return {"status": status, "checked_at": _now_iso(deps), "sni": sni, "servers": servers,
            "issuance": issuance, "reasons": reasons}  # fmt: skip


def _last_issuance(
    domain: Domain, proxies: list[Server], found: dict, now: dt.datetime
) -> dict[str, Any]:
    """The last issuance error and when: codeb's own order for a wildcard (DNS-01), else
    Caddy's certificate automation as each proxy's journal tells it."""
    if is_wildcard(domain.name):
        cert = DomainCertificate.get_or_none(DomainCertificate.name == domain.name)
        return {**_issuance_view(cert, now), "by_server": {}}
    by_server: dict[str, dict[str, Any]] = {}
    for server in proxies:
        lines = (found.get(server.name) or {}).get("tls_log") or []
        error = issuance_errors(lines).get(domain.name)
        if error:
            by_server[server.name] = {k: v for k, v in error.items() if k != "ts"}
    latest = max(by_server.items(), key=lambda kv: kv[1]["at"], default=None)
    return {
        "issuer_kind": "caddy",
        "last_error": latest[1]["error"] if latest else None,
        "last_error_at": latest[1]["at"] if latest else None,
        "last_error_server": latest[0] if latest else None,
        "by_server": by_server,
    }


def check_http(deps: Deps, domain: Domain, proxies: list[Server]) -> dict:
    """HTTP through each proxy: the app's health over HTTPS (status, latency) and the
    redirect from HTTP to HTTPS."""
    host = _probe_name(domain.name)
    servers, reasons = [], []
    for server in proxies:
        entry: dict[str, Any] = {"server": server.name}
        try:
            health = http_get(server.ip, 443, host, HEALTH_PATH, timeout=10)
            entry.update(health_status=health.status, latency_ms=health.latency_ms,
                         healthy=200 <= health.status < 300)  # fmt: skip
            if not entry["healthy"]:
                reasons.append(f"{server.name}: GET {HEALTH_PATH} answered {health.status}")
        except (OSError, ssl.SSLError) as exc:
            entry["error"] = f"no HTTPS answer: {type(exc).__name__}"
            reasons.append(f"{server.name}: no HTTPS answer for {host}")
        try:
            plain = http_get(server.ip, 80, host, "/", tls=False, timeout=5)
            entry["redirects_to_https"] = plain.status in (301, 302, 307, 308) and bool(
                plain.location and plain.location.startswith("https://")
            )
        except OSError as exc:
            entry["redirects_to_https"] = False
            entry["http_error"] = type(exc).__name__
        servers.append(entry)
    answered = [e for e in servers if "health_status" in e]
    status = "down" if not answered else ("degraded" if reasons else "ok")
    return {"status": status, "checked_at": _now_iso(deps), "path": HEALTH_PATH,
            "servers": servers, "reasons": reasons}  # fmt: skip


def domain_status(deps: Deps, name: str) -> dict[str, Any]:
    """Every part checked now; overall ok/degraded/down with the reasons."""
    domain = find_domain(name)
    proxies, dns_list = proxy_servers(), dns_servers()
    expected = [s.ip for s in proxies]
    parts: dict[str, dict] = {}
    parts["dns"] = check_dns(deps, domain, dns_list, expected)
    found, error = _inspect_proxies(deps, proxies) if proxies else ({}, "no proxy server")
    parts["proxy"] = check_proxy(deps, domain, proxies, found, error)
    parts["tls"] = check_tls(deps, domain, proxies, found)
    parts["http"] = check_http(deps, domain, proxies)
    overall = _worst(*(p["status"] for p in parts.values()))
    reasons = [f"{part}: {r}" for part, p in parts.items() for r in p["reasons"]]
    return {
        "domain": domain.name,
        "status": overall,
        "reason": reasons[0] if reasons else None,
        "reasons": reasons,
        "checked_at": _now_iso(deps),
        "registry": domain_view(domain),
        **parts,
    }


# -- periodic work -------------------------------------------------------------------------

SYNC_RETRY_AFTER = dt.timedelta(minutes=10)


def sync_reason(deps: Deps) -> str | None:
    """Why the proxies or the zones differ from the database, or None: domains waiting to be
    applied, a Caddyfile that renders differently now (an app server was placed or removed
    by a deploy), a proxy or dns server codeb never configured."""
    proxies, dns_list = proxy_servers(), dns_servers()
    if not proxies or not dns_list or not Domain.select().exists():
        return None
    due = certificates_due(deps)
    if due:
        return f"certificate of {due[0]} due (DNS-01)"
    waiting = [
        d
        for d in Domain.select().where(Domain.status.in_(["pending", "deleting", "failed"]))
        # A wildcard waiting for its certificate comes back when its next attempt is due.
        if not (d.status == "failed" and is_wildcard(d.name))
    ]
    if waiting:
        return f"{len(waiting)} domain(s) waiting to be applied"
    digest = hashlib.sha256(render_config(deps, _sites()).encode()).hexdigest()
    states = {st.server_id: st for st in DomainServer.select()}
    for server in proxies:
        state = states.get(server.id)
        if state is None or state.applied_hash != digest:
            return f"the configuration of {server.name} differs from the database"
    for server in dns_list:
        state = states.get(server.id)
        if state is None or state.configured_hash is None:
            return f"dns server {server.name} is not configured yet"
    return None


def _scheduled_sync(deps: Deps) -> dict[str, Any]:
    """Apply again when the proxies or zones no longer say what the database says (upstreams
    move with deploys, servers come and go). One apply at a time; after a failed one, wait
    SYNC_RETRY_AFTER before trying again."""
    busy = Operation.select().where(
        (Operation.kind == APPLY) & Operation.status.in_(["queued", "running"])
    )
    if busy.exists():
        return {"skipped": "an apply is queued or running"}
    last = (
        Operation.select()
        .where(Operation.kind == APPLY)
        .order_by(Operation.created_at.desc())
        .first()
    )
    if last is not None and last.status != "succeeded" and last.finished_at is not None:
        if deps.clock.now() - last.finished_at < SYNC_RETRY_AFTER:
            return {"skipped": f"the last apply {last.id} {last.status}; retried later"}
    reason = sync_reason(deps)
    if reason is None:
        return {"in_sync": True}
    with deps.write():
        op = operations.create_operation(deps, SYSTEM, APPLY, _apply_targets(), {"reason": reason})
    operations.dispatch(deps, op.id)
    return {"operation": op.id, "reason": reason}


def _cert_warning(issuer: str | None, not_after: dt.datetime | None, now: dt.datetime) -> bool:
    if not issuer or not_after is None:
        return False
    internal = "Caddy Local Authority" in issuer
    return not_after - now < (WARN_INTERNAL if internal else WARN_ACME)


def _scheduled_certificates(deps: Deps) -> dict[str, Any]:
    """The certificate each proxy serves for each active domain (a handshake with SNI):
    issuer and expiry kept on the domain, for GET /api/domains and metrics."""
    proxies = proxy_servers()
    checked, failed = 0, 0
    for domain in Domain.select().where(Domain.status == "active"):
        issuer = not_after = error = None
        for server in proxies:
            try:
                facts = tls_certificate(server.ip, 443, _probe_name(domain.name), timeout=5)
            except (OSError, ssl.SSLError) as exc:
                error = f"{server.name}: {type(exc).__name__}"
                continue
            # The earliest expiry over the proxies is the one that matters.
            if not_after is None or facts.not_after < not_after:
                issuer, not_after = facts.issuer, facts.not_after
        with deps.write():
            Domain.update(
                cert_issuer=issuer,
                cert_not_after=not_after,
                cert_error=error,
                cert_checked_at=deps.clock.now(),
            ).where(Domain.id == domain.id).execute()
        checked += 1
        failed += error is not None
    return {"domains": checked, "failed": failed}


SCHEDULES: tuple[scheduler.Job, ...] = (
    scheduler.Job(
        name="domain_sync",
        description="Starts a domain_apply operation when the proxies' configuration or the "
        "zones no longer match the database (app servers placed or removed, domains waiting, "
        "new proxy or dns servers).",
        interval=dt.timedelta(minutes=1),
        run=_scheduled_sync,
    ),
    scheduler.Job(
        name="domain_certificates",
        description="Reads the certificate each proxy serves for each domain (issuer, "
        "expiry); GET /api/domains and metrics warn before it expires.",
        interval=dt.timedelta(minutes=15),
        run=_scheduled_certificates,
    ),
)


def _collect_metrics(deps: Deps) -> Iterable[Any]:
    from prometheus_client.core import GaugeMetricFamily

    by_status = GaugeMetricFamily("codeb_domains", "Domains by status", labels=["status"])
    counts: dict[str, int] = {}
    expiry = GaugeMetricFamily(
        "codeb_domain_certificate_expiry_seconds",
        "Seconds until the certificate a proxy serves for the domain expires",
        labels=["domain", "issuer"],
    )
    expiring = GaugeMetricFamily(
        "codeb_domain_certificate_expiring",
        "1 when the certificate expires soon (internal CA: 3 h; ACME: 14 days)",
        labels=["domain"],
    )
    now = deps.clock.now()
    for domain in Domain.select():
        counts[domain.status] = counts.get(domain.status, 0) + 1
        if domain.cert_not_after is not None:
            left = (domain.cert_not_after - now).total_seconds()
            expiry.add_metric([domain.name, domain.cert_issuer or ""], left)
            expiring.add_metric(
                [domain.name], float(_cert_warning(domain.cert_issuer, domain.cert_not_after, now))
            )
    for status in ("pending", "active", "failed", "deleting"):
        by_status.add_metric([status], counts.get(status, 0))
    failing = GaugeMetricFamily(
        "codeb_domain_certificate_order_failing",
        "1 when codeb's last DNS-01 order for the domain failed (after its last success)",
        labels=["domain"],
    )
    for cert in DomainCertificate.select():
        failed = cert.last_error_at is not None and (
            cert.issued_at is None or cert.last_error_at > cert.issued_at
        )
        failing.add_metric([cert.name], float(failed))
    return [by_status, expiry, expiring, failing]


# -- declarations --------------------------------------------------------------------------

APPLIERS = {"domain_set": _execute_create, "domain_delete": _execute_delete}
JOBS = {APPLY: DomainApplyJob()}
METRICS = FeatureCollector(
    name="domains",
    collect=_collect_metrics,
    description="domains by status and their certificates' expiry",
)
