"""codeb installed as the systemd service on a fleet host, for real: a fresh Debian 13 host
gets the release tree, a virtualenv filled from a wheelhouse built here (no index at install),
the static user from the sysusers file and packaging/systemd/codeb.service, hardening and all.
Then, through that service's API only, codeb registers the three shared fleet hosts (with its
own SSH key, authorised as an operator would) and deploys an app to staging on them."""

from __future__ import annotations

import hashlib
import io
import ipaddress
import re
import subprocess
import sys
import tarfile
import time
import tomllib
from pathlib import Path

import httpx
import pytest

from tests.executor.helpers import wait_operation
from tests.fleet import fleet as fleetlib

pytestmark = pytest.mark.fleet

REPO = Path(__file__).resolve().parents[2]
GUEST_PYTHON = "3.13"  # Debian 13's
PLATFORMS = ("manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_28_x86_64",
             "manylinux_2_34_x86_64", "any")  # fmt: skip
APP = "localhost/codeb-test-app"
PROJECT = "svcshop"
LEAVE_OUT = ("tests/", "bench/", ".git", "var/", "inventory/hosts.yml")


def _requirements() -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], "pip", "setuptools>=68", "wheel"]


def wheelhouse() -> Path:
    """Every dependency as a wheel for the guest's Python, downloaded once per requirement
    set (pip's ordinary client) and kept with the fleet's caches."""
    reqs = _requirements()
    key = hashlib.sha256("\n".join([GUEST_PYTHON, *reqs]).encode()).hexdigest()[:16]
    target = Path("/var/cache/codeb-fleet") / f"wheelhouse-{key}"
    if target.is_dir():
        return target
    tmp = target.with_name(target.name + ".tmp")
    subprocess.run(["rm", "-rf", str(tmp)], check=True)
    abi = "cp" + GUEST_PYTHON.replace(".", "")
    cmd = [sys.executable, "-m", "pip", "download", "-q", "-d", str(tmp), "--only-binary=:all:",
           "--python-version", GUEST_PYTHON, "--implementation", "cp",
           "--abi", abi, "--abi", "abi3", "--abi", "none"]  # fmt: skip
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    subprocess.run([*cmd, *reqs], check=True, timeout=900)
    tmp.rename(target)
    return target


def release_tree() -> bytes:
    """The release tree (what git tracks, plus new files not ignored), as a tar.gz."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in sorted(set(filter(None, listed))):
            path = REPO / name
            if name.startswith(LEAVE_OUT) or not path.is_file():
                continue
            tar.add(path, arcname=name, recursive=False)
    return buf.getvalue()


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


def test_codeb_as_a_systemd_service_deploys_to_the_fleet(fleet, ctl):
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    wheels = wheelhouse()
    timings["wheelhouse"] = time.monotonic() - t0

    t0 = time.monotonic()
    ctl.ssh("mkdir -p /opt/codeb /opt/wheelhouse", check=True)
    ctl.ssh("tar -C /opt/codeb -xzf -", input=release_tree(), check=True, timeout=300)
    ctl.ssh("tar -C /opt/wheelhouse -xf -", input=_tar_dir(wheels), check=True, timeout=300)
    pip_wheel = next(p.name for p in wheels.glob("pip-*.whl"))
    install = (
        "set -e; python3 -m venv --without-pip /opt/codeb/venv; "
        f"/opt/codeb/venv/bin/python /opt/wheelhouse/{pip_wheel}/pip install -q --no-index "
        "--find-links /opt/wheelhouse pip setuptools wheel; "
        "/opt/codeb/venv/bin/pip install -q --no-index --find-links /opt/wheelhouse "
        "--no-build-isolation -e /opt/codeb"
    )
    r = ctl.ssh(install, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    timings["install"] = time.monotonic() - t0

    subnet = str(ipaddress.ip_network(f"{ctl.ip}/24", strict=False))
    setup = (
        "set -e; install -D -m 0644 /opt/codeb/packaging/systemd/codeb.sysusers "
        "/usr/lib/sysusers.d/codeb.conf; systemd-sysusers; "
        "install -m 0644 /opt/codeb/packaging/systemd/codeb.service /etc/systemd/system/; "
        "mkdir -p /etc/codeb; "
        f"printf 'CODEB_HOST=0.0.0.0\\nCODEB_ALLOWED_NETWORKS={subnet}\\n' > /etc/codeb/codeb.env; "
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
            ops = []
            for h in fleet:
                r = c.post("/api/servers", json={"name": h.name, "ip": h.ip, "role": h.name})
                assert r.status_code in (201, 202), r.text
                ops.append(r.json()["operation"]["id"])
            for op in ops:
                done = wait_operation(c, op, timeout=600)
                assert done["status"] == "succeeded", done
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
