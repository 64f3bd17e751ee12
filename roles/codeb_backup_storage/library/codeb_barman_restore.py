#!/usr/bin/python3
"""Ansible module: the whole restore of a Barman backup into a new PostgreSQL container on this
storage server, in one round trip (a task per step cost an SSH round trip and a module
transfer each: the restore through codeb took 2.6 times the same steps by hand).

Steps, each checked: refuse a name already in use; unless Barman's archive already covers
the target time (a commit after it in the WAL a recovery to it copies: `covered`), get what
a recovery needs from the source: a commit after the target (recovery stops at the first
commit past it, and fails without one), its current WAL file closed and filed here
(`close_and_file_wal`; the source may be down: then what the receiver holds is what there
is); `barman recover` (to a time, promoting, when given); point Barman's
restore_command paths at the container's data directory; optionally accept one role's
replication connections (an in-place restore rebuilds the live db from this copy); a Podman
volume holding the data, owned by the image's postgres user; a Quadlet unit publishing the
port; start it and wait until recovery ended and the server accepts writes. Nothing secret
passes through it."""

import datetime
import os
import re
import shutil
import subprocess
import time

from ansible.module_utils import codeb_barman_wal as wal
from ansible.module_utils.codeb_barman_wal import Failed, conninfo_of
from ansible.module_utils.codeb_module import Fail, main

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
  barman_home: {type: path, default: /var/lib/barman}
  barman_conf_dir: {type: path, default: /etc/barman.d}
  pg_bindir: {type: path, default: /usr/lib/postgresql/17/bin}
"""

NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,120}")
ROLE = re.compile(r"[a-z_][a-z0-9_]{0,62}")
WHEN = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\+00:00")
BARMAN = ["runuser", "-u", "barman", "--", "barman"]  # the module runs as root
EMPTY_DIRS = (
    "pg_tblspc", "pg_replslot", "pg_twophase", "pg_snapshots", "pg_commit_ts", "pg_dynshmem",
    "pg_notify", "pg_serial", "pg_stat", "pg_stat_tmp", "pg_logical/snapshots",
    "pg_logical/mappings",
)  # fmt: skip


def close_and_file_wal(p, conninfo, timings):
    """The source's current WAL file closed and filed here (module_utils/codeb_barman_wal.py,
    shared with the base backup's)."""
    return wal.close_and_file_wal(p["server"], conninfo, p["wal_timeout"], p["barman_home"])


COMMIT_AT = re.compile(r"desc: COMMIT (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC")


def _epoch(text):
    fmt = "%Y-%m-%d %H:%M:%S.%f" if "." in text else "%Y-%m-%d %H:%M:%S"
    return datetime.datetime.strptime(text, fmt).replace(tzinfo=datetime.UTC).timestamp()


