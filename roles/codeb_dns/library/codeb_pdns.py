#!/usr/bin/python3
"""Ansible module: PowerDNS Authoritative with gsqlite3 set up for codeb in one module run
(each task is a module round trip; under load a dozen of them took over a minute).

Creates the SQLite database from the packaged schema (owned by pdns), writes pdns.conf
(owner pdns, mode 0600: it holds the API key; the content is a no_log parameter and never
part of the result or a diff), removes Debian's bind backend configuration, and starts or
restarts pdns when something changed, then waits for the API's port."""

import os
import pwd
import socket
import sqlite3
import subprocess
import time

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: codeb_pdns
short_description: PowerDNS Authoritative (gsqlite3) for codeb
options:
  config:
    description: The whole pdns.conf (holds the API key).
    type: str
    required: true
  database:
    description: The SQLite database PowerDNS uses.
    type: str
    default: /var/lib/powerdns/codeb.sqlite3
  api_address:
    description: Where the API listens (waited for after a start).
    type: str
    required: true
  api_port:
    description: The API's port.
    type: int
    default: 8081
"""

SCHEMA = "/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql"
CONF = "/etc/powerdns/pdns.conf"
BIND_CONF = "/etc/powerdns/pdns.d/bind.conf"
SERVICE = "pdns.service"


def own(path, mode, uid, gid):
    os.chown(path, uid, gid)
    os.chmod(path, mode)


def run(module, *argv):
    done = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        module.fail_json(
            msg=f"{' '.join(argv)} failed: {(done.stderr or done.stdout).strip()[-800:]}"
        )


def main():
    module = AnsibleModule(
        argument_spec={
            "config": {"type": "str", "required": True, "no_log": True},
            "database": {"type": "str", "default": "/var/lib/powerdns/codeb.sqlite3"},
            "api_address": {"type": "str", "required": True},
            "api_port": {"type": "int", "default": 8081},
        },
        supports_check_mode=True,
    )
    p = module.params
    if not os.path.exists(SCHEMA):
        module.fail_json(
            msg="PowerDNS with its SQLite backend is not installed: bootstrap this "
            'server as a dns server (PUT /api/servers/<ip> {"role": "dns"})'
        )
    try:
        pdns = pwd.getpwnam("pdns")
    except KeyError:
        module.fail_json(msg="the pdns user is missing: is pdns-server installed?")
    changes = []
    try:
        with open(CONF) as fh:
            current = fh.read()
    except FileNotFoundError:
        current = None
    if not os.path.exists(p["database"]):
        changes.append("database created")
    if current != p["config"]:
        changes.append("pdns.conf written")
    if os.path.exists(BIND_CONF):
        changes.append("bind backend removed")
    active = (
        subprocess.run(["systemctl", "is-active", "--quiet", SERVICE], check=False).returncode == 0
    )
    if not active:
        changes.append("pdns started")
    if module.check_mode or not changes:
        module.exit_json(changed=bool(changes), changes=changes)

    directory = os.path.dirname(p["database"])
    os.makedirs(directory, exist_ok=True)
    own(directory, 0o750, pdns.pw_uid, pdns.pw_gid)
    if not os.path.exists(p["database"]):
        tmp = p["database"] + ".codeb-tmp"
        with open(SCHEMA) as fh, sqlite3.connect(tmp) as conn:
            conn.executescript(fh.read())
        os.replace(tmp, p["database"])
    own(p["database"], 0o640, pdns.pw_uid, pdns.pw_gid)
    if current != p["config"]:
        tmp = CONF + ".codeb-tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(p["config"])
        own(tmp, 0o600, pdns.pw_uid, pdns.pw_gid)
        os.replace(tmp, CONF)
    if os.path.exists(BIND_CONF):
        os.unlink(BIND_CONF)
    run(module, "systemctl", "enable", SERVICE)
    run(module, "systemctl", "restart" if active else "start", SERVICE)
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection((p["api_address"], p["api_port"]), timeout=2):
                break
        except OSError as exc:
            if time.monotonic() > deadline:
                module.fail_json(
                    msg=f"PowerDNS's API did not open {p['api_address']}:{p['api_port']}: {exc}"
                )
            time.sleep(0.3)
    module.exit_json(changed=True, changes=changes)


if __name__ == "__main__":
    main()
