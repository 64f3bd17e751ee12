"""The executor on real hosts: Debian 13 + systemd + sshd + Podman, booted by the suite."""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from codeb.clock import SystemClock
from tests.executor.helpers import start_slow, wait_operation
from tests.support import free_port, live_api

pytestmark = pytest.mark.fleet


def fleet_network(fleet) -> str:
    return str(ipaddress.ip_network(f"{fleet.hosts[0].ip}/24", strict=False))


@pytest.fixture(scope="module")
def fleet_api(fleet, tmp_path_factory):
    with live_api(
        tmp_path_factory.mktemp("exec"),
        clock=SystemClock(),
        allowed_networks=fleet_network(fleet),
        ssh_private_key_file=fleet.key_path,
    ) as api:
        with api.client() as c:
            ops = []
            for host in fleet:
                r = c.post(
                    "/api/servers", json={"name": host.name, "ip": host.ip, "role": host.name}
                )
                assert r.status_code == 202, r.text
                ops.append(r.json()["operation"]["id"])
            for op_id in ops:
                op = wait_operation(c, op_id)
                assert op["status"] == "succeeded", op
        yield api


def test_bootstrap_records_versions(fleet, fleet_api):
    with fleet_api.client() as c:
        listed = {s["name"]: s for s in c.get("/api/servers").json()["servers"]}
        ops = c.get("/api/operations", params={"kind": "server_bootstrap"}).json()["operations"]
    assert set(listed) == {"app", "db", "cache"}
    for host in fleet:
        server = listed[host.name]
        assert server["status"] == "ready"
        podman = host.ssh("podman version --format '{{.Client.Version}}'", check=True)
        assert server["facts"]["podman"] == podman.stdout.strip()
        assert server["facts"]["python"].startswith("3.")
        assert server["facts"]["os"].startswith("Debian")
        assert (
            host.ssh("test -d /etc/codeb/env && stat -c %a /etc/codeb", check=True).stdout.strip()
            == "700"
        )
    op = ops[0]
    assert op["recap"] and all(v["failures"] == 0 for v in op["recap"].values())
    assert op["duration_s"] > 0


def test_stats_match_the_host(fleet, fleet_api):
    host = fleet["app"]
    host.ssh(
        "podman rm -f statsprobe >/dev/null 2>&1; podman create --name statsprobe "
        "localhost/codeb-test-app:v1 >/dev/null",
        check=True,
    )
    try:
        with fleet_api.client() as c:
            stats = c.get(f"/api/servers/{host.ip}/stats").json()
            again = c.get(f"/api/servers/{host.ip}/stats").json()
        mem_total = int(host.ssh("awk '/MemTotal/ {print $2}' /proc/meminfo").stdout) * 1024
        count = int(host.ssh("podman ps -a -q | wc -l").stdout)
        disk_total = int(
            host.ssh(
                "python3 -c \"import os; s = os.statvfs('/'); print(s.f_blocks * s.f_frsize)\""
            ).stdout
        )
        assert stats["memory"]["total_bytes"] == mem_total
        assert stats["containers"]["total"] == count >= 1
        assert 0 <= stats["cpu"]["percent"] <= 100
        assert stats["load"]["1m"] >= 0
        assert stats["disk"]["total_bytes"] == disk_total
        assert stats["cached"] is False and again["cached"] is True
    finally:
        host.ssh("podman rm -f statsprobe")


def test_events_arrive_in_order_while_running(fleet_api):
    op_id = start_slow(fleet_api, ["app"], slow_steps=4, slow_sleep=1)
    seen, after, live = [], 0, False
    with fleet_api.client() as c:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            page = c.get(
                f"/api/operations/{op_id}/events", params={"after": after, "wait": 5}
            ).json()
            if page["events"] and not page["finished"]:
                live = True  # events read while the run was still going
            seen += page["events"]
            after = page["next_after"]
            if page["finished"] and not page["events"]:
                break
        op = c.get(f"/api/operations/{op_id}").json()
    assert op["status"] == "succeeded", op
    assert live
    seqs = [e["seq"] for e in seen]
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))
    names = [e["event"] for e in seen if e["event"] not in ("verbose", "warning")]
    assert names[0] == "playbook_on_start" and names[-1] == "playbook_on_stats"
    assert sum(1 for e in seen if e["event"] == "runner_item_on_ok") == 4
    assert op["recap"]["app"]["failures"] == 0


def test_same_server_serialised_other_servers_in_parallel(fleet_api):
    first = start_slow(fleet_api, ["db"], slow_steps=2, slow_sleep=2)
    second = start_slow(fleet_api, ["db"], slow_steps=1, slow_sleep=1)
    other = start_slow(fleet_api, ["cache"], slow_steps=2, slow_sleep=2)
    with fleet_api.client() as c:
        a, b, o = (wait_operation(c, x) for x in (first, second, other))
    assert a["status"] == b["status"] == o["status"] == "succeeded"
    assert b["started_at"] >= a["finished_at"]  # one after the other on db
    assert o["started_at"] < a["finished_at"] and a["started_at"] < o["finished_at"]  # overlap


