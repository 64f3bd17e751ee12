"""No sequence of cheaper operations reaches the effect of a dearer one (finding 3 of the trust
issue). Deleting environments one by one is not a cheap project delete; deleting production
costs what deleting the project costs; deleting a database's volume is a db_drop."""

from __future__ import annotations

import secrets

from codeb.protection.rules import DOMINATED_BY, RULES, configure
from codeb.store.models import Container
from tests.protection.helpers import (
    add_backup,
    confirm,
    entry,
    log_statuses,
    make_project,
    project_row,
)


def _run_high_env_delete(c, clock, project: str, env: str) -> None:
    r = c.delete(f"/api/projects/{project}/environments/{env}")
    assert r.status_code == 202, r.text
    token = r.json()["confirm_token"]
    assert confirm(c, token).status_code == 202
    clock.advance(hours=24)
    r = confirm(c, token, f"{project}/{env}")
    assert r.status_code == 200, r.text


def test_the_last_environment_cannot_be_deleted(papi, clock):
    """An operator deletes staging (HIGH), then tries production: the project would be empty,
    its ports released, without a verified backup, a second admin or 48 hours."""
    with papi.client() as c:
        p = make_project(c, "shop")["project"]
        add_backup(papi, p["id"])
        _run_high_env_delete(c, clock, "shop", "staging")
        r = c.delete("/api/projects/shop/environments/production")
        assert r.status_code == 409, r.text
        assert r.json()["error"]["details"]["reason"] == "last_environment"
        assert "DELETE /api/projects/shop" in r.json()["error"]["message"]
    with papi.client() as c:
        assert set(c.get("/api/projects/shop").json()["environments"]) == {"production"}
    assert project_row(papi, p["id"]).status == "active"


def test_deleting_production_costs_a_project_delete(papi, clock):
    with papi.client() as c:
        p = make_project(c, "shop")["project"]
        add_backup(papi, p["id"])
        r = c.delete("/api/projects/shop/environments/production")
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["operation"] == "environment_delete_production"
        assert body["level"] == "CRITICAL"
        unmet = {u["requirement"] for u in body["entry"]["unmet"]}
        assert {"admin_approval", "cooldown_48h"} <= unmet
        token = body["confirm_token"]
        confirm(c, token)
        clock.advance(hours=49)
        # Without another admin's approval, no amount of confirming executes it.
        r = confirm(c, token, "shop/production")
        assert r.status_code == 202 and r.json()["status"] == "confirmation_recorded"
        assert set(c.get("/api/projects/shop").json()["environments"]) == {
            "staging",
            "production",
        }


def test_two_queued_deletes_cannot_empty_a_project_together(papi, clock):
    """Each was not the last when requested; the second to execute is refused then."""
    boss = papi.new_key("boss", "admin")
    with papi.client() as c, papi.client(key=boss) as b:
        p = make_project(c, "shop")["project"]
        add_backup(papi, p["id"])
        prod = c.delete("/api/projects/shop/environments/production").json()
        stag = c.delete("/api/projects/shop/environments/staging").json()
        for body in (prod, stag):
            assert confirm(c, body["confirm_token"]).status_code == 202
        assert (
            b.post("/api/protection/approve", json={"id": prod["entry"]["id"]}).status_code == 200
        )
        clock.advance(hours=49)
        assert confirm(c, stag["confirm_token"], "shop/staging").status_code == 200
        r = confirm(c, prod["confirm_token"], "shop/production")
        assert r.status_code == 409, r.text
        assert r.json()["error"]["details"]["reason"] == "last_environment"
        assert set(c.get("/api/projects/shop").json()["environments"]) == {"production"}
    assert entry(papi, prod["entry"]["id"]).status == "failed"
    assert log_statuses(papi, "environment_delete_production")[-1] == "failed"


def test_dominated_rules_stay_as_strict_as_their_dearer_operation():
    """Also when configuration makes the dearer one stricter."""
    rules, _ = configure({}, {})
    for cheap, dear in DOMINATED_BY.items():
        assert rules[cheap].at_least_as_strict_as(rules[dear]), (cheap, dear)
    stricter = {"project_delete": {"requires": ["backup_exists"]}}
    rules, _ = configure(stricter, {})
    for cheap, dear in DOMINATED_BY.items():
        assert rules[cheap].at_least_as_strict_as(rules[dear]), (cheap, dear)
        assert "backup_exists" in rules[cheap].requirements
    assert RULES["db_drop"].level >= RULES["volume_delete"].level


def test_deleting_a_database_volume_is_a_db_drop(papi):
    with papi.client() as c:
        p = make_project(c, "shop")["project"]
        for name, ip, role in (("app7", "127.0.0.7", "app"), ("db7", "127.0.0.8", "db")):
            body = {"name": name, "ip": ip, "role": role, "bootstrap": False}
            assert c.post("/api/servers", json=body).status_code == 201
    with papi.deps.db.connection_context():
        ids = {}
        for kind, ip in (("db", "127.0.0.8"), ("app", "127.0.0.7")):
            ids[kind] = Container.create(
                id=f"ct_{secrets.token_hex(6)}", project=p["id"], environment="staging",
                server_type=kind, server_ip=ip, container_name=f"shop-staging-{kind}",
                image="reg.example/x:1", status="stopped", volume=f"shop-staging-{kind}-data",
            ).id  # fmt: skip
    with papi.client() as c:
        r = c.delete(f"/api/containers/{ids['db']}/volume")
        assert r.status_code == 202, r.text
        assert r.json()["operation"] == "db_drop" and r.json()["level"] == "CRITICAL"
        r = c.delete(f"/api/containers/{ids['app']}/volume")
        assert r.status_code == 202, r.text
        assert r.json()["operation"] == "volume_delete" and r.json()["level"] == "HIGH"
