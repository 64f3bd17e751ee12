"""The adversarial suite: each test tries to get a dangerous effect without the Protection
Layer's consent, over real HTTP against a real SQLite file, and fails if it succeeds."""

from __future__ import annotations

import threading

import pytest

from codeb.store.models import OperationLog, ProtectionQueue
from tests.protection.helpers import (
    add_backup,
    confirm,
    entry,
    env_status,
    error_code,
    log_statuses,
    make_project,
    project_row,
)


def _medium_token(c, project="med", **body):
    r = c.put(f"/api/projects/{project}", json=body or {"type": "remix"})
    assert r.status_code == 202, r.text
    return r.json()["confirm_token"]


def _queue_env_delete(c, project="shop", env="staging"):
    r = c.delete(f"/api/projects/{project}/environments/{env}")
    assert r.status_code == 202, r.text
    return r.json()["confirm_token"], r.json()["entry"]["id"]


def _queue_project_delete(c, project="gone"):
    r = c.delete(f"/api/projects/{project}")
    assert r.status_code == 202, r.text
    return r.json()["confirm_token"], r.json()["entry"]["id"]


# -- tokens ----------------------------------------------------------------------------------


def test_replayed_medium_token_is_refused(mapi):
    with mapi.client() as c:
        make_project(c, "med")
        token = _medium_token(c)
        assert confirm(c, token).status_code == 200
        replay = {"X-Confirm-Token": token}
        repeated = c.put("/api/projects/med", json={"type": "remix"}, headers=replay)
        for attempt in (confirm(c, token), repeated):
            assert attempt.status_code == 409, attempt.text
            assert error_code(attempt) == "protection_entry_closed"
    assert log_statuses(mapi, "project_update").count("executed") == 1


def test_replayed_token_after_a_high_execution_is_refused(papi, clock):
    with papi.client() as c:
        p = make_project(c, "shop")["project"]
        add_backup(papi, p["id"], "staging")
        token, _ = _queue_env_delete(c)
        confirm(c, token)
        clock.advance(hours=25)
        assert confirm(c, token, "shop/staging").status_code == 200
        c.post("/api/projects/shop/environments", json={"name": "staging"})
        r = confirm(c, token, "shop/staging")
        assert r.status_code == 409 and error_code(r) == "protection_entry_closed"
    assert env_status(papi, p["id"], "staging") == "active"  # the re-created one survives


def test_token_cannot_delete_another_target(papi, clock):
    with papi.client() as c:
        a = make_project(c, "aaa")["project"]
        b = make_project(c, "bbb")["project"]
        add_backup(papi, a["id"])
        add_backup(papi, b["id"])
        token, _ = _queue_env_delete(c, "aaa", "staging")
        confirm(c, token)
        clock.advance(hours=25)
        headers = {"X-Confirm-Token": token, "X-Confirm-Name": "aaa/staging"}
        for path in ("/api/projects/bbb/environments/staging",
                     "/api/projects/aaa/environments/production"):  # fmt: skip
            r = c.delete(path, headers=headers)
            assert r.status_code == 403, r.text
            assert r.json()["error"]["details"]["reason"] == "token_binding_mismatch"
    assert env_status(papi, b["id"], "staging") == "active"
    assert env_status(papi, a["id"], "production") == "active"
    assert env_status(papi, a["id"], "staging") == "active"


def test_token_cannot_carry_other_parameters(mapi):
    with mapi.client() as c:
        make_project(c, "med")
        token = _medium_token(c, git_repo="https://example.org/good.git")
        r = c.put("/api/projects/med", json={"git_repo": "https://evil.example/bad.git"},
                  headers={"X-Confirm-Token": token})  # fmt: skip
        assert r.status_code == 403 and r.json()["error"]["details"]["reason"] == (
            "token_binding_mismatch"
        )
        assert c.get("/api/projects/med").json()["git_repo"] is None
        # The token still does what it was issued for, and only that.
        assert confirm(c, token).json()["result"]["git_repo"] == "https://example.org/good.git"