def test_cancel_stops_the_remote_work(fleet, fleet_api):
    host = fleet["cache"]
    op_id = start_slow(fleet_api, ["cache"], slow_steps=0, long_sleep=600)
    pidfile = f"/run/codeb-slow-{op_id}.pid"
    deadline = time.monotonic() + 60
    while host.ssh(f"test -s {pidfile}").returncode != 0:
        assert time.monotonic() < deadline, "remote work never started"
        time.sleep(0.3)
    remote_pid = host.ssh(f"cat {pidfile}", check=True).stdout.strip()
    assert host.ssh(f"kill -0 {remote_pid}").returncode == 0
    with fleet_api.client() as c:
        r = c.post(f"/api/operations/{op_id}/cancel")
        assert r.status_code == 200, r.text
        op = wait_operation(c, op_id, timeout=60)
    assert op["status"] == "canceled"
    assert op["result"]["remote_cleanup"] == "successful"
    assert host.ssh(f"kill -0 {remote_pid}").returncode != 0, "remote sleep still running"
    with fleet_api.client() as c:
        assert c.post(f"/api/operations/{op_id}/cancel").status_code == 409


def test_unreachable_server_fails_clearly(fleet, fleet_api):
    ghost_ip = str(ipaddress.ip_address(fleet.hosts[0].ip) + 100)  # on our bridge, no host
    with fleet_api.client() as c:
        r = c.post("/api/servers", json={"name": "ghost", "ip": ghost_ip, "role": "app"})
        op = wait_operation(c, r.json()["operation"]["id"], timeout=120)
        assert op["status"] == "failed"
        assert "unreachable" in op["error"]
        server = c.get(f"/api/servers/{ghost_ip}").json()
        assert server["status"] == "unreachable" and not server["facts"]
        statuses = {s["name"]: s["status"] for s in c.get("/api/servers").json()["servers"]}
    assert statuses["app"] == "ready"


def _serve(data_dir, port, fleet, env_extra=None):
    env = {
        **os.environ,
        "CODEB_DATA_DIR": str(data_dir),
        "CODEB_PORT": str(port),
        "CODEB_ALLOWED_NETWORKS": fleet_network(fleet),
        "CODEB_SSH_PRIVATE_KEY_FILE": str(fleet.key_path),
        **(env_extra or {}),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.executor.serve_with_test_jobs"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    key = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "shown once" in line:
            key = line.rsplit(" ", 1)[1].strip()
        if "serving on" in line:
            while time.monotonic() < deadline:
                try:
                    httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2)
                    return proc, key
                except httpx.TransportError:
                    time.sleep(0.1)
    proc.kill()
    raise AssertionError("codeb did not start")


def test_kill9_during_a_run_then_restart(fleet, tmp_path):
    port = free_port()
    proc, key = _serve(tmp_path, port, fleet)
    base = f"http://127.0.0.1:{port}"
    headers = {"X-API-Key": key, "Content-Type": "application/json"}
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=30) as c:
            host = fleet["app"]
            r = c.post(
                "/api/servers",
                json={"name": "app", "ip": host.ip, "role": "app", "bootstrap": False},
            )
            assert r.status_code == 201, r.text
            r = c.post(
                "/api/test/slow", json={"targets": ["app"], "slow_steps": 0, "long_sleep": 600}
            )
            op_id = r.json()["id"]
            pidfile = f"/run/codeb-slow-{op_id}.pid"
            deadline = time.monotonic() + 60
            while host.ssh(f"test -s {pidfile}").returncode != 0:
                assert time.monotonic() < deadline, "the remote work never started"
                time.sleep(0.3)
            remote_pid = host.ssh(f"cat {pidfile}", check=True).stdout.strip()
            old_runs = list((tmp_path / "runs").glob("run-*"))
            assert old_runs
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
    proc, _ = _serve(tmp_path, port, fleet)
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=30) as c:
            op = c.get(f"/api/operations/{op_id}").json()
            assert op["status"] == "interrupted" and "run it again" in op["error"]
            # The orphaned ansible-playbook is gone, and so is its run directory (extra vars).
            assert not [run for run in old_runs if run.exists()]
            for run in old_runs:
                orphans = subprocess.run(
                    ["pgrep", "-f", str(run)], capture_output=True, text=True
                ).stdout.split()
                assert orphans == [], orphans
            # The remote work it left is stopped by a cleanup run of its own.
            ops = c.get("/api/operations", params={"kind": "remote_cleanup"}).json()
            cleanup = wait_operation(c, ops["operations"][0]["id"])
            assert cleanup["status"] == "succeeded", cleanup
            assert cleanup["params"]["interrupted_operation"] == op_id
            assert fleet["app"].ssh(f"kill -0 {remote_pid}").returncode != 0
            # Its lock is free: a run on the same server starts and converges.
            r = c.post(f"/api/servers/{fleet['app'].ip}/bootstrap")
            assert r.status_code == 202
            again = wait_operation(c, r.json()["id"])
            assert again["status"] == "succeeded", again
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        proc.stdout.close()


