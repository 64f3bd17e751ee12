"""codeb installed as the systemd service on a fleet host, for real: a fresh Debian 13 host
gets a virtualenv filled from codeb's wheel, built here by `pip wheel`, and a wheelhouse of its
dependencies (no index at install, no checkout on the host), the static user from the sysusers
file and packaging/systemd/codeb.service, hardening and all. Then, through that service's API
only, codeb registers the three shared fleet hosts (with its own SSH key, authorised as an
operator would) and deploys an app to staging on them."""

from __future__ import annotations

import io
import ipaddress
import re
import tarfile
import time
from pathlib import Path

import httpx
import pytest

from tests.executor.helpers import register_fleet, wait_operation
from tests.fleet import fleet as fleetlib
from tests.packaging.wheels import REPO, build_wheel, wheelhouse

pytestmark = pytest.mark.fleet

GUEST_PYTHON = "3.13"  # Debian 13's
APP = "localhost/codeb-test-app"
PROJECT = "svcshop"


def _tar_dir(path: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for f in sorted(path.iterdir()):
            tar.add(f, arcname=f.name)
    return buf.getvalue()


@pytest.fixture(scope="module")
def ctl(fleet):
    """A fourth host, for codeb itself; removed afterwards."""
    (host,) = fleetlib.add_hosts([("ctl", "full")], fleet.config)
    try:
        yield host
    finally:
        fleetlib.remove_hosts(["ctl"], fleet.config)


def test_codeb_as_a_systemd_service_deploys_to_the_fleet(fleet, ctl, tmp_path):
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    wheels = wheelhouse(GUEST_PYTHON)
    timings["wheelhouse"] = time.monotonic() - t0
    t0 = time.monotonic()
    wheel = build_wheel(tmp_path, wheels)  # pure Python: one wheel for any Python 3.11+
    timings["build_wheel"] = time.monotonic() - t0

    t0 = time.monotonic()
    ctl.ssh("mkdir -p /opt/codeb /opt/wheelhouse /opt/dist", check=True)
    ctl.ssh("tar -C /opt/wheelhouse -xf -", input=_tar_dir(wheels), check=True, timeout=300)
    ctl.ssh(f"cat > /opt/dist/{wheel.name}", input=wheel.read_bytes(), check=True, timeout=120)
    for name in ("codeb.sysusers", "codeb.service"):
        unit = (REPO / "packaging" / "systemd" / name).read_bytes()
        ctl.ssh(f"cat > /opt/dist/{name}", input=unit, check=True)
    pip_wheel = next(p.name for p in wheels.glob("pip-*.whl"))
    install = (
        "set -e; python3 -m venv --without-pip /opt/codeb/venv; "
        f"/opt/codeb/venv/bin/python /opt/wheelhouse/{pip_wheel}/pip install -q --no-index "
        "--find-links /opt/wheelhouse pip; "
        "/opt/codeb/venv/bin/pip install -q --no-index --find-links /opt/wheelhouse "
        f"/opt/dist/{wheel.name}"
    )
    r = ctl.ssh(install, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    timings["install"] = time.monotonic() - t0
    # Its playbooks, roles and templates are the installed ones; there is no checkout.
    probe = ctl.ssh(
        "/opt/codeb/venv/bin/python -c 'from codeb.config import content_root as c; print(c())'",
        check=True,
    ).stdout.strip()
    assert probe.startswith("/opt/codeb/venv/lib/") and probe.endswith("/codeb/_content"), probe
    assert ctl.ssh("test -e /opt/codeb/playbooks").returncode != 0

    subnet = str(ipaddress.ip_network(f"{ctl.ip}/24", strict=False))
    setup = (
        "set -e; install -D -m 0644 /opt/dist/codeb.sysusers "
        "/usr/lib/sysusers.d/codeb.conf; systemd-sysusers; "
        "install -m 0644 /opt/dist/codeb.service /etc/systemd/system/; "
        "mkdir -p /etc/codeb; "
        f"printf 'CODEB_HOST=0.0.0.0\\nCODEB_ALLOWED_NETWORKS={subnet}\\n' "
        "> /etc/codeb/codeb.env; "
        "systemctl daemon-reload; systemctl start codeb"
    )  # fmt: skip
    t0 = time.monotonic()
    ctl.ssh(setup, check=True, timeout=120)
    base = f"http://{ctl.ip}:8080"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{base}/api/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            status = ctl.ssh("systemctl status codeb --no-pager; journalctl -u codeb -n 50")
            pytest.fail(f"codeb.service did not answer: {status.stdout}")
        time.sleep(0.5)
    timings["start_to_health"] = time.monotonic() - t0
    props = ctl.ssh("systemctl show codeb -p User -p ActiveState -p MainPID", check=True).stdout
    assert "User=codeb" in props and "ActiveState=active" in props, props
    owner = ctl.ssh("stat -c '%U %a' /var/lib/codeb", check=True).stdout.split()
    assert owner == ["codeb", "700"], owner
    journal = ctl.ssh("journalctl -u codeb -o cat --no-pager", check=True).stdout
    admin = re.search(r"first admin API key.*: (cb_\S+)", journal).group(1)

    pubkey = None
    try:
        with httpx.Client(base_url=base, headers={"X-API-Key": admin}, timeout=60) as c:
            pubkey = c.get("/api/servers/ssh-key").json()["public_key"].strip()
            for host in fleet:  # as an operator authorises codeb on a server
                host.ssh("cat >> /root/.ssh/authorized_keys", input=pubkey + "\n", check=True)
            t0 = time.monotonic()
            register_fleet(c, fleet, timeout=600)
            timings["register_and_bootstrap"] = time.monotonic() - t0
            assert c.post("/api/projects", json={"name": PROJECT}).status_code == 201
            t0 = time.monotonic()
            body = {"project": PROJECT, "environment": "staging", "image": f"{APP}:v1"}
            r = c.post("/api/containers/deploy", json=body)
            assert r.status_code == 202, r.text
            op = wait_operation(c, r.json()["result"]["operation"]["id"], timeout=600)
            assert op["status"] == "succeeded", op
            timings["staging_deploy"] = time.monotonic() - t0
            rows = c.get("/api/containers", params={"project": PROJECT}).json()["containers"]
            app_row = next(x for x in rows if x["server_type"] == "app")
            page = httpx.get(f"http://{fleet['app'].ip}:{app_row['port_external']}/", timeout=5)
            assert "v1" in page.text
            metrics = c.get("/api/metrics", params={"format": "json"}).json()
            assert metrics["overview"]["operations"].get("succeeded", 0) >= 4
        print("codeb.service on a fleet host: " + ", ".join(
            f"{k} {v:.1f}s" for k, v in timings.items()))  # fmt: skip
    finally:
        for host in fleet:
            host.ssh(
                f"systemctl stop '{PROJECT}-*' 2>/dev/null; "
                f"rm -f /etc/containers/systemd/{PROJECT}-*; systemctl daemon-reload; "
                f"podman rm -af >/dev/null 2>&1; podman volume prune -f >/dev/null 2>&1; "
                f"rm -rf /etc/codeb/env/{PROJECT}-* /etc/codeb/redis/{PROJECT}-*"
            )
            if pubkey:
                host.ssh("grep -vxF -f /dev/stdin /root/.ssh/authorized_keys > /tmp/ak; "
                         "cat /tmp/ak > /root/.ssh/authorized_keys; rm -f /tmp/ak",
                         input=pubkey + "\n")  # fmt: skip
