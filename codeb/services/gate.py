"""The one gate every mutating operation passes: `guard(...)`.

A service builds the intended change (operation name, target, parameters, the effect in words)
and calls `guard`. The decision comes from the pure `decide`; what runs is the applier
of the operation (`deps.appliers`, gathered from the features' declarations at start-up), looked
up by name both for an immediate run and for a confirmation arriving later (even after a
restart), inside one write transaction that also consumes the token and appends the log rows.

Answers: an operation run at once returns its applier's result (200, or `success_status`);
anything not executed yet answers 202 with a warning, the confirm token (shown once) and the
queue entry; a confirmation that executes answers 200 `{"status": "executed", "result": ...}`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from codeb.config import Settings
from codeb.errors import (
    AlreadyQueued,
    CodebError,
    ConfirmationNameMismatch,
    ConfirmTokenUnknown,
    Conflict,
    NotFound,
    ProtectionEntryClosed,
    ProtectionEntryExpired,
    ProtectionRefused,
    ValidationFailed,
)
from codeb.protection import audit, predicates, queue
from codeb.protection.decision import (
    ActorFacts,
    Attempt,
    Decision,
    Facts,
    NeedsConfirmation,
    Proceed,
    Queued,
    Refused,
    decide,
    unmet_requirements,
)
from codeb.protection.rules import NOT_BUILT, AppliedOverride, Rule, configure
from codeb.protection.tokens import (
    Target,
    binding_hash,
    has_url_credentials,
    hash_token,
    new_token,
    redacted,
    secret_names,
)
from codeb.services import operations, scheduler
from codeb.services.context import SYSTEM, Actor, Deps
from codeb.store.models import Project, ProtectionQueue

# The callback that performs an operation: it runs inside the gate's write transaction and
# must only write to the database (the worker is woken after the commit).
Applier = Callable[[Deps, Actor, Target, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Confirmation:
    """A confirm token (and the typed name) sent with a repeated request."""

    token: str | None = None
    typed_name: str | None = None


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]

    @property
    def executed(self) -> bool:
        return self.status < 300

    @property
    def started_operation(self) -> str | None:
        """The id of the operation an executed applier started, else None (nothing ran: a
        stricter configured rule asked for a token or queued it)."""
        result = self.body.get("result", {}) if self.executed else {}
        operation = result.get("operation") if isinstance(result, dict) else None
        return operation["id"] if isinstance(operation, dict) else None


def applier_for(deps: Deps, operation: str) -> Applier:
    applier = deps.appliers.get(operation)
    if applier is None:
        raise Conflict(f"no applier is declared for {operation}", {"operation": operation})
    return applier


def unwired(rules: dict[str, Rule], appliers: Mapping[str, Applier]) -> tuple[list[str], list[str]]:
    """(rules without an applier, appliers without a rule): both must be empty at start-up."""
    missing = sorted(set(rules) - set(appliers) - NOT_BUILT)
    orphans = sorted(set(appliers) - set(rules))
    return missing, orphans


def rules_for(settings: Settings) -> tuple[dict[str, Rule], list[AppliedOverride]]:
    return configure(settings.protection_rules, settings.protection_rule_overrides)


def rule_for(deps: Deps, operation: str) -> Rule:
    rules, _ = rules_for(deps.settings)
    if operation not in rules:
        raise ValueError(f"operation {operation!r} has no protection rule")
    return rules[operation]


def log_rule_overrides(deps: Deps) -> list[AppliedOverride]:
    """At start-up: check the configured rules (an error stops the start) and log every
    override that weakens or replaces a rule of the table."""
    _, applied = rules_for(deps.settings)
    if applied:
        with deps.db.connection_context(), deps.write():
            for override in applied:
                audit.record(
                    deps.db,
                    operation="protection_rule_override",
                    danger_level=int(override.before.level),
                    status="executed",
                    requested_by="cli",
                    key_name=SYSTEM.key_name,
                    now=deps.clock.now(),
                    target=override.operation,
                    details={
                        "before": override.before.as_dict(),
                        "after": override.after.as_dict(),
                    },
                    executed=True,
                )
    return applied


def _state(deps: Deps, rule: Rule, target: Target, params: dict[str, Any]) -> dict[str, Any]:
    """The state facts the rule needs, read at the injected clock's now (a verified
    backup's age counts against CODEB_BACKUP_VERIFIED_MAX_AGE_HOURS as cooldowns do)."""
    limit = dt.timedelta(hours=deps.settings.backup_verified_max_age_hours)
    ctx = predicates.Context(now=deps.clock.now(), verified_max_age=limit)
    return predicates.evaluate(rule.requirements, target, params, ctx)


