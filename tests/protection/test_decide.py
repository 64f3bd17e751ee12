"""The pure decision, as a table: rule x actor x state x entry x attempt -> decision."""

from __future__ import annotations

import datetime as dt

import pytest

from codeb.protection.decision import (
    ActorFacts,
    Attempt,
    EntryFacts,
    Facts,
    NeedsConfirmation,
    Proceed,
    Queued,
    Refused,
    decide,
)
from codeb.protection.rules import RULES

T0 = dt.datetime(2026, 1, 1, 12, 0)
BEFORE = T0 - dt.timedelta(days=1)
OP = ActorFacts(key_id=1, role="operator", principal="alice", key_created_at=BEFORE)
ADMIN = ActorFacts(key_id=1, role="admin", principal="alice", key_created_at=BEFORE)
OTHER_ADMIN = ActorFacts(key_id=2, role="admin", principal="bob", key_created_at=BEFORE)
# Another key of alice's (minted by her): another key, the same person.
ALICE_SECOND_ADMIN = ActorFacts(key_id=5, role="admin", principal="alice", key_created_at=BEFORE)
NEW_ADMIN = ActorFacts(key_id=6, role="admin", principal="carol", key_created_at=T0)
LATE_ADMIN = ActorFacts(key_id=6, role="admin", principal="carol",
                        key_created_at=T0 + dt.timedelta(seconds=1))  # fmt: skip
READONLY = ActorFacts(key_id=1, role="readonly", principal="alice")
AGENT = ActorFacts(key_id=1, role="agent", principal="alice", key_created_at=BEFORE)
OTHER_AGENT_ADMIN = ActorFacts(key_id=3, role="agent", principal="bob", key_created_at=BEFORE)
# What the client says it is changes nothing: an operator key that says "mcp" is an operator.
SAYS_MCP = ActorFacts(key_id=1, role="operator", client="mcp", principal="alice",
                      key_created_at=BEFORE)  # fmt: skip
ALL_STATE = {n: True for n in ("backup_exists", "backup_verified", "container_stopped",
                                "staging_tested", "health_check_passed")}  # fmt: skip


def entry(hours: int = 24, confirmations: int = 0, approved: int | None = None, **kw) -> EntryFacts:
    fields = dict(status="pending", key_id=1, target_name="shop/staging", created_at=T0,
                  cooldown_ends_at=T0 + dt.timedelta(hours=hours),
                  expires_at=T0 + dt.timedelta(hours=hours, days=7),
                  confirmations=confirmations, approved_by_key_id=approved,
                  principal="alice", key_role="operator")  # fmt: skip
    fields.update(kw)
    return EntryFacts(**fields)


def at(hours: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=hours)


CONFIRM = Attempt("confirm")
NAMED = Attempt("confirm", typed_name="shop/staging")

