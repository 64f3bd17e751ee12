#!/usr/bin/python3
"""Ansible module: which parts of a Quadlet plan differ from this host, in one round trip.
Read-only (so it runs in check mode too): the role then changes only what differs, with the
builtin modules, and a no-op deploy costs one module call per host instead of one per file.

Besides the files, it compares what each container *runs* with the plan: the image id of the
running container against the id the plan's image names here, and the container's start
against its files' last change and systemd's view of its unit (a unit file edited and
reloaded by hand, never restarted, has the right checksum and runs the old version). And it
digests everything it saw into `state_digest`: a preview's plan hash binds that state."""

import hashlib
import json
import os
import re
import subprocess
import time

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: codeb_quadlet_probe
short_description: Compare a host with its part of a codeb Quadlet plan
options:
  dirs:
    description: Directories, each {path, mode}.
    type: list
    elements: dict
    default: []
  files:
    description: Files, each {path, mode, sha1, unit} (the content's SHA-1; never the content).
    type: list
    elements: dict
    default: []
  services:
    description: systemd service names.
    type: list
    elements: str
    default: []
  images:
    description: Image references that must be present.
    type: list
    elements: str
    default: []
  containers:
    description: What each unit must run, each {unit, name, image}.
    type: list
    elements: dict
    default: []
  expected_state:
    description: Fail, before anything is changed, unless the state digest is this one.
    type: str
    default: ""
  settle_s:
    description: Wait up to this long for units that are starting or stopping to settle.
    type: float
    default: 0
"""

TRANSITIONAL = ("activating", "deactivating", "reloading")
IMAGE_LINE = re.compile(r"^Image=(\S+)\s*$", re.M)


def _mode_owner_ok(st, mode):
    return (st.st_mode & 0o7777) == int(mode, 8) and st.st_uid == 0 and st.st_gid == 0


def _dir_differs(d):
    try:
        st = os.stat(d["path"])
    except FileNotFoundError:
        return True
    return not os.path.isdir(d["path"]) or not _mode_owner_ok(st, d["mode"])


def _file_state(f):
    """(sha1 or None when absent, mode and owner as planned, mtime in ns)."""
    try:
        st = os.lstat(f["path"])
        with open(f["path"], "rb") as fh:
            digest = hashlib.sha1(fh.read()).hexdigest()  # noqa: S324 -- what copy compares
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None, False, 0
    return digest, _mode_owner_ok(st, f["mode"]), st.st_mtime_ns


def _service_states(services):
    """{service: {load, active, sub, need_reload}} from one `systemctl show`."""
    if not services:
        return {}
    out = subprocess.run(
        [
            "systemctl",
            "show",
            "--property=Id,LoadState,ActiveState,SubState,NeedDaemonReload",
            "--",
            *services,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    states = {
        s: {"load": "not-found", "active": "inactive", "sub": "dead", "need_reload": False}
        for s in services
    }
    for block in out.strip().split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if props.get("Id") in states:
            states[props["Id"]] = {
                "load": props.get("LoadState", ""),
                "active": props.get("ActiveState", ""),
                "sub": props.get("SubState", ""),
                "need_reload": props.get("NeedDaemonReload") == "yes",
            }
    return states


def _settled_states(services, settle_s):
    """Service states once no unit is half-way through a start, stop or restart (a job a
    canceled run left behind keeps going in systemd), waiting at most settle_s."""
    deadline = time.monotonic() + settle_s
    while True:
        states = _service_states(services)
        busy = [s for s, st in states.items() if st["active"] in TRANSITIONAL]
        if not busy or time.monotonic() >= deadline:
            return states
        time.sleep(0.25)


def _local_images():
    out = subprocess.run(
        ["podman", "images", "--no-trunc", "--format", "{{.Id}} {{.Repository}}:{{.Tag}}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    ids = {}
    for line in out.splitlines():
        image_id, _, name = line.partition(" ")
        if name and not name.startswith("<none>"):
            ids[name] = image_id.removeprefix("sha256:")
    return ids


def _running(names):
    """{name: {running, image, image_id, started_ns}} of the containers that exist."""
    if not names:
        return {}
    listed = subprocess.run(
        ["podman", "ps", "--all", "--format", "{{.Names}}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    present = [n for n in names if n in listed]
    if not present:
        return {}
    fmt = "{{.Name}}|{{.State.Running}}|{{.ImageName}}|{{.Image}}|{{.State.StartedAt.UnixNano}}"
    out = subprocess.run(
        ["podman", "container", "inspect", "--format", fmt, *present],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    found = {}
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) != 5:
            continue
        name, running, image, image_id, started = parts
        found[name] = {
            "running": running == "true",
            "image": image,
            "image_id": image_id.removeprefix("sha256:"),
            "started_ns": int(started) if started.lstrip("-").isdigit() else 0,
        }
    return found


def _unit_image(files, unit):
    """The Image= line of the unit file on the host (what systemd would start)."""
    for f in files:
        if f.get("unit") == unit and f["path"].endswith(".container"):
            try:
                with open(f["path"], encoding="utf-8", errors="replace") as fh:
                    match = IMAGE_LINE.search(fh.read())
            except OSError:
                return None
            return match.group(1) if match else None
    return None


def main():
    module = AnsibleModule(
        argument_spec={
            "dirs": {"type": "list", "elements": "dict", "default": []},
            "files": {"type": "list", "elements": "dict", "default": []},
            "services": {"type": "list", "elements": "str", "default": []},
            "images": {"type": "list", "elements": "str", "default": []},
            "containers": {"type": "list", "elements": "dict", "default": []},
            "expected_state": {"type": "str", "default": ""},
            "settle_s": {"type": "float", "default": 0},
        },
        supports_check_mode=True,
    )
    p = module.params
    services = list(p["services"])
    for c in p["containers"]:
        service = c["unit"].removesuffix(".container") + ".service"
        if service not in services:
            services.append(service)
    states = (
        _settled_states(services, p["settle_s"]) if p["settle_s"] else (_service_states(services))
    )
    file_states = {f["path"]: _file_state(f) for f in p["files"]}
    files = [
        f["path"]
        for f in p["files"]
        if file_states[f["path"]][0] != f["sha1"] or not file_states[f["path"]][1]
    ]
    differing_dirs = [d["path"] for d in p["dirs"] if _dir_differs(d)]
    inactive = [s for s in p["services"] if states[s]["active"] != "active"]
    # One `podman images` call (each costs ~0.2 s) answers both which images are missing and
    # which image id each reference names here (codeb records it: "tested by digest").
    local = _local_images()
    running = _running([c["name"] for c in p["containers"]])

    containers, restart = {}, []
    for c in p["containers"]:
        service = c["unit"].removesuffix(".container") + ".service"
        st = states[service]
        actual = running.get(c["name"])
        own_files = [f for f in p["files"] if f.get("unit") == c["unit"]]
        wanted_id = local.get(c["image"])
        drift = []
        if st["active"] != "active" or not (actual and actual["running"]):
            drift.append("not running")
        differing = [f["path"] for f in own_files if f["path"] in files]
        if differing:
            drift.append("files differ from the plan: " + ", ".join(differing))
        if st["need_reload"]:
            drift.append("systemd has not loaded its current unit file")
        stale = bool(
            actual
            and actual["running"]
            and any(file_states[f["path"]][2] > actual["started_ns"] for f in own_files)
        )
        if stale:
            drift.append("started before its files last changed: a change was never applied")
        image_differs = bool(
            actual and actual["running"] and wanted_id and actual["image_id"] != wanted_id
        )
        if image_differs:
            drift.append(
                f"runs image {actual['image_id'][:12]} ({actual['image']}), "
                f"the plan wants {c['image']} ({wanted_id[:12]})"
            )
        # A running container whose files already match is restarted when it runs something
        # else than they say (files that differ restart it anyway, inactive ones are started).
        if (
            st["active"] == "active"
            and not differing
            and (image_differs or stale or st["need_reload"])
        ):
            restart.append(service)
        containers[c["name"]] = {
            "unit": c["unit"],
            "service": service,
            "load": st["load"],
            "active": st["active"],
            "sub": st["sub"],
            "need_reload": st["need_reload"],
            "unit_file_present": any(
                file_states[f["path"]][0] is not None
                for f in own_files
                if f["path"].endswith(".container")
            ),
            "unit_image": _unit_image(own_files, c["unit"]),
            "running": bool(actual and actual["running"]),
            "image": actual["image"] if actual else None,
            "image_id": actual["image_id"] if actual else None,
            "wanted_image": c["image"],
            "wanted_image_id": wanted_id,
            "drift": drift,
        }

    needs_images = files or inactive or restart
    missing_images = [
        image
        for image in (p["images"] if needs_images else [])
        if image not in local
        and subprocess.run(["podman", "image", "exists", image], check=False).returncode != 0
    ]
    # Everything above that a change between a preview and its apply could alter. File
    # checksums enter only through this digest (secret files' hashes are never reported).
    seen = {
        "dirs": sorted(differing_dirs),
        "files": {path: list(state[:2]) for path, state in sorted(file_states.items())},
        "services": {
            s: [st["load"], st["active"] == "active", st["need_reload"]]
            for s, st in sorted(states.items())
        },
        "containers": {
            name: [c["running"], c["image_id"]] for name, c in sorted(containers.items())
        },
        "images": {image: local.get(image) for image in sorted(p["images"])},
    }
    digest = hashlib.sha256(json.dumps(seen, sort_keys=True).encode()).hexdigest()
    result = {
        "changed": False,
        "dirs": differing_dirs,
        "files": files,
        "not_loaded": [s for s in p["services"] if states[s]["load"] != "loaded"],
        "inactive": inactive,
        "missing_images": missing_images,
        "image_ids": {image: local[image] for image in p["images"] if image in local},
        "containers": containers,
        "restart": restart,
        "reload": any(states[s]["need_reload"] for s in services),
        "state_digest": digest,
    }
    if p["expected_state"] and p["expected_state"] != digest:
        module.fail_json(
            msg="this host changed since the preview: preview again (nothing was changed)",
            **result,
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
