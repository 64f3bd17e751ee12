#!/usr/bin/python3
"""Ansible module: install Debian packages from the host's own apt sources, with an honest
check mode on a bare host.

The builtin apt module needs python3-apt and refuses check mode without it, so `--check` on a
fresh server would fail instead of telling what would be installed. This one uses only
dpkg-query, apt-cache and apt-get:

- everything installed (at the minimum versions): changes nothing and touches no network;
- otherwise, in check mode: reports what it would install (from the lists the host already
  has) as a diff, changing nothing;
- otherwise: `apt-get update`, checks that every package has a candidate at its minimum
  version (before installing anything, so an unsupported host is left as it was), then one
  `apt-get install --no-install-recommends` of exactly the missing packages.

Never adds or changes an apt source. An apt proxy, if any, is the host's apt configuration.
"""

from __future__ import annotations

import os
import re

from ansible.module_utils.basic import AnsibleModule

# No prompts; needrestart (Ubuntu) only lists what would need a restart, restarts nothing.
APT_ENV = {
    "DEBIAN_FRONTEND": "noninteractive",
    "APT_LISTCHANGES_FRONTEND": "none",
    "NEEDRESTART_MODE": "l",
}
# A fresh server often runs unattended-upgrades at first boot: wait for its lock a while
# rather than fail at once.
LOCK_WAIT = ["-o", "DPkg::Lock::Timeout=300"]


def installed(module: AnsibleModule, names: list[str]) -> dict:
    found = dict.fromkeys(names)
    _, out, _ = module.run_command(
        ["dpkg-query", "-W", "-f", "${Package}\t${db:Status-Status}\t${Version}\n", *names]
    )
    for line in out.splitlines():
        pkg, status, version = [*line.split("\t"), "", ""][:3]
        if status == "installed" and pkg in found:
            found[pkg] = version
    return found


def candidates(module: AnsibleModule, names: list[str]) -> dict:
    """{package: candidate version or None} from `apt-cache policy` (one call)."""
    found: dict = dict.fromkeys(names)
    _, out, _ = module.run_command(["apt-cache", "policy", *names], environ_update=APT_ENV)
    current = None
    for line in out.splitlines():
        if line and not line[0].isspace() and line.endswith(":"):
            current = line[:-1].split(":")[0]  # "podman:" or "podman:amd64:"
        elif current in found and line.strip().startswith("Candidate:"):
            value = line.split(":", 1)[1].strip()
            found[current] = None if value == "(none)" else value
    return found


def version_ok(module: AnsibleModule, version: str | None, minimum: str | None) -> bool:
    if version is None:
        return False
    if not minimum:
        return True
    rc, _, _ = module.run_command(["dpkg", "--compare-versions", version, "ge", minimum])
    return rc == 0


def upstream(version: str) -> str:
    """'5.4.2+ds1-2' -> '5.4.2' (what a person recognises)."""
    return re.sub(r"^\d+:", "", version).split("-")[0].split("+")[0].split("~")[0]


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "names": {"type": "list", "elements": "str", "required": True},
            # {package: minimum upstream version}, e.g. {"podman": "4.4"}
            "min_versions": {"type": "dict", "default": {}},
            # Shown in failure messages: which codeb roles asked for the packages.
            "why": {"type": "str", "default": ""},
        },
        supports_check_mode=True,
    )
    names = list(dict.fromkeys(module.params["names"]))
    minimums = {k: str(v) for k, v in module.params["min_versions"].items()}
    have = installed(module, names)
    needed = [n for n in names if not version_ok(module, have[n], minimums.get(n))]
    result = {"changed": bool(needed), "installed": [], "missing": needed}
    if not needed:
        module.exit_json(versions=have, **result)
    failed = {**result, "changed": False}  # a failure below has installed nothing

    if not module.check_mode:
        rc, out, err = module.run_command(
            ["apt-get", "update", "-q", *LOCK_WAIT], environ_update=APT_ENV
        )
        if rc != 0:
            module.fail_json(
                msg="apt-get update failed; check this host's apt sources "
                "(/etc/apt/sources.list*) and, if it needs one, the apt proxy codeb is given "
                f"(CODEB_APT_PROXY): {(err or out).strip()[-800:]}",
                **failed,
            )
    offered = candidates(module, needed)
    problems = []
    for name in needed:
        minimum = minimums.get(name)
        if offered[name] is None:
            problems.append(f"{name}: no installation candidate in this host's apt sources")
        elif not version_ok(module, offered[name], minimum):
            problems.append(
                f"{name} {upstream(offered[name])} is the newest this host's apt sources offer"
                + (f" (installed: {upstream(have[name])})" if have[name] else "")
                + f"; codeb needs {name} >= {minimum}"
            )
    if problems and not module.check_mode:
        module.fail_json(
            msg="unsupported host: "
            + "; ".join(problems)
            + (f" (needed for {module.params['why']})" if module.params["why"] else "")
            + ". Nothing was installed. Use Debian 13 (trixie) or newer, or give this host an "
            "apt source that carries these versions (codeb never adds repositories itself), "
            "then bootstrap again.",
            problems=problems,
            **failed,
        )

    before = "".join(f"{n} {have[n] or '(not installed)'}\n" for n in needed)
    if module.check_mode:
        # From the lists the host already has: an old or empty list says "unknown" honestly.
        after = "".join(
            f"{n} {offered[n] or '(candidate unknown until apt-get update)'}\n" for n in needed
        )
        module.exit_json(
            diff={
                "before": before,
                "after": after,
                "before_header": "packages",
                "after_header": "packages",
            },
            versions=have,
            problems=problems,
            **result,
        )

    rc, out, err = module.run_command(
        [
            "apt-get",
            *LOCK_WAIT,
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "-o",
            "Dpkg::Options::=--force-confdef",
            "-o",
            "Dpkg::Options::=--force-confold",
            *needed,
        ],
        environ_update=APT_ENV,
    )
    if rc != 0:
        module.fail_json(
            msg=f"apt-get install {' '.join(needed)} failed: {(err or out).strip()[-1500:]}",
            **result,
        )
    now = installed(module, names)
    result["installed"] = [f"{n}={now[n]}" for n in needed]
    after = "".join(f"{n} {now[n]}\n" for n in needed)
    module.exit_json(
        diff={
            "before": before,
            "after": after,
            "before_header": "packages",
            "after_header": "packages",
        },
        versions=now,
        **result,
    )


if __name__ == "__main__":
    os.environ.setdefault("LC_ALL", "C")
    main()
