#!/usr/bin/python3
"""Ansible module: the whole restore of a Barman backup into a new PostgreSQL container on this
storage server, in one round trip (a task per step cost an SSH round trip and a module
transfer each: the restore through codeb took 2.6 times the same steps by hand).

Steps, each checked: refuse a name already in use; with a target time, one commit on the
source after it (recovery stops at the first commit past the target, and fails without one);
close the source's current WAL file (so
whatever it wrote up to now is here; the source may be down: then what the receiver holds is
what there is); `barman recover` (to a time, promoting, when given); point Barman's
restore_command paths at the container's data directory; optionally accept one role's
replication connections (an in-place restore rebuilds the live db from this copy); a Podman
volume holding the data, owned by the image's postgres user; a Quadlet unit publishing the
port; start it and wait until recovery ended and the server accepts writes. Nothing secret
passes through it."""

import json
import os
import re
import shutil
import subprocess
import time

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: codeb_barman_restore
short_description: Restore a Barman backup into a new PostgreSQL container (one round trip)
description: See roles/codeb_backup_storage/meta/argument_specs.yml (restore).
options:
  server: {type: str, required: true}
  backup_id: {type: str, required: true}
  target_time: {type: str, default: ""}
  name: {type: str, required: true}
  port: {type: int, required: true}
  superuser: {type: str, default: postgres}
  replication_user: {type: str, default: ""}
  image: {type: str, required: true}
  pull: {type: str, default: missing}
  unit: {type: str, required: true}
  restores_dir: {type: path, default: /var/lib/barman/restores}
  quadlet_dir: {type: path, default: /etc/containers/systemd}
  wal_timeout: {type: int, default: 60}
  ready_timeout: {type: int, default: 300}
