#!/usr/bin/python
"""Reads Barman's catalogue of the named servers (read-only): every backup's details
(`barman -f json show-backup`), the WAL this server holds (first and last segment, the
newest one's time, whether the receiver streams now), and the db's replication slot
(pg_replication_slots: wal_status `lost` when max_slot_wal_keep_size invalidated it)."""

from __future__ import annotations

import json
import os
import subprocess

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: codeb_barman_catalogue
short_description: Read Barman's backups and WAL for some servers
options:
  names:
    description: Barman server names.
    type: list
    elements: str
    required: true
  home:
    description: Barman's home (barman_home).
    type: path
    default: /var/lib/barman
"""


def barman(*args: str) -> dict:
    out = subprocess.run(
        ["runuser", "-u", "barman", "--", "barman", "-f", "json", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"barman {' '.join(args)}: {out.stderr.strip() or out.stdout.strip()}")
    return json.loads(out.stdout or "{}")


def wal_state(home: str, name: str) -> dict:
    names, last = [], 0.0
    for d, _, files in os.walk(os.path.join(home, name, "wals")):
        for f in files:
            if len(f) == 24 and all(c in "0123456789ABCDEF" for c in f):
                names.append(f)
                last = max(last, os.stat(os.path.join(d, f)).st_mtime)
    partial = [
        f for f in os.listdir(os.path.join(home, name, "streaming"))
        if f.endswith(".partial")
    ] if os.path.isdir(os.path.join(home, name, "streaming")) else []  # fmt: skip
    names.sort()
    return {
        "first": names[0] if names else None,
        "last": names[-1] if names else None,
        "last_time": last or None,
        "count": len(names),
        "streaming": sorted(partial),
    }


def slot_state(name: str) -> dict | None:
    """The db's replication slot as PostgreSQL sees it (wal_status `lost` once
    max_slot_wal_keep_size invalidated it), read over Barman's own connection; None when the
    db cannot be reached (the receiver's state says more then)."""
    server = barman("show-servers", name).get(name, {})
    conninfo, slot = server.get("conninfo"), server.get("slot_name")
    if not conninfo or not slot:
        return None
    out = subprocess.run(
        ["runuser", "-u", "barman", "--", "psql", conninfo, "-XtA", "-v", f"slot={slot}"],
        input="SELECT row_to_json(s) FROM pg_replication_slots s WHERE slot_name = :'slot';\n",
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        return None
    row = out.stdout.strip()
    return json.loads(row) if row else {"slot_name": slot, "missing": True}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "names": {"type": "list", "elements": "str", "required": True},
            "home": {"type": "path", "default": "/var/lib/barman"},
        },
        supports_check_mode=True,
    )
    catalogue = {}
    try:
        for name in module.params["names"]:
            listed = barman("list-backups", name).get(name, [])
            backups = [barman("show-backup", name, b["backup_id"]).get(name, {}) for b in listed]
            catalogue[name] = {
                "backups": backups,
                "wal": wal_state(module.params["home"], name),
                "slot": slot_state(name),
            }
    except (RuntimeError, ValueError, OSError, subprocess.TimeoutExpired) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, catalogue=catalogue)


if __name__ == "__main__":
    main()
