"""Autoscaling over HTTP without the fleet: the settings (the Vultr API key stored encrypted,
never answered or logged), the check, refusals, and the failure paths that need no host: an
instance that never becomes ready (deleted, history says where), a 429 storm and a lost
create answer (one instance, not two), and codeb killed mid scale-up (the orphan is found by
its tag and deleted after the restart). The cloud is the stateful Vultr fake on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from codeb.clock import SystemClock
from codeb.store.models import OperationEvent, OperationLog, ScalingSettings
from tests.executor.helpers import wait_operation
from tests.providers.vultr_fake import VultrFake, serve
from tests.support import free_port, live_api

KEY = "VULTR-SCALING-TEST-KEY-5f1c2e"
CLOUD = {"region": "ams", "plan": "vc2-1c-2gb", "os_id": 2625, "poll_s": 0.1}


@pytest.fixture
def cloud() -> Iterator[tuple[VultrFake, str]]:
    # main_ip stays 0.0.0.0: the instance never becomes ready (and nothing is dialled).
    fake = VultrFake(api_key=KEY, ip_after_s=3600)
    with serve(fake) as url:
        yield fake, url
    assert fake.violations == [], fake.violations


@pytest.fixture
def api(tmp_path):
    with live_api(tmp_path, clock=SystemClock()) as api:
        yield api


def configure(c: httpx.Client, url: str, **cloud) -> httpx.Response:
    return c.put(
        "/api/scaling/policy",
        json={"api_key": KEY, "cloud": {**CLOUD, "api_url": url, **cloud},
              "policy": {"min_servers": 0}},
    )  # fmt: skip


def test_policy_and_the_key_stored_encrypted(api, cloud):
    _, url = cloud
    with api.client() as c:
        r = c.get("/api/scaling/policy")
        assert r.status_code == 200, r.text
        assert r.json()["api_key_set"] is False and r.json()["configured"] is False
        assert r.json()["policy"]["out_cpu_pct"] == 75 and r.json()["policy"]["in_for_s"] == 900
        r = configure(c, url)
        assert r.status_code == 200, r.text
        assert r.json()["api_key_set"] is True and r.json()["configured"] is True
        assert KEY not in r.text
        assert KEY not in c.get("/api/scaling/policy").text
        # Bad input: a clear 422, nothing stored.
        for body in (
            {"policy": {"in_cpu_pct": 80, "out_cpu_pct": 70}},
            {"policy": {"min_servers": 5, "max_servers": 2}},
            {"policy": {"surprise": 1}},
            {"api_key": "short"},
            {"api_key": "x" * 20 + "\n"},
            {"cloud": {"api_url": "ftp://example.com"}},
            {"cloud": {"api_url": "https://user:pw@api.vultr.com/v2"}},
            {"cloud": {"environments": []}},
        ):
            bad = c.put("/api/scaling/policy", json=body)
            assert bad.status_code in (400, 409, 422), (body, bad.text)
            assert "error" in bad.json()
        assert c.get("/api/scaling/policy").json()["policy"]["in_cpu_pct"] == 30
    deps = api.deps
    with deps.db.connection_context():
        stored = ScalingSettings.get_by_id(1).api_key
        assert KEY not in stored and deps.box.decrypt(stored) == KEY
        logged = [json.dumps(row.details) for row in OperationLog.select()]
        assert logged and not any(KEY in line for line in logged)
    mode = (deps.settings.data_dir / "secret.key").stat().st_mode & 0o777
    assert mode == 0o600


def test_check_answers_the_decision_without_acting(api, cloud):
    fake, url = cloud
    with api.client() as c:
        assert configure(c, url).status_code == 200
        r = c.post("/api/scaling/check")
        assert r.status_code == 200, r.text
        decision = r.json()["decision"]
        assert decision["action"] == "none"
        assert decision["inputs"]["servers"] == 0 and "policy" in decision["inputs"]
        assert decision["reasons"]
        history = c.get("/api/scaling/history").json()
        assert history["events"][0]["kind"] == "check"
        assert history["events"][0]["decision"] == decision
    assert fake.live() == []


def test_refused_without_configuration_or_beyond_limits(api, cloud):
    fake, url = cloud
    with api.client() as c:
        r = c.post("/api/scaling/up", json={})
        assert r.status_code == 409 and "api_key" in r.text, r.text
        assert configure(c, url).status_code == 200
        r = c.put("/api/scaling/policy", json={"policy": {"max_servers": 0, "min_servers": 0}})
        assert r.status_code == 200, r.text
        r = c.post("/api/scaling/up", json={})
        assert r.status_code == 409 and "maximum" in r.text, r.text
        r = c.put("/api/scaling/policy",
                  json={"policy": {"max_servers": 3, "monthly_cost_cap": 5}})  # fmt: skip
        r = c.post("/api/scaling/up", json={})
        assert r.status_code == 409 and "cap" in r.text, r.text
        # Nothing to remove: no server was added by autoscaling.
        r = c.post("/api/scaling/down", json={})  # MEDIUM: asked first, refused once confirmed
        assert r.status_code == 202 and r.json()["status"] == "confirmation_required", r.text
        r = c.post("/api/scaling/down", json={},
                   headers={"X-Confirm-Token": r.json()["confirm_token"]})  # fmt: skip
        assert r.status_code == 409 and "none may be removed" in r.text, r.text
    assert fake.live() == [] and not any(m == "POST" for m, _ in fake.requests)


def _scale_up(c: httpx.Client) -> dict:
    r = c.post("/api/scaling/up", json={})
    assert r.status_code == 202, r.text
    return wait_operation(c, r.json()["result"]["operation"]["id"], timeout=120)


def test_never_ready_is_deleted_and_the_history_says_where(api, cloud):
    fake, url = cloud
    with api.client() as c:
        assert configure(c, url, ready_timeout_s=2).status_code == 200
        t0 = time.monotonic()
        op = _scale_up(c)
        assert op["status"] == "failed", op
        assert "wait_ready" in op["error"] and "not ready after 2 s" in op["error"], op
        assert time.monotonic() - t0 < 60
        event = c.get("/api/scaling/history", params={"kind": "up"}).json()["events"][0]
        assert event["status"] == "failed" and event["failed_step"] == "wait_ready", event
        assert [s["step"] for s in event["steps"]] == ["create", "wait_ready"]
        assert "deleted" in event["error"], event
        assert event["instance_id"] and event["duration_s"] is not None
        assert c.get("/api/servers").json()["servers"] == []
    assert fake.live() == []
    deleted = [p for m, p in fake.requests if m == "DELETE"]
    assert deleted == [f"/v2/instances/{event['instance_id']}"]


def test_429_storm_and_a_lost_answer_create_one_instance(api, cloud):
    fake, url = cloud
    with api.client() as c:
        assert configure(c, url, ready_timeout_s=1).status_code == 200
        fake.fail_next(429, times=3, retry_after=1)
        fake.lose_next_create_answer()
        op = _scale_up(c)
        assert op["status"] == "failed" and "wait_ready" in op["error"], op
    created = [p for m, p in fake.requests if m == "POST"]
    assert len(created) == 1, fake.requests  # retried by looking up the label, not re-sent
    assert len(fake.instances) == 1 and fake.live() == []
    with api.deps.db.connection_context():
        for ev in OperationEvent.select():
            assert KEY not in json.dumps(ev.data or {})


def _serve(data_dir, port: int) -> tuple[subprocess.Popen, str]:
    env = {
        **os.environ,
        "CODEB_DATA_DIR": str(data_dir),
        "CODEB_PORT": str(port),
        "CODEB_ALLOWED_NETWORKS": "127.0.0.0/8",
        "CODEB_SCHEDULER_TICK_S": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "codeb", "serve"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    key = ""
    seen: list[str] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        line = proc.stdout.readline()
        seen.append(line)
        if "shown once" in line:
            key = line.rsplit(" ", 1)[1].strip()
        if "serving on" in line:
            while time.monotonic() < deadline:
                try:
                    httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2)
                    return proc, key
                except httpx.TransportError:
                    time.sleep(0.1)
    proc.kill()
    raise AssertionError("codeb did not start: " + "".join(seen[-20:]))


def test_killed_mid_scale_up_the_orphan_is_deleted_after_restart(tmp_path, cloud):
    fake, url = cloud
    port = free_port()
    proc, key = _serve(tmp_path, port)
    base = f"http://127.0.0.1:{port}"
    headers = {"X-API-Key": key, "Content-Type": "application/json"}
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=30) as c:
            assert configure(c, url, ready_timeout_s=600).status_code == 200
            r = c.post("/api/scaling/up", json={})
            assert r.status_code == 202, r.text
            deadline = time.monotonic() + 60
            while not fake.live() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert len(fake.live()) == 1  # created, now waiting for it to be ready
            time.sleep(0.5)
        os.kill(proc.pid, signal.SIGKILL)  # by its pid: codeb dies mid scale-up
        proc.wait(timeout=30)
        assert len(fake.live()) == 1  # left billing, for now
        proc, _ = _serve(tmp_path, port)
        deadline = time.monotonic() + 60
        while fake.live() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert fake.live() == [], "the orphan was not deleted after the restart"
        # The same data directory: the first admin key still works.
        with httpx.Client(base_url=base, headers=headers, timeout=30) as c:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                events = c.get("/api/scaling/history").json()["events"]
                up = [e for e in events if e["kind"] == "up"]
                orphan = [e for e in events if e["kind"] == "orphan"]
                if up and up[0]["status"] == "failed" and orphan:
                    break
                time.sleep(0.2)
            assert orphan and orphan[0]["status"] == "deleted", events
            assert up[0]["status"] == "failed" and "interrupted" in up[0]["error"], up
            assert up[0]["failed_step"] == "wait_ready", up
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_scheduled_check_sweeps_orphans_and_acts_only_when_enabled(tmp_path, cloud):
    """The scheduled job with an injected clock: disabled, it only deletes orphans; enabled,
    CPU held above the threshold for the window scales up (through the gate, as codeb); a
    failed scale-up counts for the cooldown, so it is not retried at the next check."""
    import datetime as dt

    from codeb.clock import FrozenClock
    from codeb.features.scaling import service as scaling
    from codeb.providers.cloud import AUTOSCALED_TAG, CODEB_TAG, InstanceSpec, Vultr
    from codeb.store.models import ScalingSample

    fake, url = cloud
    clock = FrozenClock(dt.datetime(2026, 11, 30, 12, 0, 0))
    with live_api(tmp_path, clock=clock) as api, api.client() as c:
        deps = api.deps
        assert configure(c, url, ready_timeout_s=1).status_code == 200
        lost = Vultr(KEY, base_url=url).create_instance(
            InstanceSpec(label="codeb-app-lost", hostname="x", region="ams", plan="p",
                         os_id=1, tags=(CODEB_TAG, AUTOSCALED_TAG))
        )  # fmt: skip
        mine = Vultr(KEY, base_url=url).create_instance(
            InstanceSpec(label="not-autoscaled", hostname="y", region="ams", plan="p", os_id=1)
        )
        with deps.db.connection_context():
            out = scaling._scheduled_check(deps)
        assert out["skipped"] == "autoscaling is disabled", out
        assert out["orphans"]["deleted"] == [lost.id], out
        assert [i["id"] for i in fake.live()] == [mine.id]  # not codeb-autoscaled: untouched
        # Hot for 4 minutes (a sample every 30 s), then enabled: the next check scales up.
        now = clock.now()
        with deps.db.connection_context():
            for i in range(9):
                ScalingSample.create(at=now - dt.timedelta(seconds=30 * i), cpu_pct=92.0,
                                     mem_pct=40.0, servers={})  # fmt: skip
        r = c.put("/api/scaling/policy", json={"enabled": True})
        assert r.status_code == 200 and r.json()["policy"]["enabled"] is True, r.text
        with deps.db.connection_context():
            out = scaling._scheduled_check(deps)
        assert out.get("acted") == "up", out
        up = c.get("/api/scaling/history", params={"kind": "up"}).json()["events"][0]
        assert up["trigger"] == "scheduled" and up["decision"]["action"] == "up"
        op = wait_operation(c, up["operation_id"], timeout=120)
        assert op["status"] == "failed" and "wait_ready" in op["error"]
        check = c.get("/api/scaling/history", params={"kind": "check"}).json()["events"][0]
        assert check["trigger"] == "scheduled" and "92" in json.dumps(check["decision"])
        clock.advance(seconds=30)
        with deps.db.connection_context():
            ScalingSample.create(at=clock.now(), cpu_pct=95.0, mem_pct=40.0, servers={})
            out = scaling._scheduled_check(deps)
        assert "acted" not in out and "cooling down" in " ".join(out["decision"]["reasons"])
    assert [i["id"] for i in fake.live()] == [mine.id]
