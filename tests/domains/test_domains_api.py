"""/api/domains and /api/dns/zones over real HTTP, and `codeb domains ...` against them, on
loopback only: the proxy and dns servers are registry rows (no hosts), so these tests cover
what happens before any run: validation, refusals, the Protection Layer, listings. The runs
themselves are tested on the fleet (test_domains_fleet.py)."""

from __future__ import annotations

import pytest

from codeb.store.models import DnsZone, Domain, Operation, OperationLog, Server
from tests.cli.conftest import Result, cli, cli_env  # noqa: F401 (fixtures)
from tests.support import LiveApi, live_api


@pytest.fixture
def api(tmp_path):
    with live_api(tmp_path / "data", tls="internal") as live:
        yield live


@pytest.fixture
def shop(api: LiveApi) -> LiveApi:
    with api.client() as c:
        for name in ("shop", "blog"):
            r = c.post("/api/projects", json={"name": name, "type": "nodejs"})
            assert r.status_code == 201, r.text
    return api


def servers(api: LiveApi) -> None:
    """A proxy and a dns server as a bootstrap would leave them (registry only)."""
    with api.deps.db.connection_context(), api.deps.write():
        Server.create(name="edge1", ip="127.0.0.21", role="proxy", status="ready")
        Server.create(name="ns-a", ip="127.0.0.22", role="dns", status="ready")


def counts(api: LiveApi) -> tuple[int, ...]:
    with api.deps.db.connection_context():
        return (
            Domain.select().count(),
            DnsZone.select().count(),
            Operation.select().count(),
            OperationLog.select().where(OperationLog.operation.startswith("domain")).count(),
        )


BAD = {
    "evil.test\n": 422,
    "a..b": 422,
    ".".join(["a" * 63] * 4)[:254]: 422,
    "*.x.example.test": 409,  # valid, but this installation has no DNS-01 issuer
    "{{x}}.test": 422,
    "shop.example.test:443": 422,
}


def test_bad_names_are_refused_before_anything(shop: LiveApi) -> None:
    servers(shop)
    before = counts(shop)
    with shop.client() as c:
        for name, status in BAD.items():
            r = c.post(
                "/api/domains", json={"domain": name, "project": "shop", "environment": "staging"}
            )
            assert r.status_code == status, (name, r.text)
            code = "validation_failed" if status == 422 else "conflict"
            assert r.json()["error"]["code"] == code, r.text
        r = c.post("/api/domains", json={"domain": "x.test", "project": "shop",
                                          "environment": "staging", "extra": 1})  # fmt: skip
        assert r.status_code == 422
        r = c.post("/api/domains", json={"domain": "x.test", "project": "nope",
                                          "environment": "staging"})  # fmt: skip
        assert r.status_code == 404
    assert counts(shop) == before


def test_another_projects_domain_is_a_conflict(shop: LiveApi) -> None:
    servers(shop)
    with shop.deps.db.connection_context(), shop.deps.write():
        zone = DnsZone.create(name="example.test")
        project = next(p for p in __import__("codeb.store.models").store.models.Project.select()
                       if p.name == "shop")  # fmt: skip
        Domain.create(id="dom_1", name="shop.example.test", zone=zone.id, project=project.id,
                      environment="staging", status="active")  # fmt: skip
    before = counts(shop)
    with shop.client() as c:
        r = c.post("/api/domains", json={"domain": "SHOP.example.test.", "project": "blog",
                                          "environment": "staging"})  # fmt: skip
        assert r.status_code == 409, r.text
        assert "another project" in r.json()["error"]["message"]
        assert "shop" not in r.json()["error"]["message"].replace("shop.example.test", "")
        listed = c.get("/api/domains").json()["domains"]
        assert [d["domain"] for d in listed] == ["shop.example.test"]
        assert c.get("/api/domains/shop.example.test").json()["project"] == "shop"
        assert c.get("/api/domains/nope.example.test").status_code == 404
        assert c.get("/api/domains/nope.example.test/status").status_code == 404
        zones = c.get("/api/dns/zones").json()
        assert zones["zones"][0]["zone"] == "example.test"
        assert zones["zones"][0]["soa"]["negative_ttl"] == 60
        # Delete is MEDIUM: a confirm token, nothing done yet.
        r = c.delete("/api/domains/shop.example.test")
        assert r.status_code == 202 and r.json()["status"] == "confirmation_required", r.text
    with shop.deps.db.connection_context():
        assert Domain.get(Domain.name == "shop.example.test").status == "active"
    assert counts(shop)[:3] == before[:3]