def _actor_facts(actor: Actor) -> ActorFacts:
    return ActorFacts(
        key_id=actor.key_id,
        role=actor.role,
        client=actor.requested_by,
        principal=actor.who,
        key_created_at=actor.key_created_at,
    )


def _log(
    deps: Deps,
    actor: Actor,
    rule: Rule | ProtectionQueue,
    target: Target,
    status: str,
    details: dict[str, Any],
    *,
    executed: bool = False,
) -> None:
    level = rule.level if isinstance(rule, Rule) else rule.danger_level
    audit.record(
        deps.db,
        operation=rule.operation,
        danger_level=int(level),
        status=status,
        requested_by=actor.requested_by,
        key_name=actor.key_name,
        now=deps.clock.now(),
        project_id=target.project_id,
        target=target.name,
        details=details,
        executed=executed,
    )


def _unmet_list(decision: Queued | Refused | NeedsConfirmation) -> list[dict[str, str]]:
    return [{"requirement": u.requirement, "satisfy": u.satisfy} for u in decision.unmet]


def refusal_error(decision: Refused, entry: ProtectionQueue | None = None) -> CodebError:
    details: dict[str, Any] = {
        "reason": decision.code,
        "reasons": list(decision.reasons),
        "unmet": _unmet_list(decision),
    }
    if entry is not None:
        details["entry_id"] = entry.id
        details["operation"] = entry.operation
    message = "; ".join(decision.reasons)
    if decision.code == "token_unknown":
        return ConfirmTokenUnknown("unknown confirm token", {"reason": decision.code})
    if decision.code in ("entry_executed", "entry_cancelled", "entry_failed"):
        return ProtectionEntryClosed(message, details)
    if decision.code == "entry_expired":
        return ProtectionEntryExpired(message, details)
    if decision.code == "typed_name_mismatch":
        return ConfirmationNameMismatch(message, details)
    if decision.code == "already_approved":
        return Conflict(message, details)
    return ProtectionRefused(message, details)


def _check_params(params: dict[str, Any], storing: bool) -> None:
    names = secret_names(params)
    if names:
        raise ValidationFailed(
            "secrets cannot pass through the Protection Layer's parameters", {"fields": names}
        )
    if storing and has_url_credentials(params):
        raise ValidationFailed(
            "a confirmable request cannot carry credentials inside URLs: they would be stored",
            {"reason": "url_credentials"},
        )


def guard(
    deps: Deps,
    actor: Actor,
    operation: str,
    target: Target,
    params: dict[str, Any] | None = None,
    *,
    effect: str,
    confirmation: Confirmation | None = None,
    success_status: int = 200,
) -> Answer:
    """Classify, check and then run, issue a token, queue or refuse `operation` on `target`.
    `params` are everything the applier needs (no secrets); `effect` says in words what
    will happen. A `confirmation` with a token confirms an earlier answer instead."""
    params = dict(params or {})
    rule = rule_for(deps, operation)
    _check_params(params, storing=False)
    binding = binding_hash(operation, target, params)
    if confirmation is not None and confirmation.token:
        return confirm(deps, actor, confirmation.token, confirmation.typed_name, binding)
    state = _state(deps, rule, target, params)
    decision = decide(Facts(rule, deps.clock.now(), _actor_facts(actor), state))
    if isinstance(decision, Proceed):
        return _run_now(deps, actor, rule, target, params, success_status)
    if isinstance(decision, Refused):
        with deps.write():
            _log(deps, actor, rule, target, "rejected",
                 {"reason": decision.code, "unmet": _unmet_list(decision)})  # fmt: skip
        raise refusal_error(decision)
    _check_params(params, storing=True)
    return _enqueue(deps, actor, rule, target, params, effect, binding, decision)


