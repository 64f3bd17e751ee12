"""Two authoritative servers (two real PowerDNS on loopback, 127.0.0.1 and 127.0.0.2) and
two proxies, one with an IPv6 address: codeb publishes every zone on each server (A and
AAAA rrsets), status compares their answers and names the one that disagrees or stops
answering, and a DNS-01 challenge record is checked on both. The fleet's bridge is IPv4 only
(tests/fleet disables IPv6 on it), so AAAA is checked here, against PowerDNS itself."""

from __future__ import annotations

import shutil
from contextlib import ExitStack

import pytest
from dns import flags as dnsflags
from dns import message as dnsmessage
from dns import query as dnsquery
from dns import rdatatype as dnsrdatatype

from codeb.features.domains import service as domains
from codeb.providers.dns import PowerDns, RRset
from codeb.store.models import DnsZone, Domain, DomainServer, Project, Server
from tests.domains.servers import Pdns, powerdns
from tests.support import LiveApi, live_api

pytestmark = pytest.mark.skipif(
    shutil.which("pdns_server") is None, reason="pdns_server is not installed"
)
V4, V6 = "127.0.0.21", "fd00:44::21"


@pytest.fixture
def two(tmp_path):
    with ExitStack() as stack:
        a = stack.enter_context(powerdns(tmp_path / "ns-a", "127.0.0.1"))
        b = stack.enter_context(powerdns(tmp_path / "ns-b", "127.0.0.2"))
        api = stack.enter_context(live_api(tmp_path / "data", tls="internal"))
        with api.client() as c:
            assert c.post("/api/projects", json={"name": "shop", "type": "nodejs"}).status_code
        deps = api.deps
        with deps.db.connection_context(), deps.write():
            for name, ip, role in (
                ("edge-a", V4, "proxy"),
                ("edge-b", V6, "proxy"),
                ("ns-a", "127.0.0.1", "dns"),
                ("ns-b", "127.0.0.2", "dns"),
            ):
                Server.create(name=name, ip=ip, role=role, status="ready")
            for name, pdns in (("ns-a", a), ("ns-b", b)):
                DomainServer.create(
                    server=Server.get(Server.name == name).id,
                    kind="dns",
                    api_key=deps.box.encrypt(pdns.api_key),
                    api_port=int(pdns.api_url.rsplit(":", 1)[1]),
                    dns_port=pdns.dns_port,
                    configured_hash="configured-by-this-test",
                    updated_at=deps.clock.now(),
                )
            zone = DnsZone.create(name="example.test")
            Domain.create(id="dom_shop", name="shop.example.test", zone=zone.id,
                          project=Project.get(Project.name == "shop").id,
                          environment="staging", status="active")  # fmt: skip
        yield api, {"ns-a": a, "ns-b": b}, stack


def ask(pdns: Pdns, ip: str, name: str, rtype: str) -> dnsmessage.Message:
    return dnsquery.udp(dnsmessage.make_query(name, rtype), ip, port=pdns.dns_port, timeout=3)


def publish(api: LiveApi) -> None:
    with api.deps.db.connection_context():
        proxies = [s.ip for s in domains.proxy_servers()]
        domains.DomainApplyJob()._publish(api.deps, domains.dns_servers(), proxies)


def dns_status(api: LiveApi) -> dict:
    with api.deps.db.connection_context():
        domain = Domain.get(Domain.name == "shop.example.test")
        expected = [s.ip for s in domains.proxy_servers()]
        return domains.check_dns(api.deps, domain, domains.dns_servers(), expected)