def test_no_proxy_or_dns_server_is_a_conflict_naming_them(shop: LiveApi) -> None:
    with shop.client() as c:
        r = c.post("/api/domains", json={"domain": "shop.example.test", "project": "shop",
                                          "environment": "staging"})  # fmt: skip
    assert r.status_code == 409
    assert r.json()["error"]["details"]["missing_roles"] == ["proxy", "dns"]
    assert counts(shop)[:3] == (0, 0, 0)


def test_cli_lists_and_refuses(shop: LiveApi, cli) -> None:  # noqa: F811
    servers(shop)
    r: Result = cli("domains", "list")
    assert r.code == 0 and r.out.strip() == "(none)"
    assert cli("domains", "list", "--json").json() == {"domains": []}
    r = cli("domains", "add", "a..b", "shop", "staging")
    assert r.code == 2 and "[validation_failed]" in r.err
    r = cli("domains", "zones", "--json")
    assert r.code == 0 and r.json()["zones"] == []
    r = cli("domains", "status", "nope.example.test")
    assert r.code == 2 and "[not_found]" in r.err


def test_certificate_warning_in_the_list_and_in_metrics(shop: LiveApi) -> None:
    import datetime as dt

    from codeb.features.domains import service as domains
    from codeb.store.models import Project

    servers(shop)
    now = shop.deps.clock.now()
    with shop.deps.db.connection_context(), shop.deps.write():
        zone = DnsZone.create(name="example.test")
        project = Project.get(Project.name == "shop")
        for name, issuer, left in (
            (
                "soon.example.test",
                "Caddy Local Authority - ECC Intermediate",
                dt.timedelta(hours=2),
            ),
            (
                "fine.example.test",
                "Caddy Local Authority - ECC Intermediate",
                dt.timedelta(hours=11),
            ),
            ("acme.example.test", "R11", dt.timedelta(days=10)),
        ):
            Domain.create(id=f"dom_{name[:4]}", name=name, zone=zone.id, project=project.id,
                          environment="staging", status="active", cert_issuer=issuer,
                          cert_not_after=now + left, cert_checked_at=now)  # fmt: skip
    with shop.client() as c:
        listed = {d["domain"]: d["certificate"] for d in c.get("/api/domains").json()["domains"]}
    assert listed["soon.example.test"]["expiring_soon"] and listed["soon.example.test"]["warning"]
    assert not listed["fine.example.test"]["expiring_soon"]
    assert listed["acme.example.test"]["expiring_soon"]  # ACME: warned 14 days ahead
    with shop.deps.db.connection_context():
        families = {f.name: f for f in domains.METRICS.collect(shop.deps)}
    expiring = {
        s.labels["domain"]: s.value for s in families["codeb_domain_certificate_expiring"].samples
    }
    assert expiring == {
        "soon.example.test": 1.0,
        "fine.example.test": 0.0,
        "acme.example.test": 1.0,
    }
    active = [s for s in families["codeb_domains"].samples if s.labels["status"] == "active"]
    assert active[0].value == 3
    # codeb's own DNS-01 orders: failing since the last success, or fine again.
    from codeb.store.models import DomainCertificate

    with shop.deps.db.connection_context(), shop.deps.write():
        DomainCertificate.create(
            name="*.a.example.test",
            names="[]",
            issued_at=now,
            last_error="boom",
            last_error_at=now + dt.timedelta(hours=1),
        )
        DomainCertificate.create(
            name="*.b.example.test",
            names="[]",
            issued_at=now,
            last_error="old",
            last_error_at=now - dt.timedelta(days=1),
        )
    with shop.deps.db.connection_context():
        families = {f.name: f for f in domains.METRICS.collect(shop.deps)}
    failing = {
        s.labels["domain"]: s.value
        for s in families["codeb_domain_certificate_order_failing"].samples
    }
    assert failing == {"*.a.example.test": 1.0, "*.b.example.test": 0.0}


