"""Long-running operations: created in a transaction, handed to the worker after commit,
followed by clients through their status and ordered runner events."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

from codeb.errors import NotFound, ServiceUnavailable
from codeb.executor.runner import reap_orphans
from codeb.executor.worker import FINAL_STATES
from codeb.executor.worker import STATUSES as STATUSES  # re-exported for the API layer
from codeb.protection import audit
from codeb.services.context import SYSTEM, Actor, Deps
from codeb.store.models import Lock, Operation, OperationEvent

MAX_WAIT_S = 30


def _iso(value: Any) -> str | None:
    return value.isoformat() + "Z" if value else None


def operation_view(op: Operation) -> dict:
    duration = None
    if op.started_at and op.finished_at:
        duration = round((op.finished_at - op.started_at).total_seconds(), 3)
    result = op.result or {}
    return {
        "id": op.id,
        "kind": op.kind,
        "status": op.status,
        "targets": op.targets or [],
        "project_id": op.project_id,
        "server_id": op.server_id,
        "requested_by": op.requested_by,
        "key_name": op.key_name,
        "params": op.params or {},
        "created_at": _iso(op.created_at),
        "started_at": _iso(op.started_at),
        "finished_at": _iso(op.finished_at),
        "duration_s": duration,
        "rc": op.rc,
        "error": op.error,
        "recap": result.get("recap", {}),
        "result": {k: v for k, v in result.items() if k != "recap"},
    }


def event_view(ev: OperationEvent) -> dict:
    return {
        "seq": ev.seq,
        "event": ev.event,
        "host": ev.host,
        "task": ev.task,
        "changed": ev.changed,
        "failed": ev.failed,
        "duration": ev.duration,
        "data": ev.data or {},
    }


def create_operation(
    deps: Deps,
    actor: Actor,
    kind: str,
    targets: list[str],
    params: dict | None = None,
    server_id: int | None = None,
    project_id: str | None = None,
) -> Operation:
    """Insert a queued operation inside the caller's write transaction. The caller submits it
    to the worker only after the transaction committed (see `dispatch`)."""
    now = deps.clock.now()
    op = Operation.create(
        id=f"op_{secrets.token_hex(8)}",
        kind=kind,
        status="queued",
        targets=sorted(targets),
        params=params or {},
        server=server_id,
        project=project_id,
        requested_by=actor.requested_by,
        key_name=actor.key_name,
        created_at=now,
    )
    audit.record(
        deps.db,
        operation=kind,
        danger_level=1,
        status="requested",
        requested_by=actor.requested_by,
        key_name=actor.key_name,
        now=now,
        project_id=project_id,
        target=",".join(sorted(targets)),
        details={"operation_id": op.id, "params": params or {}},
    )
    return op


def dispatch(deps: Deps, operation_id: str) -> None:
    if deps.worker is None:
        raise ServiceUnavailable("the executor is not running", {"operation_id": operation_id})
    # Runs made by hand since the last one are recorded before codeb runs anything itself.
    import_journal(deps, deps.settings.data_dir / "journal")
    deps.worker.submit(operation_id)


def find(operation_id: str) -> Operation:
    op = Operation.get_or_none(Operation.id == operation_id)
    if op is None:
        raise NotFound(f"operation {operation_id!r} not found", {"operation_id": operation_id})
    return op


def get_operation(operation_id: str) -> dict:
    return operation_view(find(operation_id))


def list_operations(
    limit: int = 50, offset: int = 0, status: str | None = None, kind: str | None = None
) -> dict:
    query = Operation.select()
    if status:
        query = query.where(Operation.status == status)
    if kind:
        query = query.where(Operation.kind == kind)
    total = query.count()
    ops = query.order_by(Operation.created_at.desc(), Operation.id).limit(limit).offset(offset)
    return {"operations": [operation_view(o) for o in ops], "total": total}


def list_events(
    deps: Deps, operation_id: str, after: int = 0, limit: int = 500, wait_s: float = 0
) -> dict:
    """Events with seq > after, in order. With wait_s, a long poll: answer as soon as there is
    something new or the operation has finished, at the latest after wait_s."""
    deadline = time.monotonic() + min(wait_s, MAX_WAIT_S)
    while True:
        op = find(operation_id)
        events = list(
            OperationEvent.select()
            .where((OperationEvent.operation == operation_id) & (OperationEvent.seq > after))
            .order_by(OperationEvent.seq)
            .limit(limit)
        )
        if events or op.status in FINAL_STATES or time.monotonic() >= deadline:
            return {
                "operation_id": operation_id,
                "status": op.status,
                "finished": op.status in FINAL_STATES,
                "events": [event_view(e) for e in events],
                "next_after": events[-1].seq if events else after,
            }
        deps.db.close()  # don't hold a connection while waiting
        time.sleep(0.2)
        deps.db.connect(reuse_if_open=True)


def recover_interrupted(deps: Deps) -> list[Operation]:
    """At start-up: what was queued or running when the API died is `interrupted` (never
    succeeded), every lease is released, and the local processes it left are stopped.
    Returns the operations that were running (their remote work may still be going on)."""
    reap_orphans(deps.settings.data_dir / "runs")
    now = deps.clock.now()
    with deps.db.connection_context(), deps.write():
        running = list(Operation.select().where(Operation.status == "running"))
        (
            Operation.update(
                status="interrupted",
                finished_at=now,
                error="codeb stopped while this operation was in flight; run it again",
            )
            .where(Operation.status.in_(["queued", "running"]))
            .execute()
        )
        Lock.delete().execute()
    return running


def clean_up_after(deps: Deps, interrupted: list[Operation]) -> list[str]:
    """Stop on the hosts what interrupted runs had started there (playbooks/cancel.yml finds
    their processes by marker), each as an operation of its own."""
    started = []
    for op in interrupted:
        if not op.targets or op.kind == "remote_cleanup":
            continue
        with deps.db.connection_context(), deps.write():
            cleanup = create_operation(
                deps, SYSTEM, "remote_cleanup", list(op.targets),
                {"interrupted_operation": op.id}, project_id=op.project_id,
            )  # fmt: skip
        dispatch(deps, cleanup.id)
        started.append(cleanup.id)
    return started


def import_journal(deps: Deps, journal_dir: Path) -> int:
    """Record runs made by hand (written by the codeb_journal callback) in operation_logs."""
    if not journal_dir.is_dir():
        return 0
    done_dir = journal_dir / "imported"
    imported = 0
    for path in sorted(journal_dir.glob("*.jsonl")):
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        start = next((r for r in records if r.get("event") == "start"), {})
        end = next((r for r in records if r.get("event") == "end"), {})
        failed = [r for r in records if r.get("status") in ("failed", "unreachable")]
        with deps.db.connection_context(), deps.write():
            audit.record(
                deps.db,
                operation="manual_playbook",
                danger_level=2,
                status="failed" if failed else "executed",
                requested_by="manual",
                key_name=start.get("user"),
                now=deps.clock.now(),
                target=",".join(sorted(end.get("recap", {}))),
                details={
                    "playbook": start.get("playbook"),
                    "machine": start.get("machine"),
                    "started_at": start.get("at"),
                    "finished_at": end.get("at"),
                    "recap": end.get("recap", {}),
                    "tasks": len([r for r in records if r.get("event") == "task"]),
                    "journal": path.name,
                },
                executed=True,
            )
        done_dir.mkdir(exist_ok=True)
        path.rename(done_dir / path.name)
        imported += 1
    return imported
