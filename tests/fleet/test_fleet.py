"""Proves the test fleet on real hosts: ssh, Podman + Quadlet, the images, the network rule."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import TypeVar

import pytest

from .fixtures import Fleet
from .fleet import APP_IMAGE, POSTGRES_IMAGE, REDIS_IMAGE, Host

pytestmark = pytest.mark.fleet

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 60) -> T:
    """Polls probe() until it returns something truthy; bounded."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = probe()
            if result:
                return result
        except (OSError, subprocess.SubprocessError) as e:
            last = e
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_hosts_boot_and_answer_ssh(fleet: Fleet) -> None:
    assert [h.name for h in fleet] == ["app", "db", "cache"]
    assert len({h.ip for h in fleet}) == 3
    for h in fleet:
        assert h.ssh("hostname", check=True).stdout.strip() == h.name
        state = h.ssh("systemctl is-system-running --wait", timeout=60).stdout.strip()
        failed = h.ssh("systemctl --failed --no-legend --plain").stdout
        assert state == "running", f"{h.name}: {state}; failed units: {failed}"
        # Hosts know each other by name (written into /etc/hosts).
        others = [o for o in fleet if o.name != h.name]
        out = h.ssh(f"getent hosts {others[0].name}", check=True).stdout
        assert others[0].ip in out


def test_podman_and_quadlet_present(fleet: Fleet) -> None:
    h = fleet["app"]
    out = h.ssh("podman --version", check=True).stdout
    m = re.search(r"(\d+)\.(\d+)", out)
    assert m and (int(m[1]), int(m[2])) >= (4, 4), out
    gens = "/usr/libexec/podman/quadlet /usr/lib/systemd/system-generators/podman-system-generator"
    h.ssh(f"for f in {gens}; do test -x $f || exit 1; done", check=True)
    images = h.ssh("podman images --format '{{.Repository}}:{{.Tag}}'", check=True).stdout
    for tag in (f"{APP_IMAGE}:v1", f"{APP_IMAGE}:v2", f"{APP_IMAGE}:broken"):
        assert tag in images
    assert POSTGRES_IMAGE in images and REDIS_IMAGE in images


