"""Which tasks ran on which host, from the runner's events (pure)."""

from __future__ import annotations

from codeb.executor.events import EventRecord, host_recap, host_tasks
from codeb.executor.runner import SETTINGS


def ev(seq: int, event: str, host: str | None, task: str | None, changed: bool = False):
    return EventRecord(seq, event, host, task, changed, event == "runner_on_failed", None, {})


STOPPED_RUN = [
    ev(1, "playbook_on_start", None, None),
    ev(2, "runner_on_start", "app", "Probe"),
    ev(3, "runner_on_start", "db", "Probe"),
    ev(4, "runner_on_ok", "app", "Probe"),
    ev(5, "runner_on_ok", "db", "Probe"),
    ev(6, "runner_on_start", "app", "Place the files"),
    ev(7, "runner_on_start", "db", "Place the files"),
    ev(8, "runner_on_ok", "app", "Place the files", changed=True),
    ev(9, "runner_on_skipped", "db", "Place the files"),
    ev(10, "runner_on_start", "app", "Restart the units"),
    # canceled here: no end event for the restart, no stats
]


def test_tasks_per_host_with_the_interrupted_one():
    assert host_tasks(STOPPED_RUN) == {
        "app": [
            {"task": "Probe", "status": "ok"},
            {"task": "Place the files", "status": "changed"},
            {"task": "Restart the units", "status": "interrupted"},
        ],
        "db": [
            {"task": "Probe", "status": "ok"},
            {"task": "Place the files", "status": "skipped"},
        ],
    }


def test_recap_without_stats_counts_the_task_events():
    recap = host_recap(STOPPED_RUN)
    assert recap["app"] == {
        "ok": 2,
        "changed": 1,
        "failures": 0,
        "dark": 0,
        "skipped": 0,
        "rescued": 0,
        "ignored": 0,
    }
    assert recap["db"]["ok"] == 1 and recap["db"]["skipped"] == 1


def test_unreachable_and_failed():
    records = [
        ev(1, "runner_on_start", "cache", "Probe"),
        ev(2, "runner_on_unreachable", "cache", "Probe"),
        ev(3, "runner_on_start", "app", "Probe"),
        ev(4, "runner_on_failed", "app", "Probe"),
    ]
    assert host_tasks(records) == {
        "app": [{"task": "Probe", "status": "failed"}],
        "cache": [{"task": "Probe", "status": "unreachable"}],
    }
    assert host_recap(records)["cache"]["dark"] == 1
    assert host_recap(records)["app"]["failures"] == 1


def test_the_runner_polls_for_a_cancel_often():
    # ansible-runner's default (5 s) let a canceled deploy restart units for seconds.
    assert SETTINGS["pexpect_timeout"] <= 0.2
