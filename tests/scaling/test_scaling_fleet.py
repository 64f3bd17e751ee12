"""Autoscaling end to end on the real fleet. The Vultr cloud is the loopback fake; when it
"creates" an instance it boots a real fleet host (an nspawn guest on this suite's bridge) and
applies the instance's user_data (root's authorized_keys become exactly the keys it lists),
so codeb's scale-up really creates, waits, pins, bootstraps, places and proxies:

- scale up: the new server is bootstrapped, runs the staging app, the proxy's upstreams name
  both app servers, and each of them alone answers through the proxy (HTTPS, internal CA);
- scale down (MEDIUM: asked, then confirmed): drained from the proxy first, containers
  removed, the instance deleted (its host stopped), unregistered; the app still answers;
- a bootstrap that fails (the fake boots a Debian 12 host, which bootstrap refuses): the
  instance is deleted and the history names the step.

The tests of this module run in order and build on each other."""

from __future__ import annotations

import ipaddress
import os
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
import yaml

from codeb.clock import SystemClock
from codeb.store.models import Server
from tests.domains.test_domains_fleet import curl_health, running_hosts
from tests.executor.helpers import wait_operation
from tests.fleet import fleet as fleetlib
from tests.providers.vultr_fake import VultrFake, serve
from tests.support import live_api

pytestmark = pytest.mark.fleet

APP = "localhost/codeb-test-app"
EDGE = {"sc-proxy": "proxy", "sc-dns": "dns"}
KEY = "VULTR-FLEET-TEST-KEY-0b7e4d21"
DOMAIN = "shop.scaling.test"
TIMINGS_FILE = os.environ.get("CODEB_SCALING_TIMINGS")
TIMINGS: dict[str, float] = {}


def authorized_keys(user_data: str) -> list[str]:
    """What cloud-init would authorise for root from this user_data."""
    doc = (
        yaml.safe_load(user_data.split("\n", 1)[1]) if user_data.startswith("#cloud-config") else {}
    )
    keys = list(doc.get("ssh_authorized_keys") or [])
    for user in doc.get("users") or []:
        if isinstance(user, dict) and user.get("name") == "root":
            keys += user.get("ssh_authorized_keys") or []
    return keys


class FleetCloud:
    """The fake's hooks: each create boots a fleet host of `variant` in the background (the
    instance has no address until it is up), each delete stops it."""

    def __init__(self, cfg: fleetlib.Config) -> None:
        self.cfg = cfg
        self.variant = "full"
        self.hosts: dict[str, fleetlib.Host] = {}
        self.threads: list[threading.Thread] = []
        self.created = 0
        self.user_data: list[str] = []

    def on_create(self, request: dict[str, Any]) -> Future:
        self.created += 1
        name, variant, future = f"vultr{self.created}", self.variant, Future()
        self.user_data.append(request.get("user_data", ""))

        def boot() -> None:
            try:
                (host,) = fleetlib.add_hosts([(name, variant)], self.cfg)
                keys = authorized_keys(request.get("user_data", ""))
                ssh_dir = host.root / "root/.ssh"
                (ssh_dir / "authorized_keys").write_text("".join(k + "\n" for k in keys))
                self.hosts[request["label"]] = host
                future.set_result(host.ip)
            except BaseException as exc:  # the instance then never gets an address
                future.set_exception(exc)

        self.threads.append(threading.Thread(target=boot, daemon=True))
        self.threads[-1].start()
        return future

    def on_delete(self, view: dict[str, Any]) -> None:
        host = self.hosts.pop(view["label"], None)
        if host is not None:
            t = threading.Thread(target=fleetlib.remove_hosts, args=([host.name], self.cfg))
            self.threads.append(t)
            t.start()

    def settle(self) -> None:
        for t in self.threads:
            t.join(timeout=120)


