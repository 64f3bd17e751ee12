#!/usr/bin/python3
"""Ansible module: make a Caddyfile the running configuration of this host's Caddy, or read
the running configuration. One module run instead of a dozen tasks (each task costs a
module round trip; under load that was most of a domain change's time).

apply: the new file is placed beside the running one and `caddy validate`d first; only then
is it put in place (the old one kept as .codeb-prev) and Caddy reloaded through its admin API
on loopback (or started, when it was not running). A file Caddy refuses, at validation or at
reload, leaves the old file in place and serving, and fails with Caddy's own message.
Check mode reports the diff and changes nothing.

Certificates codeb obtained itself (DNS-01, for wildcards) are written before validation
(the new file names them): the chain 0644, the key 0640 root:caddy, in a directory only root
and the caddy group can enter; files no longer named are removed after a successful reload.

inspect: the running configuration (JSON, from the admin API), the internal CA's root
certificate (public), and the recent log lines of Caddy's certificate automation (errors
and successes, from the journal) for the last issuance error. Read-only."""

import grp
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: codeb_caddy
short_description: Apply or read codeb's Caddy configuration
options:
  state:
    description: apply (place, validate, reload) or inspect (read-only).
    type: str
    choices: [apply, inspect]
    default: apply
  content:
    description: The whole Caddyfile (apply).
    type: str
  path:
    description: The Caddyfile caddy.service runs.
    type: str
    default: /etc/caddy/Caddyfile
  admin:
    description: Caddy's admin API address (loopback).
    type: str
    default: localhost:2019
  root_ca:
    description: Where the internal CA's root certificate is (inspect).
    type: str
    default: /var/lib/caddy/.local/share/caddy/pki/authorities/local/root.crt
  certificates:
    description: Certificates to serve from files (cert_file, key_file, cert, key).
    type: list
    elements: dict
    default: []
  cert_dir:
    description: The directory those files live in (nothing else is kept there).
    type: str
    default: /etc/caddy/codeb-certs
