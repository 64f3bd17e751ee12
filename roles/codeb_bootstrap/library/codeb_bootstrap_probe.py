#!/usr/bin/python3
"""Ansible module: what bootstrap needs to know about a host, read in one round trip.

Read-only (run it with check_mode: false): the distribution, whether systemd is PID 1,
virtualization, what Podman/Quadlet/systemd are there, which of the given Debian packages are
installed (dpkg-query) and which time-sync daemon runs, and what the host lets containers use
(can it raise rlimits, is the pids cgroup controller there). Given the files, directories and
units bootstrap manages, it also says which of them differ, so that each builtin module after
it runs only for what differs: a bootstrap of a host that has everything costs a few module
calls. Uses only the standard library and dpkg-query, so it works on a bare host.
"""

from __future__ import annotations

import hashlib
import os
import platform
import resource
import shutil
import subprocess

from ansible.module_utils.basic import AnsibleModule

QUADLET_PATHS = ("/usr/libexec/podman/quadlet", "/usr/lib/podman/quadlet")
TIME_DAEMONS = ("systemd-timesyncd", "chrony", "ntpsec", "ntp", "openntpd")
# Podman (rootful) sets these on every container unless containers.conf says otherwise.
PODMAN_NOFILE = 1048576
PODMAN_NPROC = 4194304


def os_release() -> dict:
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            with open(path) as fh:
                lines = fh.read().splitlines()
        except FileNotFoundError:
            continue
        values = {}
        for line in lines:
            key, sep, value = line.partition("=")
            if sep:
                values[key.strip()] = value.strip().strip('"')
        return values
    return {}


def output(argv: list[str]) -> str | None:
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def installed(names: list[str]) -> dict:
    """{package: installed version or None}, one dpkg-query for all of them."""
    found = dict.fromkeys(names)
    if not names or shutil.which("dpkg-query") is None:
        return found
    res = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package}\t${db:Status-Status}\t${Version}\n", *names],
        capture_output=True,
        text=True,
        check=False,
    )
    for line in res.stdout.splitlines():
        pkg, status, version = [*line.split("\t"), "", ""][:3]
        if status == "installed" and pkg in found:
            found[pkg] = version
    return found


def can_raise_limits() -> bool:
    """Whether this host lets root raise rlimits past their hard values (CAP_SYS_RESOURCE
    that really works: some container hosts drop it). Tried in a child, nothing changes."""
    pid = os.fork()
    if pid == 0:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (PODMAN_NOFILE, PODMAN_NOFILE))
            resource.setrlimit(resource.RLIMIT_NPROC, (PODMAN_NPROC, PODMAN_NPROC))
        except (ValueError, OSError):
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def pids_controller() -> bool:
    try:
        with open("/sys/fs/cgroup/cgroup.controllers") as fh:
            return "pids" in fh.read().split()
    except FileNotFoundError:
        return os.path.isdir("/sys/fs/cgroup/pids")  # cgroup v1


def hard_limit(which: int) -> int | None:
    hard = resource.getrlimit(which)[1]
    return None if hard == resource.RLIM_INFINITY else hard


def file_differs(spec: dict) -> bool:
    """Missing, another content (sha256 of the text), mode or owner than root's."""
    try:
        st = os.stat(spec["path"])
        with open(spec["path"], "rb") as fh:
            digest = hashlib.sha256(fh.read()).hexdigest()
    except OSError:
        return True
    want = spec.get("sha256") or hashlib.sha256(spec["content"].encode()).hexdigest()
    return (
        digest != want
        or (st.st_mode & 0o7777) != int(spec.get("mode", "0644"), 8)
        or (st.st_uid, st.st_gid) != (0, 0)
    )


def dir_spec(spec: str | dict) -> dict:
    return {"path": spec, "mode": "0755"} if isinstance(spec, str) else spec


def dir_differs(spec: dict) -> bool:
    try:
        st = os.stat(spec["path"])
    except OSError:
        return True
    return (
        not os.path.isdir(spec["path"])
        or (st.st_mode & 0o7777) != int(spec["mode"], 8)
        or (st.st_uid, st.st_gid) != (0, 0)
    )


def unit_state(unit: str) -> dict:
    return {
        "enabled": output(["systemctl", "is-enabled", unit]) in ("enabled", "static"),
        "active": output(["systemctl", "is-active", unit]) == "active",
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "packages": {"type": "list", "elements": "str", "default": []},
            # [{path, content or sha256, mode}], [{path, mode} or path], [units]: which differ
            "files": {"type": "list", "elements": "dict", "default": []},
            "dirs": {"type": "list", "elements": "raw", "default": []},
            "units": {"type": "list", "elements": "str", "default": []},
            # paths that should not exist: report which do
            "absent": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=True,
    )
    params = module.params
    rel = os_release()
    try:
        with open("/proc/1/comm") as fh:
            pid1 = fh.read().strip()
    except OSError:
        pid1 = "unknown"
    systemd_version = output(["systemctl", "--version"])
    virt = output(["systemd-detect-virt", "--container"])
    podman = output(["podman", "version", "--format", "{{.Client.Version}}"])
    packages = installed(list(dict.fromkeys(params["packages"] + list(TIME_DAEMONS))))
    module.exit_json(
        changed=False,
        os={
            "id": rel.get("ID", ""),
            "like": rel.get("ID_LIKE", "").split(),
            "version_id": rel.get("VERSION_ID", ""),
            "codename": rel.get("VERSION_CODENAME", ""),
            "pretty": rel.get("PRETTY_NAME", platform.system()),
        },
        apt=shutil.which("apt-get") is not None and shutil.which("dpkg-query") is not None,
        pid1=pid1,
        # The documented test for "booted with systemd" (sd_booted()).
        systemd=os.path.isdir("/run/systemd/system"),
        systemd_version=systemd_version.split()[1] if systemd_version else None,
        container=virt if virt and virt != "none" else None,
        kernel=platform.release(),
        hostname=platform.node(),
        python=platform.python_version(),
        podman=podman,
        quadlet=next((p for p in QUADLET_PATHS if os.access(p, os.X_OK)), None),
        packages={k: v for k, v in packages.items() if k in params["packages"]},
        time_daemons=[d for d in TIME_DAEMONS if packages.get(d)],
        limits={
            "can_raise": can_raise_limits(),
            "nofile_hard": hard_limit(resource.RLIMIT_NOFILE),
            "nproc_hard": hard_limit(resource.RLIMIT_NPROC),
            "pids_controller": pids_controller(),
        },
        files_differ=[f["path"] for f in params["files"] if file_differs(f)],
        dirs_differ=[d for d in map(dir_spec, params["dirs"]) if dir_differs(d)],
        units={u: unit_state(u) for u in params["units"]},
        present=[p for p in params["absent"] if os.path.lexists(p)],
    )


if __name__ == "__main__":
    main()
