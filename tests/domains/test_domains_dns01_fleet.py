"""Domains on the real fleet with two proxy and two dns hosts and codeb's DNS-01 issuer
against Pebble (Let's Encrypt's ACME test CA) on this machine's loopback; Pebble asks the
first dns host directly, codeb checks the challenge record on both before telling it.

- A wildcard is ordered by codeb (DNS-01), its files placed on both proxies (key 0640
  root:caddy) and served: HTTPS through each proxy verifies against Pebble's root and reaches
  the app; both authoritative servers answer both proxies' addresses with AA and agree.
- Status compares the two dns servers and names the one that stops answering.
- An order that fails (the CA is gone) leaves that wildcard failed with the error and when,
  in the domain and in status, and the other sites serving.
- Removing a wildcard (previewed, bound to its plan hash, confirmed) takes its certificate
  out of the database and its files off both proxies.

The tests of this module run in order and build on each other."""

from __future__ import annotations

import calendar
import ipaddress
import os
import signal
import subprocess
import time

import pytest

from codeb.clock import SystemClock
from codeb.store.models import Domain, DomainCertificate
from tests.domains.servers import pebble
from tests.domains.test_domains_fleet import add, addresses, ask, finished, status_of
from tests.executor.helpers import wait_operation
from tests.fleet import fleet as fleetlib
from tests.support import live_api

pytestmark = pytest.mark.fleet

APP = "localhost/codeb-test-app"
EDGE = {
    "edge2-proxy-a": "proxy",
    "edge2-proxy-b": "proxy",
    "edge2-dns-a": "dns",
    "edge2-dns-b": "dns",
}
WILD = "*.shop.example.test"


@pytest.fixture(scope="module")
def edge2(fleet, tmp_path_factory):
    cfg = fleet.config
    apt_proxy = fleetlib.apt_proxy_up(cfg)
    specs = [(name, "bare") for name in EDGE]
    work = tmp_path_factory.mktemp("dns01")
    try:
        hosts = {h.name: h for h in fleetlib.add_hosts(specs, cfg)}
        net = str(ipaddress.ip_network(f"{fleet.hosts[0].ip}/24", strict=False))
        with pebble(work / "pebble", f"{hosts['edge2-dns-a'].ip}:53") as ca:
            # One file codeb trusts for Pebble: its listener and the root it issues under.
            bundle = work / "pebble-trust.pem"
            bundle.write_text(ca.ca_bundle.read_text() + ca.issuing_root())
            with live_api(
                work / "data",
                clock=SystemClock(),
                allowed_networks=net,
                ssh_private_key_file=fleet.key_path,
                apt_proxy=apt_proxy,
                tls="internal",
                acme_dns_provider="powerdns",
                acme_directory=ca.directory,
                acme_ca_bundle=bundle,
                acme_email="ops@example.test",
            ) as api:
                with api.client() as c:
                    ops = [
                        c.post("/api/servers", json={"name": h.name, "ip": h.ip, "role": h.name})
                        for h in fleet
                    ] + [
                        c.post("/api/servers", json={"name": n, "ip": hosts[n].ip, "role": r})
                        for n, r in EDGE.items()
                    ]
                    for r in ops:
                        assert r.status_code == 202, r.text
                        op = wait_operation(c, r.json()["operation"]["id"], timeout=900)
                        assert op["status"] == "succeeded", op
                    r = c.post("/api/projects", json={"name": "shop", "type": "nodejs"})
                    assert r.status_code == 201, r.text
                    r = c.post(
                        "/api/containers/deploy",
                        json={"project": "shop", "environment": "staging", "image": f"{APP}:v1"},
                    )
                    assert r.status_code == 202, r.text
                    op = wait_operation(c, r.json()["result"]["operation"]["id"], timeout=600)
                    assert op["status"] == "succeeded", op
                yield api, hosts, ca, bundle
    finally:
        fleetlib.remove_hosts([n for n, _ in specs], cfg)
        fleetlib.apt_proxy_down(cfg)
        for host in fleet:
            host.ssh(
                "systemctl stop 'shop-*' 2>/dev/null; rm -f /etc/containers/systemd/shop-*; "
                "systemctl daemon-reload; podman rm -af >/dev/null 2>&1; "
                "podman volume prune -f >/dev/null 2>&1; rm -rf /etc/codeb/env/shop-* "
                "/etc/codeb/redis/shop-*"
            )


