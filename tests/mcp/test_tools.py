"""The MCP tools over a real codeb API (loopback HTTP, SQLite), with an agent key."""

from __future__ import annotations

import pytest

from codeb.client import ApiError
from codeb.mcp.hints import annotations_for
from codeb.protection.rules import RULES, DangerLevel, Rule
from codeb.services.context import SYSTEM
from codeb.store.models import Container, Project, Server

READ_ONLY = {
    "list_projects", "show_project", "preview_deploy", "container_status", "list_operations",
    "show_operation", "operation_log", "follow_operation", "list_protection_queue",
    "show_protection_entry", "list_domains", "domain_status", "list_backups", "backup_status",
    "scaling_policy", "scaling_history",
}  # fmt: skip
# What an assistant must never be able to do through codeb's MCP server.
FORBIDDEN_WORDS = ("confirm", "approve", "key", "grant", "override", "rule")


def test_tools_are_curated_and_their_hints_follow_the_rules(mcp):
    from codeb.mcp.server import Tools, served_routes, tool_specs

    tools = {t.name: t for t in mcp.list_tools()}
    # A tool is offered exactly when the API serves its route (features not wired into this
    # codeb have no tools), and the core ones always are.
    served = served_routes(mcp.client)
    specs = {s.name: s for s in tool_specs(Tools(mcp.client))}
    assert set(tools) == {n for n, s in specs.items() if s.route in served}
    core = {"list_projects", "deploy_staging", "deploy_production", "follow_operation",
            "cancel_operation", "show_protection_entry", "stop_container"}  # fmt: skip
    assert core <= set(tools)
    rules = {r["operation"]: r for r in mcp.client.protection_rules()["rules"]}
    for name, tool in tools.items():
        assert not any(word in name for word in FORBIDDEN_WORDS), name
        operation = (tool.meta or {}).get("codeb/operation")
        a = tool.annotations
        assert (tool.meta or {}).get("codeb/route") in served
        if name in READ_ONLY:
            assert operation is None, name
            assert (a.read_only_hint, a.destructive_hint, a.idempotent_hint) == (True, False, True)
        else:
            rule = rules[operation]
            level = DangerLevel[rule["level"]]
            assert a.read_only_hint is False, name
            assert a.destructive_hint is (level >= DangerLevel.MEDIUM), (name, rule)
            assert a.idempotent_hint is (level <= DangerLevel.SAFE), (name, rule)
        assert a.open_world_hint is False, name
    # Spot checks that the derivation says what the table means.
    assert tools["deploy_staging"].annotations.destructive_hint is False
    assert tools["deploy_production"].annotations.destructive_hint is True
    assert tools["stop_container"].annotations.destructive_hint is True
    assert tools["delete_project"].annotations.destructive_hint is True


def test_a_raised_rule_raises_the_tool_hints(tmp_path):
    """Hints come from the API's effective rules: an operator who raises a rule raises them."""
    from tests.mcp.conftest import mcp_for
    from tests.support import live_api

    stricter = {"container_restart": {"level": "HIGH"}}
    with live_api(tmp_path / "d", protection_rules=stricter) as api:
        for m in mcp_for(api):
            tools = {t.name: t for t in m.list_tools()}
            assert tools["restart_container"].annotations.destructive_hint is True
            assert tools["start_container"].annotations.destructive_hint is False


def test_annotations_for_every_level():
    for level in DangerLevel:
        a = annotations_for(Rule("x", level))
        assert a.read_only_hint is False
        assert a.destructive_hint is (level >= DangerLevel.MEDIUM)
    assert annotations_for(None).read_only_hint is True
    # Every operation a tool requests is a rule of the table.
    from codeb.mcp.server import Tools, tool_specs

    ops = {s.operation for s in tool_specs(Tools(None)) if s.operation}  # type: ignore[arg-type]
    assert ops <= set(RULES)


def test_projects_create_list_show(mcp):
    created = mcp.call("create_project", name="shop", type="nodejs")
    assert created["status"] == "done"
    project = created["result"]
    assert set(project["env_files"]) == {"local", "staging", "production"}
    assert "DATABASE_URL=" in project["env_files"]["staging"]
    listed = mcp.call("list_projects")
    assert [p["name"] for p in listed["projects"]] == ["shop"]
    shown = mcp.call("show_project", project="shop")
    assert shown["name"] == "shop" and "env_files" not in shown
    # The operation log names the MCP client as the requester.
    with mcp.api.client() as c:
        rows = c.get("/api/protection/logs", params={"operation": "project_create"}).json()
    assert rows["logs"][0]["requested_by"] == "mcp"
    assert rows["logs"][0]["key_name"] == "assistant"


def test_errors_are_clear(mcp):
    err = mcp.error("show_project", project="nope")
    assert err["error"] == "not_found" and err["status"] == 404
    err = mcp.error("create_project", name="Bad Name!")
    assert err["status"] == 422
    assert mcp.call("list_projects")["projects"] == []  # nothing half-made


