"""Queue entries in `protection_queue`: every operation waiting for a confirmation (MEDIUM
tokens too). State changes are conditional UPDATEs on the status (and, for confirmations, the
count), so of two concurrent confirms exactly one wins."""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

from codeb.protection.decision import EntryFacts, Unmet
from codeb.protection.rules import DangerLevel, Rule, ordered
from codeb.protection.tokens import Target
from codeb.store.models import ProtectionQueue

STATUSES = ("pending", "executed", "cancelled", "expired", "failed")


def new_entry_id() -> str:
    return f"pq_{secrets.token_hex(8)}"


def iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() + "Z" if value else None


def create_entry(
    *,
    rule: Rule,
    target: Target,
    params: dict[str, Any],
    warning: str,
    token_hash: str,
    binding: str,
    key_id: int | None,
    key_name: str,
    requested_by: str,
    now: dt.datetime,
    cooldown_ends_at: dt.datetime,
    expires_at: dt.datetime,
    principal: str | None = None,
    key_role: str | None = None,
) -> ProtectionQueue:
    """`params` must already be free of secrets: they are stored to execute later."""
    entry = ProtectionQueue(
        id=new_entry_id(),
        operation=rule.operation,
        danger_level=int(rule.level),
        project=target.project_id,
        details={
            "target": target.as_dict(),
            "params": params,
            "requires": list(rule.requires),
            "waives": list(rule.waives),
            "warning": warning,
        },
        confirm_token=token_hash,
        expires_at=expires_at,
        status="pending",
        created_at=now,
        target_kind=target.kind,
        target_ref=target.ref,
        target_name=target.name,
        binding_hash=binding,
        key_id=key_id,
        key_name=key_name,
        requested_by=requested_by,
        cooldown_ends_at=cooldown_ends_at,
        confirmations=0,
        principal=principal,
        key_role=key_role,
        confirmed_by=[],
    )
    entry.save(force_insert=True)
    return entry


def stored_rule(entry: ProtectionQueue, current: Rule) -> Rule:
    """The rule as it was at the request, never weaker than the current one."""
    at_request = Rule(
        entry.operation,
        DangerLevel(entry.danger_level),
        ordered(entry.details.get("requires", ())),
        waives=tuple(entry.details.get("waives", ())),
    )
    return at_request.merged_with(current) if current.operation == entry.operation else at_request


def entry_target(entry: ProtectionQueue) -> Target:
    return Target.from_dict(entry.details["target"])


def entry_params(entry: ProtectionQueue) -> dict[str, Any]:
    return dict(entry.details.get("params") or {})


def entry_facts(entry: ProtectionQueue) -> EntryFacts:
    return EntryFacts(
        status=entry.status,
        key_id=entry.key_id,
        target_name=entry.target_name or "",
        created_at=entry.created_at,
        cooldown_ends_at=entry.cooldown_ends_at or entry.created_at,
        expires_at=entry.expires_at,
        confirmations=entry.confirmations,
        approved_by_key_id=entry.approved_key_id,
        principal=entry.principal,
        key_role=entry.key_role,
        confirmed_by=tuple(entry.confirmed_by or ()),
        approved_principal=entry.approved_principal,
    )


def by_token_hash(token_hash: str) -> ProtectionQueue | None:
    return ProtectionQueue.get_or_none(ProtectionQueue.confirm_token == token_hash)


def by_id(entry_id: str) -> ProtectionQueue | None:
    return ProtectionQueue.get_or_none(ProtectionQueue.id == entry_id)


def pending_with_binding(binding: str) -> list[ProtectionQueue]:
    return list(
        ProtectionQueue.select().where(
            (ProtectionQueue.binding_hash == binding) & (ProtectionQueue.status == "pending")
        )
    )


def transition(
    entry: ProtectionQueue, *, expected_confirmations: int | None = None, **changes: Any
) -> bool:
    """Apply `changes` only if the entry is still pending (and, when given, still has
    `expected_confirmations`). True when this caller won."""
    where = (ProtectionQueue.id == entry.id) & (ProtectionQueue.status == "pending")
    if expected_confirmations is not None:
        where &= ProtectionQueue.confirmations == expected_confirmations
    won = ProtectionQueue.update(**changes).where(where).execute() == 1
    if won:
        for name, value in changes.items():
            setattr(entry, name, value)
    return won


def due_for_expiry(now: dt.datetime) -> list[ProtectionQueue]:
    return list(
        ProtectionQueue.select().where(
            (ProtectionQueue.status == "pending") & (ProtectionQueue.expires_at <= now)
        )
    )


def entry_view(
    entry: ProtectionQueue, now: dt.datetime, unmet: tuple[Unmet, ...] | None = None
) -> dict[str, Any]:
    """An entry as clients see it: never the token, nor its hash."""
    cooldown_end = entry.cooldown_ends_at or entry.created_at
    view: dict[str, Any] = {
        "id": entry.id,
        "operation": entry.operation,
        "danger_level": entry.danger_level,
        "level": DangerLevel(entry.danger_level).name,
        "status": entry.status,
        "target": entry.details.get("target"),
        "params": entry.details.get("params") or {},
        "warning": entry.details.get("warning"),
        "requested_by": entry.requested_by,
        "key_name": entry.key_name,
        "principal": entry.principal,
        "key_role": entry.key_role,
        "confirmed_by": list(entry.confirmed_by or []),
        "created_at": iso(entry.created_at),
        "cooldown_ends_at": iso(cooldown_end),
        "cooldown_remaining_seconds": max(0, int((cooldown_end - now).total_seconds())),
        "expires_at": iso(entry.expires_at),
        "confirmations": entry.confirmations,
        "last_confirmed_at": iso(entry.last_confirmed_at),
        "approved_by": entry.approved_by,
        "approved_at": iso(entry.approved_at),
        "finished_at": iso(entry.finished_at),
    }
    if unmet is not None:
        view["unmet"] = [{"requirement": u.requirement, "satisfy": u.satisfy} for u in unmet]
    return view
