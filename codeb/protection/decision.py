"""The decision, as data: a pure function of the rule, the actor, the clock's now, the state
facts and (when confirming or approving) the queue entry. No Falcon, no Peewee."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from codeb.protection.rules import COOLDOWNS, REQUIREMENTS, STATE_REQUIREMENTS, Rule

Action = Literal["request", "confirm", "approve", "cancel"]


# Roles that may ask for anything; of them, only a person's confirm or approve.
REQUESTING_ROLES = ("agent", "operator", "admin")
HUMAN_ROLES = ("operator", "admin")


@dataclass(frozen=True)
class ActorFacts:
    key_id: int | None
    role: str  # readonly, agent, operator, admin
    client: str = "api"  # what the client says it is (mcp, cli, api): recorded, never trusted
    principal: str | None = None  # the person or service the key belongs to
    key_created_at: dt.datetime | None = None


@dataclass(frozen=True)
class EntryFacts:
    status: str  # pending, executed, cancelled, expired, failed
    key_id: int | None  # the requesting key
    target_name: str
    created_at: dt.datetime
    cooldown_ends_at: dt.datetime
    expires_at: dt.datetime
    confirmations: int = 0
    approved_by_key_id: int | None = None
    principal: str | None = None  # the requesting key's principal
    key_role: str | None = None  # the requesting key's role
    confirmed_by: tuple[str, ...] = ()  # principals that confirmed
    approved_principal: str | None = None


@dataclass(frozen=True)
class Attempt:
    action: Action = "request"
    typed_name: str | None = None
    # A repeated request carrying a token: does it ask for the token's operation, target
    # and parameters? (POST /api/protection/confirm has nothing to compare: always True.)
    binding_matches: bool = True


@dataclass(frozen=True)
class Fact:
    """A state fact that says, when unmet, what was found (a verified backup too old: its
    age and the limit), so the refusal tells more than the requirement. Truthy when met."""

    met: bool
    found: str = ""

    def __bool__(self) -> bool:
        return self.met


State = Mapping[str, "bool | Fact"]


@dataclass(frozen=True)
class Facts:
    rule: Rule
    now: dt.datetime
    actor: ActorFacts
    state: State = field(default_factory=dict)  # a missing fact counts as unmet
    attempt: Attempt = Attempt()
    entry: EntryFacts | None = None


@dataclass(frozen=True)
class Unmet:
    requirement: str
    satisfy: str


@dataclass(frozen=True)
class Proceed:
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class NeedsConfirmation:
    reasons: tuple[str, ...]
    unmet: tuple[Unmet, ...]


@dataclass(frozen=True)
class Queued:
    reasons: tuple[str, ...]
    unmet: tuple[Unmet, ...]
    cooldown_ends_at: dt.datetime
    records: Literal["request", "confirmation", "approval"] = "request"


@dataclass(frozen=True)
class Refused:
    reasons: tuple[str, ...]
    code: str
    unmet: tuple[Unmet, ...] = ()


Decision = Proceed | NeedsConfirmation | Queued | Refused


def _duration(delta: dt.timedelta) -> str:
    minutes = max(0, int(delta.total_seconds() + 59) // 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _satisfy(name: str, state: State) -> str:
    """What would satisfy a state requirement, and what was found when the fact says."""
    fact = state.get(name)
    found = fact.found if isinstance(fact, Fact) else ""
    return f"{REQUIREMENTS[name]}; found: {found}" if found else REQUIREMENTS[name]


def unmet_requirements(
    rule: Rule,
    now: dt.datetime,
    state: State,
    *,
    confirmations: int,
    approved: bool,
    requested_at: dt.datetime,
) -> tuple[Unmet, ...]:
    """Every requirement of `rule` not met at `now`, with what would satisfy it."""
    unmet = []
    for name in rule.requirements:
        if name in STATE_REQUIREMENTS:
            met = bool(state.get(name))
        elif name == "user_confirmation":
            met = confirmations >= 1
        elif name == "name_confirmation":
            met = confirmations >= 2
        elif name == "admin_approval":
            met = approved
        elif name in COOLDOWNS:
            ends = requested_at + COOLDOWNS[name]
            met = now >= ends
            if not met:
                left = _duration(ends - now)
                unmet.append(Unmet(name, f"{left} left (until {ends.isoformat()}Z)"))
                continue
        else:  # an unknown requirement is never met
            met = False
        if not met and name in STATE_REQUIREMENTS:
            unmet.append(Unmet(name, _satisfy(name, state)))
        elif not met:
            unmet.append(Unmet(name, REQUIREMENTS.get(name, "unknown requirement")))
    return tuple(unmet)


def _words(unmet: tuple[Unmet, ...]) -> tuple[str, ...]:
    return tuple(f"{u.requirement}: {u.satisfy}" for u in unmet)


def decide(facts: Facts) -> Decision:
    """Decided by the key's role and principal, never by what the client says it is."""
    role = facts.actor.role
    if role not in REQUESTING_ROLES:
        return Refused((f"a {role} key may only read",), "role")
    if facts.attempt.action == "request":
        return _request(facts)
    if facts.attempt.action in ("confirm", "approve") and role not in HUMAN_ROLES:
        return Refused(
            (f"a {role} key may request but never {facts.attempt.action}: a person does that "
             "with an operator or admin key",),
            "human_required",
        )  # fmt: skip
    entry = facts.entry
    if entry is None:
        return Refused(("no pending entry for this token",), "token_unknown")
    if entry.status != "pending":
        spent = f"this entry is {entry.status}: its token is spent"
        return Refused((spent,), f"entry_{entry.status}")
    if facts.now >= entry.expires_at:
        expired = f"this entry expired at {entry.expires_at.isoformat()}Z"
        return Refused((expired,), "entry_expired")
    if facts.attempt.action == "cancel":
        return _cancel(facts, entry)
    if facts.attempt.action == "approve":
        return _approve(facts, entry)
    return _confirm(facts, entry)


