#!/usr/bin/python3
"""Ansible module: which parts of a Quadlet plan differ from this host, in one round trip.
Read-only (so it runs in check mode too): the role then changes only what differs (with
codeb_quadlet_apply), and a no-op deploy costs one module call per host instead of one per
file. The work is `probe` in module_utils/codeb_quadlet.py (shared with codeb_quadlet_apply,
which runs it itself on a play of one host).

Besides the files, it compares what each container *runs* with the plan: the image id of the
running container against the id the plan's image names here, and the container's start
against its files' last change and systemd's view of its unit (a unit file edited and
reloaded by hand, never restarted, has the right checksum and runs the old version). And it
digests everything it saw into `state_digest`: a preview's plan hash binds that state."""

from ansible.module_utils.codeb_module import Fail, main
from ansible.module_utils.codeb_quadlet import CHANGED_SINCE_PREVIEW, PROBE_SPEC, probe

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


SPEC = PROBE_SPEC
CHECK_MODE = True


def run(p, check, diff):
    result = probe(p)
    if p["expected_state"] and p["expected_state"] != result["state_digest"]:
        raise Fail(CHANGED_SINCE_PREVIEW, **result)
    return result


if __name__ == "__main__":
    main(SPEC, run, CHECK_MODE)