def _app_unit(version: str, host_port: int) -> str:
    return (
        "[Unit]\nDescription=codeb test app\nStartLimitIntervalSec=0\n\n"
        f"[Container]\nImage={APP_IMAGE}:{version}\nPull=never\n"
        f"PublishPort={host_port}:3000\nEnvironment=PORT=3000\nRunInit=yes\n\n"
        "[Service]\nSuccessExitStatus=143\nRestart=on-failure\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )


def _deploy(h: Host, version: str, host_port: int) -> None:
    h.ssh(
        "cat > /etc/containers/systemd/fleet-web.container",
        input=_app_unit(version, host_port),
        check=True,
    )
    dry = h.ssh("/usr/libexec/podman/quadlet -dryrun")
    assert dry.returncode == 0 and "---fleet-web.service---" in dry.stdout, dry.stderr
    h.ssh("systemctl daemon-reload && systemctl restart fleet-web.service", check=True)


def test_quadlet_app_unit_serves_http(fleet: Fleet) -> None:
    h, port = fleet["app"], 18080
    try:
        for version in ("v1", "v2"):
            _deploy(h, version, port)

            def page(v: str = version) -> tuple[int, str] | None:
                status, body = http_get(f"http://{h.ip}:{port}/")
                return (status, body) if f"codeb-test-app {v}" in body else None

            assert wait_for(f"app {version}", page, timeout=30)[0] == 200
            assert http_get(f"http://{h.ip}:{port}/health") == (200, "ok\n")
        _deploy(h, "broken", port)

        def unhealthy() -> tuple[int, str] | None:
            status, body = http_get(f"http://{h.ip}:{port}/health")
            return (status, body) if status != 200 else None

        status, body = wait_for("broken app", unhealthy, timeout=30)
        assert status == 500 and "broken" in body
        # SuccessExitStatus=143 + RunInit=yes: a clean, quick stop, not a failed unit.
        h.ssh("systemctl stop fleet-web.service", check=True, timeout=30)
        assert h.ssh("systemctl is-active fleet-web.service").stdout.strip() == "inactive"
    finally:
        h.ssh("systemctl stop fleet-web.service; rm -f /etc/containers/systemd/fleet-web.container")
        h.ssh("systemctl daemon-reload")


def test_postgres_image(fleet: Fleet) -> None:
    psql = shutil.which("psql")
    if psql is None:
        pytest.fail("psql is missing on this machine: apt-get install postgresql-client")
    h, port = fleet["db"], 15432
    h.ssh("podman rm -f fleet-pg", timeout=60)
    h.ssh(
        f"podman run -d --name fleet-pg -p {port}:5432 -e POSTGRES_USER=app "
        f"-e POSTGRES_PASSWORD=s3cret -e POSTGRES_DB=appdb {POSTGRES_IMAGE}",
        check=True,
    )
    try:
        env = {**os.environ, "PGPASSWORD": "s3cret", "PGCONNECT_TIMEOUT": "3"}
        base = [psql, "-h", h.ip, "-p", str(port), "-U", "app", "-d", "appdb", "-Atv"]
        base.append("ON_ERROR_STOP=1")

        def query(sql: str, pg_env: dict[str, str] = env) -> subprocess.CompletedProcess:
            return subprocess.run(
                [*base, "-c", sql], env=pg_env, capture_output=True, text=True, timeout=20
            )

        wait_for("postgres", lambda: query("SELECT 1").returncode == 0)
        res = query("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'x')")
        assert res.returncode == 0, res.stderr
        assert query("SELECT v FROM t WHERE id = 1").stdout.strip() == "x"
        wrong = query("SELECT 1", {**env, "PGPASSWORD": "wrong"})
        assert wrong.returncode != 0 and "password authentication failed" in wrong.stderr
    finally:
        h.ssh("podman rm -f fleet-pg", timeout=60)


def _resp(sock: socket.socket, *args: str) -> bytes:
    cmd = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    sock.sendall(cmd.encode())
    return sock.recv(4096)


def test_redis_image(fleet: Fleet) -> None:
    h, port = fleet["cache"], 16379
    h.ssh("podman rm -f fleet-redis", timeout=60)
    h.ssh(
        f"podman run -d --name fleet-redis -p {port}:6379 {REDIS_IMAGE} "
        "redis-server --requirepass s3cret --appendonly yes",
        check=True,
    )
    try:

        def ping() -> bytes | None:
            with socket.create_connection((h.ip, port), timeout=3) as s:
                return _resp(s, "PING") or None

        assert wait_for("redis", ping).startswith(b"-NOAUTH")
        with socket.create_connection((h.ip, port), timeout=5) as s:
            assert _resp(s, "AUTH", "wrong").startswith(b"-WRONGPASS")
            assert _resp(s, "AUTH", "s3cret") == b"+OK\r\n"
            assert _resp(s, "SET", "k", "v") == b"+OK\r\n"
            assert _resp(s, "GET", "k") == b"$1\r\nv\r\n"
            assert b"yes" in _resp(s, "CONFIG", "GET", "appendonly")
            assert b"/data" in _resp(s, "CONFIG", "GET", "dir")
    finally:
        h.ssh("podman rm -f fleet-redis", timeout=60)


def test_guests_are_isolated(fleet: Fleet) -> None:
    bridge = fleet.config.bridge
    rules = subprocess.run(["iptables", "-w", "-S", "FORWARD"], capture_output=True, text=True)
    assert f"-A FORWARD -i {bridge} ! -o {bridge}" in rules.stdout
    assert f"-A FORWARD ! -i {bridge} -o {bridge}" in rules.stdout
    for line in rules.stdout.splitlines():
        if f" {bridge} " in line and line.startswith("-A FORWARD"):
            assert line.endswith("-j DROP"), line
    nat = subprocess.run(["iptables", "-w", "-t", "nat", "-S"], capture_output=True, text=True)
    assert str(fleet.config.subnet) not in nat.stdout and bridge not in nat.stdout
    for h in fleet:
        routes = h.ssh("ip -4 route show; ip -6 route show", check=True).stdout
        assert "default" not in routes, f"{h.name} has a default route: {routes}"
        # A route lookup only: no packet is sent.
        lookup = h.ssh("ip -4 route get 192.0.2.1")
        assert lookup.returncode != 0 and "unreachable" in lookup.stderr.lower()
