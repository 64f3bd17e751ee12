"""What a tool hands back to the assistant. The assistant requests; a person decides: a
MEDIUM/HIGH/CRITICAL answer becomes a result saying what was requested, the queue entry and
the token, the exact command a person runs, and how to poll the entry. Errors become one
clear message with the API's code and what is still required."""

from __future__ import annotations

import json
import shlex
from typing import Any

from codeb.client import (
    ApiError,
    Json,
    executed_result,
    kind_of,
    next_steps,
    operation_in,
    refused_by_protection,
)

NO_SELF_CONFIRM = (
    "You cannot confirm, approve or carry this on yourself: your key is an agent key, and the "
    "API refuses a confirmation or approval made with it. Show the person the command(s) in "
    "`person_runs`; poll the entry with show_protection_entry until it is executed, "
    "cancelled or expired."
)


def operation_brief(op: Json) -> Json:
    keys = ("id", "kind", "status", "target", "created_at", "started_at", "finished_at",
            "duration_s", "rc", "error", "recap", "result")  # fmt: skip
    return {k: op[k] for k in keys if k in op}


def outcome(answer: Json) -> Json:
    """The result of a mutating call (executed, started, or waiting for a person)."""
    kind = kind_of(answer)
    if kind in ("confirmation_required", "queued"):
        return needs_a_person(answer)
    inner = executed_result(answer)
    operation = operation_in(inner)
    if operation is not None:
        return {
            "status": "started",
            "operation": operation_brief(operation),
            "next": (
                f"follow_operation(operation_id={operation['id']!r}) waits for it and shows "
                "its events; cancel_operation stops it"
            ),
        }
    return {"status": "done", "result": inner}


def needs_a_person(answer: Json) -> Json:
    entry = answer.get("entry") or {}
    target = entry.get("target") or {}
    steps = next_steps(answer, shlex.quote)
    return {
        "status": "needs_a_person",
        "requested": {
            "operation": answer.get("operation"),
            "level": answer.get("level"),
            "target": target,
            "warning": answer.get("warning"),
        },
        "queue_entry_id": entry.get("id"),
        "confirm_token": answer.get("confirm_token"),
        "token_expires_at": answer.get("token_expires_at"),
        "cooldown_ends_at": entry.get("cooldown_ends_at"),
        "still_required": [
            {"requirement": u.get("requirement"), "satisfy": u.get("satisfy") or u.get("remedy")}
            for u in entry.get("unmet") or []
            if isinstance(u, dict)
        ],
        "person_runs": [{"command": s.command, "why": s.why} for s in steps],
        "poll": {"tool": "show_protection_entry", "arguments": {"entry_id": entry.get("id")}},
        "note": NO_SELF_CONFIRM,
    }


def error_text(error: ApiError) -> str:
    """One message for the assistant: what failed, the API's code, and what would satisfy a
    refusal. Never the API key (ApiError never holds it)."""
    body: dict[str, Any] = {
        "error": error.code,
        "status": error.status,
        "message": error.message,
    }
    if error.details:
        body["details"] = error.details
    if refused_by_protection(error):
        body["meaning"] = (
            "the Protection Layer refused the request as it stands; `details.unmet` says what "
            "must be true first (do that, then ask again)"
        )
    elif error.status in (401, 403):
        body["meaning"] = (
            "the MCP server's key may not do this (it is an agent key: it reads and requests, "
            "a person confirms)"
        )
    elif error.status == 0:
        body["meaning"] = "the codeb API could not be reached"
    return json.dumps(body, default=str)
