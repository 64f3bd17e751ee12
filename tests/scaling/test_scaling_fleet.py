"""Autoscaling end to end on the real fleet. The Vultr cloud is the loopback fake; when it
"creates" an instance it boots a real fleet host (an nspawn guest on this suite's bridge) and
applies the instance's user_data (root's authorized_keys become exactly the keys it lists),
so codeb's scale-up really creates, waits, pins, bootstraps, places and proxies:

- scale up: the new server is bootstrapped, runs a replica of what each environment runs
  (production v1 while staging already runs v2: a replica is not behind the staging gate, and
  has the very image id production runs), the proxy's upstreams name both app servers, and
  each of them alone answers through the proxy (HTTPS, internal CA);
- a new server whose v1 tag names v2's image: production's replica is refused before it
  starts, the instance deleted, production as it was;
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
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import httpx
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
        # Run on each new host once booted, before it gets an address (what a test needs the
        # "cloud image" to hold).
        self.after_boot: Callable[[fleetlib.Host], Any] | None = None

    def on_create(self, request: dict[str, Any]) -> Future:
        self.created += 1
        name, variant, future = f"vultr{self.created}", self.variant, Future()
        after_boot = self.after_boot
        self.user_data.append(request.get("user_data", ""))

        def boot() -> None:
            try:
                (host,) = fleetlib.add_hosts([(name, variant)], self.cfg)
                keys = authorized_keys(request.get("user_data", ""))
                ssh_dir = host.root / "root/.ssh"
                (ssh_dir / "authorized_keys").write_text("".join(k + "\n" for k in keys))
                if after_boot is not None:
                    after_boot(host)
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
                # Production runs v1 (tested in staging, confirmed); then staging moves on to
                # v2, so a production deploy of v1 would now fail the staging gate.
                r = c.post("/api/containers/deploy",
                           json={"project": "shop", "environment": "production",
                                 "image": f"{APP}:v1"})  # fmt: skip
                assert r.status_code == 202, r.text
                assert r.json()["status"] == "confirmation_required", r.text
                r = c.post("/api/protection/confirm", json={"token": r.json()["confirm_token"]})
                op = wait_operation(c, started(r.json()), timeout=600)
                assert op["status"] == "succeeded", op
                r = c.post("/api/containers/deploy",
                           json={"project": "shop", "environment": "staging",
                                 "image": f"{APP}:v2"})  # fmt: skip
                op = wait_operation(c, started(r.json()), timeout=600)
                assert op["status"] == "succeeded", op
                r = c.put("/api/scaling/policy", json={
                    "api_key": KEY,
                    "policy": {"min_servers": 1, "max_servers": 3},
                    "cloud": {"api_url": url, "region": "ams", "plan": "vc2-1c-2gb",
                              "os_id": 2625, "environments": ["staging", "production"],
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
        prod = c.get("/api/projects/shop/environments/production").json()
        assert sorted(prod["placement"]["app"]) == sorted(["app", name]), prod
        # Each environment got a replica of what it runs: production v1 although staging
        # runs v2 (no staging gate for a replica), with the very image id production runs.
        step = next(s for s in event["steps"] if s["step"] == "place")
        placed = {p["environment"]: p["image"] for p in step["detail"]["placed"]}
        assert placed == {"shop/production": f"{APP}:v1", "shop/staging": f"{APP}:v2"}, placed
        rows = c.get("/api/containers", params={"project": "shop"}).json()["containers"]
        apps = [r for r in rows if r["server_type"] == "app"]
        for env_name, version in (("production", "v1"), ("staging", "v2")):
            mine = [r for r in apps if r["environment"] == env_name]
            assert {r["server_ip"] for r in mine} == {fleet["app"].ip, new["ip"]}, mine
            assert {(r["image"], r["image_id"]) for r in mine} == {
                (f"{APP}:{version}", mine[0]["image_id"])
            }, mine
            assert all(r["status"] == "running" and r["image_id"] for r in mine), mine
        text = httpx.get(f"http://{new['ip']}:{prod['app_port']}/", timeout=10).text
        assert "codeb-test-app v1" in text, text
        assert "codeb-test-app v2" in httpx.get(f"http://{new['ip']}:{env['app_port']}/").text
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


def test_a_tag_naming_another_image_is_never_placed(pool, fleet):
    """The new server's v1 tag names v2's image (a re-pushed tag): production's replica is
    refused before anything starts there; the instance is deleted; production is as it was."""
    api, _, fake, booter = pool
    booter.after_boot = lambda host: host.ssh(
        f"podman tag {APP}:v1 {APP}:v1-orig && podman tag {APP}:v2 {APP}:v1", check=True
    )
    with api.client() as c:
        before = [
            (r["server_ip"], r["image"], r["image_id"])
            for r in c.get("/api/containers", params={"project": "shop",
                                                      "environment": "production"}).json()[
                "containers"]
            if r["server_type"] == "app"
        ]  # fmt: skip
        try:
            r = c.post("/api/scaling/up", json={})
            assert r.status_code == 202, r.text
            op = wait_operation(c, started(r.json()), timeout=1200)
        finally:
            booter.after_boot = None
        assert op["status"] == "failed", op
        event = c.get("/api/scaling/history", params={"kind": "up"}).json()["events"][0]
        assert event["failed_step"] == "place", event
        assert "places only the image the environment already runs" in event["error"], event
        assert "nothing was started there" in event["error"], event
        assert "deleted" in event["error"] and "unregistered" in event["error"], event
        after = [
            (r["server_ip"], r["image"], r["image_id"])
            for r in c.get("/api/containers", params={"project": "shop",
                                                      "environment": "production"}).json()[
                "containers"]
            if r["server_type"] == "app"
        ]  # fmt: skip
        assert sorted(after) == sorted(before), (before, after)
        prod = c.get("/api/projects/shop/environments/production").json()
        assert event["label"] not in prod["placement"]["app"], prod
    booter.settle()
    assert len(fake.live()) == 1  # the first scale-up's server only


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
        for env_name in ("staging", "production"):
            env = c.get(f"/api/projects/shop/environments/{env_name}").json()
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
