"""codeb's DNS-01 issuer against real components on loopback: Pebble (Let's Encrypt's ACME
test CA, Debian's package) validating through a real PowerDNS that codeb writes the
challenge to, and a real Caddy serving the issued wildcard certificate from files."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from dns import message as dnsmessage
from dns import query as dnsquery

from codeb.config import REPO_ROOT
from codeb.providers.dns import PowerDns, RRset, Soa
from codeb.providers.dns.challenge import Authoritative, PowerDnsTxt
from codeb.providers.proxy import CaddyOptions, LocalCaddy, Site, render_caddyfile
from codeb.providers.proxy.acme import AcmeError, issue, new_account_key
from codeb.providers.proxy.probe import tls_certificate
from tests.domains.servers import Caddy, Pdns, Pebble, caddy, pebble, powerdns

pytestmark = pytest.mark.skipif(
    not all(shutil.which(b) for b in ("pebble", "caddy", "pdns_server")),
    reason="pebble, caddy or pdns_server is not installed",
)
ZONE = "wild.example.test"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pdns, Pebble, Caddy]]:
    work = tmp_path_factory.mktemp("acme")
    with powerdns(work / "pdns") as pdns:
        with PowerDns(pdns.api_url, pdns.api_key) as api:
            api.create_zone(
                ZONE,
                Soa(mname=f"ns1.{ZONE}", rname=f"hostmaster.{ZONE}"),
                [RRset.of(ZONE, "NS", [f"ns1.{ZONE}."], 3600)],
            )
        with (
            pebble(work / "pebble", f"127.0.0.1:{pdns.dns_port}") as ca,
            caddy(work / "caddy") as c,
        ):
            yield pdns, ca, c


def publisher(pdns: Pdns) -> PowerDnsTxt:
    server = Authoritative(
        "ns-local", "127.0.0.1", pdns.dns_port, lambda: PowerDns(pdns.api_url, pdns.api_key)
    )
    return PowerDnsTxt([server], [ZONE])


def txt(pdns: Pdns, name: str) -> list:
    answer = dnsquery.udp(dnsmessage.make_query(name, "TXT"), "127.0.0.1", port=pdns.dns_port)
    return answer.answer


def test_wildcard_issued_through_powerdns_and_served_by_caddy_from_files(
    stack: tuple[Pdns, Pebble, Caddy], tmp_path: Path
) -> None:
    pdns, ca, proxy = stack
    issued = issue(
        ca.directory,
        [f"*.{ZONE}", ZONE],
        publisher(pdns),
        account_key_pem=new_account_key(),
        email="ops@example.test",
        ca_bundle=str(ca.ca_bundle),
        timeout_s=120,
    )
    assert sorted(issued.names) == sorted([f"*.{ZONE}", ZONE])
    assert "Pebble" in issued.issuer
    assert issued.not_after > issued.not_before
    assert issued.account_uri.startswith("https://127.0.0.1:")
    # The challenge records are gone again.
    assert txt(pdns, f"_acme-challenge.{ZONE}.") == []

    cert, key = tmp_path / "wild.crt", tmp_path / "wild.key"
    cert.write_text(issued.fullchain_pem)
    key.write_text(issued.key_pem)
    key.chmod(0o600)
    options = CaddyOptions(
        admin=proxy.admin, tls="internal", http_port=proxy.http_port, https_port=proxy.https_port
    )
    site = Site(
        domain=f"*.{ZONE}",
        project="shop",
        environment="production",
        upstreams=(),
        cert_file=str(cert),
        key_file=str(key),
    )
    caddyfile = render_caddyfile(REPO_ROOT / "templates", [site], options)
    assert f"tls {cert} {key}" in caddyfile
    assert LocalCaddy(proxy.config, proxy.admin, proxy.env).apply(caddyfile)

    root = tmp_path / "pebble-root.crt"
    root.write_text(ca.issuing_root())
    facts = tls_certificate("127.0.0.1", proxy.https_port, f"shop.{ZONE}", cafile=str(root))
    assert facts.trusted, facts.verify_error
    assert f"*.{ZONE}" in facts.names and "Pebble" in facts.issuer


class WrongValue(PowerDnsTxt):
    """Publishes a value the CA did not ask for (and says it is visible)."""

    def publish(self, fqdn: str, values: list[str]) -> None:
        super().publish(fqdn, ["not-the-key-authorization"])

    def visible(self, fqdn: str, values: list[str]) -> list[str]:
        return []


def test_a_failed_validation_is_the_cas_message(stack: tuple[Pdns, Pebble, Caddy]) -> None:
    pdns, ca, _ = stack
    base = publisher(pdns)
    with pytest.raises(AcmeError) as failed:
        issue(
            ca.directory,
            [f"*.{ZONE}"],
            WrongValue(base.servers, [ZONE]),
            account_key_pem=new_account_key(),
            ca_bundle=str(ca.ca_bundle),
            timeout_s=60,
        )
    message = failed.value.message
    assert "unauthorized" in message and f"{ZONE}" in message, message
    assert txt(pdns, f"_acme-challenge.{ZONE}.") == []


def test_a_name_outside_codebs_zones_is_refused_before_the_ca_is_asked(
    stack: tuple[Pdns, Pebble, Caddy],
) -> None:
    pdns, ca, _ = stack
    with pytest.raises(AcmeError) as failed:
        issue(
            ca.directory,
            ["*.elsewhere.test"],
            publisher(pdns),
            account_key_pem=new_account_key(),
            ca_bundle=str(ca.ca_bundle),
        )
    assert "no zone codeb holds contains" in failed.value.message


def test_an_unreachable_ca_is_a_clear_error(stack: tuple[Pdns, Pebble, Caddy]) -> None:
    pdns, ca, _ = stack
    with pytest.raises(AcmeError) as failed:
        issue(
            "https://127.0.0.1:1/dir",
            [f"*.{ZONE}"],
            publisher(pdns),
            account_key_pem=new_account_key(),
            ca_bundle=str(ca.ca_bundle),
        )
    assert "ConnectionError" in failed.value.message or "Connection" in failed.value.message