"""

SERVICE = "caddy.service"
SCRATCH = "/run/codeb-caddy-validate"


def caddy_message(stderr):
    lines = [line for line in (stderr or "").strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("Error:"):
            return line[len("Error:") :].strip()[:1500]
    return (lines[-1] if lines else "no message")[:1500]


def read(path):
    try:
        with open(path) as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def write(path, content):
    tmp = path + ".codeb-tmp"
    with open(tmp, "w") as fh:
        fh.write(content)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def running_config(admin, attempts=20):
    last = None
    for _ in range(attempts):
        try:
            with urllib.request.urlopen(f"http://{admin}/config/", timeout=5) as resp:
                return json.loads(resp.read().decode() or "null") or {}
        except (urllib.error.URLError, OSError, ValueError) as exc:
            last = exc
            time.sleep(0.5)
    raise RuntimeError(f"Caddy's admin API at {admin} does not answer: {last}")


def place_certificates(module):
    """Write the certificate files the new Caddyfile names; returns (changed, wanted paths)."""
    cert_dir = module.params["cert_dir"].rstrip("/")
    certs = module.params["certificates"] or []
    wanted, changed = set(), False
    for cert in certs:
        for key in ("cert_file", "key_file", "cert", "key"):
            if not isinstance(cert.get(key), str) or not cert[key]:
                module.fail_json(msg=f"certificate entry without {key}")
        for name in ("cert_file", "key_file"):
            if os.path.dirname(cert[name]) != cert_dir or ".." in cert[name]:
                module.fail_json(msg=f"certificate files must be in {cert_dir}")
        wanted |= {cert["cert_file"], cert["key_file"]}
        changed |= read(cert["cert_file"]) != cert["cert"] or read(cert["key_file"]) != cert["key"]
    if module.check_mode or not certs:
        return changed, wanted
    try:
        gid = grp.getgrnam("caddy").gr_gid
    except KeyError:
        gid = 0
    os.makedirs(cert_dir, mode=0o750, exist_ok=True)
    os.chown(cert_dir, 0, gid)
    os.chmod(cert_dir, 0o750)  # noqa: S103 -- root and the caddy group only, no others
    for cert in certs:
        for name, body, mode in (
            (cert["cert_file"], cert["cert"], 0o644),
            (cert["key_file"], cert["key"], 0o640),
        ):
            if read(name) == body:
                continue
            tmp = name + ".codeb-tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(body)
            os.chown(tmp, 0, gid)
            os.chmod(tmp, mode)
            os.replace(tmp, name)
    return changed, wanted


def prune_certificates(module, wanted):
    cert_dir = module.params["cert_dir"].rstrip("/")
    if module.check_mode or not os.path.isdir(cert_dir):
        return
    for name in os.listdir(cert_dir):
        path = os.path.join(cert_dir, name)
        if path not in wanted and os.path.isfile(path):
            os.unlink(path)


def apply(module, caddy):
    path, content, admin = module.params["path"], module.params["content"], module.params["admin"]
    if content is None:
        module.fail_json(msg="content is required to apply")
    certs_changed, wanted = place_certificates(module)
    current = read(path)
    candidate = path + ".codeb-new"
    write(candidate, content)
    env = {
        **os.environ,
        "HOME": SCRATCH,
        "XDG_DATA_HOME": SCRATCH + "/data",
        "XDG_CONFIG_HOME": SCRATCH + "/config",
    }
    done = subprocess.run(
        [caddy, "validate", "--config", candidate, "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        os.unlink(candidate)
        module.fail_json(
            msg="Caddy refused the configuration (the running one keeps serving): "
            + caddy_message(done.stderr)
        )
    active = (
        subprocess.run(["systemctl", "is-active", "--quiet", SERVICE], check=False).returncode == 0
    )
    diff = {"before": current or "", "after": content, "before_header": path, "after_header": path}
    if current == content and active and not certs_changed:
        os.unlink(candidate)
        prune_certificates(module, wanted)
        module.exit_json(changed=False)
    if module.check_mode:
        os.unlink(candidate)
        module.exit_json(changed=True, diff=diff)
    previous = path + ".codeb-prev"
    if current is not None:
        write(previous, current)
    os.replace(candidate, path)
    if active:
        done = subprocess.run(
            [
                caddy,
                "reload",
                "--config",
                path,
                "--adapter",
                "caddyfile",
                "--address",
                admin,
                "--force",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        action = "reloaded"
    else:
        done = subprocess.run(
            ["systemctl", "enable", "--now", SERVICE], capture_output=True, text=True, check=False
        )
        action = "started"
    if done.returncode != 0:
        if current is not None:
            write(path, current)
        module.fail_json(
            msg="Caddy refused to load the configuration (the running one keeps "
            "serving): " + caddy_message(done.stderr)
        )
    prune_certificates(module, wanted)
    module.exit_json(changed=True, diff=diff, action=action)


def tls_log(limit=100):
    """Caddy's recent certificate automation lines (errors and successes) from its journal."""
    try:
        done = subprocess.run(
            ["journalctl", "-u", SERVICE, "-o", "cat", "--no-pager", "-n", "20000"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    lines = [
        line
        for line in done.stdout.splitlines()
        if '"logger":"tls' in line
        and ('"level":"error"' in line or "obtained successfully" in line)
    ]
    return lines[-limit:]


def inspect(module):
    try:
        config = running_config(module.params["admin"])
    except RuntimeError as exc:
        module.fail_json(msg=str(exc))
    root = read(module.params["root_ca"]) or ""
    module.exit_json(changed=False, config=config, root_ca=root, tls_log=tls_log())


def main():
    module = AnsibleModule(
        argument_spec={
            "state": {"type": "str", "choices": ["apply", "inspect"], "default": "apply"},
            "content": {"type": "str"},
            "path": {"type": "str", "default": "/etc/caddy/Caddyfile"},
            "admin": {"type": "str", "default": "localhost:2019"},
            "root_ca": {
                "type": "str",
                "default": "/var/lib/caddy/.local/share/caddy/pki/authorities/local/root.crt",
            },
            "certificates": {"type": "list", "elements": "dict", "default": [], "no_log": True},
            "cert_dir": {"type": "str", "default": "/etc/caddy/codeb-certs"},
        },
        supports_check_mode=True,
    )
    if module.params["state"] == "inspect":
        inspect(module)
    caddy = shutil.which("caddy") or (
        "/usr/bin/caddy" if os.path.exists("/usr/bin/caddy") else None
    )
    if caddy is None:
        module.fail_json(
            msg="Caddy is not installed: bootstrap this server as a proxy server "
            '(PUT /api/servers/<ip> {"role": "proxy"})'
        )
    apply(module, caddy)


if __name__ == "__main__":
    main()
