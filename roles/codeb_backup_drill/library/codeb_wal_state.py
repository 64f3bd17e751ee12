#!/usr/bin/python
"""The live state of WAL shipping for some Barman servers (read-only): whether the
supervised receiver (codeb-barman-receive-wal@NAME) is active and how often systemd restarted
it, what `barman check` says is failing, and when WAL last arrived (the newest archived
segment or the streaming `.partial` file, whichever is newer).

The receiver fetches in bursts (roles/codeb_backup_storage/module_utils/
codeb_barman_receiver.py): between two, the slot is idle and `barman check` says "replication
slot: slot not active". That failure is dropped while the receiver's own report
(codeb-receiver.json) shows a burst succeeded recently; bursts that keep failing are
reported as `wal_bursts` with the receiver's last error."""

from __future__ import annotations

import json
import os
import subprocess
import time

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: codeb_wal_state
short_description: Report the WAL receiver state of Barman servers
options:
  names: {description: Barman server names., type: list, elements: str, required: true}
  home: {description: Barman's home., type: path, default: /var/lib/barman}
"""


def run(argv: list[str], timeout: float = 120) -> tuple[int, str]:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return 124, f"timed out after {timeout:.0f} s"
    return out.returncode, out.stdout.strip() or out.stderr.strip()


def newest(path: str, accept) -> tuple[float | None, int]:
    last, size = None, 0
    for d, _, files in os.walk(path):
        for f in files:
            if accept(f):
                st = os.stat(os.path.join(d, f))
                if last is None or st.st_mtime > last:
                    last, size = st.st_mtime, st.st_size
    return last, size


def is_segment(f: str) -> bool:
    return len(f) == 24 and all(c in "0123456789ABCDEF" for c in f)


def gaps(path: str) -> list[str]:
    """Segments missing between the first and the last one held, per timeline (16 MB
    segments: 256 per log file). A gap means a window that cannot be recovered across."""
    held: dict[int, set[int]] = {}
    for _, _, files in os.walk(path):
        for f in files:
            if is_segment(f):
                held.setdefault(int(f[:8], 16), set()).add(int(f[8:16], 16) * 256 + int(f[16:], 16))
    missing: list[str] = []
    for tli, numbers in held.items():
        for n in range(min(numbers), max(numbers)):
            if n not in numbers:
                missing.append(f"{tli:08X}{n // 256:08X}{n % 256:08X}")
                if len(missing) >= 20:
                    return missing
    return missing


def bursts_ok(report_path: str, failing: dict[str, str], now: float | None = None) -> bool:
    """Apply the burst receiver's report to barman check's failures (see the module's doc):
    a recent success means an idle slot is expected; a lasting error is a failure. True when
    a failure was dropped."""
    try:
        with open(report_path) as f:
            report = json.load(f)
    except (OSError, ValueError):
        return False
    if not isinstance(report, dict) or report.get("mode") not in ("bursts", "held"):
        return False
    now = time.time() if now is None else now
    interval = float(report.get("interval_s") or 5)
    last_ok = report.get("last_ok")
    fresh = isinstance(last_ok, (int, float)) and now - last_ok <= max(3 * interval, 30)
    dropped = False
    if fresh:
        for check in [c for c in failing if c.replace(" ", "_").lower() == "replication_slot"]:
            if "not active" in failing[check]:
                del failing[check]
                dropped = True
    elif report.get("last_error"):
        failing["wal_bursts"] = str(report["last_error"])[-500:]
    return dropped


def state(home: str, name: str) -> dict:
    unit = f"codeb-barman-receive-wal@{name}.service"
    _, active = run(["systemctl", "is-active", unit])
    _, restarts = run(["systemctl", "show", "-p", "NRestarts", "--value", unit])
    rc, out = run(["runuser", "-u", "barman", "--", "barman", "-f", "json", "check", name])
    failing: dict[str, str] = {}
    try:
        for check, value in (json.loads(out or "{}").get(name) or {}).items():
            if isinstance(value, dict) and str(value.get("status", "")).upper() == "FAILED":
                failing[check] = str(value.get("hint") or "FAILED")
    except ValueError:
        failing["barman check"] = out[-500:]
    if bursts_ok(os.path.join(home, name, "codeb-receiver.json"), failing) and not failing:
        rc = 0  # what barman check failed on is the idle slot between bursts, and only that
    segments, _ = newest(os.path.join(home, name, "wals"), is_segment)
    partial, partial_size = newest(
        os.path.join(home, name, "streaming"), lambda f: f.endswith(".partial")
    )
    times = [t for t in (segments, partial) if t]
    return {
        "unit": active.strip() or "unknown",
        "restarts": int(restarts) if restarts.strip().isdigit() else 0,
        "check_rc": rc,
        "failing": failing,
        "last_wal_time": max(times) if times else None,
        "partial_bytes": partial_size,
        "gaps": gaps(os.path.join(home, name, "wals")),
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "names": {"type": "list", "elements": "str", "required": True},
            "home": {"type": "path", "default": "/var/lib/barman"},
        },
        supports_check_mode=True,
    )
    try:
        states = {n: state(module.params["home"], n) for n in module.params["names"]}
    except OSError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, wal=states)


if __name__ == "__main__":
    main()
