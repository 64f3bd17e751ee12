"""Autoscaling's figures through GET /api/metrics (as Prometheus scrapes it, with a readonly
Bearer key): enabled/configured, the pool and its limits, the latest load, the last decision,
scale actions by outcome (a real scale-up that fails at wait_ready against the Vultr fake),
and the monthly cost estimate against the cap."""

from __future__ import annotations

import httpx

from codeb.clock import SystemClock
from codeb.store.models import ScalingEvent, ScalingSample, Server
from tests.executor.helpers import wait_operation
from tests.metrics.test_metrics_api import parse
from tests.providers.vultr_fake import VultrFake, serve
from tests.support import live_api

KEY = "VULTR-METRICS-TEST-KEY-4410ab"


def scrape(api, reader: str) -> dict:
    r = httpx.get(f"{api.base_url}/api/metrics",
                  headers={"Authorization": f"Bearer {reader}"}, timeout=30)  # fmt: skip
    assert r.status_code == 200, r.text
    return parse(r.text)


def value(got: dict, name: str, **labels: str) -> float | None:
    return got.get((name, tuple(sorted(labels.items()))))


def test_scaling_metrics(tmp_path):
    fake = VultrFake(api_key=KEY, ip_after_s=3600)
    with serve(fake) as url, live_api(tmp_path, clock=SystemClock()) as api:
        reader = api.new_key("prometheus", "readonly")
        got = scrape(api, reader)
        assert value(got, "codeb_metrics_collector_up", collector="scaling") == 1
        assert value(got, "codeb_scaling_enabled") == 0
        assert value(got, "codeb_scaling_configured") == 0
        assert value(got, "codeb_scaling_app_servers") == 0
        assert value(got, "codeb_scaling_monthly_cost_cap") == 100
        assert value(got, "codeb_scaling_servers_limit", bound="max") == 5
        assert value(got, "codeb_scaling_last_decision", action="none") is None  # none yet

        with api.client() as c:
            r = c.put("/api/scaling/policy", json={
                "api_key": KEY, "enabled": True,
                "policy": {"min_servers": 0, "max_servers": 4, "monthly_cost_cap": 60,
                           "server_monthly_cost": 12},
                "cloud": {"api_url": url, "region": "ams", "plan": "vc2-1c-2gb",
                          "os_id": 2625, "ready_timeout_s": 1, "poll_s": 0.1},
            })  # fmt: skip
            assert r.status_code == 200, r.text
            assert c.post("/api/scaling/check").json()["decision"]["action"] == "none"
            r = c.post("/api/scaling/up", json={})
            assert r.status_code == 202, r.text
            op = wait_operation(c, r.json()["result"]["operation"]["id"], timeout=120)
            assert op["status"] == "failed", op
        deps = api.deps
        with deps.db.connection_context():
            # An app server autoscaling added earlier (its up event succeeded), and a sample.
            now = deps.clock.now()
            Server.create(name="codeb-app-1", ip="127.0.0.41", role="app", provider="vultr",
                          provider_id="inst-1", status="ready")  # fmt: skip
            ScalingEvent.create(kind="up", trigger="api", requested_by="admin",
                                status="succeeded", instance_id="inst-1", started_at=now,
                                finished_at=now)  # fmt: skip
            ScalingSample.create(at=now, cpu_pct=81.5, mem_pct=40.0, servers={})
        got = scrape(api, reader)
        assert value(got, "codeb_scaling_enabled") == 1
        assert value(got, "codeb_scaling_configured") == 1
        assert value(got, "codeb_scaling_app_servers") == 1
        assert value(got, "codeb_scaling_autoscaled_servers") == 1
        assert value(got, "codeb_scaling_monthly_cost") == 12
        assert value(got, "codeb_scaling_monthly_cost_cap") == 60
        assert value(got, "codeb_scaling_servers_limit", bound="min") == 0
        assert value(got, "codeb_scaling_servers_limit", bound="max") == 4
        assert value(got, "codeb_scaling_pool_load_percent", resource="cpu") == 81.5
        assert value(got, "codeb_scaling_pool_load_percent", resource="memory") == 40
        assert 0 <= value(got, "codeb_scaling_sample_age_seconds") < 60
        assert value(got, "codeb_scaling_last_decision", action="none") == 1
        assert value(got, "codeb_scaling_last_decision", action="up") == 0
        assert value(got, "codeb_scaling_last_decision_timestamp_seconds") > 1.7e9
        assert value(got, "codeb_scaling_actions_total", kind="up", outcome="failed") == 1
        assert value(got, "codeb_scaling_actions_total", kind="up", outcome="succeeded") == 1
        failed_s = value(got, "codeb_scaling_last_action_duration_seconds", kind="up",
                         outcome="failed")  # fmt: skip
        succeeded_s = value(got, "codeb_scaling_last_action_duration_seconds", kind="up",
                            outcome="succeeded")  # fmt: skip
        # The latest finished one is the succeeded row written last.
        assert succeeded_s == 0 and failed_s is None, (failed_s, succeeded_s)
        assert value(got, "codeb_scaling_in_flight") == 0
    assert fake.live() == []
