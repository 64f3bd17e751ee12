"""Adding a bare server just works: bare Debian 13 hosts (minbase + sshd + python3, no Podman)
registered through the API get what their roles run installed and configured by the bootstrap,
take a staging deploy end to end, and a second bootstrap changes nothing. A Debian 12 host,
whose Podman has no Quadlet, is refused with a message naming what is missing.

The hosts have no route out: they install through the fleet's package proxy (Debian's squid
on the bridge address, fetching from Debian's mirror), given to codeb as CODEB_APT_PROXY."""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from codeb.clock import SystemClock
from codeb.executor.events import EventRecord, host_recap, reported
from codeb.executor.inventory import Host
from codeb.executor.runner import PlaybookRun, run_playbook
from codeb.features.servers import service as server_service
from tests.executor.helpers import wait_operation
from tests.fleet import fleet as fleetlib
from tests.support import live_api

pytestmark = pytest.mark.fleet

APP = "localhost/codeb-test-app"
BARE = {"bare-app": "app", "bare-db": "db", "bare-cache": "cache"}
OLD = "old-debian"  # Debian 12: Podman 4.3, no Quadlet
TIMINGS_FILE = os.environ.get("CODEB_BOOTSTRAP_TIMINGS")  # where to write the figures, if set
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def bare(fleet, tmp_path_factory):
    """The bare hosts, the package proxy, and an API that knows the proxy."""
    cfg = fleet.config
    proxy = fleetlib.apt_proxy_up(cfg)
    specs = [(name, "bare") for name in BARE] + [(OLD, "bare-bookworm")]
    try:
        hosts = {h.name: h for h in fleetlib.add_hosts(specs, cfg)}
        net = str(ipaddress.ip_network(f"{fleet.hosts[0].ip}/24", strict=False))
        with live_api(
            tmp_path_factory.mktemp("bare"),
            clock=SystemClock(),
            allowed_networks=net,
            ssh_private_key_file=fleet.key_path,
            apt_proxy=proxy,
        ) as api:
            yield api, hosts, proxy
    finally:
        fleetlib.remove_hosts([n for n, _ in specs], cfg)
        fleetlib.apt_proxy_down(cfg)
        if TIMINGS_FILE:
            Path(TIMINGS_FILE).write_text(
                "".join(f"{k}\t{v:.1f}\n" for k, v in sorted(TIMINGS.items()))
            )


def register(c: httpx.Client, name: str, ip: str, role: str) -> str:
    r = c.post("/api/servers", json={"name": name, "ip": ip, "role": role})
    assert r.status_code == 202, r.text
    return r.json()["operation"]["id"]


def rebootstrap(c: httpx.Client, ip: str) -> str:
    r = c.post(f"/api/servers/{ip}/bootstrap")
    assert r.status_code == 202, r.text
    body = r.json()
    return (body.get("operation") or body)["id"]


def playbook_run(
    api, host, roles: list[str], *, check: bool = False
) -> tuple[str, dict, list[EventRecord]]:
    """bootstrap.yml through codeb's runner, as codeb runs it (check: with --check --diff)."""
    records: list[EventRecord] = []
    outcome = run_playbook(
        PlaybookRun(
            "bootstrap.yml",
            [Host(host.name, host.ip, roles[0])],
            extravars={
                "codeb_bootstrap_server_roles": {host.name: roles},
                "codeb_bootstrap_apt_proxy": api.deps.settings.apt_proxy,
            },
            limit=host.name,
            check=check,
            diff=check,
        ),
        ssh=server_service.ssh_settings(api.deps.settings),
        work_dir=api.deps.settings.data_dir / "runs",
        on_event=records.append,
    )
    return outcome.status, host_recap(records).get(host.name, {}), records


def installed(host, package: str) -> bool:
    return host.ssh(f"dpkg-query -W -f '${{Status}}' {package} 2>/dev/null").stdout.endswith(
        "installed"
    )


def test_check_mode_on_a_bare_host_tells_and_changes_nothing(bare):
    api, hosts, _ = bare
    host = hosts["bare-app"]
    assert not installed(host, "podman")
    status, recap, records = playbook_run(api, host, ["app"], check=True)
    assert status == "successful", [r.data for r in records if r.failed]
    assert recap.get("changed", 0) > 0
    packages = next(
        r for r in records if r.task == "Install what the roles run" and r.event == "runner_on_ok"
    )
    assert packages.changed and "podman (not installed)" in str(packages.data.get("diff"))
    changes = reported(records, "codeb_facts")[host.name]["changes"]
    assert "would install podman" in changes and "would install crun" in changes, changes
    assert not installed(host, "podman")
    assert host.ssh("test -e /etc/apt/apt.conf.d/80codeb-proxy").returncode != 0