def test_preview_plan_hash_applies_only_the_previewed_plan(shop: LiveApi) -> None:
    from codeb.store.models import Project

    servers(shop)
    body = {"domain": "next.example.test", "project": "shop", "environment": "staging"}
    with shop.client() as c:
        first = c.post("/api/domains", json=body, params={"preview": "true"})
        assert first.status_code == 200, first.text
        plan = first.json()["plan_hash"]
        assert len(plan) == 64
        again = c.post("/api/domains", json=body, params={"preview": "true"}).json()
        assert again["plan_hash"] == plan  # nothing moved: the same plan
        # Malformed: refused before anything is read.
        r = c.post("/api/domains", json=body, headers={"X-Plan-Hash": "nope"})
        assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "X-Plan-Hash"
    # Another domain lands in between: the Caddyfile it would place is not the previewed one.
    with shop.deps.db.connection_context(), shop.deps.write():
        zone = DnsZone.create(name="example.test")
        Domain.create(id="dom_other", name="other.example.test", zone=zone.id,
                      project=Project.get(Project.name == "blog").id, environment="staging",
                      status="active")  # fmt: skip
    before = counts(shop)
    with shop.client() as c:
        r = c.post("/api/domains", json=body, headers={"X-Plan-Hash": plan})
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "plan_changed"
        fresh = r.json()["error"]["details"]["current_plan_hash"]
        assert counts(shop) == before
        preview = c.post("/api/domains", json=body, params={"preview": "true"}).json()
        assert preview["plan_hash"] == fresh
        assert "+other.example.test {" in preview["caddyfile"][0]["diff"]
        # A delete is previewed and bound the same way (stale: 409 before any confirm token).
        gone = c.delete("/api/domains/other.example.test", params={"preview": "true"}).json()
        r = c.delete("/api/domains/other.example.test", headers={"X-Plan-Hash": "0" * 64})
        assert r.status_code == 409 and r.json()["error"]["code"] == "plan_changed"
        r = c.delete("/api/domains/other.example.test", headers={"X-Plan-Hash": gone["plan_hash"]})
        assert r.status_code == 202 and r.json()["status"] == "confirmation_required", r.text
        # The fresh plan applies.
        r = c.post("/api/domains", json=body, headers={"X-Plan-Hash": fresh})
        assert r.status_code == 202, r.text
    with shop.deps.db.connection_context():
        assert Domain.get(Domain.name == "next.example.test").status in ("pending", "failed")


def test_wildcard_with_the_dns01_issuer_is_previewed_with_its_certificate(tmp_path) -> None:
    with live_api(tmp_path / "data", tls="internal", acme_dns_provider="powerdns") as api:
        with api.client() as c:
            r = c.post("/api/projects", json={"name": "shop", "type": "nodejs"})
            assert r.status_code == 201, r.text
        servers(api)
        with api.client() as c:
            r = c.post(
                "/api/domains",
                json={"domain": "*.Wild.example.test", "project": "shop", "environment": "staging"},
                params={"preview": "true"},
            )
        assert r.status_code == 200, r.text
        preview = r.json()
        assert preview["domain"] == "*.wild.example.test"
        assert preview["certificate"]["issuer_kind"] == "codeb_dns01"
        # No certificate yet: the site is not in the Caddyfile until one is issued; its
        # records are (the CA's lookups need them first).
        assert "*.wild.example.test" not in preview["caddyfile"][0]["diff"]
        names = {ch.get("name") for ch in preview["rrsets"][0]["changes"]}
        assert "*.wild.example.test." in names