def _run_now(
    deps: Deps, actor: Actor, rule: Rule, target: Target, params: dict[str, Any], status: int
) -> Answer:
    execute = applier_for(deps, rule.operation)
    try:
        with deps.write():
            result = execute(deps, actor, target, params)
            _log(deps, actor, rule, target, "executed", {"params": redacted(params)},
                 executed=True)  # fmt: skip
    except CodebError as exc:
        with deps.write():
            _log(deps, actor, rule, target, "failed", {"error": exc.code})
        raise
    if dispatch_started(deps, result):
        # The work runs on: the same envelope as a confirmed execution, with the operation.
        body = {"status": "executed", "operation": rule.operation, "level": rule.level.name,
                "result": result}  # fmt: skip
        return Answer(202, body)
    return Answer(status, result)


def dispatch_started(deps: Deps, result: Any) -> bool:
    """After the applier's transaction committed, tell the worker: an applier that starts a
    long-running operation returns it as `operation` (True: it now runs); one that cancels
    returns `canceled_operation` (the running work is stopped now)."""
    if isinstance(result, dict) and result.get("canceled_operation") and deps.worker is not None:
        deps.worker.cancel(result["canceled_operation"])
    if isinstance(result, dict) and isinstance(result.get("operation"), dict):
        operations.dispatch(deps, result["operation"]["id"])
        return True
    return False


def _enqueue(
    deps: Deps,
    actor: Actor,
    rule: Rule,
    target: Target,
    params: dict[str, Any],
    effect: str,
    binding: str,
    decision: Decision,
) -> Answer:
    assert isinstance(decision, NeedsConfirmation | Queued)
    now = deps.clock.now()
    warning = f"{rule.level.name}: {effect} {rule.message}".strip()
    token = new_token()
    if isinstance(decision, Queued):
        cooldown_end = decision.cooldown_ends_at
        expires = cooldown_end + dt.timedelta(hours=deps.settings.protection_queue_window_hours)
    else:
        cooldown_end = now
        expires = now + dt.timedelta(minutes=deps.settings.protection_token_ttl_minutes)
    with deps.write():
        for old in queue.pending_with_binding(binding):
            if old.expires_at <= now:
                _expire(deps, old)
            elif isinstance(decision, Queued):
                raise AlreadyQueued(
                    f"{rule.operation} of {target.name!r} is already queued; cancel it first",
                    {"entry_id": old.id, "operation": rule.operation},
                )
            elif old.key_id == actor.key_id and queue.transition(
                old, status="cancelled", finished_at=now
            ):
                _log(deps, actor, old, target, "cancelled",
                     {"entry_id": old.id, "reason": "superseded by a new request"})  # fmt: skip
        entry = queue.create_entry(
            rule=rule, target=target, params=params, warning=warning,
            token_hash=hash_token(token), binding=binding, key_id=actor.key_id,
            key_name=actor.key_name, requested_by=actor.requested_by, now=now,
            cooldown_ends_at=cooldown_end, expires_at=expires, principal=actor.who,
            key_role=actor.role,
        )  # fmt: skip
        details = {"entry_id": entry.id, "params": redacted(params), "unmet": _unmet_list(decision)}
        _log(deps, actor, rule, target, "requested", details)
        _log(deps, actor, rule, target, "token_issued",
             {"entry_id": entry.id, "expires_at": queue.iso(expires)})  # fmt: skip
    queued = isinstance(decision, Queued)
    body = {
        "status": "queued" if queued else "confirmation_required",
        "operation": rule.operation,
        "danger_level": int(rule.level),
        "level": rule.level.name,
        "warning": warning,
        "confirm_token": token,
        "token_expires_at": queue.iso(expires),
        "reasons": list(decision.reasons),
        "entry": queue.entry_view(entry, now, decision.unmet),
        "confirm": _how_to_confirm(queued, target),
    }
    return Answer(202, body)