def test_bare_hosts_bootstrap_deploy_and_rebootstrap_without_change(bare, fleet):
    api, hosts, proxy = bare
    with api.client() as c:
        # 1. Registering bootstraps: everything each role runs is installed and configured.
        # bare-app starts as a control server (what every server gets, no Podman), then
        # becomes an app server (PUT): its second bootstrap installs only what app adds.
        roles = {**BARE, "bare-app": "control"}
        t0 = time.monotonic()
        ops = {name: register(c, name, hosts[name].ip, role) for name, role in roles.items()}
        done = {name: wait_operation(c, op, timeout=900) for name, op in ops.items()}
        TIMINGS["bare_bootstrap_3_hosts_s"] = time.monotonic() - t0
        for name, op in done.items():
            assert op["status"] == "succeeded", (name, op.get("error"))
        control = c.get(f"/api/servers/{hosts['bare-app'].ip}").json()["facts"]
        assert control["roles"] == ["control"] and control["podman"] is None, control
        assert any(ch.startswith("installed systemd-timesyncd=") for ch in control["changes"])
        assert not installed(hosts["bare-app"], "podman")
        t0 = time.monotonic()
        r = c.put(f"/api/servers/{hosts['bare-app'].ip}", json={"role": "app"})
        assert r.status_code == 202, r.text
        op = wait_operation(c, r.json()["operation"]["id"], timeout=900)
        assert op["status"] == "succeeded", op.get("error")
        TIMINGS["role_added_bootstrap_s"] = time.monotonic() - t0
        for name in BARE:
            server = c.get(f"/api/servers/{hosts[name].ip}").json()
            assert server["status"] == "ready", server
            facts = server["facts"]
            m = re.match(r"(\d+)\.(\d+)", facts["podman"])
            assert m and (int(m[1]), int(m[2])) >= (4, 4), facts
            assert facts["quadlet"] and facts["roles"] == [BARE[name]]
            assert facts["apt_proxy"] is True
            changes = " ".join(facts["changes"])
            assert "installed podman=" in changes
            assert "/etc/containers/containers.conf.d/50-codeb.conf" in changes
            # What every server gets was already there on the former control server.
            first_time = name != "bare-app"
            assert ("installed systemd-timesyncd=" in changes) == first_time, changes
            assert ("/etc/systemd/journald.conf.d/50-codeb.conf" in changes) == first_time
            assert facts["packages"]["podman"] and facts["packages"]["crun"]
            host = hosts[name]
            conf = host.ssh("cat /etc/apt/apt.conf.d/80codeb-proxy", check=True).stdout
            assert f'"{proxy}"' in conf
            host.ssh("podman info --format '{{.Host.OCIRuntime.Name}}'", check=True)
            host.ssh("test -s /etc/systemd/journald.conf.d/50-codeb.conf", check=True)
            assert host.ssh("systemctl is-enabled systemd-timesyncd").stdout.strip() == "enabled"

        # 2. The images come the way an operator brings them without a registry.
        t0 = time.monotonic()
        errors: list[BaseException] = []

        def load(h):
            try:
                fleetlib.load_images(h, fleet.config)
            except BaseException as e:  # re-raised below
                errors.append(e)

        loaders = [threading.Thread(target=load, args=(hosts[n],)) for n in BARE]
        for t in loaders:
            t.start()
        for t in loaders:
            t.join(timeout=600)
        assert not errors, errors
        TIMINGS["image_load_3_hosts_s"] = time.monotonic() - t0

        # 3. A staging deploy onto them works end to end.
        created = c.post("/api/projects", json={"name": "barely", "type": "nodejs"})
        assert created.status_code == 201, created.text
        r = c.post(
            "/api/containers/deploy",
            json={"project": "barely", "environment": "staging", "image": f"{APP}:v1"},
        )
        assert r.status_code == 202, r.text
        op = wait_operation(c, r.json()["result"]["operation"]["id"], timeout=600)
        assert op["status"] == "succeeded", op.get("error")
        assert op["result"]["healthy"] is True
        app = hosts["bare-app"]
        port = re.search(r"^PORT=(\d+)$", created.json()["env_files"]["staging"], re.M)[1]
        assert "v1" in httpx.get(f"http://{app.ip}:{port}/", timeout=5).text
        database_url = re.search(
            r"^DATABASE_URL=(.*)$", created.json()["env_files"]["staging"], re.M
        )[1]
        assert f"@{hosts['bare-db'].ip}:" in database_url
        psql = subprocess.run(
            ["psql", database_url, "-tAc", "SELECT 40 + 2"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert psql.stdout.strip() == "42", psql.stderr

        # 4. A second bootstrap finds everything in place: no change at all.
        t0 = time.monotonic()
        again = {n: rebootstrap(c, hosts[n].ip) for n in BARE}
        for name, op_id in again.items():
            op = wait_operation(c, op_id, timeout=600)
            assert op["status"] == "succeeded", (name, op.get("error"))
            assert op["recap"][name]["changed"] == 0, (name, op["recap"])
            facts = c.get(f"/api/servers/{hosts[name].ip}").json()["facts"]
            assert facts["changes"] == [], facts["changes"]
        TIMINGS["rebootstrap_3_hosts_s"] = time.monotonic() - t0


def test_unsupported_host_is_refused_naming_what_is_missing(bare):
    api, hosts, _ = bare
    old = hosts[OLD]
    with api.client() as c:
        op = wait_operation(c, register(c, OLD, old.ip, "app"), timeout=600)
        assert op["status"] == "failed", op
        error = op["error"]
        assert "unsupported host" in error, error
        assert re.search(r"podman 4\.3\.\d+ is the newest", error), error
        assert "podman >= 4.4" in error and "Debian 13" in error, error
        assert "Nothing was installed" in error
        server = c.get(f"/api/servers/{old.ip}").json()
        assert server["status"] == "bootstrap_failed"
    assert not installed(old, "podman")