def test_token_cannot_cross_operations(mapi):
    with mapi.client() as c:
        make_project(c, "med")
        token, _ = _queue_project_delete(c, "med")
        r = c.put("/api/projects/med", json={"type": "remix"}, headers={"X-Confirm-Token": token})
        assert r.status_code == 403, r.text
        assert c.get("/api/projects/med").json()["type"] == "nodejs"


def test_expired_medium_token_is_refused(mapi, clock):
    with mapi.client() as c:
        make_project(c, "med")
        token = _medium_token(c)
        clock.advance(minutes=15, seconds=1)
        r = confirm(c, token)
        assert r.status_code == 410 and error_code(r) == "protection_entry_expired"
        assert c.get("/api/projects/med").json()["type"] == "nodejs"
    assert "expired" in log_statuses(mapi, "project_update")


def test_token_from_another_key_is_refused(mapi):
    other = mapi.new_key("other-op", "operator")
    with mapi.client() as c, mapi.client(key=other) as o:
        make_project(c, "med")
        token = _medium_token(c)
        r = confirm(o, token)
        assert r.status_code == 403 and r.json()["error"]["details"]["reason"] == "token_other_key"
        r = o.put("/api/projects/med", json={"type": "remix"}, headers={"X-Confirm-Token": token})
        assert r.status_code == 403
        assert c.get("/api/projects/med").json()["type"] == "nodejs"


def test_unknown_or_guessed_token_is_refused(mapi):
    with mapi.client() as c:
        make_project(c, "med")
        _medium_token(c)
        for guess in ("cbt_" + "A" * 43, "", "x"):
            r = c.post("/api/protection/confirm", json={"token": guess})
            assert r.status_code in (404, 422), r.text
        assert c.get("/api/projects/med").json()["type"] == "nodejs"


