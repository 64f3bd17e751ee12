"""Cancelling an operation, through the gate like every other change (`operation_cancel`)."""

from __future__ import annotations

from typing import Any

from codeb.errors import Conflict, Forbidden
from codeb.protection.tokens import Target
from codeb.services import gate, operations
from codeb.services.context import Actor, Deps
from codeb.store.models import Operation


def cancel_operation(
    deps: Deps,
    actor: Actor,
    operation_id: str,
    confirmation: gate.Confirmation | None = None,
) -> gate.Answer:
    """Cancel through the gate (`operation_cancel`). An agent key cancels only what it
    started itself. Executed at once, it answers the operation (200)."""
    op = operations.find(operation_id)
    if op.status in operations.FINAL_STATES:
        raise Conflict(
            f"operation {operation_id} has already finished ({op.status})", {"status": op.status}
        )
    if actor.role == "agent" and op.key_name != actor.key_name:
        raise Forbidden(
            "an agent key may cancel only the operations it started",
            {"operation_id": operation_id, "role": actor.role},
        )
    answer = gate.guard(
        deps,
        actor,
        "operation_cancel",
        Target("operation", op.id, op.id, project_id=op.project_id),
        {"operation_id": op.id},
        effect=f"Cancels {op.kind} {op.id} on {', '.join(op.targets or []) or 'no host'}.",
        confirmation=confirmation,
    )
    if answer.status == 200 and "canceled_operation" in answer.body:
        return gate.Answer(answer.status, operations.get_operation(operation_id))
    return answer


def _execute_cancel(
    deps: Deps, actor: Actor, target: Target, params: dict[str, Any]
) -> dict[str, Any]:
    """In the gate's write transaction; the worker is told after the commit."""
    now = deps.clock.now()
    operation_id = params["operation_id"]
    op = operations.find(operation_id)
    if op.status in operations.FINAL_STATES:
        raise Conflict(
            f"operation {operation_id} has already finished ({op.status})", {"status": op.status}
        )
    Operation.update(cancel_requested_at=now).where(Operation.id == operation_id).execute()
    if op.status == "queued":
        Operation.update(status="canceled", finished_at=now, error="canceled before start").where(
            (Operation.id == operation_id) & (Operation.status == "queued")
        ).execute()
    return {"canceled_operation": operation_id}


APPLIERS: dict[str, gate.Applier] = {"operation_cancel": _execute_cancel}
