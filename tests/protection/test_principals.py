"""Approvals need another person (finding 2 of the trust issue). Invariant: no sequence of API
calls made with one key can satisfy `admin_approval` for that key's own request: keys minted
through the API belong to the minting principal unless another admin approves otherwise."""

from __future__ import annotations

from codeb.store.models import ApiKey
from tests.protection.helpers import add_backup, confirm, make_project, project_row


def _keys(api) -> dict[str, ApiKey]:
    with api.deps.db.connection_context():
        return {k.name: k for k in ApiKey.select()}


def test_one_admin_cannot_mint_a_second_person(papi):
    with papi.client() as c:
        r = c.post("/api/keys", json={"name": "twin", "role": "admin"})
        assert r.status_code == 202, r.text
        assert r.json()["operation"] == "api_key_grant" and r.json()["status"] == "queued"
        assert "api_key" not in r.json() and "cb_" not in r.text
        r = c.post("/api/keys", json={"name": "bob", "role": "operator", "principal": "bob"})
        assert r.status_code == 202 and r.json()["operation"] == "api_key_grant"
        r = c.post("/api/keys", json={"name": "ci", "role": "operator"})
        assert r.status_code == 201, r.text
        assert r.json()["key"]["principal"] == "admin" and r.json()["api_key"].startswith("cb_")
        assert r.headers["cache-control"] == "no-store"
    keys = _keys(papi)
    assert "twin" not in keys and "bob" not in keys
    assert keys["ci"].principal == "admin" and keys["ci"].created_by == "admin"


def test_no_sequence_of_one_admins_calls_approves_its_own_critical_request(papi, clock):
    with papi.client() as c:
        p = make_project(c, "gone")["project"]
        add_backup(papi, p["id"])
        r = c.delete("/api/projects/gone")
        token, entry_id = r.json()["confirm_token"], r.json()["entry"]["id"]
        # Every key this admin can get without anyone else: its own principal.
        minted = []
        for name, role in (("ops", "operator"), ("bot", "agent"), ("ro", "readonly")):
            r = c.post("/api/keys", json={"name": name, "role": role})
            assert r.status_code == 201, r.text
            minted.append(r.json()["api_key"])
        # Attempts at a second admin: each is queued for another admin, whatever it claims.
        for body in ({"name": "a2", "role": "admin"},
                     {"name": "a3", "role": "admin", "principal": "someone-else"},
                     {"name": "o2", "role": "operator", "principal": "someone-else"}):  # fmt: skip
            r = c.post("/api/keys", json=body)
            assert r.status_code == 202, r.text
            grant_token = r.json()["confirm_token"]
            grant_id = r.json()["entry"]["id"]
            r = confirm(c, grant_token)
            assert r.status_code == 202 and r.json()["status"] == "confirmation_recorded"
            assert c.post("/api/protection/approve", json={"id": grant_id}).status_code == 403
            for key in minted:
                with papi.client(key=key) as k:
                    r = k.post("/api/protection/approve", json={"id": grant_id})
                    assert r.status_code == 403
        assert c.post("/api/protection/approve", json={"id": entry_id}).status_code == 403
        for key in minted:
            with papi.client(key=key) as k:
                assert k.post("/api/protection/approve", json={"id": entry_id}).status_code == 403
        confirm(c, token)
        clock.advance(hours=49)
        r = confirm(c, token, "gone")
        assert r.status_code == 202 and r.json()["status"] == "confirmation_recorded"
    assert project_row(papi, p["id"]).status == "active"
    assert not {"a2", "a3", "o2"} & set(_keys(papi))


def test_another_admin_approves_a_key_grant(papi):
    bob = papi.new_key("bob", "admin")
    with papi.client() as c, papi.client(key=bob) as b:
        r = c.post("/api/keys", json={"name": "carol", "role": "admin", "principal": "carol"})
        token, entry_id = r.json()["confirm_token"], r.json()["entry"]["id"]
        assert confirm(c, token).status_code == 202
        r = b.post("/api/protection/approve", json={"id": entry_id})
        assert r.status_code == 200, r.text
        # The approving admin may not also confirm (and the token is not theirs anyway).
        assert confirm(b, token, "carol").status_code == 403
        r = confirm(c, token, "carol")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "executed" and body["result"]["api_key"].startswith("cb_")
        assert r.headers["cache-control"] == "no-store"
    carol = _keys(papi)["carol"]
    assert carol.role == "admin" and carol.principal == "carol" and carol.created_by == "admin"
    # The plaintext key is in that one answer only: not in the log, not in the queue.
    with papi.client() as c:
        logs = c.get("/api/protection/logs", params={"limit": 500}).text
        queue = c.get("/api/protection/queue", params={"status": "all"}).text
    assert body["result"]["api_key"] not in logs and body["result"]["api_key"] not in queue


def test_an_approver_key_made_after_the_request_is_refused(papi, clock):
    with papi.client() as c:
        p = make_project(c, "gone")["project"]
        add_backup(papi, p["id"])
        r = c.delete("/api/projects/gone")
        entry_id = r.json()["entry"]["id"]
    clock.advance(minutes=5)
    late = papi.new_key("late", "admin")  # made on the server, another principal, but later
    with papi.client(key=late) as k:
        r = k.post("/api/protection/approve", json={"id": entry_id})
        assert r.status_code == 403, r.text
        assert r.json()["error"]["details"]["reason"] == "approver_key_too_new"


def test_a_server_side_key_is_the_root_of_trust_and_is_logged(papi):
    from codeb.features.keys import service as keys
    from codeb.services.context import SYSTEM

    with papi.deps.db.connection_context():
        record, _ = keys.create_key(papi.deps, SYSTEM, "dana", "admin", principal="dana")
    assert record["principal"] == "dana" and record["created_by"] is None
    with papi.client() as c:
        logs = c.get("/api/protection/logs", params={"operation": "api_key_create"}).json()
    row = logs["logs"][0]
    assert row["target"] == "dana" and row["details"]["on_server"] is True