CASES = [
    # (id, operation, actor, state, attempt, entry, now, kind, code or unmet)
    ("low runs", "container_start", OP, {}, Attempt(), None, T0, Proceed, None),
    ("readonly refused", "container_start", READONLY, {}, Attempt(), None, T0, Refused, "role"),
    ("medium asks", "container_stop", OP, {}, Attempt(), None, T0, NeedsConfirmation, None),
    ("remove running", "container_remove", OP, {}, Attempt(), None, T0, Refused,
     "requirements_unmet"),
    ("remove stopped", "container_remove", OP, {"container_stopped": True}, Attempt(), None, T0,
     NeedsConfirmation, None),
    ("prod deploy untested", "deploy_production", OP, {"staging_tested": True}, Attempt(), None,
     T0, Refused, "requirements_unmet"),
    ("prod deploy tested", "deploy_production", OP, ALL_STATE, Attempt(), None, T0,
     NeedsConfirmation, None),
    ("high queues", "volume_delete", OP, {}, Attempt(), None, T0, Queued,
     ("backup_exists", "user_confirmation", "name_confirmation", "cooldown_24h")),
    ("critical queues", "db_drop", OP, ALL_STATE, Attempt(), None, T0, Queued,
     ("user_confirmation", "name_confirmation", "admin_approval", "cooldown_48h")),
    ("medium confirm", "container_stop", OP, {}, CONFIRM, entry(0), T0, Proceed, None),
    ("medium other key", "container_stop", ActorFacts(2, "operator"), {}, CONFIRM, entry(0), T0,
     Refused, "token_other_key"),
    ("medium other binding", "container_stop", OP, {},
     Attempt("confirm", binding_matches=False), entry(0), T0, Refused, "token_binding_mismatch"),
    ("medium replay", "container_stop", OP, {}, CONFIRM, entry(0, status="executed"), T0,
     Refused, "entry_executed"),
    ("medium expired", "container_stop", OP, {}, CONFIRM,
     entry(0, expires_at=at(0.25)), at(0.25), Refused, "entry_expired"),
    ("medium cancelled", "container_stop", OP, {}, CONFIRM, entry(0, status="cancelled"), T0,
     Refused, "entry_cancelled"),
    ("medium state gone", "container_remove", OP, {}, CONFIRM, entry(0), T0, Refused,
     "requirements_unmet"),
    ("high 1st in cooldown", "volume_delete", OP, ALL_STATE, CONFIRM, entry(), at(1), Queued,
     ("name_confirmation", "cooldown_24h")),
    ("high 2nd in cooldown", "volume_delete", OP, ALL_STATE, NAMED, entry(confirmations=1),
     at(23.9), Queued, ("cooldown_24h",)),
    ("high 2nd unnamed", "volume_delete", OP, ALL_STATE, CONFIRM, entry(confirmations=1), at(25),
     Refused, "typed_name_mismatch"),
    ("high 2nd wrong name", "volume_delete", OP, ALL_STATE,
     Attempt("confirm", typed_name="shop"), entry(confirmations=1), at(25), Refused,
     "typed_name_mismatch"),
    ("high 1st after cooldown", "volume_delete", OP, ALL_STATE, CONFIRM, entry(), at(25), Queued,
     ("name_confirmation",)),
    ("high final", "volume_delete", OP, ALL_STATE, NAMED, entry(confirmations=1), at(24), Proceed,
     None),
    ("high no backup", "volume_delete", OP, {}, NAMED, entry(confirmations=1), at(25), Refused,
     "requirements_unmet"),
    ("high by agent", "volume_delete", AGENT, ALL_STATE, NAMED, entry(confirmations=1), at(25),
     Refused, "human_required"),
    ("medium by agent", "container_stop", AGENT, {}, CONFIRM, entry(0), T0, Refused,
     "human_required"),
    ("agent requests", "container_stop", AGENT, {}, Attempt(), None, T0, NeedsConfirmation,
     None),
    ("agent's request, person confirms", "container_stop", ActorFacts(2, "operator",
     principal="bob"), {}, CONFIRM, entry(0, key_role="agent"), T0, Proceed, None),
    ("header says mcp", "volume_delete", SAYS_MCP, ALL_STATE, NAMED, entry(confirmations=1),
     at(25), Proceed, None),
    ("high expired", "volume_delete", OP, ALL_STATE, NAMED, entry(confirmations=1),
     at(24 + 7 * 24), Refused, "entry_expired"),
    ("critical unapproved", "db_drop", ADMIN, ALL_STATE, NAMED, entry(48, confirmations=1),
     at(49), Queued, ("admin_approval",)),
    ("critical final", "db_drop", ADMIN, ALL_STATE, NAMED, entry(48, confirmations=1, approved=2),
     at(48), Proceed, None),
    ("critical unverified", "db_drop", ADMIN, {"backup_exists": True}, NAMED,
     entry(48, confirmations=1, approved=2), at(49), Refused, "requirements_unmet"),
    ("critical early", "db_drop", ADMIN, ALL_STATE, NAMED, entry(48, confirmations=1, approved=2),
     at(47.99), Queued, ("cooldown_48h",)),
    ("approve self", "db_drop", ADMIN, ALL_STATE, Attempt("approve"), entry(48), T0, Refused,
     "self_approval"),
    ("approve operator", "db_drop", ActorFacts(2, "operator"), ALL_STATE, Attempt("approve"),
     entry(48), T0, Refused, "admin_required"),
    ("approve agent", "db_drop", OTHER_AGENT_ADMIN, ALL_STATE, Attempt("approve"),
     entry(48), T0, Refused, "human_required"),
    ("approve same principal", "db_drop", ALICE_SECOND_ADMIN, ALL_STATE, Attempt("approve"),
     entry(48), T0, Refused, "self_approval"),
    ("approve a confirmer", "db_drop", OTHER_ADMIN, ALL_STATE, Attempt("approve"),
     entry(48, key_role="agent", confirmed_by=("bob",)), T0, Refused, "self_approval"),
    ("approve key made later", "db_drop", LATE_ADMIN, ALL_STATE, Attempt("approve"), entry(48),
     T0, Refused, "approver_key_too_new"),
    ("approve key made at once", "db_drop", NEW_ADMIN, ALL_STATE, Attempt("approve"), entry(48),
     T0, Queued, ("user_confirmation", "name_confirmation", "cooldown_48h")),
    ("approver confirms", "db_drop", ActorFacts(2, "operator", principal="bob"), ALL_STATE,
     CONFIRM, entry(48, key_role="agent", approved=2, approved_principal="bob"), at(49),
     Refused, "approver_confirming"),
    ("approve twice", "db_drop", OTHER_ADMIN, ALL_STATE, Attempt("approve"), entry(48, approved=3),
     T0, Refused, "already_approved"),
    ("approve high", "volume_delete", OTHER_ADMIN, ALL_STATE, Attempt("approve"), entry(), T0,
     Refused, "approval_not_required"),
    ("approve ok", "db_drop", OTHER_ADMIN, ALL_STATE, Attempt("approve"), entry(48), at(49),
     Queued, ("user_confirmation", "name_confirmation")),
    ("cancel own", "db_drop", OP, {}, Attempt("cancel"), entry(48), T0, Proceed, None),
    ("cancel other", "db_drop", ActorFacts(2, "operator"), {}, Attempt("cancel"), entry(48), T0,
     Refused, "not_requester"),
    ("cancel by admin", "db_drop", OTHER_ADMIN, {}, Attempt("cancel"), entry(48), T0, Proceed,
     None),
    ("cancel executed", "db_drop", OP, {}, Attempt("cancel"), entry(48, status="executed"), T0,
     Refused, "entry_executed"),
    ("confirm no entry", "db_drop", OP, {}, CONFIRM, None, T0, Refused, "token_unknown"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("operation", "actor", "state", "attempt", "entry_facts", "now", "kind", "expect"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_decision_table(operation, actor, state, attempt, entry_facts, now, kind, expect):
    facts = Facts(RULES[operation], now, actor, state, attempt, entry_facts)
    decision = decide(facts)
    assert type(decision) is kind, decision
    assert decision.reasons
    if isinstance(decision, Refused):
        assert decision.code == expect
    elif isinstance(expect, tuple):
        assert tuple(u.requirement for u in decision.unmet) == expect


def test_a_refusal_names_every_unmet_requirement_and_its_remedy():
    facts = Facts(RULES["deploy_production"], T0, OP, {})
    decision = decide(facts)
    assert isinstance(decision, Refused)
    assert [u.requirement for u in decision.unmet] == ["staging_tested", "health_check_passed"]
    assert all(u.satisfy for u in decision.unmet)


def test_queued_decision_reports_the_cooldown_end():
    decision = decide(Facts(RULES["db_drop"], T0, OP, ALL_STATE))
    assert isinstance(decision, Queued)
    assert decision.cooldown_ends_at == T0 + dt.timedelta(hours=48)
