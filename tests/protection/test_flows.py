"""The confirm flows end to end over HTTP: what succeeds, and what it leaves behind."""

from __future__ import annotations

from codeb.store.models import Environment, PortAllocation
from tests.protection.helpers import (
    add_backup,
    confirm,
    env_status,
    log_statuses,
    make_project,
    project_row,
)


def test_low_runs_at_once_and_is_logged(papi):
    with papi.client() as c:
        make_project(c, "low")
        r = c.put("/api/projects/low", json={"type": "remix"})
        assert r.status_code == 200 and r.json()["type"] == "remix"
    assert log_statuses(papi, "project_update") == ["executed"]


def test_medium_confirm_by_endpoint_and_by_repeated_request(mapi):
    with mapi.client() as c:
        make_project(c, "med")
        r = c.put("/api/projects/med", json={"type": "remix"})
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["status"] == "confirmation_required" and body["level"] == "MEDIUM"
        assert "med" in body["warning"] and len(body["confirm_token"]) >= 40
        assert c.get("/api/projects/med").json()["type"] == "nodejs"
        r = confirm(c, body["confirm_token"])
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "executed" and r.json()["result"]["type"] == "remix"

        token = c.put("/api/projects/med", json={"type": "static"}).json()["confirm_token"]
        r = c.put("/api/projects/med", json={"type": "static"},
                  headers={"X-Confirm-Token": token})  # fmt: skip
        assert r.status_code == 200 and r.json()["result"]["type"] == "static"
    assert log_statuses(mapi, "project_update") == [
        "requested", "token_issued", "confirmed", "executed",
        "requested", "token_issued", "confirmed", "executed",
    ]  # fmt: skip


def test_environment_delete_full_flow_and_recreation(papi, clock):
    with papi.client() as c:
        p = make_project(c, "shop")["project"]
        add_backup(papi, p["id"], "staging", verified=False)
        r = c.delete("/api/projects/shop/environments/staging")
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["status"] == "queued" and body["level"] == "HIGH"
        token, entry_id = body["confirm_token"], body["entry"]["id"]
        unmet = {u["requirement"] for u in body["entry"]["unmet"]}
        assert unmet == {"user_confirmation", "name_confirmation", "cooldown_24h"}

        r = confirm(c, token)
        assert r.status_code == 202 and r.json()["status"] == "confirmation_recorded"
        assert r.json()["entry"]["cooldown_remaining_seconds"] == 24 * 3600
        queue = c.get("/api/protection/queue").json()["entries"]
        assert [e["id"] for e in queue] == [entry_id]
        assert {u["requirement"] for u in queue[0]["unmet"]} == {"name_confirmation",
                                                                 "cooldown_24h"}  # fmt: skip

        clock.advance(hours=24)
        r = confirm(c, token, "shop/staging")
        assert r.status_code == 200, r.text
        assert r.json()["result"]["ports_released"] == 3
        assert c.get("/api/projects/shop/environments/staging").status_code == 404
        assert set(c.get("/api/projects/shop").json()["environments"]) == {"production"}
        assert c.get("/api/protection/queue").json()["entries"] == []

        # The deleted environment steps aside: it can be created again, with fresh ports.
        r = c.post("/api/projects/shop/environments", json={"name": "staging"})
        assert r.status_code == 201, r.text
        assert r.json()["environment"]["app_port"] == 3001
    assert env_status(papi, p["id"], "staging") == "active"
    with papi.deps.db.connection_context():
        kept = Environment.select().where(Environment.status == "deleted").count()
        assert kept == 1  # the deleted row is kept, not dropped
    assert log_statuses(papi, "environment_delete") == [
        "requested", "token_issued", "confirmed", "confirmed", "executed",
    ]  # fmt: skip


def test_project_delete_full_flow_keeps_backups_and_frees_the_name(papi, clock):
    boss = papi.new_key("boss", "admin")
    with papi.client() as c, papi.client(key=boss) as b:
        p = make_project(c, "gone")["project"]
        add_backup(papi, p["id"])
        r = c.delete("/api/projects/gone")
        assert r.status_code == 202 and r.json()["level"] == "CRITICAL"
        token, entry_id = r.json()["confirm_token"], r.json()["entry"]["id"]
        assert confirm(c, token).status_code == 202
        r = b.post("/api/protection/approve", json={"id": entry_id})
        assert r.status_code == 200 and r.json()["status"] == "approved", r.text
        clock.advance(hours=48)
        r = confirm(c, token, "gone")
        assert r.status_code == 200, r.text
        assert r.json()["result"]["environments_deleted"] == ["staging", "production"]
        assert c.get("/api/projects/gone").status_code == 404
        assert c.get(f"/api/projects/{p['id']}").status_code == 404
        # The name is free again; the new project gets the first ports back.
        again = make_project(c, "gone")
        assert again["project"]["id"] != p["id"]
        assert again["environments"]["staging"]["app_port"] == 3001
        logs = c.get("/api/protection/logs", params={"project": p["id"]}).json()["logs"]
        assert logs[0]["status"] == "executed" and logs[0]["operation"] == "project_delete"
    row = project_row(papi, p["id"])
    assert row.status == "deleted" and row.name.startswith("gone~")
    with papi.deps.db.connection_context():
        assert row.backups.count() == 2
        assert PortAllocation.select().where(PortAllocation.project == p["id"]).count() == 0


def test_cancel_by_requester_and_listing(papi):
    with papi.client() as c:
        make_project(c, "keep")
        r = c.delete("/api/projects/keep/environments/production")
        entry_id = r.json()["entry"]["id"]
        r = c.post("/api/protection/cancel", json={"id": entry_id})
        assert r.status_code == 200 and r.json()["entry"]["status"] == "cancelled"
        assert c.get("/api/protection/queue").json()["total"] == 0
        assert c.get("/api/protection/queue", params={"status": "cancelled"}).json()["total"] == 1
        assert c.get(f"/api/protection/queue/{entry_id}").json()["status"] == "cancelled"
        # A new request is possible again once the old one is cancelled.
        assert c.delete("/api/projects/keep/environments/production").status_code == 202


def test_rules_endpoint_lists_the_table(papi):
    with papi.client() as c:
        rules = {r["operation"]: r for r in c.get("/api/protection/rules").json()["rules"]}
    assert rules["db_drop"]["level"] == "CRITICAL"
    assert rules["project_delete"]["flow"] == "queue"
    assert rules["container_start"]["flow"] == "run"