def _how_to_confirm(queued: bool, target: Target) -> str:
    if not queued:
        return (
            'POST /api/protection/confirm {"token": ...}, or repeat the same request with the '
            "header X-Confirm-Token, using the same API key"
        )
    return (
        'confirm twice with the same key (POST /api/protection/confirm {"token": ...}); '
        f"the second confirmation must type {target.name!r} as typed_name; the final one "
        "executes only after the cooldown and with every requirement met"
    )


def _expire(deps: Deps, entry: ProtectionQueue) -> bool:
    if not queue.transition(entry, status="expired", finished_at=deps.clock.now()):
        return False
    owner = Actor(entry.key_id, entry.key_name or SYSTEM.key_name, "operator",
                  entry.requested_by or "api")  # fmt: skip
    _log(deps, owner, entry, queue.entry_target(entry), "expired", {"entry_id": entry.id})
    return True


def expire_due(deps: Deps) -> int:
    """Mark every pending entry past its expiry as expired (one log row each)."""
    with deps.write():
        return sum(_expire(deps, e) for e in queue.due_for_expiry(deps.clock.now()))


def _entry_facts(
    deps: Deps, actor: Actor, entry: ProtectionQueue, attempt: Attempt
) -> tuple[Rule, Target, dict[str, Any], Decision]:
    rule = queue.stored_rule(entry, rule_for(deps, entry.operation))
    target, params = queue.entry_target(entry), queue.entry_params(entry)
    state = _state(deps, rule, target, params)
    facts = Facts(rule, deps.clock.now(), _actor_facts(actor), state, attempt,
                  queue.entry_facts(entry))  # fmt: skip
    return rule, target, params, decide(facts)


def _refuse_logged(
    deps: Deps, actor: Actor, entry: ProtectionQueue, target: Target, decision: Refused
) -> CodebError:
    if decision.code == "entry_expired" and entry.status == "pending":
        _expire(deps, entry)
    else:
        _log(deps, actor, entry, target, "rejected",
             {"entry_id": entry.id, "reason": decision.code,
              "unmet": _unmet_list(decision)})  # fmt: skip
    return refusal_error(decision, entry)


def confirm(
    deps: Deps,
    actor: Actor,
    token: str,
    typed_name: str | None = None,
    binding: str | None = None,
) -> Answer:
    """Confirm by token. With `binding` (a repeated request), the request must be the very
    one the token was issued for."""
    with deps.write():
        outcome = _confirm_in_transaction(deps, actor, token, typed_name, binding)
    if isinstance(outcome, CodebError):
        raise outcome
    if dispatch_started(deps, outcome.body.get("result")):
        return Answer(202, outcome.body)
    return outcome


def _with(principals: list[str] | None, principal: str) -> list[str]:
    seen = list(principals or [])
    return seen if principal in seen else [*seen, principal]