def test_records_on_each_server_with_aaaa_and_status_compares_them(two) -> None:
    api, servers, _ = two
    publish(api)
    for name, ip in (("ns-a", "127.0.0.1"), ("ns-b", "127.0.0.2")):
        pdns = servers[name]
        a = ask(pdns, ip, "shop.example.test.", "A")
        aaaa = ask(pdns, ip, "shop.example.test.", "AAAA")
        assert a.flags & dnsflags.AA and aaaa.flags & dnsflags.AA, name
        assert [r.address for rr in a.answer for r in rr] == [V4], name
        assert [r.address for rr in aaaa.answer if rr.rdtype == dnsrdatatype.AAAA for r in rr] == [
            V6
        ], name
        assert aaaa.answer[0].ttl == domains.RECORD_TTL
        ns = ask(pdns, ip, "example.test.", "NS")
        assert sorted(str(r) for rr in ns.answer for r in rr) == [
            "ns1.example.test.",
            "ns2.example.test.",
        ]
    status = dns_status(api)
    assert status["status"] == "ok", status["reasons"]
    assert status["agree"] and status["expected"] == [V4, V6]
    assert [s["addresses_v6"] for s in status["servers"]] == [[V6], [V6]]

    # ns-b says something else (a hand edit): the servers disagree and ns-b is named.
    b = servers["ns-b"]
    with PowerDns(b.api_url, b.api_key) as client:
        client.patch("example.test", [RRset.of("shop.example.test", "AAAA", ["fd00::99"])], [])
    status = dns_status(api)
    assert status["status"] == "degraded" and not status["agree"]
    assert any(r.startswith("ns-b answers") for r in status["reasons"]), status["reasons"]
    publish(api)  # the next apply puts it right
    status = dns_status(api)
    assert status["status"] == "ok" and status["agree"], status["reasons"]
    # Each server holds its own copy: ns-b took two more changes, so its serial moved on.
    assert not status["same_soa_serial"]

    # A DNS-01 challenge record is published on, and checked against, both servers.
    with api.deps.db.connection_context():
        txt = domains.challenge_publisher(api.deps, domains.dns_servers())
    fqdn = "_acme-challenge.shop.example.test."
    txt.publish(fqdn, ["token-1"])
    assert txt.visible(fqdn, ["token-1"]) == []
    assert txt.visible(fqdn, ["token-2"]) == ["ns-a", "ns-b"]
    txt.remove(fqdn)
    assert txt.visible(fqdn, ["token-1"]) == ["ns-a", "ns-b"]


def test_one_server_down_is_named(tmp_path) -> None:
    """ns-b stops: status names it; ns-a still answers, so DNS is degraded, not down."""
    with ExitStack() as stack:
        a = stack.enter_context(powerdns(tmp_path / "ns-a", "127.0.0.1"))
        b_stack = ExitStack()
        b = b_stack.enter_context(powerdns(tmp_path / "ns-b", "127.0.0.2"))
        api = stack.enter_context(live_api(tmp_path / "data", tls="internal"))
        deps = api.deps
        with api.client() as c:
            assert c.post("/api/projects", json={"name": "shop", "type": "nodejs"}).status_code
        with deps.db.connection_context(), deps.write():
            Server.create(name="edge-a", ip=V4, role="proxy", status="ready")
            for name, ip, pdns in (("ns-a", "127.0.0.1", a), ("ns-b", "127.0.0.2", b)):
                server = Server.create(name=name, ip=ip, role="dns", status="ready")
                DomainServer.create(server=server.id, kind="dns",
                                    api_key=deps.box.encrypt(pdns.api_key),
                                    api_port=int(pdns.api_url.rsplit(":", 1)[1]),
                                    dns_port=pdns.dns_port,
                                    updated_at=deps.clock.now())  # fmt: skip
            zone = DnsZone.create(name="example.test")
            Domain.create(id="dom_shop", name="shop.example.test", zone=zone.id,
                          project=Project.get(Project.name == "shop").id,
                          environment="staging", status="active")  # fmt: skip
        publish(api)
        assert dns_status(api)["status"] == "ok"
        b_stack.close()  # PowerDNS on 127.0.0.2 stops
        status = dns_status(api)
        assert status["status"] == "degraded", status
        assert "authoritative server ns-b (127.0.0.2) did not answer" in status["reasons"]
        assert [s["server"] for s in status["servers"] if s["answered"]] == ["ns-a"]