def covered(p):
    """Whether Barman's archive already holds what a recovery to target_time needs: the WAL
    segments `barman recover` copies for it (from the backup's first segment up to and
    including the first one filed after the target, as Barman selects them) contain a commit
    later than the target (recovery stops there; without one it ends short and fails).
    Segments filed before the target hold nothing later than it, so only that one segment is
    read (pg_waldump, its transaction records). Then no commit on the source and no WAL
    switch are needed. Any doubt (no such segment yet, compressed, pg_waldump failing, no
    commit after the target in it): not covered."""
    home = os.path.join(p["barman_home"], p["server"])
    info = {}
    try:
        # Barman 3.13.2 moved it to meta/<id>-backup.info; before, base/<id>/backup.info.
        info_file = os.path.join(home, "meta", f"{p['backup_id']}-backup.info")
        if not os.path.exists(info_file):
            info_file = os.path.join(home, "base", p["backup_id"], "backup.info")
        with open(info_file) as f:
            for line in f:
                key, _, value = line.strip().partition("=")
                info[key] = value
        begin, tli = info["begin_wal"], int(info["timeline"])
        target = _epoch(p["target_time"][:19])
        first_after = None
        # Barman 3.13 names it <server>-xlog.db (xlogdb_directory); before, xlog.db.
        xlogdb = os.path.join(home, "wals", f"{p['server']}-xlog.db")
        if not os.path.exists(xlogdb):
            xlogdb = os.path.join(home, "wals", "xlog.db")
        with open(xlogdb) as f:
            for line in f:
                fields = line.split()
                if len(fields) < 4 or len(fields[0]) != 24 or fields[0] < begin:
                    continue  # a .history file or older than the backup
                if int(fields[0][:8], 16) > tli:
                    continue
                if float(fields[2]) > target:
                    first_after = fields
                    break
    except (OSError, KeyError, ValueError):
        return False, "catalogue unreadable"
    if first_after is None:
        return False, "no WAL filed after the target yet"
    name, compression = first_after[0], first_after[3]
    if compression not in ("None", "none", ""):
        return False, "compressed WAL"
    where = os.path.join(home, "wals", name[:16])
    waldump = os.path.join(p["pg_bindir"], "pg_waldump")
    if os.access(waldump, os.X_OK):
        argv = [waldump, "--rmgr=Transaction", os.path.join(where, name)]
    else:  # the storage server has PostgreSQL's client only: the image's own pg_waldump
        argv = ["podman", "run", "--rm", f"--pull={p['pull']}", "--network", "none",
                "--user", "root", "-e", "TZ=UTC", "-v", f"{where}:/wal:ro",
                "--entrypoint", "pg_waldump", p["image"],
                "--rmgr=Transaction", f"/wal/{name}"]  # fmt: skip
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                             env={**os.environ, "TZ": "UTC"}, check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return False, "pg_waldump did not run"
    later = [t for t in COMMIT_AT.findall(out.stdout) if _epoch(t) > target]
    return bool(later), f"{name}: {'a commit after the target' if later else 'no commit after it'}"


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
    taken = step("name_free", lambda: (
        os.path.exists(data)
        or os.path.exists(unit_path)
        or wal.run(["podman", "volume", "exists", volume], "volume", check=False).returncode == 0
        or wal.run(["podman", "container", "exists", name], "container", check=False)
        .returncode == 0
    ))  # fmt: skip
    if taken:
        raise Failed(f"the name {name} is in use here (volume, container, unit or directory)")
    # A target the archive already covers (a commit after it in the WAL Barman will copy)
    # needs nothing from the source: no commit, no switch, no wait.
    done, why = step("covered", lambda: covered(p)) if p["target_time"] else (False, "latest")
    timings["covered_by_archive"] = why
    switched = None
    if not done:
        conninfo = step("conninfo", lambda: conninfo_of(p["server"], p["barman_conf_dir"]))
        switched = step("switch_wal", lambda: close_and_file_wal(p, conninfo, timings))
        timings["wal"] = switched
    target = (
        ["--target-time", p["target_time"], "--target-action", "promote"]
        if p["target_time"] else []
    )  # fmt: skip
    recover = [*BARMAN, "recover", *target, p["server"], p["backup_id"], data]
    step("recover", lambda: wal.run(recover, "barman recover"))
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
    step("volume", lambda: wal.run(["podman", "volume", "create", volume], "volume create"))
    mount = step("mountpoint", lambda: wal.run(
        ["podman", "volume", "inspect", "--format", "{{.Mountpoint}}", volume],
        "volume inspect").stdout.strip())  # fmt: skip
    os.rmdir(mount)
    shutil.move(data, mount)
    step("chown", lambda: wal.run(
        ["podman", "run", "--rm", f"--pull={p['pull']}", "--user", "root", "--network", "none",
         "--entrypoint", "chown", "-v", f"{volume}:/d", p["image"], "-R", "postgres:postgres",
         "/d"], "chown"))  # fmt: skip
    with open(unit_path, "w") as f:
        f.write(p["unit"])
    os.chmod(unit_path, 0o644)
    step("daemon_reload", lambda: wal.run(["systemctl", "daemon-reload"], "daemon-reload"))
    step("start", lambda: wal.run(["systemctl", "start", f"{name}.service"], "start"))
    ready = ["podman", "exec", name, "psql", "-X", "-tA", "-U", p["superuser"], "-d",
             "postgres", "-c", "SELECT pg_is_in_recovery()"]  # fmt: skip
    t0 = time.monotonic()
    deadline = t0 + p["ready_timeout"]
    while True:
        out = wal.run(ready, "ready", check=False)
        if out.returncode == 0 and out.stdout.strip() == "f":
            break
        if time.monotonic() > deadline:
            # Stopped, not left restarting; its own last words say why.
            wal.run(["systemctl", "stop", f"{name}.service"], "stop", check=False)
            said = wal.run(["journalctl", "-u", f"{name}.service", "-n", "200", "-o", "cat"],
                       "journal", check=False).stdout  # fmt: skip
            fatal = [line for line in said.splitlines() if "FATAL" in line][-1:]
            raise Failed(f"the restored server did not accept writes within "
                          f"{p['ready_timeout']} s (stopped): "
                          f"{(fatal or [out.stderr.strip()[-300:]])[0]}")  # fmt: skip
        time.sleep(0.2)
    timings["ready"] = round(time.monotonic() - t0, 3)
    return switched is None or switched.endswith(" filed")


SPEC = {
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
    "barman_home": {"type": "path", "default": "/var/lib/barman"},
    "barman_conf_dir": {"type": "path", "default": "/etc/barman.d"},
    "pg_bindir": {"type": "path", "default": "/usr/lib/postgresql/17/bin"},
}
CHECK_MODE = False


def run(p, check, diff):
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
        raise Fail(f"invalid arguments: {', '.join(bad)}")
    timings = {}
    try:
        switched = restore(p, timings)
    except (Failed, OSError, subprocess.TimeoutExpired) as exc:
        raise Fail(str(exc), timings=timings) from exc
    return {
        "changed": True,
        # msg is what codeb keeps of a task's result: the steps' seconds, for profiling.
        "msg": "restored: "
        + ", ".join(
            f"{k} {v:.1f} s" if isinstance(v, (int, float)) else f"{k}: {v}"
            for k, v in timings.items()
        ),
        "restore": {
            "container": p["name"],
            "volume": f"{p['name']}-data",
            "port": p["port"],
            "backup_id": p["backup_id"],
            "target_time": p["target_time"] or None,
            "wal_switched": switched,
        },
        "timings": timings,
    }


if __name__ == "__main__":
    main(SPEC, run, CHECK_MODE)
