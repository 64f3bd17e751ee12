"""The confirm and follow flow of codeb's API, without a user interface: what an answer means
(executed, a MEDIUM token to confirm, a queue entry waiting, a confirmation recorded), what a
person must do next, and an operation's events until it ends. The CLI prints it; the MCP
server hands it to the assistant (an agent key requests, a person confirms)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from codeb.client.http import EVENTS_WAIT_S, ApiError, CodebClient, Json

# Error codes that mean the Protection Layer (or a stale plan) said no.
PROTECTION_CODES = frozenset(
    {
        "protection_refused",
        "typed_name_mismatch",
        "confirm_token_unknown",
        "protection_entry_closed",
        "protection_entry_expired",
        "already_queued",
        "plan_changed",
    }
)
EVENTS_PAGE = 500
Kind = Literal["confirmation_required", "queued", "recorded", "executed"]


def kind_of(answer: Json) -> Kind:
    """What a mutating request's answer means."""
    status = answer.get("status")
    if status in ("confirmation_required", "queued") and "confirm_token" in answer:
        return status  # type: ignore[return-value]
    if status == "confirmation_recorded" and "entry" in answer:
        return "recorded"
    return "executed"


def executed_result(answer: Json) -> Json:
    """The result of an executed answer: the envelope's `result`, or the answer itself."""
    if answer.get("status") == "executed" and "result" in answer:
        return answer["result"] if isinstance(answer["result"], dict) else {}
    return answer


def operation_in(answer: Any) -> Json | None:
    """The operation an answer started: `operation`, `result.operation`, or the answer itself."""
    if not isinstance(answer, dict):
        return None
    result = answer.get("result")
    candidates = [answer.get("operation")]
    if isinstance(result, dict):
        candidates.append(result.get("operation"))
    for candidate in candidates:
        if isinstance(candidate, dict) and "id" in candidate and "kind" in candidate:
            return candidate
    if {"id", "kind", "recap"} <= answer.keys():
        return answer
    return None


def refused_by_protection(error: ApiError) -> bool:
    return error.code in PROTECTION_CODES


@dataclass(frozen=True)
class Step:
    command: str  # the CLI command a person runs
    why: str


def next_steps(answer: Json, quote: Any = str) -> list[Step]:
    """What a person must do to carry a pending answer on (the token is the answer's own).
    `quote` quotes the target's name for a shell."""
    token = answer.get("confirm_token")
    entry = answer.get("entry") or {}
    entry_id = entry.get("id")
    if kind_of(answer) == "confirmation_required":
        return [
            Step(f"codeb protection confirm {token}", "confirm (with a person's key)"),
            Step(f"codeb protection cancel --token {token}", "or withdraw it"),
        ]
    name = quote(str((entry.get("target") or {}).get("name") or "NAME"))
    unmet = {u.get("requirement") for u in entry.get("unmet") or [] if isinstance(u, dict)}
    steps = []
    if "user_confirmation" in unmet:
        steps.append(Step(f"codeb protection confirm {token}", "the first confirmation"))
    if "admin_approval" in unmet:
        who = entry.get("principal") or entry.get("key_name") or "the requester"
        approver = f"an admin of another principal than {who}"
        steps.append(Step(f"codeb protection approve {entry_id}", approver))
    steps.append(Step(f"codeb protection confirm {token} --name {name}", "then: executes"))
    steps.append(Step(f"codeb protection cancel {entry_id}", "or withdraw it"))
    return steps


def follow_events(
    client: CodebClient, operation_id: str, wait_s: int = EVENTS_WAIT_S
) -> Iterator[Json]:
    """Every event of an operation in order, long-polling until it has finished."""
    after = 0
    while True:
        page = client.operation_events(operation_id, after, wait_s, EVENTS_PAGE)
        events = page.get("events", [])
        yield from events
        after = int(page.get("next_after", after))
        if page.get("finished") and len(events) < EVENTS_PAGE:
            return
