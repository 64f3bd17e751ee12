"""The orphan sweep and the scheduled check, against the Vultr fake on loopback with a frozen
clock: an instance tagged codeb-autoscaled is kept when a registered server came out of it
(adopted) or a scale-up still runs for it, and deleted (its server unregistered first, the
scale-up's event closed saying where it stopped) when codeb was killed after registering it;
and load that flaps for an hour, checked every 30 s by the scheduled job, buys nothing."""

from __future__ import annotations

import datetime as dt

import pytest

from codeb.clock import FrozenClock
from codeb.features.scaling import jobs
from codeb.features.scaling import service as scaling
from codeb.providers.cloud import AUTOSCALED_TAG, CODEB_TAG, InstanceSpec, Vultr
from codeb.services import operations
from codeb.services.context import SYSTEM
from codeb.store.models import ScalingEvent, ScalingSample, Server
from tests.providers.vultr_fake import VultrFake, serve
from tests.scaling.test_scaling_api import configure
from tests.support import live_api

KEY = "VULTR-SCALING-TEST-KEY-5f1c2e"  # the one test_scaling_api.configure sends
START = dt.datetime(2026, 11, 30, 12, 0, 0)


@pytest.fixture
def cloud():
    fake = VultrFake(api_key=KEY, ip_after_s=3600)
    with serve(fake) as url:
        yield fake, url
    assert fake.violations == [], fake.violations


def tagged(url: str, label: str):
    return Vultr(KEY, base_url=url).create_instance(
        InstanceSpec(label=label, hostname=label, region="ams", plan="vc2-1c-2gb", os_id=1,
                     tags=(CODEB_TAG, AUTOSCALED_TAG))
    )  # fmt: skip


def up_event(deps, label: str, instance_id: str, op_status: str, **fields) -> ScalingEvent:
    with deps.write():
        op = operations.create_operation(deps, SYSTEM, "scale_up", [], {})
        op.status = op_status
        op.save()
        fields.setdefault("steps", [])
        return ScalingEvent.create(kind="up", trigger="api", requested_by="admin",
                                   label=label, instance_id=instance_id, operation_id=op.id,
                                   started_at=deps.clock.now(), **fields)  # fmt: skip


def test_adopted_kept_in_flight_kept_killed_after_register_deleted(tmp_path, cloud):
    fake, url = cloud
    clock = FrozenClock(START)
    with live_api(tmp_path, clock=clock) as api, api.client() as c:
        deps = api.deps
        assert configure(c, url).status_code == 200
        by_hand = tagged(url, "codeb-app-byhand")
        running = tagged(url, "codeb-app-running")
        killed = tagged(url, "codeb-app-killed")
        with deps.db.connection_context():
            # Registered by a person with this instance: adopted, never deleted.
            Server.create(name="byhand", ip="127.0.0.51", role="app", provider="vultr",
                          provider_id=by_hand.id, status="ready")  # fmt: skip
            # A scale-up still running owns its instance.
            up_event(deps, running.label, running.id, "running", status="running")
            # codeb was killed during the bootstrap of a server it had registered: at start-up
            # its operation was marked interrupted, the event still says running.
            event = up_event(
                deps, killed.label, killed.id, "interrupted", status="running",
                steps=[{"step": s, "status": "succeeded"} for s in
                       ("create", "wait_ready", "pin_host_key", "register")]
                + [{"step": "bootstrap", "status": "running"}],
            )  # fmt: skip
            Server.create(name=killed.label, ip="127.0.0.52", role="app", provider="vultr",
                          provider_id=killed.id, status="bootstrapping")  # fmt: skip
            out = jobs.sweep_orphans(deps, trigger="startup")
        assert out["deleted"] == [killed.id] and out["kept"] == 2, out
        assert sorted(i["id"] for i in fake.live()) == sorted([by_hand.id, running.id])
        with deps.db.connection_context():
            assert Server.get(Server.name == "byhand").status == "ready"
            gone = Server.get(Server.provider_id == killed.id)
            assert gone.status == "deleted" and gone.ip != "127.0.0.52"
            closed = ScalingEvent.get_by_id(event.id)
            assert closed.status == "failed" and closed.failed_step == "bootstrap", closed.error
            assert "interrupted at bootstrap" in closed.error and "deleted" in closed.error
        orphan = c.get("/api/scaling/history", params={"kind": "orphan"}).json()["events"]
        assert [(e["instance_id"], e["status"]) for e in orphan] == [(killed.id, "deleted")]
        assert orphan[0]["server"] == killed.label
        assert "bootstrap" in orphan[0]["decision"]["reason"]
        # Once the scale-up ends without a server, its instance is an orphan too.
        with deps.db.connection_context():
            ScalingEvent.update(status="failed").where(
                ScalingEvent.instance_id == running.id
            ).execute()
            from codeb.store.models import Operation

            Operation.update(status="failed").where(
                Operation.id
                == ScalingEvent.get(ScalingEvent.instance_id == running.id).operation_id
            ).execute()
            out = jobs.sweep_orphans(deps)
        assert out["deleted"] == [running.id], out
        assert [i["id"] for i in fake.live()] == [by_hand.id]


def test_flapping_load_for_an_hour_buys_nothing(tmp_path, cloud):
    fake, url = cloud
    clock = FrozenClock(START)
    with live_api(tmp_path, clock=clock) as api, api.client() as c:
        deps = api.deps
        assert configure(c, url).status_code == 200
        r = c.put("/api/scaling/policy", json={"enabled": True,
                                               "policy": {"max_servers": 3}})  # fmt: skip
        assert r.status_code == 200, r.text
        outs = []
        for step in range(120):  # every 30 s for an hour; 2 minutes hot, 1 minute quiet
            hot = (step % 6) < 4
            with deps.db.connection_context():
                ScalingSample.create(at=clock.now(), cpu_pct=96.0 if hot else 8.0,
                                     mem_pct=20.0, servers={})  # fmt: skip
                outs.append(scaling._scheduled_check(deps))
            clock.advance(seconds=30)
        assert not [o for o in outs if "acted" in o or "refused" in o], outs
        assert all(o["decision"]["action"] == "none" for o in outs)
        history = c.get("/api/scaling/history").json()
        assert not [e for e in history["events"] if e["kind"] in ("up", "down")]
        # Only what said something new was recorded, not 120 rows.
        assert history["total"] < 10, history["total"]
    assert not [m for m, _ in fake.requests if m == "POST"]
