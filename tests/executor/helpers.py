"""Running test playbooks through the real worker, and waiting on operations over HTTP."""

from __future__ import annotations

import time
from pathlib import Path

from codeb.executor.runner import PlaybookRun
from codeb.executor.worker import PlaybookJob
from codeb.services import fleet, operations
from codeb.services.context import SYSTEM

SLOW = str(Path(__file__).resolve().parent.parent / "playbooks" / "slow.yml")


def _build_slow(deps, op):
    return PlaybookRun(
        playbook=SLOW,
        targets=fleet.hosts_for(deps, op.targets),
        limit=",".join(op.targets),
        extravars=dict(op.params or {}),
        timeout_s=int((op.params or {}).get("timeout_s", 600)),
    )


SLOW_JOB = PlaybookJob(build=_build_slow, finish=lambda deps, op, outcome, records: None)


def start_slow(api, targets: list[str], **params) -> str:
    """Start the slow test playbook as an operation through the real worker."""
    api.deps.worker.register("test_slow", SLOW_JOB)
    with api.deps.db.connection_context(), api.deps.write():
        op = operations.create_operation(api.deps, SYSTEM, "test_slow", targets, params)
    operations.dispatch(api.deps, op.id)
    return op.id


def wait_operation(client, op_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        op = client.get(f"/api/operations/{op_id}").json()
        if op["status"] not in ("queued", "running"):
            return op
        time.sleep(0.2)
    raise AssertionError(f"operation {op_id} did not finish in {timeout}s")


def register_fleet(client, hosts, timeout: float = 300) -> None:
    """Register every fleet host with the role it is named after (app, db, cache) and wait
    until each one's registration and bootstrap succeeded."""
    ops = []
    for host in hosts:
        r = client.post("/api/servers", json={"name": host.name, "ip": host.ip, "role": host.name})
        assert r.status_code in (201, 202), r.text
        ops.append(r.json()["operation"]["id"])
    for op in ops:
        done = wait_operation(client, op, timeout=timeout)
        assert done["status"] == "succeeded", done