@pytest.fixture(scope="module")
def pool(fleet, tmp_path_factory):
    """The fleet's app/db/cache hosts, a bare proxy and dns host, the staging app of `shop`
    deployed and served at shop.scaling.test; autoscaling configured against the fake."""
    cfg = fleet.config
    apt_proxy = fleetlib.apt_proxy_up(cfg)
    specs = [(name, "bare") for name in EDGE]
    booter = FleetCloud(cfg)
    fake = VultrFake(api_key=KEY, on_create=booter.on_create, on_delete=booter.on_delete,
                     ip_after_s=0, active_after_s=0.5, ok_after_s=1)  # fmt: skip
    try:
        hosts = {h.name: h for h in fleetlib.add_hosts(specs, cfg)}
        net = str(ipaddress.ip_network(f"{fleet.hosts[0].ip}/24", strict=False))
        with (
            serve(fake) as url,
            live_api(
                tmp_path_factory.mktemp("scaling"),
                clock=SystemClock(),
                allowed_networks=f"{net},127.0.0.0/8",
                ssh_private_key_file=fleet.key_path,
                apt_proxy=apt_proxy,
                tls="internal",
            ) as api,
        ):
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
                r = c.post("/api/projects", json={"name": "shop", "type": "nodejs"})
                assert r.status_code == 201, r.text
                r = c.post("/api/containers/deploy",
                           json={"project": "shop", "environment": "staging",
                                 "image": f"{APP}:v1"})  # fmt: skip
                assert r.status_code == 202, r.text
                op = wait_operation(c, started(r.json()), timeout=600)
                assert op["status"] == "succeeded", op
                r = c.post("/api/domains", json={"domain": DOMAIN, "project": "shop",
                                                 "environment": "staging"})  # fmt: skip
                assert r.status_code == 202, r.text
                op = wait_operation(c, started(r.json()), timeout=600)
                assert op["status"] == "succeeded", op
                r = c.put("/api/scaling/policy", json={
                    "api_key": KEY,
                    "policy": {"min_servers": 1, "max_servers": 3},
                    "cloud": {"api_url": url, "region": "ams", "plan": "vc2-1c-2gb",
                              "os_id": 2625, "environments": ["staging"],
                              "ready_timeout_s": 300, "poll_s": 1, "drain_s": 2},
                })  # fmt: skip
                assert r.status_code == 200, r.text
            yield api, hosts, fake, booter
    finally:
        booter.settle()
        leftover = [h.name for h in booter.hosts.values()]
        if leftover:
            fleetlib.remove_hosts(leftover, cfg)
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


def started(body: dict) -> str:
    """The operation a 202 started (bare, or in the gate's executed envelope)."""
    return body.get("result", body)["operation"]["id"]