def curl(proxy_ip: str, name: str, cafile, path: str = "/health") -> subprocess.CompletedProcess:
    return subprocess.run(
        ["curl", "-sS", "--max-time", "10", "--resolve", f"{name}:443:{proxy_ip}",
         "--cacert", str(cafile), f"https://{name}{path}"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_wildcard_ordered_by_codeb_and_served_by_both_proxies(edge2):
    api, hosts, _, bundle = edge2
    proxies = [hosts["edge2-proxy-a"], hosts["edge2-proxy-b"]]
    t0 = time.monotonic()
    op = finished(api, add(api, WILD), timeout=600)
    assert op["status"] == "succeeded", op
    elapsed = time.monotonic() - t0
    issued = op["result"]["certificates"][WILD]
    assert issued["issued"] and "Pebble" in issued["issuer"], issued
    print(f"wildcard with DNS-01 on 2 dns + 2 proxies: {elapsed:.1f} s "
          f"(order {issued['seconds']} s)")  # fmt: skip

    # Both authoritative servers: both proxies' addresses, AA, the same answer.
    for dns_host in (hosts["edge2-dns-a"], hosts["edge2-dns-b"]):
        answer = ask(dns_host.ip, "anything.shop.example.test.")
        assert answer.flags & 0x0400, dns_host.name  # AA
        assert addresses(answer) == sorted(p.ip for p in proxies), dns_host.name
        # The challenge record is gone again.
        assert ask(dns_host.ip, "_acme-challenge.shop.example.test.", "TXT").answer == []

    # Served from the files codeb placed, on both proxies, verifying against Pebble's root.
    for proxy in proxies:
        deadline = time.monotonic() + 60
        while True:
            got = curl(proxy.ip, "a.shop.example.test", bundle)
            if got.stdout.strip() == "ok" or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert got.returncode == 0 and got.stdout.strip() == "ok", (proxy.name, got.stderr)
        files = proxy.ssh("stat -c '%n %a %U:%G' /etc/caddy/codeb-certs/*", check=True).stdout
        key_line = next(line for line in files.splitlines() if line.split()[0].endswith(".key"))
        assert key_line.split()[1:] == ["640", "root:caddy"], files
        assert "wildcard.shop.example.test-" in files

    status = status_of(api, WILD)
    assert status["status"] == "ok", status["reasons"]
    assert status["dns"]["agree"] and len(status["dns"]["servers"]) == 2
    assert all(s["aa"] and s["matches_expected"] for s in status["dns"]["servers"])
    assert len(status["proxy"]["servers"]) == 2 and status["proxy"]["status"] == "ok"
    tls = status["tls"]
    assert tls["issuance"]["issuer_kind"] == "codeb_dns01" and tls["issuance"]["last_error"] is None
    assert all(s["trusted"] and s["covers"] for s in tls["servers"]), tls["servers"]
    assert all(s["health_status"] == 200 for s in status["http"]["servers"])
    # The key is stored encrypted.
    with api.deps.db.connection_context():
        cert = DomainCertificate.get(DomainCertificate.name == WILD)
    assert "PRIVATE KEY" not in cert.private_key
    assert "PRIVATE KEY" in api.deps.box.decrypt(cert.private_key)


def test_status_names_the_dns_server_that_stopped(edge2):
    api, hosts, _, _ = edge2
    dns_b = hosts["edge2-dns-b"]
    dns_b.ssh("systemctl stop pdns", check=True)
    try:
        status = status_of(api, WILD)
        assert status["dns"]["status"] == "degraded", status["dns"]
        assert f"edge2-dns-b ({dns_b.ip}) did not answer" in " ".join(status["reasons"])
        answered = [s for s in status["dns"]["servers"] if s["answered"]]
        assert [s["server"] for s in answered] == ["edge2-dns-a"]
        assert status["status"] == "degraded"
    finally:
        dns_b.ssh("systemctl start pdns", check=True)


def test_a_failed_order_is_the_domains_error_with_its_time(edge2):
    api, hosts, ca, _ = edge2
    os.kill(ca.pid, signal.SIGTERM)  # the CA is gone (our own Pebble, by its PID)
    before = time.time()
    op = finished(api, add(api, "*.api.example.test"), timeout=600)
    assert op["status"] == "succeeded", op  # the other sites were applied
    result = op["result"]["certificates"]["*.api.example.test"]
    assert not result["issued"] and "Connection" in result["error"], result
    with api.deps.db.connection_context():
        domain = Domain.get(Domain.name == "*.api.example.test")
    assert domain.status == "failed" and "no certificate" in domain.last_error
    status = status_of(api, "*.api.example.test")
    issuance = status["tls"]["issuance"]
    assert "Connection" in issuance["last_error"], issuance
    at = calendar.timegm(time.strptime(issuance["last_error_at"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert before - 5 <= at <= time.time() + 5
    assert issuance["next_attempt_at"] > issuance["last_error_at"]
    # The wildcard that has its certificate still serves.
    got = curl(hosts["edge2-proxy-a"].ip, "a.shop.example.test", edge2[3])
    assert got.stdout.strip() == "ok", got.stderr


def test_removing_a_wildcard_takes_its_certificate_along(edge2):
    api, hosts, _, _ = edge2
    with api.client() as c:
        preview = c.delete(f"/api/domains/{WILD}", params={"preview": "true"})
        assert preview.status_code == 200, preview.text
        plan = {"X-Plan-Hash": preview.json()["plan_hash"]}
        asked = c.delete(f"/api/domains/{WILD}", headers=plan)
        assert asked.status_code == 202 and asked.json()["status"] == "confirmation_required"
        confirmed = c.delete(
            f"/api/domains/{WILD}",
            headers={**plan, "X-Confirm-Token": asked.json()["confirm_token"]},
        )
        assert confirmed.status_code == 202, confirmed.text
        body = confirmed.json().get("result", confirmed.json())
        op = wait_operation(c, body["operation"]["id"], timeout=600)
    assert op["status"] == "succeeded", op
    with api.deps.db.connection_context():
        assert DomainCertificate.get_or_none(DomainCertificate.name == WILD) is None
    for name in ("edge2-proxy-a", "edge2-proxy-b"):
        left = hosts[name].ssh("ls /etc/caddy/codeb-certs/", check=True).stdout
        assert "wildcard.shop.example.test" not in left, (name, left)
    for name in ("edge2-dns-a", "edge2-dns-b"):
        assert ask(hosts[name].ip, "a.shop.example.test.").rcode() == 3  # NXDOMAIN
