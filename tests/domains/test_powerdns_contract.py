"""The PowerDNS client against a real pdns_server (gsqlite3) on loopback: what codeb writes is
what an authoritative query answers, with the AA flag and codeb's own SOA."""

from __future__ import annotations

import logging
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from codeb.providers.dns import DnsAuthFailed, DnsRejected, DnsUnavailable, PowerDns, RRset, Soa
from tests.domains.servers import Pdns, powerdns
from tests.support import free_port

pytestmark = pytest.mark.skipif(
    not Path("/usr/sbin/pdns_server").exists(), reason="pdns-server is not installed"
)

ZONE = "example.test."
SOA = Soa(mname="ns1.example.test.", rname="hostmaster.example.test.", minimum=60)
NS = [RRset.of("example.test", "NS", ["ns1.example.test."], ttl=3600),
      RRset.of("ns1.example.test", "A", ["192.0.2.53"], ttl=3600)]  # fmt: skip


@pytest.fixture(scope="module")
def pdns(tmp_path_factory: pytest.TempPathFactory):
    with powerdns(tmp_path_factory.mktemp("pdns")) as server:
        yield server


def ask(server: Pdns, name: str, rtype: str) -> dns.message.Message:
    query = dns.message.make_query(name, rtype)
    return dns.query.udp(query, "127.0.0.1", port=server.dns_port, timeout=2)


def test_zone_with_codebs_soa_and_records_answered_authoritatively(pdns: Pdns) -> None:
    with PowerDns(pdns.api_url, pdns.api_key, name="dns1") as client:
        assert client.create_zone(ZONE, SOA, NS) is True
        assert ZONE in client.list_zones()
        client.patch(ZONE, [RRset.of("shop.example.test", "A", ["192.0.2.10"], ttl=60)], [])
        answer = ask(pdns, "shop.example.test.", "A")
        assert answer.flags & dns.flags.AA
        assert answer.rcode() == dns.rcode.NOERROR
        (rrset,) = answer.answer
        assert [r.address for r in rrset] == ["192.0.2.10"] and rrset.ttl == 60
        soa = ask(pdns, ZONE, "SOA").answer[0][0]
        assert str(soa.mname) == "ns1.example.test." and soa.minimum == 60
        # A missing name: NXDOMAIN whose negative TTL is codeb's 60 s, not PowerDNS's 3600.
        missing = ask(pdns, "nothing.example.test.", "A")
        assert missing.rcode() == dns.rcode.NXDOMAIN
        assert missing.authority[0].ttl <= 60

        serial_before = soa.serial
        client.patch(ZONE, [RRset.of("shop.example.test", "A", ["192.0.2.11"])], [])
        assert [r.address for r in ask(pdns, "shop.example.test.", "A").answer[0]] == ["192.0.2.11"]
        assert ask(pdns, ZONE, "SOA").answer[0][0].serial > serial_before

        client.patch(ZONE, [], [("shop.example.test", "A")])
        assert ask(pdns, "shop.example.test.", "A").rcode() == dns.rcode.NXDOMAIN
        rrsets = {(r.name, r.type) for r in client.get_rrsets(ZONE)}
        assert ("shop.example.test.", "A") not in rrsets and (ZONE, "SOA") in rrsets


def test_existing_zone_gets_codebs_soa(pdns: Pdns) -> None:
    with PowerDns(pdns.api_url, pdns.api_key) as client:
        ns = [RRset.of("again.test", "NS", ["ns1.example.test."])]
        client.create_zone("again.test.", SOA, ns)
        other = Soa(mname="ns2.example.test.", rname="hostmaster.example.test.", minimum=30)
        assert client.create_zone("again.test.", other, []) is False
        soa = ask(pdns, "again.test.", "SOA").answer[0][0]
        assert str(soa.mname) == "ns2.example.test." and soa.minimum == 30
        assert client.delete_zone("again.test.") is True
        assert client.delete_zone("again.test.") is False
        assert client.get_rrsets("again.test.") is None


def test_errors_are_codebs_and_never_show_the_key(
    pdns: Pdns, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with PowerDns(pdns.api_url, "wrong-" + pdns.api_key) as bad:
        with pytest.raises(DnsAuthFailed) as auth:
            bad.list_zones()
    with PowerDns(pdns.api_url, pdns.api_key) as client:
        client.create_zone(ZONE, SOA, NS)
        # All or nothing: one out-of-zone rrset rejects the whole PATCH.
        with pytest.raises(DnsRejected) as rejected:
            client.patch(
                ZONE,
                [
                    RRset.of("ok.example.test", "A", ["192.0.2.1"]),
                    RRset.of("elsewhere.invalid", "A", ["192.0.2.2"]),
                ],
                [],
            )
        assert "ok.example.test." not in {r.name for r in client.get_rrsets(ZONE)}
    with PowerDns(f"http://127.0.0.1:{free_port()}", pdns.api_key, timeout_s=1) as down:
        with pytest.raises(DnsUnavailable):
            down.list_zones()
    for exc in (auth.value, rejected.value):
        assert pdns.api_key not in exc.message and pdns.api_key not in str(exc.details)
    assert rejected.value.status == 502 and "rejected" in rejected.value.message
    assert pdns.api_key not in caplog.text