def _state_unmet(facts: Facts) -> tuple[Unmet, ...]:
    return tuple(
        Unmet(name, _satisfy(name, facts.state))
        for name in facts.rule.requirements
        if name in STATE_REQUIREMENTS and not facts.state.get(name)
    )


def _request(facts: Facts) -> Decision:
    rule = facts.rule
    level = rule.level.name
    if rule.flow == "queue":
        unmet = unmet_requirements(
            rule, facts.now, facts.state, confirmations=0, approved=False, requested_at=facts.now
        )
        ends = facts.now + rule.cooldown
        return Queued((f"{level}: queued until its requirements are met", *_words(unmet)),
                      unmet, ends)  # fmt: skip
    missing = _state_unmet(facts)
    if missing:
        return Refused(_words(missing), "requirements_unmet", missing)
    if rule.flow == "token":
        unmet = (Unmet("user_confirmation", REQUIREMENTS["user_confirmation"]),)
        return NeedsConfirmation((f"{level}: runs when its confirm token is confirmed",), unmet)
    return Proceed((f"{level}: logged, then runs" if rule.level else "SAFE: runs at once",))


def _may_confirm(actor: ActorFacts, entry: EntryFacts) -> bool:
    """The requesting key confirms its own request; an agent's request is confirmed by a
    person (any operator or admin key): that is the point of the agent role."""
    return actor.key_id == entry.key_id or (
        entry.key_role not in HUMAN_ROLES and entry.key_role is not None
    )


def _confirm(facts: Facts, entry: EntryFacts) -> Decision:
    actor, attempt, rule = facts.actor, facts.attempt, facts.rule
    if not _may_confirm(actor, entry):
        return Refused(("the token belongs to another API key",), "token_other_key")
    if entry.approved_principal is not None and actor.principal == entry.approved_principal:
        return Refused(
            ("the principal that approved this entry may not also confirm it",),
            "approver_confirming",
        )
    if not attempt.binding_matches:
        return Refused(
            ("the token was issued for another operation, target or parameters",),
            "token_binding_mismatch",
        )
    if rule.flow != "queue":
        missing = _state_unmet(facts)
        if missing:
            return Refused(_words(missing), "requirements_unmet", missing)
        return Proceed(("confirmed with its token",))
    typed = attempt.typed_name
    if (entry.confirmations >= 1 or typed is not None) and typed != entry.target_name:
        return Refused(
            (f"the confirmation must type the target's name exactly: {entry.target_name}",),
            "typed_name_mismatch",
        )
    unmet = unmet_requirements(
        rule,
        facts.now,
        facts.state,
        confirmations=entry.confirmations + 1,
        approved=entry.approved_by_key_id is not None,
        requested_at=entry.created_at,
    )
    if not unmet:
        return Proceed(("every requirement is met and confirmed after the cooldown",))
    waiting = [u for u in unmet if u.requirement not in STATE_REQUIREMENTS]
    if not waiting:
        # Only the state is missing: nothing to wait for, so say no rather than record.
        return Refused(_words(unmet), "requirements_unmet", unmet)
    return Queued(("confirmation recorded", *_words(unmet)), unmet, entry.cooldown_ends_at,
                  "confirmation")  # fmt: skip


def _approve(facts: Facts, entry: EntryFacts) -> Decision:
    actor = facts.actor
    if "admin_approval" not in facts.rule.requirements:
        return Refused(("this operation needs no approval",), "approval_not_required")
    if actor.role != "admin":
        return Refused(("only an admin key may approve",), "admin_required")
    if actor.key_id is None or actor.key_id == entry.key_id:
        return Refused(("the requesting key may not approve its own request",), "self_approval")
    # Two people: the approver is another principal than whoever requested or confirmed.
    if actor.principal is None or actor.principal == entry.principal:
        return Refused(
            (f"the approval must come from another principal than the requester "
             f"({entry.principal})",),
            "self_approval",
        )  # fmt: skip
    if actor.principal in entry.confirmed_by:
        return Refused(
            ("a principal that confirmed this entry may not also approve it",),
            "self_approval",
        )
    # A key made after the request could have been made for the purpose.
    if actor.key_created_at is None or actor.key_created_at > entry.created_at:
        return Refused(
            ("the approving key must have existed when the request was made",),
            "approver_key_too_new",
        )
    if entry.approved_by_key_id is not None:
        return Refused(("this entry is already approved",), "already_approved")
    unmet = unmet_requirements(
        facts.rule,
        facts.now,
        facts.state,
        confirmations=entry.confirmations,
        approved=True,
        requested_at=entry.created_at,
    )
    return Queued(("approval recorded", *_words(unmet)), unmet, entry.cooldown_ends_at,
                  "approval")  # fmt: skip


def _cancel(facts: Facts, entry: EntryFacts) -> Decision:
    if facts.actor.key_id != entry.key_id and facts.actor.role != "admin":
        return Refused(("only the requesting key or an admin may cancel",), "not_requester")
    return Proceed(("cancelled before execution",))
