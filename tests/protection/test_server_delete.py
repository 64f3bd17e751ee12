"""DELETE /api/servers/:ip is CRITICAL: queued, another admin approves, 48 h, a final confirm."""

from tests.protection.helpers import confirm, log_statuses


def test_server_delete_needs_approval_cooldown_and_final_confirm(papi, clock):
    boss = papi.new_key("boss", "admin")
    body = {"name": "app1", "ip": "10.5.0.1", "role": "app", "bootstrap": False}
    with papi.client() as c, papi.client(key=boss) as b:
        assert c.post("/api/servers", json=body).status_code == 201
        r = c.delete("/api/servers/10.5.0.1")
        assert r.status_code == 202 and r.json()["level"] == "CRITICAL", r.text
        token, entry_id = r.json()["confirm_token"], r.json()["entry"]["id"]
        assert c.get("/api/servers/10.5.0.1").json()["status"] == "registered"
        # The requester cannot approve its own request; the final confirm waits for 48 h.
        assert c.post("/api/protection/approve", json={"id": entry_id}).status_code == 403
        assert confirm(c, token).status_code == 202
        assert b.post("/api/protection/approve", json={"id": entry_id}).status_code == 200
        clock.advance(hours=47)
        r = confirm(c, token, "app1")
        assert r.status_code == 202 and r.json()["entry"]["cooldown_remaining_seconds"] == 3600
        assert c.get("/api/servers/10.5.0.1").status_code == 200
        clock.advance(hours=1)
        r = confirm(c, token, "app1")
        assert r.status_code == 200, r.text
        assert c.get("/api/servers/10.5.0.1").status_code == 404
        assert [s["name"] for s in c.get("/api/servers").json()["servers"]] == []
        # Name and address are free again.
        assert c.post("/api/servers", json=body).status_code == 201
    assert log_statuses(papi, "server_delete")[-1] == "executed"


def test_readonly_and_unknown(papi):
    ro = papi.new_key("ro", "readonly")
    with papi.client(key=ro) as c:
        assert c.delete("/api/servers/10.5.0.9").status_code == 403
    with papi.client() as c:
        assert c.delete("/api/servers/10.5.0.9").status_code == 404