def test_check_mode_changes_nothing(fleet, fleet_api):
    """Bootstrap in --check --diff on a host missing a directory: reported, not created."""
    from codeb.executor.runner import PlaybookRun, run_playbook
    from codeb.features.servers import service as servers
    from codeb.services import fleet as registry

    host = fleet["db"]
    host.ssh("rm -rf /var/lib/codeb", check=True)
    records = []
    with fleet_api.deps.db.connection_context():
        targets = registry.hosts_for(fleet_api.deps, ["db"])
    outcome = run_playbook(
        PlaybookRun("bootstrap.yml", targets, limit="db", check=True, diff=True),
        ssh=servers.ssh_settings(fleet_api.deps.settings),
        work_dir=fleet_api.deps.settings.data_dir / "runs",
        on_event=records.append,
    )
    assert outcome.status == "successful"
    changed = [r for r in records if r.changed and r.event == "runner_item_on_ok"]
    assert any("/var/lib/codeb" in str(r.data.get("diff", "")) for r in changed), changed
    assert host.ssh("test -e /var/lib/codeb").returncode != 0  # nothing was created
    with fleet_api.client() as c:  # and a real run converges again
        op = wait_operation(c, c.post(f"/api/servers/{host.ip}/bootstrap").json()["id"])
    assert op["status"] == "succeeded"
    assert host.ssh("test -d /var/lib/codeb").returncode == 0


def test_changed_host_key_fails_loudly(fleet, fleet_api):
    known_hosts = fleet_api.deps.settings.data_dir / "ssh" / "known_hosts"
    original = known_hosts.read_text()
    app, cache = fleet["app"].ip, fleet["cache"].ip
    cache_keys = [ln.split(" ", 1)[1] for ln in original.splitlines() if ln.startswith(cache + " ")]
    assert cache_keys and any(ln.startswith(app + " ") for ln in original.splitlines()), original
    forged = [ln for ln in original.splitlines() if not ln.startswith(app + " ")]
    forged += [f"{app} {k}" for k in cache_keys]  # app now "has" cache's host keys
    known_hosts.write_text("\n".join(forged) + "\n")
    # Connections already open were verified when made: close them so ssh must check again.
    from codeb.executor.runner import control_dir_for

    for sock in control_dir_for(fleet_api.deps.settings.data_dir / "runs").glob("*"):
        subprocess.run(
            ["ssh", "-O", "exit", "-o", f"ControlPath={sock}", "x"], capture_output=True, timeout=30
        )
    try:
        with fleet_api.client() as c:
            op = wait_operation(c, c.post(f"/api/servers/{app}/bootstrap").json()["id"])
        assert op["status"] == "failed"
        assert "host key" in op["error"].lower() or "identification" in op["error"].lower(), op
    finally:
        known_hosts.write_text(original)


def test_manual_run_is_journaled_and_imported(fleet, fleet_api, tmp_path):
    """The emergency path: export the inventory, run a playbook by hand; codeb records it."""
    import json as jsonlib

    from codeb.config import REPO_ROOT
    from codeb.store.models import OperationLog

    inventory = tmp_path / "hosts.yml"
    env = {
        **os.environ,
        "CODEB_DATA_DIR": str(fleet_api.deps.settings.data_dir),
        "CODEB_SSH_PRIVATE_KEY_FILE": str(fleet.key_path),
    }
    subprocess.run(
        [sys.executable, "-m", "codeb", "inventory", "export", "--output", str(inventory)],
        env=env,
        check=True,
        capture_output=True,
    )
    bindir = os.path.dirname(sys.executable)
    run = subprocess.run(
        [
            f"{bindir}/ansible-playbook",
            "-i",
            str(inventory),
            "playbooks/stats.yml",
            "--limit",
            "cache",
        ],
        cwd=REPO_ROOT,
        env={**env, "PATH": f"{bindir}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    with fleet_api.client() as c:  # codeb imports the journal before its next run
        wait_operation(c, c.post(f"/api/servers/{fleet['cache'].ip}/bootstrap").json()["id"])
    with fleet_api.deps.db.connection_context():
        rows = list(OperationLog.select().where(OperationLog.operation == "manual_playbook"))
    assert len(rows) == 1
    details = rows[0].details
    assert details["playbook"] == "stats.yml" and "cache" in details["recap"]
    assert rows[0].requested_by == "manual" and rows[0].status == "executed"
    assert jsonlib.dumps(details)  # plain data
