"""packaging/quadlet/codeb.container through Quadlet itself. Debian 12's Podman (4.3) has no
Quadlet, so the generator runs on a fleet host (Debian 13, Podman 5.4): `quadlet -dryrun`
must accept the unit, and the service it generates must say what the unit promises (read-only
root, no capabilities, the state volume, the secrets, the health check systemd waits for)
and pass `systemd-analyze verify` there."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

pytestmark = pytest.mark.fleet

REPO = Path(__file__).resolve().parents[2]
CONTAINER = REPO / "packaging" / "quadlet" / "codeb.container"
QUADLET = "/usr/libexec/podman/quadlet"


def test_quadlet_dryrun_and_the_generated_service(fleet):
    host = fleet.hosts[0]
    host.ssh("rm -rf /tmp/codeb-quadlet && mkdir -p /tmp/codeb-quadlet/in /tmp/codeb-quadlet/out",
             check=True)  # fmt: skip
    host.ssh("cat > /tmp/codeb-quadlet/in/codeb.container", input=CONTAINER.read_text(),
             check=True)  # fmt: skip
    try:
        r = host.ssh(f"QUADLET_UNIT_DIRS=/tmp/codeb-quadlet/in {QUADLET} -dryrun")
        assert r.returncode == 0, r.stderr + r.stdout
        assert "---codeb.service---" in r.stdout, r.stdout
        service = r.stdout.split("---codeb.service---", 1)[1]
        exec_start = next(line for line in service.splitlines() if line.startswith("ExecStart="))
        args = shlex.split(exec_start.removeprefix("ExecStart="))
        assert args[:2] == ["/usr/bin/podman", "run"]
        for expected in (
            "--read-only", "--read-only-tmpfs", "--cap-drop", "all", "--user", "10001:10001",
            "--security-opt=no-new-privileges", "--sdnotify=healthy",
            "-v", "codeb-state:/var/lib/codeb", "--publish", "127.0.0.1:8080:8080",
            "--health-interval", "30s", "--health-on-failure", "kill",
        ):  # fmt: skip
            assert expected in args, (expected, args)
        secrets = [args[i + 1] for i, a in enumerate(args) if a == "--secret"]
        assert {s.split(",")[0] for s in secrets} == {
            "codeb-secret-key", "codeb-log-key", "codeb-ssh-key",
        }  # fmt: skip
        assert all("type=mount" in s and "mode=0400" in s for s in secrets), secrets
        health = args[args.index("--health-cmd") + 1]
        assert health == "/opt/codeb/venv/bin/python /opt/codeb/packaging/healthcheck.py"
        assert (REPO / "packaging" / "healthcheck.py").is_file()
        assert args[-1] == "localhost/codeb:latest"
        assert "Type=notify" in service and "NotifyAccess=all" in service
        # systemd on the host accepts what Quadlet generated.
        host.ssh(
            f"QUADLET_UNIT_DIRS=/tmp/codeb-quadlet/in {QUADLET} /tmp/codeb-quadlet/out",
            check=True,
        )
        v = host.ssh("systemd-analyze verify /tmp/codeb-quadlet/out/codeb.service")
        assert v.returncode == 0, v.stderr
        print(f"quadlet -dryrun on {host.name}: ok; podman run has {len(args)} arguments")
    finally:
        host.ssh("rm -rf /tmp/codeb-quadlet")
