"""What runs on a host is what codeb says (issue 16, and finding 8 of issue 8), on the real
fleet through the HTTP API: after any run — success, failure, cancel — every host the run
touched either is as it was or runs exactly what the registry says; a stale preview is
refused; drift the file checksums can't see is seen, shown and undone.

The tests of this module share one environment (project `truth`, staging) and run in order."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import time

import httpx
import pytest

from codeb.clock import SystemClock
from codeb.store.models import Server
from tests.executor.helpers import register_fleet, wait_operation
from tests.executor.test_executor_fleet import _serve
from tests.support import free_port, live_api

pytestmark = pytest.mark.fleet
APP = "localhost/codeb-test-app"
PROJECT = "truth"
UNIT = "/etc/containers/systemd/truth-staging-app.container"
TIMINGS = os.environ.get("CODEB_CANCEL_TIMINGS")  # where to append what each cancel did


@pytest.fixture(scope="module")
def stack(fleet, tmp_path_factory):
    net = str(ipaddress.ip_network(f"{fleet.hosts[0].ip}/24", strict=False))
    with live_api(
        tmp_path_factory.mktemp("truth"),
        clock=SystemClock(),
        allowed_networks=net,
        ssh_private_key_file=fleet.key_path,
    ) as api:
        with api.client() as c:
            register_fleet(c, fleet)
            created = c.post("/api/projects", json={"name": PROJECT, "type": "nodejs"})
            assert created.status_code == 201, created.text
            op = wait_operation(c, started(deploy(c, f"{APP}:v1")))
            assert op["status"] == "succeeded", op
        yield api
        for host in fleet:
            host.ssh(
                f"systemctl stop '{PROJECT}-*' 2>/dev/null; "
                f"rm -f /etc/containers/systemd/{PROJECT}-*; systemctl daemon-reload; "
                f"podman rm -f --ignore $(podman ps -aq --filter name={PROJECT}-) "
                ">/dev/null 2>&1; podman volume prune -f >/dev/null 2>&1; "
                f"rm -rf /etc/codeb/env/{PROJECT}-* /etc/codeb/redis/{PROJECT}-* "
                f"/run/codeb-app-v3-tag; podman rmi {APP}:v3 >/dev/null 2>&1; true"
            )


def deploy(c: httpx.Client, image: str, **kw) -> httpx.Response:
    body = {"project": PROJECT, "environment": "staging", "image": image}
    # A preview, and a deploy sent with X-Plan-Hash, read the hosts before answering (a
    # check-mode run, a probe): on a loaded 2-core machine that took over the client's 30 s.
    kw.setdefault("timeout", 300)
    return c.post("/api/containers/deploy", json=body, **kw)


def started(r: httpx.Response) -> str:
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "executed", body
    return body["result"]["operation"]["id"]


def rows(c: httpx.Client, project: str = PROJECT) -> dict[str, dict]:
    listed = c.get("/api/containers", params={"project": project}).json()["containers"]
    return {x["server_type"]: x for x in listed if x["environment"] == "staging"}


def host_of(fleet, ip: str):
    return next(h for h in fleet if h.ip == ip)


def running_on_host(host, name: str) -> dict | None:
    out = host.ssh(
        f"podman inspect --type container --format "
        f"'{{{{.ImageName}}}}|{{{{.Image}}}}|{{{{.State.Running}}}}' {name}"
    )
    if out.returncode != 0:
        return None
    image, image_id, running = out.stdout.strip().split("|")
    return {"image": image, "image_id": image_id, "running": running == "true"}


def assert_registry_is_the_truth(
    c: httpx.Client, fleet, skip_hosts: tuple[str, ...] = (), project: str = PROJECT
):
    """Every container row says exactly what podman reports on its host."""
    for component, row in rows(c, project).items():
        host = host_of(fleet, row["server_ip"])
        if host.name in skip_hosts:
            continue
        actual = running_on_host(host, row["container_name"])
        if row["status"] == "running":
            assert actual and actual["running"], (component, row, actual)
            assert actual["image"] == row["image"], (component, row, actual)
            if component == "app":
                assert row["image_id"] == actual["image_id"], (component, row, actual)
        else:
            assert row["status"] == "stopped", (component, row)
            assert not (actual and actual["running"]), (component, row, actual)


def image_id(host, image: str) -> str:
    return host.ssh(
        f"podman image inspect --format '{{{{.Id}}}}' {image}", check=True
    ).stdout.strip()


# -- 1. a plan binds the state it was computed from ------------------------------------


def test_a_stale_plan_is_refused(fleet, stack):
    app = fleet["app"]
    # A third tag, so there are three distinct versions (v3 is v1's image under another name).
    app.ssh(f"podman tag {APP}:v1 {APP}:v3", check=True)
    with stack.client() as c:
        preview = deploy(c, f"{APP}:v2", params={"preview": "true"})
        assert preview.status_code == 200, preview.text
        stale = preview.json()["plan_hash"]
        op = wait_operation(c, started(deploy(c, f"{APP}:v3")))
        assert op["status"] == "succeeded", op
        # v3 -> v2 was never previewed: refused, and nothing runs.
        r = deploy(c, f"{APP}:v2", headers={"X-Plan-Hash": stale})
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "plan_changed"
        assert running_on_host(app, "truth-staging-app")["image"] == f"{APP}:v3"
        assert rows(c)["app"]["image"] == f"{APP}:v3"

        # A change made by hand after the preview is a change of state too.
        fresh = deploy(c, f"{APP}:v2", params={"preview": "true"}).json()["plan_hash"]
        assert fresh != stale
        app.ssh(f"sed -i 's/^HealthRetries=3$/HealthRetries=4/' {UNIT}", check=True)
        r = deploy(c, f"{APP}:v2", headers={"X-Plan-Hash": fresh})
        assert r.status_code == 409 and r.json()["error"]["code"] == "plan_changed", r.text

        # The plan previewed from the current state applies.
        fresh = deploy(c, f"{APP}:v2", params={"preview": "true"}).json()["plan_hash"]
        op = wait_operation(c, started(deploy(c, f"{APP}:v2", headers={"X-Plan-Hash": fresh})))
        assert op["status"] == "succeeded", op
        assert running_on_host(app, "truth-staging-app")["image"] == f"{APP}:v2"
        assert "HealthRetries=3" in app.ssh(f"cat {UNIT}", check=True).stdout
        assert_registry_is_the_truth(c, fleet)


# -- 3. drift the file checksums can't see ---------------------------------------------


def hand_edit_to_v2(fleet, c: httpx.Client) -> dict:
    """Staging runs v1; then an operator in a hurry makes the unit file say v2 and reloads
    systemd without restarting anything."""
    app = fleet["app"]
    op = wait_operation(c, started(deploy(c, f"{APP}:v1")))
    assert op["status"] == "succeeded", op
    app.ssh(f"sed -i 's/:v1$/:v2/' {UNIT} && systemctl daemon-reload", check=True)
    assert running_on_host(app, "truth-staging-app")["image"] == f"{APP}:v1"
    return rows(c)["app"]


def test_a_deploy_restarts_what_runs_something_else(fleet, stack):
    app = fleet["app"]
    with stack.client() as c:
        hand_edit_to_v2(fleet, c)
        # The files already say v2; the container runs v1: deploying v2 restarts it.
        op = wait_operation(c, started(deploy(c, f"{APP}:v2")))
        assert op["status"] == "succeeded", op
        actual = running_on_host(app, "truth-staging-app")
        assert actual["image"] == f"{APP}:v2", actual
        assert actual["image_id"] == image_id(app, f"{APP}:v2")
        assert "v2" in httpx.get(f"http://{app.ip}:3001/", timeout=5).text
        assert_registry_is_the_truth(c, fleet)


def test_drift_is_shown_live_and_by_the_drift_check(fleet, stack):
    with stack.client() as c:
        app_row = hand_edit_to_v2(fleet, c)
        live = c.get(f"/api/containers/{app_row['id']}", params={"live": "true"}).json()["live"]
        assert live["in_sync"] is False, live
        assert any("unit file names" in d for d in live["drift"]), live
        assert any("started before its files last changed" in d for d in live["drift"]), live
        op = wait_operation(c, started(c.post("/api/containers/drift-check")))
        assert op["status"] == "succeeded", op
        drifted = {d["container_id"]: d for d in op["result"]["drifted"]}
        assert set(drifted) == {app_row["id"]}, op["result"]
        assert op["result"]["checked"] == 3

        op = wait_operation(c, started(deploy(c, f"{APP}:v2")))
        assert op["status"] == "succeeded", op
        live = c.get(f"/api/containers/{app_row['id']}", params={"live": "true"}).json()["live"]
        assert live["in_sync"] is True and live["drift"] == [], live
        assert live["container"]["image"] == f"{APP}:v2"
        op = wait_operation(c, started(c.post("/api/containers/drift-check")))
        assert op["status"] == "succeeded" and op["result"]["drifted"] == [], op


# -- 2. a cancel takes effect at once, and the registry follows the hosts -------------


# Moments of a deploy to cancel at: as soon as it is accepted, when a task of the deploy
# play starts (what the events show, so the moment does not depend on the machine's speed),
# and during the health check that follows the playbook.
CANCEL_POINTS = (
    "accepted",
    "Compare the host with the plan",
    "Place the files, reload systemd and restart what changed",
    "health check",
)


def wait_for_point(c: httpx.Client, op_id: str, point: str) -> None:
    """Return when the deploy reaches `point` (or has finished without reaching it)."""
    if point == "accepted":
        return
    after, deadline = 0, time.monotonic() + 180
    while time.monotonic() < deadline:
        page = c.get(f"/api/operations/{op_id}/events", params={"after": after, "wait": 1}).json()
        for e in page["events"]:
            if point == "health check":
                playbook = str(e["data"].get("playbook", "")).rsplit("/", 1)[-1]
                if e["event"] == "playbook_on_stats" and playbook == "deploy.yml":
                    return
            elif e["event"] == "playbook_on_task_start" and e["task"] == point:
                return
        after = page["next_after"]
        if page["finished"]:
            return
    raise AssertionError(f"{op_id} never reached {point!r}")


@pytest.mark.parametrize("point", CANCEL_POINTS)
def test_cancel_at_any_moment_leaves_the_registry_true(fleet, stack, point):
    with stack.client() as c:
        current = rows(c)["app"]["image"]
        target = f"{APP}:v1" if current.endswith(":v2") else f"{APP}:v2"
        op_id = started(deploy(c, target))
        wait_for_point(c, op_id, point)
        r = c.post(f"/api/operations/{op_id}/cancel")
        op = wait_operation(c, op_id, timeout=180)
        # Whatever the moment: the registry says what runs on every host.
        assert_registry_is_the_truth(c, fleet)
        if r.status_code == 409:  # it had already finished: nothing to cancel
            assert op["status"] == "succeeded", op
        elif op["started_at"] is None:  # canceled before it started: nothing ran
            assert op["status"] == "canceled", op
            assert c.get(f"/api/operations/{op_id}/events").json()["events"] == []
        else:
            assert r.status_code == 200, r.text
            assert op["status"] == "canceled", op
            result = op["result"]
            # The playbook stopped within a second of the cancel.
            assert result["cancel"]["stopped_after_s"] < 1.0, result["cancel"]
            # Which tasks ran on which host, exactly as the deploy run's events say (the
            # probe that settles the registry afterwards is a run of its own).
            events = c.get(f"/api/operations/{op_id}/events", params={"limit": 5000}).json()
            finished = {
                (e["host"], e["task"])
                for e in events["events"]
                if e["event"] in ("runner_on_ok", "runner_on_failed", "runner_on_skipped")
                and str(e["data"].get("playbook", "")).rsplit("/", 1)[-1] == "deploy.yml"
            }
            ran = result["ran"]
            listed = {
                (h, t["task"]) for h, tasks in ran.items() for t in tasks
                if t["status"] != "interrupted"
            }  # fmt: skip
            assert finished == listed, (finished, ran)
            assert result["registry"]["action"] == "reconciled", result
            if TIMINGS:
                with open(TIMINGS, "a") as fh:
                    fh.write(json.dumps({
                        "point": point,
                        "stopped_after_s": result["cancel"]["stopped_after_s"],
                        "ran": {h: [f"{t['task']}: {t['status']}" for t in ts]
                                for h, ts in ran.items()},
                        "registry": result["registry"]["containers"],
                    }) + "\n")  # fmt: skip
        # A rerun converges.
        op = wait_operation(c, started(deploy(c, target)))
        assert op["status"] == "succeeded", op
        assert_registry_is_the_truth(c, fleet)
        assert rows(c)["app"]["image"] == target


# -- issue 8, finding 8: a partial failure ---------------------------------------------


def test_a_failure_after_a_host_changed_is_rolled_back(fleet, stack):
    app, db = fleet["app"], fleet["db"]
    with stack.client() as c:
        op = wait_operation(c, started(deploy(c, f"{APP}:v1")))
        assert op["status"] == "succeeded", op
        before = rows(c)
        db_row = before["db"]
        # The database is down and cannot come back (something else took its port): the
        # deploy switches the app host to v2, then fails to start the database.
        db.ssh(f"systemctl stop {db_row['container_name']}.service", check=True)
        blocker = db.ssh(
            f"nohup python3 -m http.server --bind 0.0.0.0 {db_row['port_external']} "
            ">/dev/null 2>&1 & echo $!",
            check=True,
        ).stdout.strip()
        try:
            op = wait_operation(c, started(deploy(c, f"{APP}:v2")), timeout=300)
            assert op["status"] == "failed", op
            assert "failed on db" in op["error"], op
            assert any(t["status"] == "changed" for t in op["result"]["ran"]["app"]), op
            registry = op["result"]["registry"]
            assert registry["action"] == "rolled_back", registry
            assert registry["rolled_back"] == ["app"], registry
            assert running_on_host(app, "truth-staging-app")["image"] == f"{APP}:v1"
            after = rows(c)
            assert after["app"]["image"] == f"{APP}:v1"
            assert after["app"]["health_status"] == "healthy"
            assert after["db"]["status"] == "stopped", after["db"]
            assert_registry_is_the_truth(c, fleet)
        finally:
            db.ssh(f"kill {blocker}")
        # Once the port is free again, a rerun converges.
        op = wait_operation(c, started(deploy(c, f"{APP}:v1")))
        assert op["status"] == "succeeded", op
        assert rows(c)["db"]["status"] == "running"
        assert_registry_is_the_truth(c, fleet)


def test_partial_failure_rolls_back_or_tells_the_truth(fleet, stack):
    app = fleet["app"]
    ghost = str(ipaddress.ip_address(fleet.hosts[0].ip) + 100)  # on our bridge, nobody there
    deps = stack.deps
    with stack.client() as c:
        op = wait_operation(c, started(deploy(c, f"{APP}:v1")))
        assert op["status"] == "succeeded", op
        before = rows(c)
        # The cache host is powered off (as far as codeb can tell: nothing answers).
        with deps.db.connection_context(), deps.write():
            Server.update(ip=ghost).where(Server.name == "cache").execute()
        try:
            op = wait_operation(c, started(deploy(c, f"{APP}:v2")), timeout=300)
        finally:
            with deps.db.connection_context(), deps.write():
                Server.update(ip=fleet["cache"].ip).where(Server.name == "cache").execute()
        assert op["status"] == "failed", op
        assert "unreachable" in op["error"], op
        assert_registry_is_the_truth(c, fleet, skip_hosts=("cache",))
        registry = op["result"]["registry"]
        assert registry["action"] in ("rolled_back", "reconciled"), registry
        assert registry["unreachable"] == ["cache"], registry
        after = rows(c)
        actual = running_on_host(app, "truth-staging-app")
        if registry["action"] == "rolled_back":
            assert actual["image"] == f"{APP}:v1", actual
            assert after["app"]["image"] == f"{APP}:v1"
            assert after["app"]["health_status"] == before["app"]["health_status"]
        else:
            assert after["app"]["image"] == actual["image"]
        # The unreachable host was not touched: its row is as it was.
        assert after["redis"] == before["redis"]
        # A production deploy of v2 is not decided by a lie.
        if actual["image"] != f"{APP}:v2":
            r = c.post(
                "/api/containers/deploy",
                json={"project": PROJECT, "environment": "production", "image": f"{APP}:v2"},
            )
            assert r.status_code == 403, r.text


# -- a crash in the middle of a deploy -------------------------------------------------


def test_a_crash_mid_deploy_is_reconciled_on_restart(fleet, stack, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    project = "crashy"  # a second project of its instance: ports 3002, 15433, 16380
    proc, key = _serve(tmp_path, port, fleet)
    headers = {"X-API-Key": key, "Content-Type": "application/json"}
    body = {"project": project, "environment": "staging", "image": f"{APP}:v1"}
    try:
        try:
            with httpx.Client(base_url=base, headers=headers, timeout=30) as c:
                ops = [
                    c.post("/api/servers", json={"name": h.name, "ip": h.ip, "role": h.name})
                    for h in fleet
                ]
                for r in ops:
                    op = wait_operation(c, r.json()["operation"]["id"])
                    assert op["status"] == "succeeded", op
                for name in ("filler", project):
                    r = c.post("/api/projects", json={"name": name, "type": "nodejs"})
                    assert r.status_code == 201, r.text
                op = wait_operation(c, started(c.post("/api/containers/deploy", json=body)))
                assert op["status"] == "succeeded", op
                r = c.post("/api/containers/deploy", json={**body, "image": f"{APP}:v2"})
                crashed = started(r)
                # Killed while the run places files and restarts units: as soon as that task
                # starts (a fixed sleep lost the race once a deploy touched only the app host).
                wait_for_point(c, crashed, CANCEL_POINTS[2])
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            proc.stdout.close()
        proc, _ = _serve(tmp_path, port, fleet)
        with httpx.Client(base_url=base, headers=headers, timeout=30) as c:
            assert c.get(f"/api/operations/{crashed}").json()["status"] == "interrupted"
            listed = c.get("/api/operations", params={"kind": "container_reconcile"}).json()
            assert len(listed["operations"]) == 1, listed
            op = wait_operation(c, listed["operations"][0]["id"])
            assert op["status"] == "succeeded", op
            assert op["params"]["interrupted_operation"] == crashed
            assert op["result"]["registry"]["unverified"] == [], op
            assert_registry_is_the_truth(c, fleet, project=project)
            # A rerun converges.
            r = c.post("/api/containers/deploy", json={**body, "image": f"{APP}:v2"})
            op = wait_operation(c, started(r))
            assert op["status"] == "succeeded", op
            assert_registry_is_the_truth(c, fleet, project=project)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        for host in fleet:
            host.ssh(
                f"systemctl stop '{project}-*' 2>/dev/null; "
                f"rm -f /etc/containers/systemd/{project}-*; systemctl daemon-reload; "
                f"podman rm -f --ignore $(podman ps -aq --filter name={project}-) "
                f">/dev/null 2>&1; rm -rf /etc/codeb/env/{project}-* /etc/codeb/redis/{project}-*;"
                " true"
            )
