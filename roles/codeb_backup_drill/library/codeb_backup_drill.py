#!/usr/bin/python
"""A restore drill of one Barman backup on the storage server: `barman verify-backup`
(pg_verifybackup against the backup's manifest), `barman recover --target-immediate` into a
scratch directory, a scratch PostgreSQL container started on it (no published port, no
network), then: does it accept connections, is the canary row there, how many tables and
rows. The scratch container and directory are always removed. Every check is reported; the
caller decides pass or fail (a failed check is not a failed module run)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: codeb_backup_drill
short_description: Restore a Barman backup into a scratch container and check it
options:
  server: {description: The Barman server (db component name)., type: str, required: true}
  backup_id: {description: Barman's backup id., type: str, required: true}
  scratch: {description: The scratch container's name., type: str, required: true}
  superuser: {description: The database superuser., type: str, required: true}
  database: {description: The database holding the canary and data., type: str, required: true}
  image: {description: The PostgreSQL image., type: str, required: true}
  pull: {description: podman --pull policy., type: str, default: missing}
  timeout: {description: Seconds recovery may take., type: int, default: 600}
  drills_dir:
    description: Where scratch data directories go.
    type: path
    default: /var/lib/barman/drills
"""

ROWS_SQL = (
    "SELECT coalesce(sum((xpath('/row/c/text()', query_to_xml(format("
    "'SELECT count(*) AS c FROM %I.%I', schemaname, relname), false, true, '')))[1]"
    "::text::bigint), 0) FROM pg_stat_user_tables"
)


def run(argv: list[str], timeout: float = 600) -> tuple[int, str]:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return 124, f"timed out after {timeout:.0f} s"
    return out.returncode, (out.stdout + out.stderr).strip()


def tail(text: str, n: int = 1500) -> str:
    return text[-n:]


def drill(p: dict) -> dict:
    barman = ["runuser", "-u", "barman", "--", "barman"]
    scratch, image = p["scratch"], p["image"]
    data = os.path.join(p["drills_dir"], scratch)
    checks: dict = {}
    result: dict = {"checks": checks, "canary": None, "tables": None, "rows": None}

    rc, out = run([*barman, "verify-backup", p["server"], p["backup_id"]])
    checks["verify_backup"] = {"ok": rc == 0, "detail": tail(out)}

    os.makedirs(p["drills_dir"], mode=0o700, exist_ok=True)
    shutil.chown(p["drills_dir"], "barman", "barman")
    rc, out = run(
        [*barman, "recover", "--target-immediate", "--target-action", "promote",
         p["server"], p["backup_id"], data],
        timeout=p["timeout"],
    )  # fmt: skip
    checks["recover"] = {"ok": rc == 0, "detail": tail(out)}
    if rc != 0:
        return result
    auto = os.path.join(data, "postgresql.auto.conf")
    with open(auto) as f:
        conf = f.read()
    with open(auto, "w") as f:
        f.write(conf.replace(data + "/", "/var/lib/postgresql/data/"))
    rc, out = run(
        ["podman", "run", "--rm", f"--pull={p['pull']}", "--user", "root", "--entrypoint",
         "chown", "-v", f"{data}:/d", image, "-R", "postgres:postgres", "/d"]
    )  # fmt: skip
    if rc == 0:
        rc, out = run(
            ["podman", "run", "-d", "--name", scratch, "--network", "none",
             "--label", "codeb.component=db-drill", "--label", f"codeb.drill-of={p['server']}",
             "-v", f"{data}:/var/lib/postgresql/data", image]
        )  # fmt: skip
    if rc != 0:
        checks["connects"] = {"ok": False, "detail": tail(out)}
        return result
    psql = ["podman", "exec", scratch, "psql", "-X", "-tA", "-v", "ON_ERROR_STOP=1",
            "-U", p["superuser"]]  # fmt: skip
    deadline = time.monotonic() + p["timeout"]
    state, out = 1, ""
    while time.monotonic() < deadline:
        state, out = run([*psql, "-d", "postgres", "-c", "SELECT pg_is_in_recovery()"], 30)
        if state == 0 and out.strip() == "f":
            break
        rc, running = run(["podman", "inspect", "-f", "{{.State.Running}}", scratch], 30)
        if running.strip() != "true":
            _, logs = run(["podman", "logs", "--tail", "30", scratch], 30)
            out = f"the scratch PostgreSQL exited: {logs}"
            break
        time.sleep(1)
    connected = state == 0 and out.strip() == "f"
    checks["connects"] = {"ok": connected, "detail": "" if connected else tail(out)}
    if not connected:
        return result
    rc, out = run(
        [*psql, "-d", p["database"], "-c",
         "SELECT coalesce(json_agg(c), '[]') FROM codeb_canary c"], 60
    )  # fmt: skip
    if rc == 0:
        try:
            result["canary"] = json.loads(out.strip() or "[]")
            checks["canary_table"] = {"ok": True, "detail": ""}
        except ValueError:
            checks["canary_table"] = {"ok": False, "detail": tail(out)}
    else:
        checks["canary_table"] = {"ok": False, "detail": tail(out)}
    rc, out = run([*psql, "-d", p["database"], "-c", "SELECT count(*) FROM pg_stat_user_tables"])
    if rc == 0:
        result["tables"] = int(out.strip())
    rc2, out2 = run([*psql, "-d", p["database"], "-c", ROWS_SQL], 600)
    if rc2 == 0:
        result["rows"] = int(out2.strip())
    checks["counts"] = {"ok": rc == 0 and rc2 == 0, "detail": "" if rc == 0 and rc2 == 0
                        else tail(out if rc else out2)}  # fmt: skip
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "server": {"type": "str", "required": True},
            "backup_id": {"type": "str", "required": True},
            "scratch": {"type": "str", "required": True},
            "superuser": {"type": "str", "required": True},
            "database": {"type": "str", "required": True},
            "image": {"type": "str", "required": True},
            "pull": {"type": "str", "default": "missing"},
            "timeout": {"type": "int", "default": 600},
            "drills_dir": {"type": "path", "default": "/var/lib/barman/drills"},
        },
        supports_check_mode=False,
    )
    p = module.params
    started = time.monotonic()
    try:
        result = drill(p)
    except (OSError, ValueError) as exc:
        result = {"checks": {"drill": {"ok": False, "detail": str(exc)}}}
    finally:
        run(["podman", "rm", "-f", "-t", "5", p["scratch"]], 120)
        shutil.rmtree(os.path.join(p["drills_dir"], p["scratch"]), ignore_errors=True)
    result["duration_s"] = round(time.monotonic() - started, 3)
    exists, _ = run(["podman", "container", "exists", p["scratch"]], 30)
    result["scratch_removed"] = exists != 0 and not os.path.exists(
        os.path.join(p["drills_dir"], p["scratch"])
    )
    module.exit_json(changed=True, drill=result)


if __name__ == "__main__":
    main()
