"""The Protection Layer over HTTP: the queue, confirm, approve, cancel, the hash-chained log
and the effective rules; and its periodic queue expiry. The gate itself (guard, confirm) is
codeb.services.gate, which every guarded use case calls; the pure core (rules,
decide, tokens, audit log) is codeb.protection."""

from __future__ import annotations

from codeb.api.declare import CONFIRM_CONTRACT, Op, answer, path
from codeb.features.protection import schemas
from codeb.services import gate
from codeb.wiring import Configurator

CLOSED = (403, 404, 409, 410)


def includeme(config: Configurator) -> None:
    # Imported here so a service import never pulls in Falcon (the HTTP layer).
    from codeb.features.protection import api

    config.add_schedules(gate.SCHEDULES)
    config.add_route(
        "/api/protection/queue",
        api.Queue,
        get=Op(
            "Queue entries (pending by default) with unmet requirements and cooldown end",
            {200: answer(schemas.QueueList, "entries, oldest first")},
            (422,),
            params=schemas.QUEUE_QUERY,
        ),
    )
    config.add_route(
        "/api/protection/queue/{entry_id}",
        api.QueueEntry,
        params=(path("entry_id"),),
        get=Op("One queue entry", {200: answer(schemas.QueueEntry, "the entry")}, (404,)),
    )
    config.add_route(
        "/api/protection/confirm",
        api.Confirm,
        post=Op(
            "Confirm an operation with its token (same key as the request)",
            {
                200: answer(schemas.ProtectionExecuted, "executed"),
                202: answer(
                    (schemas.ProtectionRecorded, schemas.ProtectionExecuted),
                    "confirmation recorded (still waiting), or executed and an operation "
                    "started (follow result.operation)",
                ),
            },
            CLOSED,
            body=schemas.ProtectionConfirm,
            description=CONFIRM_CONTRACT,
        ),
    )
    config.add_route(
        "/api/protection/approve",
        api.Approve,
        post=Op(
            "Approve a CRITICAL entry (admin key other than the requester's; not MCP)",
            {200: answer(schemas.ProtectionEntryAnswer, "approval recorded; not executed")},
            CLOSED,
            body=schemas.ProtectionApprove,
        ),
    )
    config.add_route(
        "/api/protection/cancel",
        api.Cancel,
        post=Op(
            "Cancel a pending entry (the requesting key or an admin), by id or token",
            {200: answer(schemas.ProtectionEntryAnswer, "cancelled")},
            CLOSED,
            body=schemas.ProtectionCancel,
        ),
    )
    config.add_route(
        "/api/protection/logs",
        api.Logs,
        get=Op(
            "The operation log, newest first; verify=true adds the chain check",
            {200: answer(schemas.OperationLogList, "log rows")},
            (422,),
            params=schemas.LOGS_QUERY,
        ),
    )
    config.add_route(
        "/api/protection/logs/verify",
        api.LogsVerify,
        get=Op(
            "Verify the log's hash chain",
            {200: answer(schemas.ChainVerification, "valid, or the first row that breaks it")},
        ),
    )
    config.add_route(
        "/api/protection/rules",
        api.Rules,
        get=Op(
            "The effective rules: level, requirements and flow per operation",
            {200: answer(schemas.ProtectionRules, "rules")},
        ),
    )
