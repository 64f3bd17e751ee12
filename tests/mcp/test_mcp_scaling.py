"""The autoscaling tools over a real codeb API (loopback HTTP, SQLite) with an agent key, and
the Vultr fake on loopback: the policy and history read, the check answers the decision, a
scale-up (LOW) starts at once through the gate as the agent, a scale-down (MEDIUM) comes back
for a person, exactly as over HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from codeb.client import ApiError
from codeb.clock import SystemClock
from codeb.store.models import OperationLog, Server
from tests.mcp.conftest import Mcp, mcp_for
from tests.providers.vultr_fake import VultrFake, serve
from tests.support import live_api

KEY = "VULTR-MCP-TEST-KEY-77c3a9e1"
TOOLS = {"scaling_policy", "scaling_history", "scaling_check", "scale_up", "scale_down"}


@pytest.fixture
def scaled(tmp_path) -> Iterator[tuple[Mcp, VultrFake]]:
    """Autoscaling configured by a person (the admin key) against the fake, whose instances
    never get an address (so a scale-up fails at wait_ready after 1 s and is deleted)."""
    fake = VultrFake(api_key=KEY, ip_after_s=3600)
    with serve(fake) as url, live_api(tmp_path / "data", clock=SystemClock()) as api:
        with api.client() as c:
            r = c.put("/api/scaling/policy", json={
                "api_key": KEY, "policy": {"min_servers": 0},
                "cloud": {"api_url": url, "region": "ams", "plan": "vc2-1c-2gb",
                          "os_id": 2625, "ready_timeout_s": 1, "poll_s": 0.1},
            })  # fmt: skip
            assert r.status_code == 200, r.text
        for m in mcp_for(api):
            yield m, fake
    assert fake.violations == [], fake.violations


def test_the_scaling_tools_and_their_hints(scaled):
    m, _ = scaled
    tools = {t.name: t for t in m.list_tools()}
    assert TOOLS <= set(tools)
    hints = {
        name: (a.read_only_hint, a.destructive_hint, a.idempotent_hint)
        for name, a in ((n, tools[n].annotations) for n in TOOLS)
    }
    assert hints == {
        "scaling_policy": (True, False, True),
        "scaling_history": (True, False, True),
        "scaling_check": (False, False, True),  # SAFE: it only looks
        "scale_up": (False, False, False),  # LOW: runs at once, costs money
        "scale_down": (False, True, False),  # MEDIUM: a person confirms
    }
    assert {(tools[n].meta or {}).get("codeb/operation") for n in TOOLS} == {
        None, "scaling_check", "scale_up", "scale_down"}  # fmt: skip
    # No tool changes the settings or touches the API key.
    assert not any("configure" in n or "key" in n for n in tools)


def test_policy_check_and_history_read(scaled):
    m, fake = scaled
    policy = m.call("scaling_policy")
    assert policy["api_key_set"] is True and policy["configured"] is True
    assert policy["policy"]["out_cpu_pct"] == 75 and KEY not in str(policy)
    answer = m.call("scaling_check")
    assert answer["status"] == "done", answer
    decision = answer["result"]["decision"]
    assert decision["action"] == "none" and decision["reasons"], decision
    assert "autoscaling is disabled: nothing acts on it" in decision["reasons"]
    history = m.call("scaling_history", kind="check")
    assert history["events"][0]["decision"] == decision
    assert m.call("scaling_history", kind="up")["events"] == []
    assert fake.live() == []  # nothing bought
    err = m.error("scaling_history", limit=0)
    assert err["status"] == 422, err


def test_scale_up_starts_through_the_gate_as_the_agent(scaled):
    m, fake = scaled
    answer = m.call("scale_up")
    assert answer["status"] == "started", answer
    op_id = answer["operation"]["id"]
    followed = m.call("follow_operation", operation_id=op_id, wait_seconds=120)
    assert followed["finished"] and followed["operation"]["status"] == "failed", followed
    assert "wait_ready" in followed["operation"]["error"]
    up = m.call("scaling_history", kind="up")["events"][0]
    assert up["failed_step"] == "wait_ready" and "deleted" in up["error"], up
    assert fake.live() == []  # the instance it created was deleted
    with m.api.deps.db.connection_context():
        logged = OperationLog.get(OperationLog.operation == "scale_up")
        assert (logged.requested_by, logged.key_name) == ("mcp", "assistant")
    # Beyond the policy's limits it is refused, as over HTTP.
    with m.api.client() as c:
        r = c.put("/api/scaling/policy", json={"policy": {"max_servers": 0}})
        assert r.status_code == 200, r.text
    err = m.error("scale_up")
    assert err["status"] == 409 and "maximum" in err["message"], err


def test_scale_down_needs_a_person_and_refuses_what_autoscaling_did_not_add(scaled):
    m, fake = scaled
    with m.api.deps.db.connection_context():
        Server.create(name="db", ip="127.0.0.31", role="db", status="ready")
    err = m.error("scale_down", server="db")
    assert err["status"] == 409 and "not created by autoscaling" in err["message"], err
    answer = m.call("scale_down")
    assert answer["status"] == "needs_a_person", answer
    assert answer["requested"]["operation"] == "scale_down"
    assert answer["requested"]["level"] == "MEDIUM"
    token = answer["confirm_token"]
    assert answer["person_runs"][0]["command"] == f"codeb protection confirm {token}"
    # The agent cannot carry it on; a person can, and then nothing may be removed.
    with pytest.raises(ApiError) as refused:
        m.client.confirm(token)
    assert refused.value.status == 403
    with m.api.client() as c:
        r = c.post("/api/protection/confirm", json={"token": token})
    assert r.status_code == 409 and "none may be removed" in r.text, r.text
    assert not any(method == "DELETE" for method, _ in fake.requests)
