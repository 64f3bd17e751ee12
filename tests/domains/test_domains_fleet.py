"""Domains end to end on the real fleet: a bare proxy host (Caddy) and a bare dns host
(PowerDNS) bootstrapped by codeb, in front of a staging app deployed by codeb.

- `dig @dns shop.example.test A` answers the proxy's address with the AA flag; HTTPS through
  the proxy (curl --resolve, the internal CA's root) reaches the app's /health; status ok.
- A Caddyfile Caddy refuses leaves the old one serving; the operation fails with its message.
- 20 domains added at once: all in DNS and in the running Caddy, none lost.
- Bad names and another project's domain are refused with nothing changed on any host.
- Stopping the app makes status degraded (HTTP); stopping PowerDNS names the server.

The tests of this module run in order and build on each other."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import shlex
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rdatatype
import pytest

from codeb.clock import SystemClock
from codeb.features.domains import service as domains
from codeb.providers.proxy import hosts_in_config
from codeb.services.context import Actor
from codeb.store.models import Domain, DomainServer, Operation
from tests.executor.helpers import wait_operation
from tests.fleet import fleet as fleetlib
from tests.support import live_api

pytestmark = pytest.mark.fleet

APP = "localhost/codeb-test-app"
EDGE = {"edge-proxy": "proxy", "edge-dns": "dns"}
ADMIN = Actor(key_id=None, key_name="domains-test", role="admin", principal="domains-test")
TIMINGS_FILE = os.environ.get("CODEB_DOMAINS_TIMINGS")
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def edge(fleet, tmp_path_factory):
    """The fleet's app/db/cache hosts and two bare hosts (proxy, dns) registered and
    bootstrapped through the API, and a project with its staging app deployed."""
    cfg = fleet.config
    apt_proxy = fleetlib.apt_proxy_up(cfg)
    specs = [(name, "bare") for name in EDGE]
    try:
        hosts = {h.name: h for h in fleetlib.add_hosts(specs, cfg)}
        net = str(ipaddress.ip_network(f"{fleet.hosts[0].ip}/24", strict=False))
        with live_api(
            tmp_path_factory.mktemp("domains"),
            clock=SystemClock(),
            allowed_networks=net,
            ssh_private_key_file=fleet.key_path,
            apt_proxy=apt_proxy,
            tls="internal",
        ) as api:
            with api.client() as c:
                t0 = time.monotonic()
                ops = [
                    c.post("/api/servers", json={"name": h.name, "ip": h.ip, "role": h.name})
                    for h in fleet
                ] + [
                    c.post("/api/servers", json={"name": n, "ip": hosts[n].ip, "role": role})
                    for n, role in EDGE.items()
                ]
                for r in ops:
                    assert r.status_code == 202, r.text
                    op = wait_operation(c, r.json()["operation"]["id"], timeout=900)
                    assert op["status"] == "succeeded", op
                TIMINGS["bootstrap_5_hosts_s"] = time.monotonic() - t0
                for name in ("shop", "blog"):
                    r = c.post("/api/projects", json={"name": name, "type": "nodejs"})
                    assert r.status_code == 201, r.text
                r = c.post(
                    "/api/containers/deploy",
                    json={"project": "shop", "environment": "staging", "image": f"{APP}:v1"},
                )
                assert r.status_code == 202, r.text
                op = wait_operation(c, r.json()["result"]["operation"]["id"], timeout=600)
                assert op["status"] == "succeeded", op
            yield api, hosts
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
        if TIMINGS_FILE:
            Path(TIMINGS_FILE).write_text(
                "".join(f"{k}\t{v:.2f}\n" for k, v in sorted(TIMINGS.items()))
            )


@dataclass
class Reply:
    status: int
    body: dict


def add(api, name: str, project: str = "shop", environment: str = "staging", preview=False):
    """POST /api/domains, as a client would."""
    with api.client() as c:
        r = c.post(
            "/api/domains",
            json={"domain": name, "project": project, "environment": environment},
            params={"preview": "true"} if preview else None,
        )
    return Reply(r.status_code, r.json())


def remove(api, name: str) -> Reply:
    """DELETE (MEDIUM): asked, then repeated with the confirm token, as a person would."""
    with api.client() as c:
        asked = c.delete(f"/api/domains/{name}")
        assert asked.status_code == 202, asked.text
        assert asked.json()["status"] == "confirmation_required", asked.text
        token = asked.json()["confirm_token"]
        r = c.delete(f"/api/domains/{name}", headers={"X-Confirm-Token": token})
    return Reply(r.status_code, r.json())


def status_of(api, name: str) -> dict:
    with api.client() as c:
        r = c.get(f"/api/domains/{name}/status", timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def finished(api, answer: Reply, timeout: float = 300) -> dict:
    assert answer.status in (200, 202), answer.body
    body = answer.body.get("result", answer.body)
    with api.client() as c:
        return wait_operation(c, body["operation"]["id"], timeout=timeout)


def ask(ip: str, name: str, rtype: str = "A") -> dns.message.Message:
    return dns.query.udp(dns.message.make_query(name, rtype), ip, timeout=3)


def addresses(answer: dns.message.Message) -> list[str]:
    return sorted(r.address for rr in answer.answer if rr.rdtype == dns.rdatatype.A for r in rr)


def remote_get(host, url: str, key: str | None = None) -> str:
    """GET `url` from inside `host` (bare hosts have python3, not curl): the body, or the
    HTTP status / the error's name when there is no 2xx answer."""
    script = (
        "import sys, urllib.request, urllib.error\n"
        "req = urllib.request.Request(sys.argv[1])\n"
        "if len(sys.argv) > 2: req.add_header('X-API-Key', sys.stdin.read().strip())\n"
        "try: print(urllib.request.urlopen(req, timeout=5).read().decode())\n"
        "except urllib.error.HTTPError as e: print(e.code)\n"
        "except Exception as e: print(type(e).__name__)\n"
    )
    args = f"python3 -c {shlex.quote(script)} {shlex.quote(url)}" + (" key" if key else "")
    return host.ssh(args, check=True, input=key).stdout.strip()


