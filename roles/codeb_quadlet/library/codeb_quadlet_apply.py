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
invocation or results.

On a play of one host the role hands it the probe's options too (`probe`): it probes, fails
before changing anything when the host is not in the state a preview saw, and applies what
differs, all in one module call (each call costs ~0.3 s on the host before it does anything).
With more hosts the probe is its own task, because nothing may change on any host before
every host passed it. The work is in module_utils/codeb_quadlet.py."""

from ansible.module_utils.codeb_module import Fail, main
from ansible.module_utils.codeb_quadlet import (
    CHANGED_SINCE_PREVIEW,
    PROBE_SPEC,
    apply,
    differs,
    probe,
    what_differs,
)

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
  probe:
    description: >-
      Probe first, in this same call (codeb_quadlet_probe's options; never in check mode).
      Then dirs, files and secret_files are the host's whole plan, and restart, reload,
      inactive and not_loaded come from the probe; only what it found different is applied.
      The result has the probe's result in `probe`, and `pending` when images are missing
      (with pull_first): nothing was changed, pull them and apply again.
    type: dict
  pull_first:
    description: With probe, change nothing while an image of the plan is missing here.
    type: bool
    default: true
"""


SPEC = {
    "dirs": {"type": "list", "elements": "dict", "default": []},
    "files": {"type": "list", "elements": "dict", "default": []},
    "secret_files": {"type": "list", "elements": "dict", "default": []},
    "secret_contents": {"type": "list", "elements": "str", "default": [], "no_log": True},
    "services": {"type": "list", "elements": "str", "default": []},
    "restart": {"type": "list", "elements": "str", "default": []},
    "reload": {"type": "bool", "default": False},
    "inactive": {"type": "list", "elements": "str", "default": []},
    "not_loaded": {"type": "list", "elements": "str", "default": []},
    "probe": {"type": "dict", "options": PROBE_SPEC},
    "pull_first": {"type": "bool", "default": True},
}
CHECK_MODE = True


def _fail(msg, **result):
    raise Fail(msg, **result)


def run(p, check, diff):
    if len(p["secret_files"]) != len(p["secret_contents"]):
        raise Fail("secret_files and secret_contents differ in length")
    if p["probe"] is None:
        return apply(p, check, diff, _fail)
    if check:
        # A preview probes and applies in two tasks, as on a play of many hosts.
        raise Fail("probe is not for check mode")
    seen = probe(p["probe"])
    if p["probe"]["expected_state"] and p["probe"]["expected_state"] != seen["state_digest"]:
        raise Fail(CHANGED_SINCE_PREVIEW, probe=seen, **seen)
    if seen["missing_images"] and p["pull_first"]:
        return {"changed": False, "pending": True, "probe": seen}
    if not differs(seen):
        return {"changed": False, "pending": False, "probe": seen}
    result = apply(what_differs(p, seen), False, diff, _fail)
    return {"pending": False, "probe": seen, **result}


if __name__ == "__main__":
    main(SPEC, run, CHECK_MODE)