def test_delete_comes_back_queued_for_a_person(mcp):
    mcp.call("create_project", name="shop")
    answer = mcp.call("delete_project", project="shop")
    assert answer["status"] == "needs_a_person"
    assert answer["requested"]["operation"] == "project_delete"
    assert answer["requested"]["level"] == "CRITICAL"
    entry_id, token = answer["queue_entry_id"], answer["confirm_token"]
    commands = [s["command"] for s in answer["person_runs"]]
    assert f"codeb protection confirm {token}" in commands
    assert f"codeb protection approve {entry_id}" in commands
    assert f"codeb protection confirm {token} --name shop" in commands
    needs = {r["requirement"] for r in answer["still_required"]}
    assert {"user_confirmation", "admin_approval", "cooldown_48h"} <= needs
    assert answer["poll"] == {"tool": "show_protection_entry", "arguments": {"entry_id": entry_id}}
    # Pollable, and listed in the queue; the project is still there.
    assert mcp.call("show_protection_entry", entry_id=entry_id)["status"] == "pending"
    queue = mcp.call("list_protection_queue")
    assert [e["id"] for e in queue["entries"]] == [entry_id]
    assert mcp.call("show_project", project="shop")["name"] == "shop"
    # The agent's own key cannot carry it on, whatever it tries.
    with pytest.raises(ApiError) as refused:
        mcp.client.confirm(token)
    assert refused.value.status == 403
    # A person can (an admin confirms the agent's request with the token it showed).
    with mcp.api.client() as c:
        r = c.post("/api/protection/confirm", json={"token": token})
    assert r.status_code in (200, 202), r.text
    assert mcp.call("show_protection_entry", entry_id=entry_id)["confirmations"] == 1


def test_medium_stop_needs_a_person(mcp):
    """A container stop (MEDIUM) answers with the token and the command a person runs."""
    mcp.call("create_project", name="shop")
    with mcp.api.client() as c:
        body = {"name": "app7", "ip": "127.0.0.7", "role": "app", "bootstrap": False}
        assert c.post("/api/servers", json=body).status_code == 201
    with mcp.api.deps.db.connection_context():
        Server.update(status="ready").execute()
        Container.create(
            id="ct_mcptest", project=Project.get(Project.name == "shop").id,
            environment="staging", server_type="app", server_ip="127.0.0.7",
            container_name="shop-staging-app", image="reg.example/a:1", status="running",
        )  # fmt: skip
    answer = mcp.call("stop_container", container_id="ct_mcptest")
    assert answer["status"] == "needs_a_person", answer
    assert answer["requested"]["level"] == "MEDIUM"
    assert answer["person_runs"][0]["command"] == (
        f"codeb protection confirm {answer['confirm_token']}"
    )
    assert mcp.call("show_protection_entry", entry_id=answer["queue_entry_id"])["status"] == (
        "pending"
    )


def test_the_api_refuses_confirm_approve_and_keys_for_the_mcp_key(mcp):
    """The MCP server's own key, used directly against the API (as a compromised or misled
    MCP server would): no confirmation, no approval, no key, no cancel of others' work."""
    c = mcp.client
    mcp.call("create_project", name="shop")
    queued = mcp.call("delete_project", project="shop")
    for attempt in (
        lambda: c.confirm(queued["confirm_token"]),
        lambda: c.confirm(queued["confirm_token"], "shop"),
        lambda: c.approve(queued["queue_entry_id"]),
        lambda: c.request("POST", "/api/keys", json={"name": "x", "role": "agent"}),
        lambda: c.request("POST", "/api/keys", json={"name": "y", "role": "admin"}),
        lambda: c.request("DELETE", "/api/keys/assistant"),
        lambda: c.request("GET", "/api/keys"),
    ):
        with pytest.raises(ApiError) as refused:
            attempt()
        assert refused.value.status == 403, refused.value
    # Nothing moved: the entry is unconfirmed, no key was made.
    entry = mcp.call("show_protection_entry", entry_id=queued["queue_entry_id"])
    assert entry["confirmations"] == 0 and entry["status"] == "pending"
    with mcp.api.client() as admin:
        names = [k["name"] for k in admin.get("/api/keys").json()["keys"]]
    assert "x" not in names and "y" not in names
    # The agent may withdraw its own request, though (cancel own).
    c.cancel(entry_id=queued["queue_entry_id"])
    assert mcp.call("show_protection_entry", entry_id=queued["queue_entry_id"])["status"] == (
        "cancelled"
    )


def test_cancel_only_own_operations(mcp):
    """An operation started by another key cannot be cancelled through MCP."""
    from codeb.services import operations

    deps = mcp.api.deps
    with deps.db.connection_context(), deps.write():
        op = operations.create_operation(deps, SYSTEM, "drift_check", [])
    err = mcp.error("cancel_operation", operation_id=op.id)
    assert err["status"] == 403, err


def test_tools_of_an_unserved_route_are_left_out(mcp):
    from codeb.mcp import build_server

    server = build_server(mcp.client, routes={"get /api/projects", "post /api/backups"})
    mcp.server = server
    names = {t.name for t in mcp.list_tools()}
    assert names == {"list_projects", "create_backup"}


def test_domain_and_backup_tools_when_served(mcp):
    """Where this codeb serves domains and backups, their tools reach the API (a domain needs
    proxy and dns servers, a backup a storage server: none here, so the API says so)."""
    names = {t.name for t in mcp.list_tools()}
    mcp.call("create_project", name="shop")
    if "add_domain" in names:
        err = mcp.error("add_domain", domain="shop.example.test", project="shop",
                        environment="staging")  # fmt: skip
        assert err["status"] in (404, 409, 422), err
        assert mcp.call("list_domains")["domains"] == []
    if "create_backup" in names:
        err = mcp.error("create_backup", project="shop", environment="staging")
        assert err["status"] in (404, 409, 422), err
        assert mcp.call("list_backups")["backups"] == []
    if not {"add_domain", "create_backup"} & names:
        pytest.skip("this codeb serves neither domains nor backups yet")
