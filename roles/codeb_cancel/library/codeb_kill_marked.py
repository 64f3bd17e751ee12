#!/usr/bin/python3
"""Ansible module: stop the processes a canceled codeb run left on this host. Every codeb
play sets CODEB_OPERATION_ID in its tasks' environment, so the processes are found by that
marker in /proc/<pid>/environ: never by name."""

import os
import signal
import time

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: codeb_kill_marked
short_description: Stop processes carrying CODEB_OPERATION_ID=<id>
options:
  operation_id: {type: str, required: true}
  grace_seconds: {type: float, default: 5}
"""


def marked_pids(marker):
    own = {os.getpid(), os.getppid()}
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in own:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                env = fh.read().split(b"\0")
        except OSError:
            continue
        if marker in env:
            found.append(int(entry))
    return found


def main():
    module = AnsibleModule(
        argument_spec={
            "operation_id": {"type": "str", "required": True},
            "grace_seconds": {"type": "float", "default": 5},
        },
        supports_check_mode=True,
    )
    marker = f"CODEB_OPERATION_ID={module.params['operation_id']}".encode()
    pids = marked_pids(marker)
    if module.check_mode or not pids:
        module.exit_json(changed=bool(pids), pids=pids)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + module.params["grace_seconds"]
    while time.monotonic() < deadline and marked_pids(marker):
        time.sleep(0.1)
    for pid in marked_pids(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    module.exit_json(changed=True, pids=pids)


if __name__ == "__main__":
    main()
