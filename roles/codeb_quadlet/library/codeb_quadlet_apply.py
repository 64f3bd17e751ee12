#!/usr/bin/python3
"""Ansible module: apply what the probe found different, in one round trip per host.

The act half of the probe-then-act deploy (codeb_quadlet_probe is the read half). It is
handed only what the probe said differs, checks each file again, and then: creates the
directories, places the files (atomically: a temporary file in the same directory, renamed),
reloads systemd when a unit file changed or systemd had not loaded the current one, restarts
the units whose files changed or whose container runs something else, and starts every unit
that is not running. One module call instead of a chain of builtin modules (copy, file,
systemd_service), each of which costs Ansible's per-module round trip (~0.2 s pipelined here,
more on a loaded machine) while the work itself is a few milliseconds plus systemd's.

Check mode is honest: it changes nothing and reports exactly what it would place (a diff per
file, secret files named but never shown), reload, restart and start. Secret file contents
arrive in `secret_contents`, a no_log parameter, so they never appear in the module's
invocation or results."""

import os
import subprocess
import tempfile

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: codeb_quadlet_apply
short_description: Place a host's differing Quadlet files, reload and restart what changed
options:
  dirs:
    description: Directories to make, each {path, mode} (owner root).
    type: list
    elements: dict
    default: []
  files:
    description: Files to place, each {path, content, mode, unit} (owner root).
    type: list
    elements: dict
    default: []
  secret_files:
    description: Secret files to place, each {path, mode, unit}; contents in secret_contents.
    type: list
    elements: dict
    default: []
  secret_contents:
    description: The contents of secret_files, in the same order (never logged).
    type: list
    elements: str
    default: []
  services:
    description: Every service of the plan on this host, in the plan's order.
    type: list
    elements: str
    default: []
  restart:
    description: Services the probe found running something else than their files say.
    type: list
    elements: str
    default: []
  reload:
    description: The probe found a unit systemd has not reloaded.
    type: bool
    default: false
  inactive:
    description: Services the probe found not running.
    type: list
    elements: str
    default: []
  not_loaded:
    description: Services systemd does not know yet (new units).
    type: list
    elements: str
    default: []
"""

HIDDEN = "(a secret file: its content is not shown)\n"


def _owner_mode_ok(st, mode):
    return (st.st_mode & 0o7777) == int(mode, 8) and st.st_uid == 0 and st.st_gid == 0


def _current(path):
    """(content bytes or None when absent, whether mode and owner are as planned)."""
    try:
        st = os.lstat(path)
        with open(path, "rb") as fh:
            return fh.read(), st
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None, None


def _write(path, data, mode):
    """Atomically: a temporary file beside it, owner and mode set, then renamed over it."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".codeb-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chown(tmp, 0, 0)
        os.chmod(tmp, int(mode, 8))
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _service(unit):
    return unit[: -len(".container")] + ".service" if unit.endswith(".container") else unit


def _systemctl(module, result, *args):
    proc = subprocess.run(["systemctl", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        what = " ".join(args)
        detail = (proc.stderr or proc.stdout).strip()
        module.fail_json(msg=f"systemctl {what} failed: {detail}", rc=proc.returncode, **result)


def main():
    module = AnsibleModule(
        argument_spec={
            "dirs": {"type": "list", "elements": "dict", "default": []},
            "files": {"type": "list", "elements": "dict", "default": []},
            "secret_files": {"type": "list", "elements": "dict", "default": []},
            "secret_contents": {
                "type": "list",
                "elements": "str",
                "default": [],
                "no_log": True,
            },
            "services": {"type": "list", "elements": "str", "default": []},
            "restart": {"type": "list", "elements": "str", "default": []},
            "reload": {"type": "bool", "default": False},
            "inactive": {"type": "list", "elements": "str", "default": []},
            "not_loaded": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=True,
    )
    p = module.params
    check = module.check_mode
    if len(p["secret_files"]) != len(p["secret_contents"]):
        module.fail_json(msg="secret_files and secret_contents differ in length")

    result = {
        "changed": False,
        "dirs": [],
        "placed": [],
        "reloaded": False,
        "restarted": [],
        "started": [],
        "diff": [],
    }

    for d in p["dirs"]:
        try:
            st = os.stat(d["path"])
            ok = os.path.isdir(d["path"]) and _owner_mode_ok(st, d["mode"])
        except FileNotFoundError:
            ok = False
        if ok:
            continue
        result["dirs"].append(d["path"])
        result["changed"] = True
        if not check:
            os.makedirs(d["path"], exist_ok=True)
            os.chown(d["path"], 0, 0)
            os.chmod(d["path"], int(d["mode"], 8))

    wanted = [(f, f["content"], False) for f in p["files"]]
    wanted += [(f, c, True) for f, c in zip(p["secret_files"], p["secret_contents"], strict=True)]
    changed_units = []
    for f, content, secret in wanted:
        data = content.encode()
        before, st = _current(f["path"])
        if before == data and st is not None and _owner_mode_ok(st, f["mode"]):
            continue  # already right (placed since the probe looked)
        result["placed"].append(f["path"])
        result["changed"] = True
        if f.get("unit"):
            changed_units.append(f["unit"])
        if module._diff:
            entry = {"before_header": f["path"], "after_header": f["path"]}
            if secret:
                entry.update(before="" if before is None else HIDDEN, after=HIDDEN)
            else:
                entry.update(
                    before="" if before is None else before.decode("utf-8", "replace"),
                    after=content,
                )
            if st is not None and not _owner_mode_ok(st, f["mode"]):
                entry["before_header"] += f" (mode {st.st_mode & 0o7777:o}, uid {st.st_uid})"
                entry["after_header"] += f" (mode {f['mode']}, uid 0)"
            result["diff"].append(entry)
        if not check:
            _write(f["path"], data, f["mode"])

    # Restart the units whose files changed, then those that run something else; in the
    # plan's order (the probe's services), each once.
    restart = {_service(u) for u in changed_units} | set(p["restart"])
    ordered = [s for s in p["services"] if s in restart]
    ordered += sorted(restart - set(ordered))
    reload = p["reload"] or any(path.endswith(".container") for path in result["placed"])
    start = [s for s in p["inactive"] if s not in restart]
    if check:
        # A new unit is not known to systemd before the reload: it would be started.
        new = set(p["not_loaded"])
        result["restarted"] = [s for s in ordered if s not in new]
        result["started"] = [s for s in ordered if s in new] + start
        result["reloaded"] = reload
        result["changed"] = result["changed"] or reload or bool(ordered or start)
        module.exit_json(**result)

    if reload:
        _systemctl(module, result, "daemon-reload")
        result["reloaded"] = result["changed"] = True
    if ordered:
        _systemctl(module, result, "restart", "--", *ordered)
        result["restarted"] = ordered
        result["changed"] = True
    if start:
        _systemctl(module, result, "start", "--", *start)
        result["started"] = start
        result["changed"] = True
    module.exit_json(**result)


if __name__ == "__main__":
    main()
