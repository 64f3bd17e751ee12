"""Domains (issue 12): names served by the proxy servers (Caddy) for an environment, with
their records on the dns servers (PowerDNS). Use cases in service.py; the outside
world in codeb.providers.dns and codeb.providers.proxy."""

from __future__ import annotations

from codeb.api.declare import Op, answer, header, path, query
from codeb.features.domains import schemas
from codeb.features.domains import service as domains
from codeb.features.protection.schemas import NOT_YET, ProtectionExecuted
from codeb.wiring import Configurator

DOMAIN = path("domain", "the domain (as punycode, or Unicode)", maxLength=1024)
PREVIEW = query("preview", enum=["true", "false", "1", "0"])
PLAN = {
    **header(
        "X-Plan-Hash",
        "apply exactly the previewed plan (409 plan_changed if the proxies, zones or domains "
        "moved)",
    ),
    "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
}
STARTED = answer(
    (schemas.DomainStarted, ProtectionExecuted, *NOT_YET),
    "a domain_apply operation started (LOW, or confirmed), or not executed yet (a confirm "
    "token, a queue entry)",
)
PREVIEWED = answer(schemas.DomainPreview, "with ?preview=true: what would change (nothing)")


def includeme(config: Configurator) -> None:
    # Imported here so a service import never pulls in Falcon (the HTTP layer).
    from codeb.features.domains import api

    config.add_appliers(domains.APPLIERS)
    config.add_runner_jobs(domains.JOBS)
    config.add_schedules(domains.SCHEDULES)
    config.add_metrics(domains.METRICS)
    config.add_route(
        "/api/domains",
        api.Domains,
        get=Op(
            "Domains (with the certificate last seen and a warning before it expires)",
            {200: answer(schemas.DomainList, "domains")},
            (404, 422),
            params=(query("project", maxLength=100),),
        ),
        post=Op(
            "Point a domain at an environment (LOW): records published on every dns server, "
            "then the proxies' whole Caddyfile rendered, validated and reloaded",
            {200: PREVIEWED, 202: STARTED},
            (403, 404, 409, 410, 422),
            body=schemas.DomainRequest,
            params=(PREVIEW, PLAN),
            guarded=True,
        ),
    )
    config.add_route(
        "/api/domains/{domain}",
        api.DomainItem,
        params=(DOMAIN,),
        get=Op("A domain", {200: answer(schemas.Domain, "the domain")}, (404,)),
        delete=Op(
            "Take a domain offline (MEDIUM: confirm token): its site and its records go",
            {200: PREVIEWED, 202: STARTED},
            (403, 404, 409, 410, 422),
            params=(PREVIEW, PLAN),
            guarded=True,
        ),
    )
    config.add_route(
        "/api/domains/{domain}/status",
        api.DomainStatus,
        params=(DOMAIN,),
        get=Op(
            "Check a domain live: each authoritative server (AA, TTL, SOA serial, agreement, "
            "expected address), the route in each running Caddy, a TLS handshake with SNI, "
            "HTTP to the app's health; overall ok / degraded / down with the reasons",
            {200: answer(schemas.DomainStatus, "every part with its checked_at")},
            (404, 409),
        ),
    )
    config.add_route(
        "/api/dns/zones",
        api.Zones,
        get=Op("The DNS zones codeb holds", {200: answer(schemas.ZoneList, "zones")}, ()),
    )
