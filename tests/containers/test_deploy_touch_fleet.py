"""A deploy touches only the hosts whose part of the plan may differ (issue 15), on the real
fleet through the HTTP API: a changed app image runs Ansible on the app host alone, a no-op
runs no playbook at all, a container stopped by hand is noticed by the live check and
started again, and drift made by hand in a file is left by a no-op but undone by
`repair: true`.

The tests of this module share one environment (project `touchy`, staging) and run in order."""

from __future__ import annotations

import ipaddress

import httpx
import pytest

from codeb.clock import SystemClock
from tests.executor.helpers import register_fleet, wait_operation
from tests.support import live_api

pytestmark = pytest.mark.fleet
APP = "localhost/codeb-test-app"
PROJECT = "touchy"
DB_UNIT = f"/etc/containers/systemd/{PROJECT}-staging-db.container"


@pytest.fixture(scope="module")
def stack(fleet, tmp_path_factory):
    net = str(ipaddress.ip_network(f"{fleet.hosts[0].ip}/24", strict=False))
    with live_api(
        tmp_path_factory.mktemp("touch"),
        clock=SystemClock(),
        allowed_networks=net,
        ssh_private_key_file=fleet.key_path,
    ) as api:
        with api.client() as c:
            register_fleet(c, fleet)
            created = c.post("/api/projects", json={"name": PROJECT, "type": "nodejs"})
            assert created.status_code == 201, created.text
        yield api
        for host in fleet:
            host.ssh(
                f"systemctl stop '{PROJECT}-*' 2>/dev/null; "
                f"rm -f /etc/containers/systemd/{PROJECT}-*; systemctl daemon-reload; "
                f"podman rm -f --ignore $(podman ps -aq --filter name={PROJECT}-) "
                ">/dev/null 2>&1; podman volume prune -f >/dev/null 2>&1; "
                f"rm -rf /etc/codeb/env/{PROJECT}-* /etc/codeb/redis/{PROJECT}-*; true"
            )


def deploy(c: httpx.Client, image: str, **kw) -> dict:
    body = {"project": PROJECT, "environment": "staging", "image": image, **kw}
    r = c.post("/api/containers/deploy", json=body, timeout=300)
    assert r.status_code == 202 and r.json()["status"] == "executed", r.text
    return wait_operation(c, r.json()["result"]["operation"]["id"])


