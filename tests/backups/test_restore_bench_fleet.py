"""bench/restore.py's fleet run (issue 10), with where the time of a restore through codeb
goes: PITR into a new container through the API ÷ the same restore by hand over SSH with
Barman's own commands (the same steps), each API restore split into the request, the wait
for the worker, ansible-runner's and ansible-playbook's start-up up to the first event, the
restore module's task (and its own steps, from its msg), the end of the run and the client's
last poll; then pgbench TPS inside the db container with WAL streaming on ÷ off.

Skipped unless CODEB_BACKUP_BENCH is set (bench/restore.py sets it)."""

from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import statistics
import time
from pathlib import Path
from typing import Any

import pytest

from codeb.features.backups import service as backups
from codeb.store.models import Backup, Operation, OperationEvent
from tests.backups.test_backups_fleet import (  # noqa: F401
    BY_HAND_RESTORE,
    env_var,
    pgbench_tps,
    psql,
    stack,
    start,
)
from tests.executor.helpers import wait_operation

pytestmark = [
    pytest.mark.fleet,
    pytest.mark.skipif(
        not os.environ.get("CODEB_BACKUP_BENCH"), reason="bench/restore.py sets CODEB_BACKUP_BENCH"
    ),
]


def _utc(value: dt.datetime) -> float:
    return value.replace(tzinfo=dt.UTC).timestamp()


def breakdown(op_id: str, posted: float, answered: float, observed: float) -> dict[str, Any]:
    """Where an API restore's seconds went, from the operation's and its events' times."""
    op = Operation.get_by_id(op_id)
    events = list(
        OperationEvent.select().where(OperationEvent.operation == op_id).order_by(
            OperationEvent.seq)
    )  # fmt: skip
    first = events[0].created_at
    (task,) = [e for e in events if e.event == "runner_on_ok" and
               (e.task or "").startswith("Restore (barman")]  # fmt: skip
    stats = [e for e in events if e.event == "playbook_on_stats"][-1]
    return {
        "request_s": answered - posted,
        "queued_s": _utc(op.started_at) - _utc(op.created_at),
        "runner_start_s": _utc(first) - _utc(op.started_at),
        "module_task_s": task.duration,
        "module_steps": (task.data or {}).get("msg"),
        "before_module_s": _utc(task.created_at) - task.duration - _utc(first),
        "run_end_s": _utc(op.finished_at) - _utc(stats.created_at),
        "poll_s": observed - _utc(op.finished_at),
        "tasks": sorted({e.task for e in events if e.event == "playbook_on_task_start"}),
    }


def test_bench_restore_breakdown_and_wal_cost(stack, fleet):  # noqa: F811
    api, deps, created, storage, _deployed = stack
    url = env_var(created["env_files"]["staging"], "DATABASE_URL")
    user = url.split("//", 1)[1].split(":", 1)[0]
    dbname = url.rsplit("/", 1)[1]
    rounds = int(os.environ.get("CODEB_BACKUP_BENCH_ROUNDS", "2"))
    figures: dict[str, Any] = {}
    with api.client() as c, deps.db.connection_context():
        r = c.post("/api/backups", json={"project": "shop", "environment": "staging"})
        t0 = time.monotonic()
        op = wait_operation(c, start(r), timeout=900)
        figures["first_backup_with_setup_s"] = time.monotonic() - t0
        assert op["status"] == "succeeded", op.get("error")
        b = Backup.get_by_id(op["result"]["backup"]["id"])
        api_s, hand_s, parts = [], [], []
        for i in range(rounds):
            psql(url, f"CREATE TABLE IF NOT EXISTS bench (i int); INSERT INTO bench VALUES ({i})")
            time.sleep(1.2)
            when = dt.datetime.now(dt.UTC).replace(microsecond=0, tzinfo=None)
            posted, t0 = time.time(), time.monotonic()
            r = c.post(f"/api/backups/{b.id}/restore", json={"target_time": when.isoformat() + "Z"})
            answered = time.time()
            op_id = start(r)
            op = wait_operation(c, op_id, timeout=900)
            api_s.append(time.monotonic() - t0)
            assert op["status"] == "succeeded", op.get("error")
            parts.append(breakdown(op_id, posted, answered, time.time()))
            args = " ".join(
                shlex.quote(a)
                for a in (f"byhand-{i}", str(39900 + i), when.strftime("%Y-%m-%d %H:%M:%S+00:00"),
                          b.barman_id, "shop-staging-db", backups.POSTGRES_IMAGE)
            )  # fmt: skip
            t0 = time.monotonic()
            script = BY_HAND_RESTORE.format(user=user)
            storage.ssh(f"bash -s -- {args} <<'EOS'\n{script}EOS", check=True)
            hand_s.append(time.monotonic() - t0)
        figures["pitr_api_s"] = statistics.median(api_s)
        figures["pitr_by_hand_s"] = statistics.median(hand_s)
        figures["pitr_api_over_by_hand"] = figures["pitr_api_s"] / figures["pitr_by_hand_s"]
        figures["pitr_api_rounds_s"] = api_s
        figures["pitr_by_hand_rounds_s"] = hand_s
        figures["pitr_api_breakdown"] = parts
        figures["loadavg_1m_after_restores"] = os.getloadavg()[0]

        db = fleet["db"]
        container = "shop-staging-db"
        db.ssh(f"podman exec {container} pgbench -i -q -s 5 -U {user} {dbname}", check=True)
        receiver = "codeb-barman-receive-wal@shop-staging-db"
        on, off = [], []
        seconds = int(os.environ.get("CODEB_BACKUP_BENCH_SECONDS", "15"))
        try:
            for _ in range(rounds):
                on.append(pgbench_tps(db, container, user, dbname, seconds))
                storage.ssh(f"systemctl stop {receiver}", check=True)
                off.append(pgbench_tps(db, container, user, dbname, seconds))
                storage.ssh(f"systemctl start {receiver}", check=True)
        finally:
            storage.ssh(f"systemctl start {receiver}")
        figures["pgbench_tps_wal_on"] = statistics.median(on)
        figures["pgbench_tps_wal_off"] = statistics.median(off)
        figures["pgbench_on_over_off"] = (
            figures["pgbench_tps_wal_on"] / figures["pgbench_tps_wal_off"]
        )
        figures["loadavg_1m"] = os.getloadavg()[0]
        figures["measured_at"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print("restore bench:", json.dumps(figures, sort_keys=True, default=str))
    out = os.environ.get("CODEB_BACKUP_FIGURES")
    if out:
        Path(out).write_text(json.dumps(figures, indent=2, sort_keys=True, default=str))