def _confirm_in_transaction(
    deps: Deps, actor: Actor, token: str, typed_name: str | None, binding: str | None
) -> Answer | CodebError:
    entry = queue.by_token_hash(hash_token(token))
    if entry is None:
        audit.record(
            deps.db, operation="protection_confirm", danger_level=0, status="rejected",
            requested_by=actor.requested_by, key_name=actor.key_name, now=deps.clock.now(),
            details={"reason": "token_unknown"},
        )  # fmt: skip
        return refusal_error(Refused(("unknown confirm token",), "token_unknown"))
    attempt = Attempt("confirm", typed_name, binding is None or binding == entry.binding_hash)
    rule, target, params, decision = _entry_facts(deps, actor, entry, attempt)
    now = deps.clock.now()
    if isinstance(decision, Refused):
        return _refuse_logged(deps, actor, entry, target, decision)
    before = entry.confirmations
    if isinstance(decision, Queued):
        if not queue.transition(entry, expected_confirmations=before,
                                confirmations=before + 1, last_confirmed_at=now,
                                confirmed_by=_with(entry.confirmed_by, actor.who)):  # fmt: skip
            return ProtectionEntryClosed("another confirmation won", {"entry_id": entry.id})
        _log(deps, actor, entry, target, "confirmed",
             {"entry_id": entry.id, "confirmations": before + 1,
              "name_typed": typed_name is not None, "unmet": _unmet_list(decision)})  # fmt: skip
        body = {
            "status": "confirmation_recorded",
            "operation": entry.operation,
            "level": rule.level.name,
            "reasons": list(decision.reasons),
            "entry": queue.entry_view(entry, now, decision.unmet),
        }
        return Answer(202, body)
    if not queue.transition(entry, expected_confirmations=before, status="executed",
                            confirmations=before + 1, last_confirmed_at=now, finished_at=now,
                            confirmed_by=_with(entry.confirmed_by, actor.who)):  # fmt: skip
        return ProtectionEntryClosed("this token was already used", {"entry_id": entry.id})
    _log(deps, actor, entry, target, "confirmed",
         {"entry_id": entry.id, "confirmations": before + 1})  # fmt: skip
    return _execute_confirmed(deps, actor, entry, rule, target, params)


def _execute_confirmed(
    deps: Deps,
    actor: Actor,
    entry: ProtectionQueue,
    rule: Rule,
    target: Target,
    params: dict[str, Any],
) -> Answer | CodebError:
    try:
        execute = applier_for(deps, entry.operation)
        with deps.db.atomic():  # a savepoint: a failed execution leaves nothing behind
            result = execute(deps, actor, target, params)
    except CodebError as exc:
        ProtectionQueue.update(status="failed").where(ProtectionQueue.id == entry.id).execute()
        _log(deps, actor, entry, target, "failed",
             {"entry_id": entry.id, "error": exc.code, "message": exc.message})  # fmt: skip
        return exc
    _log(deps, actor, entry, target, "executed", {"entry_id": entry.id}, executed=True)
    body = {
        "status": "executed",
        "operation": entry.operation,
        "level": rule.level.name,
        "entry": queue.entry_view(entry, deps.clock.now()),
        "result": result,
    }
    return Answer(200, body)


def approve(deps: Deps, actor: Actor, entry_id: str) -> Answer:
    with deps.write():
        outcome = _approve_in_transaction(deps, actor, entry_id)
    if isinstance(outcome, CodebError):
        raise outcome
    return outcome


def _approve_in_transaction(deps: Deps, actor: Actor, entry_id: str) -> Answer | CodebError:
    entry = queue.by_id(entry_id)
    if entry is None:
        return NotFound(f"queue entry {entry_id!r} not found", {"id": entry_id})
    _, target, _, decision = _entry_facts(deps, actor, entry, Attempt("approve"))
    if isinstance(decision, Refused):
        return _refuse_logged(deps, actor, entry, target, decision)
    assert isinstance(decision, Queued)
    now = deps.clock.now()
    if not queue.transition(entry, approved_key_id=actor.key_id, approved_by=actor.key_name,
                            approved_at=now, approved_principal=actor.who):  # fmt: skip
        return ProtectionEntryClosed("the entry changed meanwhile", {"entry_id": entry.id})
    _log(deps, actor, entry, target, "approved",
         {"entry_id": entry.id, "unmet": _unmet_list(decision)})  # fmt: skip
    return Answer(200, {"status": "approved", "reasons": list(decision.reasons),
                        "entry": queue.entry_view(entry, now, decision.unmet)})  # fmt: skip


