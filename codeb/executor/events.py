"""Turning ansible-runner events into the rows clients read (pure: no I/O). Secrets are
scrubbed by value, whatever field they hide in."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

REDACTED = "********"
# What a client needs to follow a run; the rest of the event (stdout, full results) stays out.
KEPT_RESULT_KEYS = (
    "msg",
    "rc",
    "changed",
    "failed",
    "skipped",
    "unreachable",
    "stderr",
    "stdout",
    "diff",
    "censored",
    # codeb_quadlet_apply: the files it placed, the units it restarted and started (names).
    "placed",
    "reloaded",
    "restarted",
    "started",
)
MAX_TEXT = 4000


@dataclass(frozen=True)
class EventRecord:
    seq: int
    event: str
    host: str | None
    task: str | None
    changed: bool
    failed: bool
    duration: float | None
    data: dict[str, Any]


def scrub(value: Any, secrets: Iterable[str]) -> Any:
    """Replace every occurrence of each secret, in strings nested anywhere."""
    secrets = [s for s in secrets if s]
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {k: scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v, secrets) for v in value]
    return value


def _truncate(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_TEXT:
        return value[:MAX_TEXT] + "…"
    return value


def to_record(raw: dict[str, Any], secrets: Iterable[str] = ()) -> EventRecord:
    data = raw.get("event_data") or {}
    res = data.get("res") if isinstance(data.get("res"), dict) else {}
    kept: dict[str, Any] = {k: _truncate(res[k]) for k in KEPT_RESULT_KEYS if k in res}
    if raw.get("event") == "playbook_on_stats":
        kept = {
            "stats": {
                k: data.get(k) or {}
                for k in ("ok", "changed", "failures", "dark", "skipped", "rescued", "ignored")
            },
            "artifact_data": data.get("artifact_data") or {},
        }
    if raw.get("event") in ("verbose", "error", "warning") and raw.get("stdout"):
        # ansible-playbook's own messages (syntax errors, warnings): the only clue there is.
        kept["stdout"] = _truncate(raw["stdout"])
    label = res.get("_ansible_item_label", res.get("item"))
    if isinstance(label, str | int) and not res.get("censored"):
        kept["item_label"] = _truncate(str(label))  # a loop item's label, never its content
    for key in ("play", "role", "task_action", "playbook", "ignore_errors"):
        if data.get(key) is not None:
            kept[key] = data[key]
    event = raw.get("event", "unknown")
    failed = event in (
        "runner_on_failed",
        "runner_item_on_failed",
        "runner_on_unreachable",
    ) and not data.get("ignore_errors")
    return EventRecord(
        seq=int(raw.get("counter") or 0),
        event=event,
        host=data.get("host") or data.get("remote_addr"),
        task=data.get("task"),
        changed=bool(res.get("changed")) if event.startswith("runner_") else False,
        failed=failed,
        duration=data.get("duration"),
        data=scrub(kept, secrets),
    )


def reported(records: Iterable[EventRecord], key: str) -> dict:
    """What the playbook reported with `set_stats` under `key` (its final stats event)."""
    for rec in reversed(list(records)):
        if rec.event == "playbook_on_stats":
            return (rec.data.get("artifact_data") or {}).get(key) or {}
    return {}


RECAP_KEYS = ("ok", "changed", "failures", "dark", "skipped", "rescued", "ignored")
# What each task-level event says about the task on its host.
TASK_OUTCOME = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_skipped": "skipped",
    "runner_on_unreachable": "unreachable",
}


def host_recap(records: Iterable[EventRecord]) -> dict[str, dict[str, int]]:
    """Per-host counts from the final stats event (Ansible's PLAY RECAP); for a run stopped
    before it (canceled, timed out), the same counts from its task events."""
    records = list(records)
    for rec in records:
        if rec.event == "playbook_on_stats":
            stats = rec.data.get("stats", {})
            hosts = set().union(*(v.keys() for v in stats.values() if isinstance(v, dict)))
            return {
                h: {k: int((stats.get(k) or {}).get(h, 0)) for k in stats} for h in sorted(hosts)
            }
    recap: dict[str, dict[str, int]] = {}
    for host, tasks in host_tasks(records).items():
        counts = dict.fromkeys(RECAP_KEYS, 0)
        for task in tasks:
            outcome = task["status"]
            if outcome in ("ok", "changed"):
                counts["ok"] += 1
                counts["changed"] += outcome == "changed"
            elif outcome in ("failed", "unreachable", "skipped"):
                counts[{"failed": "failures", "unreachable": "dark"}.get(outcome, outcome)] += 1
        recap[host] = counts
    return dict(sorted(recap.items()))


def host_tasks(records: Iterable[EventRecord]) -> dict[str, list[dict[str, str]]]:
    """Which tasks ran on which host, in order, with how each ended: ok, changed, failed,
    skipped, unreachable, or `interrupted` (started, never finished: the run was stopped
    while it ran, so it may have done part of its work)."""
    tasks: dict[str, list[dict[str, str]]] = {}
    open_tasks: dict[tuple[str, str], dict[str, str]] = {}
    for rec in records:
        if not rec.host or rec.task is None:
            continue
        key = (rec.host, rec.task)
        if rec.event == "runner_on_start":
            entry = {"task": rec.task, "status": "interrupted"}
            tasks.setdefault(rec.host, []).append(entry)
            open_tasks[key] = entry
        elif rec.event in TASK_OUTCOME:
            entry = open_tasks.pop(key, None)
            if entry is None:
                entry = {"task": rec.task, "status": ""}
                tasks.setdefault(rec.host, []).append(entry)
            outcome = TASK_OUTCOME[rec.event]
            entry["status"] = "changed" if outcome == "ok" and rec.changed else outcome
    return dict(sorted(tasks.items()))