def running_hosts(proxy) -> dict[str, list[str]]:
    return hosts_in_config(json.loads(remote_get(proxy, "http://localhost:2019/config/")))


def caddyfile_digest(proxy) -> str:
    return hashlib.sha256(
        proxy.ssh("cat /etc/caddy/Caddyfile", check=True).stdout.encode()
    ).hexdigest()


def curl_health(proxy, name: str, tmp: Path) -> subprocess.CompletedProcess:
    root = tmp / "root.crt"
    root.write_text(
        proxy.ssh(
            "cat /var/lib/caddy/.local/share/caddy/pki/authorities/local/root.crt", check=True
        ).stdout
    )
    return subprocess.run(
        [
            "curl",
            "-sS",
            "--max-time",
            "10",
            "--resolve",
            f"{name}:443:{proxy.ip}",
            "--cacert",
            str(root),
            f"https://{name}/health",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_domain_served_end_to_end(edge, tmp_path):
    api, hosts = edge
    proxy, dns_host = hosts["edge-proxy"], hosts["edge-dns"]
    t0 = time.monotonic()
    op = finished(api, add(api, "shop.example.test"))
    TIMINGS["first_domain_add_s"] = time.monotonic() - t0
    assert op["status"] == "succeeded", op

    # dig, as the issue says: the proxy's address, with the AA flag.
    dug = subprocess.run(
        ["dig", f"@{dns_host.ip}", "shop.example.test", "A", "+norecurse", "+time=3"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert " aa" in dug.stdout.split("flags:", 1)[1].split(";", 1)[0], dug.stdout
    assert f"shop.example.test.\t60\tIN\tA\t{proxy.ip}" in dug.stdout, dug.stdout
    answer = ask(dns_host.ip, "shop.example.test.")
    assert answer.flags & dns.flags.AA
    assert addresses(answer) == [proxy.ip]
    assert answer.answer[0].ttl == domains.RECORD_TTL
    soa = ask(dns_host.ip, "example.test.", "SOA").answer[0][0]
    assert str(soa.mname) == "ns1.example.test." and soa.minimum == domains.NEGATIVE_TTL

    # HTTPS through the proxy, trusting only the proxy's internal CA, reaches the app.
    deadline = time.monotonic() + 60
    while True:
        got = curl_health(proxy, "shop.example.test", tmp_path)
        if (got.returncode == 0 and got.stdout.strip() == "ok") or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert got.returncode == 0 and got.stdout.strip() == "ok", (got.stdout, got.stderr)

    t0 = time.monotonic()
    status = status_of(api, "shop.example.test")
    TIMINGS["status_s"] = time.monotonic() - t0
    assert status["status"] == "ok", status["reasons"]
    for part in ("dns", "proxy", "tls", "http"):
        assert status[part]["status"] == "ok" and status[part]["checked_at"], status[part]
    (dns_answer,) = status["dns"]["servers"]
    assert dns_answer["aa"] and dns_answer["addresses"] == [proxy.ip] and dns_answer["soa_serial"]
    (tls,) = status["tls"]["servers"]
    assert tls["trusted"] and tls["internal_ca"] and tls["covers"] and 0 < tls["days_left"] < 1
    (http,) = status["http"]["servers"]
    assert http["health_status"] == 200 and http["redirects_to_https"]

    # The PowerDNS key is stored encrypted, and pdns.conf holding it is 0600 for pdns.
    with api.deps.db.connection_context():
        state = DomainServer.get(DomainServer.kind == "dns")
        key = api.deps.box.decrypt(state.api_key)
    assert key not in state.api_key
    mode = dns_host.ssh("stat -c '%a %U' /etc/powerdns/pdns.conf", check=True).stdout.split()
    assert mode == ["600", "pdns"]
    with api.deps.db.connection_context():
        events = [e.data for e in Operation.get_by_id(op["id"]).events]
    assert key not in repr(events)
    # The API answers codeb's address only: not the proxy host next to it.
    api_url = f"http://{dns_host.ip}:{domains.PDNS_API_PORT}/api/v1/servers"
    refused = remote_get(proxy, api_url, key)
    assert "localhost" not in refused and refused != "200", refused

    # Unchanged: another apply runs no playbook at all.
    with api.deps.db.connection_context(), api.deps.write():
        again = domains.operations.create_operation(
            api.deps, ADMIN, domains.APPLY, domains._apply_targets(), {}
        )
    domains.operations.dispatch(api.deps, again.id)
    with api.client() as c:
        op = wait_operation(c, again.id)
    assert op["status"] == "succeeded" and op["result"]["proxy"]["changed"] == [], op


def test_preview_changes_nothing(edge):
    api, hosts = edge
    before = caddyfile_digest(hosts["edge-proxy"])
    answer = add(api, "preview.example.test", preview=True)
    assert answer.status == 200
    (proxy_diff,) = answer.body["caddyfile"]
    assert "+preview.example.test {" in proxy_diff["diff"]
    (records,) = answer.body["rrsets"]
    wanted = {
        "zone": "example.test.",
        "name": "preview.example.test.",
        "type": "A",
        "ttl": 60,
        "changetype": "REPLACE",
        "records": [hosts["edge-proxy"].ip],
    }
    assert wanted in records["changes"], records
    assert caddyfile_digest(hosts["edge-proxy"]) == before
    assert ask(hosts["edge-dns"].ip, "preview.example.test.").rcode() != 0
    with api.deps.db.connection_context():
        assert Domain.get_or_none(Domain.name == "preview.example.test") is None


def test_refused_caddyfile_leaves_the_old_one_serving(edge, tmp_path, monkeypatch):
    api, hosts = edge
    proxy = hosts["edge-proxy"]
    before = caddyfile_digest(proxy)
    good = domains.render_config

    def broken(deps, sites):
        return (
            good(deps, sites)
            + "\nbroken.example.test {\n\treverse_proxy {\n\t\tno_such_option 1\n\t}\n}\n"
        )

    monkeypatch.setattr(domains, "render_config", broken)
    op = finished(api, add(api, "next.example.test"))
    monkeypatch.setattr(domains, "render_config", good)
    assert op["status"] == "failed"
    assert "Caddy refused the configuration" in op["error"] and "no_such_option" in op["error"], op
    assert caddyfile_digest(proxy) == before
    got = curl_health(proxy, "shop.example.test", tmp_path)
    assert got.stdout.strip() == "ok", got.stderr
    with api.deps.db.connection_context():
        row = Domain.get(Domain.name == "next.example.test")
    assert row.status == "failed" and "no_such_option" in row.last_error
    # Records were published first (before any certificate); the next apply serves it.
    assert addresses(ask(hosts["edge-dns"].ip, "next.example.test.")) == [proxy.ip]
    op = finished(api, remove(api, "next.example.test"))
    assert op["status"] == "succeeded", op
    assert "next.example.test" not in running_hosts(proxy)
    assert ask(hosts["edge-dns"].ip, "next.example.test.").rcode() == 3  # NXDOMAIN


def test_twenty_concurrent_adds_none_lost(edge):
    api, hosts = edge
    names = [f"c{i:02d}.example.test" for i in range(20)]
    answers: dict[str, object] = {}

    def one(name: str) -> None:
        try:
            answers[name] = add(api, name)
        except Exception as exc:  # recorded, asserted below
            answers[name] = exc

    t0 = time.monotonic()
    threads = [threading.Thread(target=one, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    TIMINGS["twenty_requests_s"] = time.monotonic() - t0
    failures = {n: a for n, a in answers.items() if not isinstance(a, Reply) or a.status != 202}
    assert not failures, failures
    ops = [finished(api, answers[n], timeout=900) for n in names]
    TIMINGS["twenty_domains_applied_s"] = time.monotonic() - t0
    assert all(o["status"] == "succeeded" for o in ops), [o.get("error") for o in ops]
    playbook_runs = sum(1 for o in ops if o["result"]["proxy"].get("changed"))
    TIMINGS["twenty_domains_caddy_reloads"] = playbook_runs
    running = running_hosts(hosts["edge-proxy"])
    assert set(names) <= set(running), sorted(set(names) - set(running))
    for name in names:
        assert addresses(ask(hosts["edge-dns"].ip, name + ".")) == [hosts["edge-proxy"].ip], name
    with api.deps.db.connection_context():
        assert {d.name for d in Domain.select() if d.status == "active"} >= set(names)


BAD = ["evil.test\n", "a..b", ".".join(["a" * 63] * 4)[:254], "{{x}}.test"]


def test_bad_names_refused_with_nothing_changed(edge):
    api, hosts = edge
    proxy, dns_host = hosts["edge-proxy"], hosts["edge-dns"]
    before_file = caddyfile_digest(proxy)
    with api.deps.db.connection_context():
        before = (Domain.select().count(), Operation.select().count())
        with domains.dns_client(api.deps, domains.dns_servers()[0]) as client:
            before_zone = client.get_rrsets("example.test")
    for name in BAD:
        refused = add(api, name)
        assert refused.status == 422, (name, refused.body)
    wildcard = add(api, "*.x.example.test")  # no DNS-01 issuer in this module's settings
    assert wildcard.status == 409, wildcard.body
    assert wildcard.body["error"]["details"]["reason"] == "wildcard_without_dns01"
    taken = add(api, "shop.example.test", project="blog")
    assert taken.status == 409 and "another project" in taken.body["error"]["message"]
    with api.deps.db.connection_context():
        assert (Domain.select().count(), Operation.select().count()) == before
        with domains.dns_client(api.deps, domains.dns_servers()[0]) as client:
            assert client.get_rrsets("example.test") == before_zone
    assert caddyfile_digest(proxy) == before_file
    assert ask(dns_host.ip, "x.example.test.").rcode() == 3


def test_status_says_what_is_wrong(edge, fleet):
    api, hosts = edge
    app, dns_host = fleet["app"], hosts["edge-dns"]
    unit = "shop-staging-app"
    app.ssh(f"systemctl stop {unit}", check=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            status = status_of(api, "shop.example.test")
            if status["http"]["status"] != "ok" or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert status["status"] == "degraded", status["reasons"]
        assert status["http"]["status"] == "degraded"
        assert "GET /health answered 50" in status["reason"], status["reasons"]
        assert status["dns"]["status"] == "ok" and status["tls"]["status"] == "ok"
    finally:
        app.ssh(f"systemctl start {unit}", check=True)
    dns_host.ssh("systemctl stop pdns", check=True)
    try:
        status = status_of(api, "shop.example.test")
        assert status["dns"]["status"] == "down"
        assert f"edge-dns ({dns_host.ip}) did not answer" in " ".join(status["reasons"])
        assert status["status"] == "down"
    finally:
        dns_host.ssh("systemctl start pdns", check=True)
