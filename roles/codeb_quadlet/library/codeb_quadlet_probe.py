#!/usr/bin/python3
"""Ansible module: which parts of a Quadlet plan differ from this host, in one round trip.
Read-only (so it runs in check mode too): the role then changes only what differs, with the
builtin modules, and a no-op deploy costs one module call per host instead of one per file."""

import hashlib
import os
import subprocess

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
    description: Files, each {path, mode, sha1} (the content's SHA-1; never the content).
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
"""


def _mode_owner_ok(st, mode):
    return (st.st_mode & 0o7777) == int(mode, 8) and st.st_uid == 0 and st.st_gid == 0


def _dir_differs(d):
    try:
        st = os.stat(d["path"])
    except FileNotFoundError:
        return True
    return not os.path.isdir(d["path"]) or not _mode_owner_ok(st, d["mode"])


def _file_differs(f):
    try:
        st = os.lstat(f["path"])
        with open(f["path"], "rb") as fh:
            digest = hashlib.sha1(fh.read()).hexdigest()  # noqa: S324 -- what copy compares
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return True
    return digest != f["sha1"] or not _mode_owner_ok(st, f["mode"])


def _service_states(services):
    """{service: (LoadState, ActiveState)} from one `systemctl show`."""
    if not services:
        return {}
    out = subprocess.run(
        ["systemctl", "show", "--property=Id,LoadState,ActiveState", "--", *services],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    states = dict.fromkeys(services, ("not-found", "inactive"))
    for block in out.strip().split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if props.get("Id") in states:
            states[props["Id"]] = (props.get("LoadState", ""), props.get("ActiveState", ""))
    return states


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


def main():
    module = AnsibleModule(
        argument_spec={
            "dirs": {"type": "list", "elements": "dict", "default": []},
            "files": {"type": "list", "elements": "dict", "default": []},
            "services": {"type": "list", "elements": "str", "default": []},
            "images": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=True,
    )
    p = module.params
    states = _service_states(p["services"])
    files = [f["path"] for f in p["files"] if _file_differs(f)]
    inactive = [s for s, (_, active) in states.items() if active != "active"]
    # One `podman images` call (each costs ~0.2 s) answers both which images are missing and
    # which image id each reference names here (codeb records it: "tested by digest").
    local = _local_images()
    missing_images = [
        image
        for image in (p["images"] if files or inactive else [])
        if image not in local
        and subprocess.run(["podman", "image", "exists", image], check=False).returncode != 0
    ]
    module.exit_json(
        changed=False,
        dirs=[d["path"] for d in p["dirs"] if _dir_differs(d)],
        files=files,
        not_loaded=[s for s, (load, _) in states.items() if load != "loaded"],
        inactive=inactive,
        missing_images=missing_images,
        image_ids={image: local[image] for image in p["images"] if image in local},
    )


if __name__ == "__main__":
    main()