def test_concurrent_confirms_of_one_token_exactly_one_wins(mapi):
    with mapi.client() as c:
        make_project(c, "med")
        token = _medium_token(c)
    statuses: list[int] = []
    start = threading.Barrier(6)

    def attempt() -> None:
        with mapi.client() as own:
            start.wait()
            statuses.append(confirm(own, token).status_code)

    threads = [threading.Thread(target=attempt) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(statuses) == [200, 409, 409, 409, 409, 409]
    assert log_statuses(mapi, "project_update").count("executed") == 1


def test_concurrent_final_confirms_of_a_queued_delete_exactly_one_wins(papi, clock):
    with papi.client() as c:
        p = make_project(c, "shop")["project"]
        add_backup(papi, p["id"], "staging")
        token, _ = _queue_env_delete(c)
        confirm(c, token)
    clock.advance(hours=25)
    statuses: list[int] = []
    start = threading.Barrier(5)

    def attempt() -> None:
        with papi.client() as own:
            start.wait()
            statuses.append(confirm(own, token, "shop/staging").status_code)

    threads = [threading.Thread(target=attempt) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(statuses) == [200, 409, 409, 409, 409]
    assert log_statuses(papi, "environment_delete").count("executed") == 1


# -- approvals -------------------------------------------------------------------------------


def test_requesting_admin_cannot_approve_own_critical_request(papi, clock):
    with papi.client() as c:
        p = make_project(c, "gone")["project"]
        add_backup(papi, p["id"])
        token, entry_id = _queue_project_delete(c)
        r = c.post("/api/protection/approve", json={"id": entry_id})
        assert r.status_code == 403 and r.json()["error"]["details"]["reason"] == "self_approval"
        confirm(c, token)
        clock.advance(hours=49)
        r = confirm(c, token, "gone")
        assert r.status_code == 202, r.text  # still waiting for another admin
        assert [u["requirement"] for u in r.json()["entry"]["unmet"]] == ["admin_approval"]
    assert project_row(papi, p["id"]).status == "active"


def test_readonly_and_operator_keys_cannot_approve(papi):
    readonly = papi.new_key("ro", "readonly")
    operator = papi.new_key("op", "operator")
    with papi.client() as c:
        p = make_project(c, "gone")["project"]
        _, entry_id = _queue_project_delete(c)
    for key in (readonly, operator):
        with papi.client(key=key) as k:
            r = k.post("/api/protection/approve", json={"id": entry_id})
            assert r.status_code == 403, r.text
    assert entry(papi, entry_id).approved_by is None
    assert project_row(papi, p["id"]).status == "active"


def test_agent_key_cannot_approve_nor_confirm_whatever_header_it_sends(papi, clock):
    """Decided by the key's role: an agent key never confirms or approves, and the client
    header neither takes rights away nor gives them (it is only recorded)."""
    helper = papi.new_key("helper", "agent")
    with papi.client() as c:
        p = make_project(c, "gone")["project"]
        add_backup(papi, p["id"])
    for client in ("api", "cli", "mcp"):
        with papi.client(key=helper, **{"X-Codeb-Client": client}) as agent:
            r = agent.delete("/api/projects/gone")
            assert r.status_code == 202, r.text
            token, entry_id = r.json()["confirm_token"], r.json()["entry"]["id"]
            r = agent.post("/api/protection/approve", json={"id": entry_id})
            assert r.status_code == 403, r.text
            for typed in (None, "gone"):
                r = confirm(agent, token, typed)
                assert r.status_code == 403, r.text
                assert r.json()["error"]["details"]["reason"] == "human_required"
            assert agent.post("/api/protection/cancel", json={"id": entry_id}).status_code == 200
    assert project_row(papi, p["id"]).status == "active"
    boss = papi.new_key("boss", "admin")
    with papi.client() as c, papi.client(key=boss, **{"X-Codeb-Client": "mcp"}) as b:
        _, entry_id = _queue_project_delete(c)
        r = b.post("/api/protection/approve", json={"id": entry_id})
        assert r.status_code == 200, r.text
        assert log_statuses(papi, "project_delete")[-1] == "approved"


def test_approval_alone_executes_nothing(papi, clock):
    boss = papi.new_key("boss", "admin")
    with papi.client() as c, papi.client(key=boss) as b:
        p = make_project(c, "gone")["project"]
        add_backup(papi, p["id"])
        token, entry_id = _queue_project_delete(c)
        confirm(c, token)
        confirm(c, token, "gone")
        clock.advance(hours=49)
        r = b.post("/api/protection/approve", json={"id": entry_id})
        assert r.status_code == 200 and r.json()["entry"]["status"] == "pending"
        assert project_row(papi, p["id"]).status == "active"
        r = b.post("/api/protection/approve", json={"id": entry_id})
        assert r.status_code == 409
        # The approving admin cannot finish it either: the token belongs to the requester.
        assert confirm(b, token, "gone").status_code == 403
    assert project_row(papi, p["id"]).status == "active"


# -- cooldowns and confirmations ------------------------------------------------------------


def test_confirming_high_before_cooldown_never_executes(papi, clock):
    with papi.client() as c:
        p = make_project(c, "shop")["project"]
        add_backup(papi, p["id"], "staging")
        token, _ = _queue_env_delete(c)
        assert confirm(c, token).status_code == 202
        clock.advance(hours=23, minutes=59)
        for _ in range(3):
            r = confirm(c, token, "shop/staging")
            assert r.status_code == 202 and r.json()["status"] == "confirmation_recorded"
            assert r.json()["entry"]["cooldown_remaining_seconds"] == 60
            assert "0h 01m left" in str(r.json()["entry"]["unmet"])
    assert env_status(papi, p["id"], "staging") == "active"


def test_critical_cooldown_is_48_hours(papi, clock):
    boss = papi.new_key("boss", "admin")
    with papi.client() as c, papi.client(key=boss) as b:
        p = make_project(c, "gone")["project"]
        add_backup(papi, p["id"])
        token, entry_id = _queue_project_delete(c)
        b.post("/api/protection/approve", json={"id": entry_id})
        confirm(c, token)
        clock.advance(hours=47)
        r = confirm(c, token, "gone")
        assert r.status_code == 202
        assert [u["requirement"] for u in r.json()["entry"]["unmet"]] == ["cooldown_48h"]
    assert project_row(papi, p["id"]).status == "active"


def test_no_execution_before_the_second_confirmation(papi, clock):
    with papi.client() as c:
        p = make_project(c, "shop")["project"]
        add_backup(papi, p["id"], "staging")
        token, _ = _queue_env_delete(c)
        clock.advance(hours=30)
        r = confirm(c, token)  # the first confirmation, after the cooldown: still not enough
        assert r.status_code == 202, r.text
        assert [u["requirement"] for u in r.json()["entry"]["unmet"]] == ["name_confirmation"]
        assert env_status(papi, p["id"], "staging") == "active"
        # A repeated request carrying the token counts the same way, and needs the name too.
        r = c.delete("/api/projects/shop/environments/staging", headers={"X-Confirm-Token": token})
        assert r.status_code == 422 and error_code(r) == "typed_name_mismatch"
    assert env_status(papi, p["id"], "staging") == "active"


def test_second_confirmation_with_a_wrong_name_is_refused(papi, clock):
    with papi.client() as c:
        p = make_project(c, "shop")["project"]
        add_backup(papi, p["id"], "staging")
        token, entry_id = _queue_env_delete(c)
        confirm(c, token)
        clock.advance(hours=25)
        for wrong in ("shop", "staging", "SHOP/STAGING", "shop/staging ", "shop/production"):
            r = confirm(c, token, wrong)
            assert r.status_code == 422 and error_code(r) == "typed_name_mismatch", wrong
        assert entry(papi, entry_id).confirmations == 1
    assert env_status(papi, p["id"], "staging") == "active"


def test_cancelled_entry_cannot_be_confirmed(papi, clock):
    with papi.client() as c:
        p = make_project(c, "shop")["project"]
        add_backup(papi, p["id"], "staging")
        token, entry_id = _queue_env_delete(c)
        confirm(c, token)
        assert c.post("/api/protection/cancel", json={"token": token}).status_code == 200
        clock.advance(hours=25)
        r = confirm(c, token, "shop/staging")
        assert r.status_code == 409 and error_code(r) == "protection_entry_closed"
        r = c.post("/api/protection/cancel", json={"id": entry_id})
        assert r.status_code == 409
    assert env_status(papi, p["id"], "staging") == "active"


def test_another_operator_cannot_cancel_someone_elses_entry(papi):
    other = papi.new_key("other-op", "operator")
    with papi.client() as c, papi.client(key=other) as o:
        make_project(c, "shop")
        _, entry_id = _queue_env_delete(c)
        r = o.post("/api/protection/cancel", json={"id": entry_id})
        assert r.status_code == 403
    assert entry(papi, entry_id).status == "pending"


# -- requirements ----------------------------------------------------------------------------


def test_critical_without_verified_backup_never_executes(papi, clock):
    boss = papi.new_key("boss", "admin")
    with papi.client() as c, papi.client(key=boss) as b:
        p = make_project(c, "gone")["project"]
        add_backup(papi, p["id"], verified=False)  # backups, but none verified
        token, entry_id = _queue_project_delete(c)
        b.post("/api/protection/approve", json={"id": entry_id})
        confirm(c, token)
        clock.advance(hours=49)
        r = confirm(c, token, "gone")
        assert r.status_code == 403, r.text
        details = r.json()["error"]["details"]
        assert details["reason"] == "requirements_unmet"
        assert [u["requirement"] for u in details["unmet"]] == ["backup_verified"]
        # Verifying a backup later makes the same entry go through.
        add_backup(papi, p["id"], "staging", verified=True)
        assert confirm(c, token, "gone").status_code == 200
    assert project_row(papi, p["id"]).status == "deleted"


def test_high_without_any_backup_never_executes(papi, clock):
    with papi.client() as c:
        p = make_project(c, "shop")["project"]
        add_backup(papi, p["id"], "production")  # a backup, of another environment
        token, _ = _queue_env_delete(c)
        confirm(c, token)
        clock.advance(hours=25)
        r = confirm(c, token, "shop/staging")
        assert r.status_code == 403
        assert [u["requirement"] for u in r.json()["error"]["details"]["unmet"]] == [
            "backup_exists"
        ]
    assert env_status(papi, p["id"], "staging") == "active"


def test_expired_queue_entry_cannot_be_confirmed(papi, clock):
    boss = papi.new_key("boss", "admin")
    with papi.client() as c, papi.client(key=boss) as b:
        p = make_project(c, "gone")["project"]
        add_backup(papi, p["id"])
        token, entry_id = _queue_project_delete(c)
        confirm(c, token)
        b.post("/api/protection/approve", json={"id": entry_id})
        clock.advance(hours=48 + 7 * 24, seconds=1)
        r = confirm(c, token, "gone")
        assert r.status_code == 410 and error_code(r) == "protection_entry_expired"
        assert c.get("/api/protection/queue").json()["total"] == 0
        assert c.get(f"/api/protection/queue/{entry_id}").json()["status"] == "expired"
        assert confirm(c, token, "gone").status_code == 410
    assert project_row(papi, p["id"]).status == "active"
    assert log_statuses(papi, "project_delete").count("expired") == 1


def test_a_second_request_does_not_restart_or_duplicate_the_queue(papi):
    with papi.client() as c:
        make_project(c, "shop")
        _, entry_id = _queue_env_delete(c)
        r = c.delete("/api/projects/shop/environments/staging")
        assert r.status_code == 409 and error_code(r) == "already_queued"
        assert r.json()["error"]["details"]["entry_id"] == entry_id


# -- other endpoints -------------------------------------------------------------------------


def test_no_dangerous_effect_through_other_endpoints(papi):
    with papi.client() as c:
        p = make_project(c, "shop")["project"]
        for body in ({"status": "deleted"}, {"status": "archived"}, {"name": "x"},
                     {"id": "prj_0"}, {"type": "remix", "status": "deleted"}):  # fmt: skip
            assert c.put("/api/projects/shop", json=body).status_code == 422, body
        r = c.post("/api/projects/shop/environments", json={"name": "staging"})
        assert r.status_code == 409
        assert c.post("/api/projects", json={"name": "shop"}).status_code == 409
        assert c.post("/api/projects/shop/environments",
                      json={"name": "staging", "status": "deleted"}).status_code == 422  # fmt: skip
        # A fake confirmation header does not turn a delete into anything but a request.
        r = c.delete("/api/projects/shop", headers={"X-Confirm-Token": "cbt_forged"})
        assert r.status_code == 404 and error_code(r) == "confirm_token_unknown"
        for method in ("PATCH", "POST"):
            assert c.request(method, "/api/projects/shop/environments/staging").status_code == 405
    project = project_row(papi, p["id"])
    assert project.status == "active" and project.name == "shop"
    assert env_status(papi, p["id"], "staging") == "active"


def test_readonly_key_reaches_no_mutation(papi):
    readonly = papi.new_key("ro", "readonly")
    with papi.client() as c:
        make_project(c, "shop")
        token, entry_id = _queue_env_delete(c)
    with papi.client(key=readonly) as r:
        assert r.get("/api/protection/queue").status_code == 200
        assert r.delete("/api/projects/shop").status_code == 403
        assert r.post("/api/protection/confirm", json={"token": token}).status_code == 403
        assert r.post("/api/protection/cancel", json={"id": entry_id}).status_code == 403
    assert entry(papi, entry_id).confirmations == 0


# -- the log ---------------------------------------------------------------------------------


def test_secrets_never_reach_the_log_or_the_queue(mapi, clock):
    boss = mapi.new_key("boss", "admin")
    secrets_seen = [mapi.admin_key, boss]
    with mapi.client() as c, mapi.client(key=boss) as b:
        created = make_project(c, "shop")
        for env_file in created["env_files"].values():
            secrets_seen += [line.split("=", 1)[1] for line in env_file.splitlines()
                             if "URL=" in line]  # fmt: skip
        r = c.put("/api/projects/shop", json={"git_repo": "https://bob:hunter2@git.example/x"})
        assert r.status_code == 422  # a confirmable request may not carry URL credentials
        secrets_seen.append(_medium_token(c, "shop"))
        add_backup(mapi, created["project"]["id"])
        token, entry_id = _queue_project_delete(c, "shop")
        secrets_seen.append(token)
        confirm(c, token)
        b.post("/api/protection/approve", json={"id": entry_id})
        clock.advance(hours=49)
        confirm(c, token, "shop")
        confirm(c, "cbt_not-a-real-token-but-still-secret")
        secrets_seen.append("cbt_not-a-real-token-but-still-secret")
    with mapi.deps.db.connection_context():
        stored = [str(list(row)) for row in mapi.deps.db.execute_sql(
            "SELECT * FROM operation_logs UNION ALL SELECT details, 1, 2, 3, 4, 5, 6, 7, 8, 9, "
            "10, 11, 12 FROM protection_queue").fetchall()]  # fmt: skip
        tokens = [q.confirm_token for q in ProtectionQueue.select()]
    blob = "\n".join(stored)
    assert "hunter2" not in blob
    for secret in secrets_seen:
        assert secret and secret not in blob, secret[:12]
    assert all(t and len(t) == 64 for t in tokens)  # hashes only
    assert "hunter2" not in str(tokens)


def test_secret_parameters_are_refused_by_the_gate(papi):
    from codeb.errors import ValidationFailed
    from codeb.protection.tokens import Target
    from codeb.services import gate
    from codeb.services.context import SYSTEM

    with papi.deps.db.connection_context(), pytest.raises(ValidationFailed):
        gate.guard(papi.deps, SYSTEM, "container_stop", Target("container", "c1", "c1"),
                         {"db_password": "x"}, effect="stops it")  # fmt: skip
    assert log_statuses(papi, "container_stop") == []


def test_log_chain_verifies_and_detects_a_tampered_row(papi, clock):
    with papi.client() as c:
        make_project(c, "shop")
        _, entry_id = _queue_env_delete(c)
        c.post("/api/protection/cancel", json={"id": entry_id})
        r = c.get("/api/protection/logs", params={"verify": "true"})
        chain = r.json()["chain"]
        assert chain["valid"] is True and chain["checked"] == 5 and chain["unanchored"] == 0
        with papi.deps.db.connection_context():
            row = OperationLog.select().where(OperationLog.status == "cancelled").get()
            papi.deps.db.execute_sql(
                "UPDATE operation_logs SET status = 'executed' WHERE id = ?", (row.id,)
            )
        r = c.get("/api/protection/logs/verify").json()
        assert r["valid"] is False and r["first_bad_id"] == row.id and r["checked"] == 5


def test_deleting_a_log_row_breaks_the_chain(papi):
    with papi.client() as c:
        make_project(c, "shop")
        _queue_env_delete(c)
        with papi.deps.db.connection_context():
            papi.deps.db.execute_sql("DELETE FROM operation_logs WHERE status = 'requested'")
        r = c.get("/api/protection/logs/verify").json()
        assert r["valid"] is False and r["first_bad_id"] is not None