def preview(c: httpx.Client, image: str, **kw) -> dict:
    body = {"project": PROJECT, "environment": "staging", "image": image, **kw}
    r = c.post("/api/containers/deploy", json=body, params={"preview": "true"}, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()


def task_hosts(c: httpx.Client, op_id: str) -> set[str]:
    """The hosts on which a task of the deploy's playbook ran (any event with a host)."""
    events = c.get(f"/api/operations/{op_id}/events", params={"limit": 5000}).json()["events"]
    return {e["host"] for e in events if e["host"] and e["event"].startswith("runner_on_")}


def playbooks(c: httpx.Client, op_id: str) -> list[dict]:
    events = c.get(f"/api/operations/{op_id}/events", params={"limit": 5000}).json()["events"]
    return [e for e in events if e["event"] == "playbook_on_start"]


def untouched(op: dict) -> set[str]:
    return {u["host"] for u in op["result"]["untouched"]}


def active_since(host, unit: str) -> str:
    return host.ssh(f"systemctl show -p ActiveEnterTimestampMonotonic {unit}", check=True).stdout


def test_a_changed_image_touches_only_the_app_host(fleet, stack):
    app = fleet["app"]
    with stack.client() as c:
        op = deploy(c, f"{APP}:v1")
        assert op["status"] == "succeeded", op
        assert task_hosts(c, op["id"]) == {"app", "db", "cache"}
        assert untouched(op) == set()
        # A preview of v2 runs check mode on the app host alone and says why.
        seen = preview(c, f"{APP}:v2")
        assert seen["changed"] and any(ch["host"] == "app" for ch in seen["changes"]), seen
        assert {ch["host"] for ch in seen["changes"]} == {"app"}, seen
        assert {u["host"] for u in seen["untouched"]} == {"db", "cache"}, seen
        assert all("plan unchanged since operation" in u["reason"] for u in seen["untouched"])
        op = deploy(c, f"{APP}:v2")
        assert op["status"] == "succeeded", op
        assert task_hosts(c, op["id"]) == {"app"}, op
        assert untouched(op) == {"db", "cache"}
        for u in op["result"]["untouched"]:
            assert u["reason"].startswith("plan unchanged since operation op_"), u
            assert u["reason"].endswith(", healthy"), u
        assert "v2" in httpx.get(f"http://{app.ip}:3001/", timeout=5).text


def test_a_no_op_runs_no_playbook(fleet, stack):
    app = fleet["app"]
    with stack.client() as c:
        before = active_since(app, f"{PROJECT}-staging-app")
        seen = preview(c, f"{APP}:v2")
        assert seen["changed"] is False and seen["changes"] == [], seen
        assert {u["host"] for u in seen["untouched"]} == {"app", "db", "cache"}
        # The plan hash of that preview applies: the selection is the same.
        r = c.post(
            "/api/containers/deploy",
            json={"project": PROJECT, "environment": "staging", "image": f"{APP}:v2"},
            headers={"X-Plan-Hash": seen["plan_hash"]},
            timeout=300,
        )
        assert r.status_code == 202, r.text
        op = wait_operation(c, r.json()["result"]["operation"]["id"])
        assert op["status"] == "succeeded", op
        assert op["result"]["playbook_ran"] is False
        assert op["result"]["healthy"] is True
        assert untouched(op) == {"app", "db", "cache"}
        assert playbooks(c, op["id"]) == []
        assert active_since(app, f"{PROJECT}-staging-app") == before
        rows = c.get("/api/containers", params={"project": PROJECT}).json()["containers"]
        app_row = next(x for x in rows if x["server_type"] == "app")
        assert app_row["last_operation_id"] == op["id"]
        assert app_row["health_status"] == "healthy"


def test_a_container_stopped_by_hand_is_started_again(fleet, stack):
    app = fleet["app"]
    with stack.client() as c:
        app.ssh(f"systemctl stop {PROJECT}-staging-app.service", check=True)
        op = deploy(c, f"{APP}:v2")
        assert op["status"] == "succeeded", op
        assert task_hosts(c, op["id"]) == {"app"}, op
        touched = {t["host"]: t["reason"] for t in op["result"]["touched"]}
        assert "/health" in touched["app"], touched
        assert app.ssh(f"systemctl is-active {PROJECT}-staging-app").stdout.strip() == "active"
        assert "v2" in httpx.get(f"http://{app.ip}:3001/", timeout=5).text


def test_a_hand_edit_is_left_by_a_no_op_and_undone_by_repair(fleet, stack):
    db = fleet["db"]
    with stack.client() as c:
        original = db.ssh(f"cat {DB_UNIT}", check=True).stdout
        db.ssh(f"echo '# edited by hand' >> {DB_UNIT}", check=True)
        op = deploy(c, f"{APP}:v2")
        assert op["status"] == "succeeded", op
        assert op["result"]["playbook_ran"] is False
        assert "edited by hand" in db.ssh(f"cat {DB_UNIT}", check=True).stdout
        # repair: every host is probed and applied; the edit is undone.
        seen = preview(c, f"{APP}:v2", repair=True)
        assert seen["untouched"] == [] and {ch["host"] for ch in seen["changes"]} == {"db"}
        op = deploy(c, f"{APP}:v2", repair=True)
        assert op["status"] == "succeeded", op
        assert task_hosts(c, op["id"]) == {"app", "db", "cache"}
        assert untouched(op) == set()
        assert db.ssh(f"cat {DB_UNIT}", check=True).stdout == original


def test_another_operation_or_a_failed_deploy_makes_the_next_deploy_touch(fleet, stack):
    with stack.client() as c:
        rows = c.get("/api/containers", params={"project": PROJECT}).json()["containers"]
        cache_row = next(x for x in rows if x["server_type"] == "redis")
        r = c.post(f"/api/containers/{cache_row['id']}/restart", timeout=60)
        assert r.status_code == 202, r.text
        assert wait_operation(c, r.json()["result"]["operation"]["id"])["status"] == "succeeded"
        op = deploy(c, f"{APP}:v2")
        assert op["status"] == "succeeded", op
        assert task_hosts(c, op["id"]) == {"cache"}, op
        # A version failing its health check is rolled back; the next deploy probes all.
        op = deploy(c, f"{APP}:broken")
        assert op["status"] == "failed", op
        op = deploy(c, f"{APP}:v2")
        assert op["status"] == "succeeded", op
        assert task_hosts(c, op["id"]) == {"app", "db", "cache"}, op