def cancel(deps: Deps, actor: Actor, *, entry_id: str | None, token: str | None) -> Answer:
    with deps.write():
        entry = queue.by_id(entry_id) if entry_id else queue.by_token_hash(hash_token(token or ""))
        if entry is None:
            outcome: Answer | CodebError = NotFound("queue entry not found", {"id": entry_id})
        else:
            outcome = _cancel_entry(deps, actor, entry)
    if isinstance(outcome, CodebError):
        raise outcome
    return outcome


def _cancel_entry(deps: Deps, actor: Actor, entry: ProtectionQueue) -> Answer | CodebError:
    _, target, _, decision = _entry_facts(deps, actor, entry, Attempt("cancel"))
    if isinstance(decision, Refused):
        return _refuse_logged(deps, actor, entry, target, decision)
    now = deps.clock.now()
    if not queue.transition(entry, status="cancelled", finished_at=now):
        return ProtectionEntryClosed("the entry changed meanwhile", {"entry_id": entry.id})
    _log(deps, actor, entry, target, "cancelled", {"entry_id": entry.id})
    return Answer(200, {"status": "cancelled", "entry": queue.entry_view(entry, now)})


def _view_with_unmet(deps: Deps, entry: ProtectionQueue) -> dict[str, Any]:
    now = deps.clock.now()
    if entry.status != "pending":
        return queue.entry_view(entry, now)
    rule = queue.stored_rule(entry, rule_for(deps, entry.operation))
    target, params = queue.entry_target(entry), queue.entry_params(entry)
    state = _state(deps, rule, target, params)
    unmet = unmet_requirements(
        rule, now, state, confirmations=entry.confirmations,
        approved=entry.approved_key_id is not None, requested_at=entry.created_at,
    )  # fmt: skip
    return queue.entry_view(entry, now, unmet)


def list_queue(
    deps: Deps, *, status: str | None, operation: str | None, limit: int, offset: int
) -> dict[str, Any]:
    expire_due(deps)
    query = ProtectionQueue.select()
    if status != "all":
        query = query.where(ProtectionQueue.status == (status or "pending"))
    if operation:
        query = query.where(ProtectionQueue.operation == operation)
    total = query.count()
    rows = query.order_by(ProtectionQueue.created_at, ProtectionQueue.id)
    rows = rows.limit(limit).offset(offset)
    return {
        "entries": [_view_with_unmet(deps, e) for e in rows],
        "total": total,
        "limit": limit,
        "offset": offset,
    }


def get_entry(deps: Deps, entry_id: str) -> dict[str, Any]:
    expire_due(deps)
    entry = queue.by_id(entry_id)
    if entry is None:
        raise NotFound(f"queue entry {entry_id!r} not found", {"id": entry_id})
    return _view_with_unmet(deps, entry)


def rules_view(deps: Deps) -> dict[str, Any]:
    rules, applied = rules_for(deps.settings)
    return {
        "rules": [rule.as_dict() for rule in rules.values()],
        "overrides": [o.operation for o in applied],
    }


def project_id_for(ref: str) -> str:
    """A project's id from its id or name, deleted projects included (their logs remain)."""
    project = (
        Project.select(Project.id)
        .where((Project.id == ref) | (Project.name == ref))
        .order_by(Project.status == "deleted")
        .first()
    )
    return project.id if project else ref


# -- periodic work ---------------------------------------------------------------------


def _scheduled_expiry(deps: Deps) -> dict[str, Any]:
    return {"expired": expire_due(deps)}


SCHEDULES: tuple[scheduler.Job, ...] = (
    scheduler.Job(
        name="protection_queue_expiry",
        description="Marks queue entries past their window as expired (one log row each).",
        interval=dt.timedelta(minutes=1),
        run=_scheduled_expiry,
    ),
)
