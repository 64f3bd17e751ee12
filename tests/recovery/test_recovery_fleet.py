"""The control server is lost and rebuilt (issue 18), on the real fleet: codeb replicates its
state to a real S3 server while it deploys; its data directory is destroyed; a fresh one is
restored from the replica and the bundle; the rebuilt codeb shows the project and its .env
values, and redeploys to the same hosts with nothing to change, through the SSH key and
host keys that came back in the bundle."""

from __future__ import annotations

import ipaddress
import shutil

import pytest

from codeb.clock import SystemClock
from codeb.features.recovery import service
from tests.executor.helpers import register_fleet, wait_operation
from tests.recovery.test_recovery import PASSPHRASE, passwords, replica_settings, wait_current
from tests.s3 import seaweedfs
from tests.support import live_api, make_settings

pytestmark = pytest.mark.fleet
APP = "localhost/codeb-test-app"
PROJECT = "rcv"


def deploy(c) -> dict:
    r = c.post(
        "/api/containers/deploy",
        json={"project": PROJECT, "environment": "staging", "image": f"{APP}:v1"},
    )
    assert r.status_code == 202 and r.json()["status"] == "executed", r.text
    return wait_operation(c, r.json()["result"]["operation"]["id"])


def test_a_rebuilt_codeb_takes_the_fleet_back(fleet, tmp_path):
    net = str(ipaddress.ip_network(f"{fleet.hosts[0].ip}/24", strict=False))
    data = tmp_path / "control"
    # codeb's own SSH key lives in its data directory, so it must come back from the bundle.
    (data / "ssh").mkdir(parents=True, mode=0o700)
    shutil.copy(fleet.key_path, data / "ssh" / "id_ed25519")
    (data / "ssh" / "id_ed25519").chmod(0o600)
    out = tmp_path / "control.bundle"
    try:
        with seaweedfs(tmp_path / "s3") as s3:
            overrides = {
                **replica_settings(s3, data, "control/codeb.db"),
                "allowed_networks": net,
            }
            with live_api(data, clock=SystemClock(), **overrides) as api, api.client() as c:
                register_fleet(c, fleet)
                created = c.post("/api/projects", json={"name": PROJECT})
                assert created.status_code == 201, created.text
                first = deploy(c)
                assert first["status"] == "succeeded", first
                with api.deps.db.connection_context():
                    service.export_bundle(api.deps, out, PASSPHRASE)
                wait_current(api.deps.settings)
                secrets = passwords(api.deps)

            shutil.rmtree(data)  # the control server is gone
            summary = service.restore_bundle(make_settings(data), out, PASSPHRASE)
            assert summary["projects"] == 1

            with live_api(data, clock=SystemClock(), **overrides) as api, api.client() as c:
                assert [p["name"] for p in c.get("/api/projects").json()["projects"]] == [PROJECT]
                assert passwords(api.deps) == secrets
                again = deploy(c)
                assert again["status"] == "succeeded", again
                assert all(h["changed"] == 0 for h in again["recap"].values()), again["recap"]
    finally:
        for host in fleet:
            host.ssh(
                f"systemctl stop '{PROJECT}-*' 2>/dev/null; "
                f"rm -f /etc/containers/systemd/{PROJECT}-*; systemctl daemon-reload; "
                f"podman rm -f $(podman ps -aq --filter name={PROJECT}-) >/dev/null 2>&1; "
                f"podman volume rm -f $(podman volume ls -q --filter name={PROJECT}-) "
                f">/dev/null 2>&1; rm -rf /etc/codeb/env/{PROJECT}-* /etc/codeb/redis/{PROJECT}-*"
            )
