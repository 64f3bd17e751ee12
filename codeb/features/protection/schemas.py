"""The Protection Layer's shapes: what a guarded route answers when it does not run at once
(shared by every feature with guarded routes), the queue, the log and the rules."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from codeb.api.declare import Answer, answer, paging, query
from codeb.api.shapes import (
    NULLABLE_TIME,
    STRINGS,
    TIMESTAMP,
    UNSET,
    Meta,
    Request,
    Shape,
    UnsetType,
    described,
)
from codeb.protection.queue import STATUSES as QUEUE_STATUSES
from codeb.protection.rules import RULES

LEVEL = Literal["SAFE", "LOW", "MEDIUM", "HIGH", "CRITICAL"]
LOG_STATUSES = ("requested", "token_issued", "confirmed", "approved", "rejected", "cancelled",
                "expired", "executed", "failed")  # fmt: skip
ENTRY_ID = Annotated[str, Meta(min_length=1, max_length=64)]
TOKEN = Annotated[str, Meta(min_length=1, max_length=200)]


class Unmet(Shape):
    requirement: str
    satisfy: str


class QueueEntry(Shape):
    id: str
    operation: str
    danger_level: Annotated[int, Meta(ge=0, le=4)]
    level: LEVEL
    status: Literal[QUEUE_STATUSES]  # type: ignore[valid-type]
    target: dict[str, Any]
    params: dict[str, Any] | UnsetType = UNSET
    warning: str | UnsetType | None = UNSET
    requested_by: str | UnsetType | None = UNSET
    key_name: str | UnsetType | None = UNSET
    created_at: TIMESTAMP | UnsetType = UNSET
    cooldown_ends_at: TIMESTAMP | UnsetType = UNSET
    cooldown_remaining_seconds: Annotated[int, Meta(ge=0)] | UnsetType = UNSET
    expires_at: TIMESTAMP | UnsetType = UNSET
    confirmations: int | UnsetType = UNSET
    last_confirmed_at: NULLABLE_TIME | UnsetType = UNSET
    approved_by: str | UnsetType | None = UNSET
    approved_at: NULLABLE_TIME | UnsetType = UNSET
    finished_at: NULLABLE_TIME | UnsetType = UNSET
    unmet: list[Unmet] | UnsetType = UNSET


class QueueList(Shape):
    entries: list[QueueEntry]
    total: int
    limit: int
    offset: int


class ProtectionPending(Shape):
    """202: not executed yet. The confirm_token is shown only here."""

    status: Literal["confirmation_required", "queued"]
    operation: str
    danger_level: int | UnsetType = UNSET
    level: LEVEL
    warning: str
    confirm_token: str
    token_expires_at: TIMESTAMP | UnsetType = UNSET
    reasons: STRINGS | UnsetType = UNSET
    entry: QueueEntry
    confirm: described(str, "how to confirm, in words") | UnsetType = UNSET  # type: ignore[valid-type]


class ProtectionRecorded(Shape):
    """202: the confirmation is recorded; the operation still waits."""

    status: Literal["confirmation_recorded"]
    operation: str
    level: LEVEL | UnsetType = UNSET
    reasons: STRINGS | UnsetType = UNSET
    entry: QueueEntry


class ProtectionExecuted(Shape):
    """`entry` only when a confirmation executed it; a LOW run has none"""

    status: Literal["executed"]
    operation: str
    level: LEVEL | UnsetType = UNSET
    entry: QueueEntry | UnsetType = UNSET
    result: dict[str, Any]


class ProtectionEntryAnswer(Shape):
    status: Literal["approved", "cancelled"]
    reasons: STRINGS | UnsetType = UNSET
    entry: QueueEntry


class ProtectionConfirm(Request):
    example = {"token": "t" * 40, "typed_name": "shop"}
    token: TOKEN
    typed_name: Annotated[str, Meta(max_length=200)] | UnsetType = UNSET


class ProtectionApprove(Request):
    example = {"id": "pq_0123"}
    id: ENTRY_ID


class ProtectionCancel(Request):
    example = {"id": "pq_0123"}
    id: ENTRY_ID | UnsetType = UNSET
    token: TOKEN | UnsetType = UNSET
    json_schema_extra: ClassVar[dict[str, Any]] = {
        "anyOf": [{"required": ["id"]}, {"required": ["token"]}]
    }

    def __post_init__(self) -> None:
        if self.id is UNSET and self.token is UNSET:
            raise ValueError("give the entry's id or its token")


class OperationLog(Shape):
    id: int
    project_id: str | UnsetType | None = UNSET
    operation: str
    danger_level: int
    requested_by: str | UnsetType = UNSET
    key_name: str | UnsetType | None = UNSET
    target: str | UnsetType | None = UNSET
    status: str
    details: dict[str, Any] | UnsetType = UNSET
    created_at: TIMESTAMP | UnsetType = UNSET
    executed_at: NULLABLE_TIME | UnsetType = UNSET
    prev_hash: str | UnsetType | None = UNSET
    entry_hash: str | None


class ChainProblem(Shape):
    problem: Literal[
        "row_does_not_verify", "anchor_missing", "anchored_row_missing", "anchored_row_changed"
    ]
    id: int | UnsetType = UNSET
    file: str | UnsetType = UNSET


class ChainVerification(Shape):
    """The log is an HMAC chain (key outside the database) whose head is anchored in a file
    outside it after every commit: edits, deletions, truncation and forged appends each show
    as a problem."""

    valid: bool
    first_bad_id: int | None
    checked: int
    anchored_through: int | None
    unanchored: int
    problems: list[ChainProblem]


class OperationLogList(Shape):
    logs: list[OperationLog]
    total: int
    limit: int
    offset: int
    chain: ChainVerification | UnsetType = UNSET


class ProtectionRules(Shape):
    rules: list[dict[str, Any]]
    overrides: STRINGS


# What a guarded route answers when it has not run yet (a token, a queue entry, or a
# recorded confirmation), and what a repeated request with the token answers.
NOT_YET = (ProtectionPending, ProtectionRecorded)
PENDING = answer(NOT_YET, "not executed yet: a confirm token, a queue entry or a confirmation")
EXECUTED = answer(dict, "executed (with X-Confirm-Token: the ProtectionExecuted envelope)")
STRICTER = answer(
    ProtectionPending,
    "only if configuration made this operation stricter than LOW: a confirm token "
    "(see the confirm contract)",
)


def pending_or(shape: Any, description: str) -> Answer:
    """A 202 that is either the route's own answer (a run started) or not executed yet."""
    return answer(
        (shape, *NOT_YET), f"{description}, or not executed yet (a token or a queue entry)"
    )


QUEUE_QUERY = (
    *paging(),
    query("status", enum=[*QUEUE_STATUSES, "all"]),
    query("operation", enum=list(RULES)),
)
LOGS_QUERY = (
    *paging(),
    query("operation", maxLength=64),
    query("status", enum=list(LOG_STATUSES)),
    query("project", maxLength=100),
    query("key_name", maxLength=64),
    query("target", maxLength=200),
    query("verify", enum=["true", "false"]),
)
