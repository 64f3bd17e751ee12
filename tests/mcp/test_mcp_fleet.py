"""An assistant through codeb's MCP server on the real fleet: a staging deploy runs and is
followed to its end; a production deploy of the same image comes back as "needs a person";
once a person confirms with the command the assistant was given, it runs; a delete comes back
queued. All through the SDK's in-process client and the API over loopback HTTP."""

from __future__ import annotations

import ipaddress
import time

import httpx
import pytest

from codeb.client import CodebClient
from codeb.clock import SystemClock
from codeb.mcp import build_server
from tests.executor.helpers import register_fleet
from tests.mcp.conftest import Mcp
from tests.support import live_api

pytestmark = pytest.mark.fleet
APP = "localhost/codeb-test-app"
PROJECT = "mcpshop"


@pytest.fixture(scope="module")
def fleet_mcp(fleet, tmp_path_factory):
    net = str(ipaddress.ip_network(f"{fleet.hosts[0].ip}/24", strict=False))
    with live_api(
        tmp_path_factory.mktemp("mcp"),
        clock=SystemClock(),
        allowed_networks=net,
        ssh_private_key_file=fleet.key_path,
    ) as api:
        with api.client() as c:
            register_fleet(c, fleet)
        key = api.new_key("assistant", "agent")
        client = CodebClient(api.base_url, key, "mcp")
        try:
            yield Mcp(api, key, client, build_server(client))
        finally:
            client.close()
            for host in fleet:
                host.ssh(
                    f"systemctl stop '{PROJECT}-*' 2>/dev/null; "
                    f"rm -f /etc/containers/systemd/{PROJECT}-*; systemctl daemon-reload; "
                    f"podman rm -af >/dev/null 2>&1; podman volume prune -f >/dev/null 2>&1; "
                    f"rm -rf /etc/codeb/env/{PROJECT}-* /etc/codeb/redis/{PROJECT}-*"
                )


def test_an_assistant_deploys_and_a_person_decides(fleet, fleet_mcp):
    m = fleet_mcp
    app = fleet["app"]
    assert m.call("create_project", name=PROJECT)["status"] == "done"

    # Staging: LOW, runs at once; the assistant follows it to its end.
    t0 = time.monotonic()
    started = m.call("deploy_staging", project=PROJECT, image=f"{APP}:v1")
    assert started["status"] == "started", started
    op_id = started["operation"]["id"]
    followed = m.call("follow_operation", operation_id=op_id, wait_seconds=300)
    took = time.monotonic() - t0
    assert followed["finished"] is True
    assert followed["operation"]["status"] == "succeeded", followed["operation"]
    assert any(e.get("task") for e in followed["events"])
    print(f"staging deploy through MCP, followed to its end: {took:.1f}s")
    staging = m.call("container_status", project=PROJECT, environment="staging")
    app_row = next(c for c in staging["containers"] if c["server_type"] == "app")
    port = app_row["port_external"]
    assert "v1" in httpx.get(f"http://{app.ip}:{port}/", timeout=5).text
    log = m.call("operation_log", operation_id=op_id)
    assert log["events"] and log["finished"] is True

    # Production: MEDIUM. The same image is tested in staging, so it is not refused: it needs
    # a person, who gets the exact command from the assistant.
    answer = m.call("deploy_production", project=PROJECT, image=f"{APP}:v1")
    assert answer["status"] == "needs_a_person", answer
    assert answer["requested"]["operation"] == "deploy_production"
    token, entry_id = answer["confirm_token"], answer["queue_entry_id"]
    assert answer["person_runs"][0]["command"] == f"codeb protection confirm {token}"
    assert m.call("show_protection_entry", entry_id=entry_id)["status"] == "pending"
    assert not m.call("container_status", project=PROJECT, environment="production")["containers"]
    # The person runs it (an operator key of a person); the assistant polls and follows.
    person = m.api.new_key("alice", "operator")
    with m.api.client(person) as c:
        r = c.post("/api/protection/confirm", json={"token": token})
    assert r.status_code == 202, r.text
    assert m.call("show_protection_entry", entry_id=entry_id)["status"] == "executed"
    prod_op = r.json()["result"]["operation"]["id"]
    assert (
        m.call("follow_operation", operation_id=prod_op, wait_seconds=300)["operation"]["status"]
        == "succeeded"
    )

    # An image never tested in staging is refused outright, naming what is missing.
    err = m.error("deploy_production", project=PROJECT, image=f"{APP}:v2")
    assert err["error"] == "protection_refused"
    assert {u["requirement"] for u in err["details"]["unmet"]} >= {"staging_tested"}

    # A delete comes back queued (CRITICAL), and nothing is deleted.
    queued = m.call("delete_project", project=PROJECT)
    assert queued["status"] == "needs_a_person" and queued["requested"]["level"] == "CRITICAL"
    assert any(s["command"].startswith("codeb protection approve") for s in queued["person_runs"])
    assert "v1" in httpx.get(f"http://{app.ip}:{port}/", timeout=5).text