"""

NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,120}")
ROLE = re.compile(r"[a-z_][a-z0-9_]{0,62}")
WHEN = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\+00:00")
BARMAN = ["runuser", "-u", "barman", "--", "barman"]
EMPTY_DIRS = (
    "pg_tblspc", "pg_replslot", "pg_twophase", "pg_snapshots", "pg_commit_ts", "pg_dynshmem",
    "pg_notify", "pg_serial", "pg_stat", "pg_stat_tmp", "pg_logical/snapshots",
    "pg_logical/mappings",
)  # fmt: skip


class Failed(Exception):
    pass


def run(argv, step, timeout=3600, check=True):
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and out.returncode != 0:
        raise Failed(f"{step}: {(out.stderr or out.stdout).strip()[-2000:]}")
    return out


def mark_commit(server):
    shown = run([*BARMAN, "-f", "json", "show-servers", server], "show-servers", check=False)
    try:
        conninfo = json.loads(shown.stdout or "{}").get(server, {}).get("conninfo")
    except ValueError:
        conninfo = None
    if conninfo:
        run(["runuser", "-u", "barman", "--", "psql", conninfo, "-XtAq", "-c",
             "SELECT txid_current()"], "commit", timeout=30, check=False)  # fmt: skip


def restore(p, timings):
    name, data = p["name"], os.path.join(p["restores_dir"], p["name"])
    volume, unit_path = f"{name}-data", os.path.join(p["quadlet_dir"], f"{name}.container")

    def step(label, fn):
        t0 = time.monotonic()
        result = fn()
        timings[label] = round(time.monotonic() - t0, 3)
        return result

    if shutil.which("barman") is None:
        raise Failed(
            "Barman is not installed here: bootstrap this server with the storage role, which "
            "installs barman, barman-cli and postgresql-client-17"
        )
    taken = (
        run(["podman", "volume", "exists", volume], "volume", check=False).returncode == 0
        or run(["podman", "container", "exists", name], "container", check=False).returncode == 0
        or os.path.exists(data)
        or os.path.exists(unit_path)
    )
    if taken:
        raise Failed(f"the name {name} is in use here (volume, container, unit or directory)")
    if p["target_time"]:
        # Recovery stops at the first commit after the target; with none after it (nothing
        # written since), PostgreSQL ends recovery short of the target and refuses to start.
        # One committed transaction id (txid_current, over Barman's own connection) is that
        # commit; the source may be down: then the WAL held is all there is.
        step("commit_after_target", lambda: mark_commit(p["server"]))
    switch = step("switch_wal", lambda: run(
        [*BARMAN, "switch-wal", "--force", "--archive", "--archive-timeout",
         str(p["wal_timeout"]), p["server"]], "switch-wal", check=False))  # fmt: skip
    target = (
        ["--target-time", p["target_time"], "--target-action", "promote"]
        if p["target_time"] else []
    )  # fmt: skip
    recover = [*BARMAN, "recover", *target, p["server"], p["backup_id"], data]
    step("recover", lambda: run(recover, "barman recover"))
    # A recovered incremental (combined by pg_combinebackup) lacks the empty directories
    # PostgreSQL expects (seen: FATAL could not open directory "pg_tblspc"); create them.
    for empty in EMPTY_DIRS:
        os.makedirs(os.path.join(data, empty), mode=0o700, exist_ok=True)
    auto = os.path.join(data, "postgresql.auto.conf")
    with open(auto) as f:
        text = f.read()
    with open(auto, "w") as f:
        f.write(text.replace(data.rstrip("/") + "/", "/var/lib/postgresql/data/"))
    if p["replication_user"]:
        with open(os.path.join(data, "pg_hba.conf"), "a") as f:
            f.write(f"host replication {p['replication_user']} all scram-sha-256 "
                    "# codeb-restore-in-place\n")  # fmt: skip
    run(["podman", "volume", "create", volume], "volume create")
    mount = run(["podman", "volume", "inspect", "--format", "{{.Mountpoint}}", volume],
                "volume inspect").stdout.strip()  # fmt: skip
    os.rmdir(mount)
    shutil.move(data, mount)
    step("chown", lambda: run(
        ["podman", "run", "--rm", f"--pull={p['pull']}", "--user", "root", "--network", "none",
         "--entrypoint", "chown", "-v", f"{volume}:/d", p["image"], "-R", "postgres:postgres",
         "/d"], "chown"))  # fmt: skip
    with open(unit_path, "w") as f:
        f.write(p["unit"])
    os.chmod(unit_path, 0o644)
    run(["systemctl", "daemon-reload"], "daemon-reload")
    step("start", lambda: run(["systemctl", "start", f"{name}.service"], "start"))
    ready = ["podman", "exec", name, "psql", "-X", "-tA", "-U", p["superuser"], "-d",
             "postgres", "-c", "SELECT pg_is_in_recovery()"]  # fmt: skip
    t0 = time.monotonic()
    deadline = t0 + p["ready_timeout"]
    while True:
        out = run(ready, "ready", check=False)
        if out.returncode == 0 and out.stdout.strip() == "f":
            break
        if time.monotonic() > deadline:
            # Stopped, not left restarting; its own last words say why.
            run(["systemctl", "stop", f"{name}.service"], "stop", check=False)
            said = run(["journalctl", "-u", f"{name}.service", "-n", "200", "-o", "cat"],
                       "journal", check=False).stdout  # fmt: skip
            fatal = [line for line in said.splitlines() if "FATAL" in line][-1:]
            raise Failed(f"the restored server did not accept writes within "
                          f"{p['ready_timeout']} s (stopped): "
                          f"{(fatal or [out.stderr.strip()[-300:]])[0]}")  # fmt: skip
        time.sleep(0.2)
    timings["ready"] = round(time.monotonic() - t0, 3)
    return switch.returncode == 0


def main():
    module = AnsibleModule(
        argument_spec={
            "server": {"type": "str", "required": True},
            "backup_id": {"type": "str", "required": True},
            "target_time": {"type": "str", "default": ""},
            "name": {"type": "str", "required": True},
            "port": {"type": "int", "required": True},
            "superuser": {"type": "str", "default": "postgres"},
            "replication_user": {"type": "str", "default": ""},
            "image": {"type": "str", "required": True},
            "pull": {
                "type": "str",
                "default": "missing",
                "choices": ["missing", "never", "always", "newer"],
            },
            "unit": {"type": "str", "required": True},
            "restores_dir": {"type": "path", "default": "/var/lib/barman/restores"},
            "quadlet_dir": {"type": "path", "default": "/etc/containers/systemd"},
            "wal_timeout": {"type": "int", "default": 60},
            "ready_timeout": {"type": "int", "default": 300},
        },
    )
    p = module.params
    bad = [
        field for field, ok in (
            ("server", NAME.fullmatch(p["server"])),
            ("name", NAME.fullmatch(p["name"])),
            ("backup_id", re.fullmatch(r"\d{8}T\d{6}", p["backup_id"])),
            ("target_time", not p["target_time"] or WHEN.fullmatch(p["target_time"])),
            ("superuser", ROLE.fullmatch(p["superuser"])),
            ("replication_user",
             not p["replication_user"] or ROLE.fullmatch(p["replication_user"])),
            ("port", 0 < p["port"] < 65536),
        ) if not ok
    ]  # fmt: skip
    if bad:
        module.fail_json(msg=f"invalid arguments: {', '.join(bad)}")
    timings = {}
    try:
        switched = restore(p, timings)
    except (Failed, OSError, subprocess.TimeoutExpired) as exc:
        module.fail_json(msg=str(exc), timings=timings)
    module.exit_json(
        changed=True,
        # msg is what codeb keeps of a task's result: the steps' seconds, for profiling.
        msg="restored: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()),
        restore={
            "container": p["name"],
            "volume": f"{p['name']}-data",
            "port": p["port"],
            "backup_id": p["backup_id"],
            "target_time": p["target_time"] or None,
            "wal_switched": switched,
        },
        timings=timings,
    )


if __name__ == "__main__":
    main()