def healthy_through(proxy, tmp: Path, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        got = curl_health(proxy, DOMAIN, tmp)
        if got.returncode == 0 and got.stdout.strip() == "ok":
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(1)


def alone_answers(app_host, others: list, proxy, tmp: Path) -> bool:
    """Stop the app on every other server: the proxy still answers, from `app_host`."""
    unit = "shop-staging-app"
    for h in others:
        h.ssh(f"systemctl stop {unit}", check=True)
    try:
        return healthy_through(proxy, tmp, timeout=60)
    finally:
        for h in others:
            h.ssh(f"systemctl start {unit}", check=True)


def test_scale_up_joins_and_serves_behind_the_proxy(pool, fleet, tmp_path):
    api, hosts, fake, booter = pool
    proxy = hosts["sc-proxy"]
    with api.client() as c:
        decision = c.post("/api/scaling/check").json()["decision"]
        assert decision["inputs"]["servers"] == 1 and decision["inputs"]["latest"], decision
        t0 = time.monotonic()
        r = c.post("/api/scaling/up", json={})
        assert r.status_code == 202, r.text
        op = wait_operation(c, started(r.json()), timeout=1200)
        TIMINGS["scale_up_s"] = time.monotonic() - t0
        assert op["status"] == "succeeded", op
        event = c.get("/api/scaling/history", params={"kind": "up"}).json()["events"][0]
        assert event["status"] == "succeeded", event
        assert [s["step"] for s in event["steps"]] == [
            "create", "wait_ready", "pin_host_key", "register", "bootstrap", "place", "proxy",
            "health",
        ]  # fmt: skip
        for step in event["steps"]:
            TIMINGS[f"scale_up_{step['step']}_s"] = step["seconds"]
        name = event["server"]
        server = c.get("/api/servers").json()["servers"]
        new = next(s for s in server if s["name"] == name)
        assert new["role"] == "app" and new["status"] == "ready" and new["provider"] == "vultr"
        env = c.get("/api/projects/shop/environments/staging").json()
        assert sorted(env["placement"]["app"]) == sorted(["app", name]), env
    host = booter.hosts[event["label"]]
    assert host.ip == new["ip"]
    # user_data was what authorised codeb: the key it lists is codeb's public key.
    pub = fleet.key_path.with_suffix(".pub").read_text().split()[1]
    assert any(pub in k for k in authorized_keys(booter.user_data[0]))
    # The host key was pinned in codeb's known_hosts.
    known = (api.deps.settings.data_dir / "ssh" / "known_hosts").read_text()
    assert any(line.startswith(f"{host.ip} ") for line in known.splitlines())
    # The proxy balances over both app servers, and each alone answers through it.
    upstreams = running_hosts(proxy)
    flat = " ".join(str(v) for v in upstreams.values())
    assert fleet["app"].ip in flat and host.ip in flat, upstreams
    assert healthy_through(proxy, tmp_path)
    assert alone_answers(host, [fleet["app"]], proxy, tmp_path), "the new server did not serve"
    assert alone_answers(fleet["app"], [host], proxy, tmp_path), "the old server did not serve"
    assert len(fake.live()) == 1


def test_scale_down_drains_then_deletes(pool, fleet, tmp_path):
    api, hosts, fake, booter = pool
    proxy = hosts["sc-proxy"]
    with api.client() as c:
        # Refused whatever the rule says: a server autoscaling did not create.
        r = c.post("/api/scaling/down", json={"server": "db"})
        assert r.status_code == 409 and "not created by autoscaling" in r.text, r.text
        t0 = time.monotonic()
        asked = c.post("/api/scaling/down", json={})
        assert asked.status_code == 202 and asked.json()["status"] == "confirmation_required"
        token = asked.json()["confirm_token"]
        r = c.post("/api/scaling/down", json={}, headers={"X-Confirm-Token": token})
        assert r.status_code in (200, 202), r.text
        op_id = started(r.json())
        op = wait_operation(c, op_id, timeout=900)
        TIMINGS["scale_down_s"] = time.monotonic() - t0
        assert op["status"] == "succeeded", op
        event = c.get("/api/scaling/history", params={"kind": "down"}).json()["events"][0]
        assert [s["step"] for s in event["steps"]] == [
            "drain", "stop", "delete_instance", "unregister"]  # fmt: skip
        names = [s["name"] for s in c.get("/api/servers").json()["servers"]]
        assert event["server"] not in names
        env = c.get("/api/projects/shop/environments/staging").json()
        assert env["placement"]["app"] == ["app"], env
    booter.settle()
    assert fake.live() == [] and booter.hosts == {}
    flat = " ".join(str(v) for v in running_hosts(proxy).values())
    assert fleet["app"].ip in flat
    with api.deps.db.connection_context():
        gone = Server.get(Server.provider_id == event["instance_id"])
        assert gone.status == "deleted" and gone.ip not in flat
    assert healthy_through(proxy, tmp_path)


def test_bootstrap_failure_deletes_the_instance(pool):
    api, _, fake, booter = pool
    booter.variant = "bare-bookworm"  # Debian 12: bootstrap refuses it
    try:
        with api.client() as c:
            r = c.post("/api/scaling/up", json={})
            assert r.status_code == 202, r.text
            op = wait_operation(c, started(r.json()), timeout=900)
            assert op["status"] == "failed", op
            event = c.get("/api/scaling/history", params={"kind": "up"}).json()["events"][0]
            assert event["failed_step"] == "bootstrap", event
            assert "deleted" in event["error"] and "unregistered" in event["error"], event
            names = [s["name"] for s in c.get("/api/servers").json()["servers"]]
            assert event["label"] not in names
    finally:
        booter.variant = "full"
    booter.settle()
    assert fake.live() == [] and booter.hosts == {}
