#!/usr/bin/python3
"""Ansible module: live CPU, load, memory, disk and container counts of this host.
Read-only, so it supports check mode."""

import json
import os
import subprocess
import time

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: codeb_host_stats
short_description: Live resource figures of a host
options:
  sample_seconds:
    description: How long to sample /proc/stat for CPU use.
    type: float
    default: 0.5
"""


def cpu_times():
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return idle, sum(fields)


def meminfo():
    values = {}
    with open("/proc/meminfo") as fh:
        for line in fh:
            key, rest = line.split(":", 1)
            values[key] = int(rest.split()[0]) * 1024
    return values


def containers():
    try:
        out = subprocess.run(
            ["podman", "ps", "--all", "--format", "json"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    items = json.loads(out or "[]")
    running = sum(1 for c in items if c.get("State") == "running")
    return {"total": len(items), "running": running, "stopped": len(items) - running}


def main():
    module = AnsibleModule(
        argument_spec={"sample_seconds": {"type": "float", "default": 0.5}},
        supports_check_mode=True,
    )
    idle1, total1 = cpu_times()
    time.sleep(module.params["sample_seconds"])
    idle2, total2 = cpu_times()
    busy = 1 - (idle2 - idle1) / max(1, total2 - total1)
    mem = meminfo()
    disk = os.statvfs("/")
    load1, load5, load15 = os.getloadavg()
    module.exit_json(
        changed=False,
        stats={
            "cpu": {"count": os.cpu_count(), "percent": round(100 * busy, 1)},
            "load": {"1m": load1, "5m": load5, "15m": load15},
            "memory": {
                "total_bytes": mem["MemTotal"],
                "available_bytes": mem.get("MemAvailable", mem["MemFree"]),
                "used_bytes": mem["MemTotal"] - mem.get("MemAvailable", mem["MemFree"]),
            },
            "disk": {
                "path": "/",
                "total_bytes": disk.f_blocks * disk.f_frsize,
                "free_bytes": disk.f_bavail * disk.f_frsize,
                "used_bytes": (disk.f_blocks - disk.f_bfree) * disk.f_frsize,
            },
            "containers": containers(),
        },
    )


if __name__ == "__main__":
    main()
