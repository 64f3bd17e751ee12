"""Domains and DNS zones: request and response shapes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from codeb.api.shapes import NULLABLE_TIME, Meta, Request, Shape

STATUS = Literal["pending", "active", "failed", "deleting"]
HEALTH = Literal["ok", "degraded", "down"]


# The ASCII form of a host name (Unicode names travel as punycode: `codeb domains add`
# converts them): LDH labels of 1-63, at least two, the last starting with a letter, an
# optional final dot; a `*.` in front asks for a wildcard (served only when codeb's DNS-01
# issuer is configured: Debian's Caddy has no DNS-01 module; 422 otherwise).
DOMAIN_PATTERN = (
    r"^(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?$"
)


class DomainRequest(Request):
    domain: Annotated[
        str,
        Meta(
            min_length=4,
            max_length=253,
            pattern=DOMAIN_PATTERN,
            description="the name to serve, e.g. shop.example.com, in its ASCII form "
            "(punycode for Unicode names); stored lower case. Its zone is the longest zone "
            "codeb holds that contains it, else the name without its first label",
        ),
    ]
    project: Annotated[str, Meta(min_length=1, max_length=100, description="id or name")]
    environment: Annotated[str, Meta(pattern="^[a-z][a-z0-9_-]{0,19}$")]

    example = {"domain": "shop.example.com", "project": "shop", "environment": "production"}


class Certificate(Shape):
    issuer: str | None
    not_after: NULLABLE_TIME
    days_left: float | None
    expiring_soon: bool
    warning: str | None
    error: str | None
    checked_at: NULLABLE_TIME


class Domain(Shape):
    id: str
    domain: str
    unicode: str
    zone: str
    project: str
    environment: str
    status: STATUS
    last_error: str | None
    last_operation_id: str | None
    created_at: NULLABLE_TIME
    updated_at: NULLABLE_TIME
    applied_at: NULLABLE_TIME
    certificate: Annotated[
        Certificate | None,
        Meta(description="the certificate the proxies served at the last periodic check"),
    ]


class DomainList(Shape):
    domains: list[Domain]


class DomainStarted(Shape):
    domain: Domain
    operation: dict[str, Any]


class DomainPreview(Shape):
    preview: Literal[True]
    action: Literal["add", "delete"]
    domain: str
    zone: str
    caddyfile: Annotated[
        list[dict[str, Any]],
        Meta(description="per proxy server: the unified diff from what codeb last placed"),
    ]
    rrsets: Annotated[
        list[dict[str, Any]],
        Meta(description="per dns server: the rrset changes against its live zone"),
    ]
    plan_hash: Annotated[
        str,
        Meta(
            description="send as X-Plan-Hash with the real request to apply exactly this "
            "plan (409 plan_changed when the proxies, the zones or the domains moved)"
        ),
    ]
    certificate: Annotated[
        dict[str, Any] | None,
        Meta(description="a wildcard: the certificate codeb would order (ACME DNS-01)"),
    ] = None


class DomainStatus(Shape):
    domain: str
    status: HEALTH
    reason: str | None
    reasons: list[str]
    checked_at: str
    registry: Domain
    dns: Annotated[
        dict[str, Any],
        Meta(description="each authoritative server asked directly: AA, TTL, SOA serial"),
    ]
    proxy: Annotated[dict[str, Any], Meta(description="the route in each running Caddy")]
    tls: Annotated[dict[str, Any], Meta(description="a handshake with SNI on each proxy")]
    http: Annotated[dict[str, Any], Meta(description="the app's health through each proxy")]


class Zone(Shape):
    zone: str
    domains: int
    soa: dict[str, Any]
    nameservers: list[str]
    created_at: NULLABLE_TIME


class ZoneList(Shape):
    zones: list[Zone]
    dns_servers: list[dict[str, Any]]
