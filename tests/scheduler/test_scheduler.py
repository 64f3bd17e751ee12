"""The scheduler: due jobs run once per interval, leases in the database keep two schedulers
(threads, processes) from running one job twice, expired leases are taken over, failures are
recorded and retried, and GET /api/schedules shows it all. Time is a FrozenClock."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from codeb.app import build_deps
from codeb.clock import FrozenClock
from codeb.config import REPO_ROOT, SettingError
from codeb.services.context import Deps
from codeb.services.scheduler import Job, Scheduler, by_name, views
from codeb.store.models import Container, OperationLog, Project, Schedule
from tests.support import live_api, make_settings

START = dt.datetime(2026, 3, 1, 9, 0, 0)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


@pytest.fixture
def deps(tmp_path: Path, clock: FrozenClock) -> Iterator[Deps]:
    d = build_deps(make_settings(tmp_path / "data"), clock)
    yield d
    d.db.close()


class Counter:
    """A job body that counts its runs and fails while `failing` is set."""

    def __init__(self, pause: float = 0.0) -> None:
        self.runs = 0
        self.failing = False
        self.pause = pause
        self._lock = threading.Lock()

    def __call__(self, deps: Deps) -> dict:
        with self._lock:
            self.runs += 1
            n = self.runs
        time.sleep(self.pause)
        if self.failing:
            raise RuntimeError("the backup host did not answer")
        return {"run": n}


def one_job(counter: Counter, minutes: int = 1) -> dict[str, Job]:
    return {"count": Job("count", "counts", dt.timedelta(minutes=minutes), counter)}


def row(deps: Deps, name: str = "count") -> Schedule:
    with deps.db.connection_context():
        return Schedule.get_by_id(name)


def running(deps: Deps, jobs: dict[str, Job], now: dt.datetime) -> bool:
    with deps.db.connection_context():
        return views(jobs, now)[0]["running"]


def log_rows(deps: Deps, job: str = "count") -> list[OperationLog]:
    with deps.db.connection_context():
        return list(
            OperationLog.select()
            .where((OperationLog.operation == "scheduled_job") & (OperationLog.target == job))
            .order_by(OperationLog.id)
        )


def test_a_due_job_runs_once_per_interval(deps, clock):
    counter = Counter()
    s = Scheduler(deps, one_job(counter, minutes=5))
    assert s.tick() == ["count"]  # a new job is due at once
    assert s.tick() == []  # same moment: already ran
    clock.advance(minutes=4, seconds=59)
    assert s.tick() == []
    clock.advance(seconds=1)
    assert s.tick() == ["count"]
    assert counter.runs == 2
    r = row(deps)
    assert r.last_status == "succeeded" and r.last_result == {"run": 2}
    assert r.next_run_at == START + dt.timedelta(minutes=10)
    assert r.lease_owner is None and r.last_error is None
    logged = log_rows(deps)
    assert [x.status for x in logged] == ["executed", "executed"]
    assert logged[-1].details == {
        "job": "count",
        "status": "succeeded",
        "result": {"run": 2},
        "error": None,
    }


def test_a_failing_job_records_its_error_and_is_retried_next_interval(deps, clock):
    counter = Counter()
    counter.failing = True
    s = Scheduler(deps, one_job(counter))
    assert s.tick() == ["count"]
    r = row(deps)
    assert r.last_status == "failed"
    assert r.last_error == "RuntimeError: the backup host did not answer"
    assert r.last_result is None and r.lease_owner is None
    assert s.tick() == []  # not retried at once: one interval later
    counter.failing = False
    clock.advance(minutes=1)
    assert s.tick() == ["count"]
    assert row(deps).last_status == "succeeded" and row(deps).last_error is None
    assert [x.status for x in log_rows(deps)] == ["failed", "executed"]
    assert log_rows(deps)[0].details["error"] == "RuntimeError: the backup host did not answer"


def test_two_schedulers_ticking_at_once_run_each_due_time_once(deps, clock):
    """Two schedulers (two lease holders, each thread on its own SQLite connection to the
    file) tick together at every due time: the job runs once per due time."""
    counter = Counter(pause=0.05)
    jobs = one_job(counter)
    a, b = Scheduler(deps, jobs), Scheduler(deps, jobs)
    a.sync()
    ran: list[list[str]] = []
    for _ in range(5):
        barrier = threading.Barrier(2)

        def tick(s: Scheduler, barrier: threading.Barrier = barrier) -> None:
            barrier.wait(timeout=10)
            ran.append(s.tick())

        threads = [threading.Thread(target=tick, args=(s,)) for s in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        clock.advance(minutes=1)
    assert counter.runs == 5
    assert sorted(map(len, ran)) == [0] * 5 + [1] * 5
    assert len(log_rows(deps)) == 5


def test_two_processes_over_one_database_never_run_a_job_twice(tmp_path):
    """Two real codeb processes open the same data directory and tick at the same moment."""
    data = tmp_path / "data"
    build_deps(make_settings(data), FrozenClock(START)).db.close()  # migrated once up front
    go, runs = tmp_path / "go", tmp_path / "runs"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.scheduler.tick_process",
                str(data),
                START.isoformat(),
                str(go),
                str(runs),
            ],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    time.sleep(0.5)  # let both import and open the database before the signal
    go.touch()
    outputs = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        outputs.append(out.strip())
    assert sorted(outputs) == ["-", "contended"]
    assert len(runs.read_text().splitlines()) == 1


def test_an_expired_lease_is_taken_over(deps, clock):
    counter = Counter()
    jobs = one_job(counter)
    crashed, survivor = Scheduler(deps, jobs), Scheduler(deps, jobs)
    crashed.sync()
    with deps.db.connection_context():
        # The first process claims the job and dies before running it.
        assert crashed._claim(jobs["count"])
    assert row(deps).lease_owner == crashed.owner
    assert survivor.tick() == []  # the lease is live
    assert running(deps, jobs, clock.now()) is True
    clock.advance(minutes=9, seconds=59)
    assert survivor.tick() == []
    clock.advance(seconds=1)  # the 10-minute lease has run out
    assert running(deps, jobs, clock.now()) is False
    assert survivor.tick() == ["count"]
    assert counter.runs == 1
    r = row(deps)
    assert r.lease_owner is None and r.last_status == "succeeded"
    assert r.next_run_at == clock.now() + dt.timedelta(minutes=1)


def test_intervals_and_disabling_come_from_the_settings(tmp_path, clock):
    counter = Counter()
    jobs = {
        **one_job(counter),
        "other": Job("other", "also counts", dt.timedelta(hours=1), counter),
    }
    d = build_deps(
        make_settings(tmp_path / "data", schedules={"count": "off", "other": "2h"}), clock
    )
    s = Scheduler(d, jobs)
    assert not s.jobs["count"].enabled and s.jobs["other"].interval == dt.timedelta(hours=2)
    assert s.tick() == ["other"]
    clock.advance(hours=1)
    assert s.tick() == []
    d.db.close()
    with pytest.raises(SettingError, match="CODEB_SCHEDULES: no job named nope"):
        Scheduler(build_deps(make_settings(tmp_path / "d2", schedules={"nope": "1h"}), clock), jobs)
    with pytest.raises(SettingError, match="CODEB_SCHEDULES: count"):
        make_settings(tmp_path / "d3", schedules={"count": "5x"})
    with pytest.raises(SettingError, match="CODEB_SCHEDULES: count"):
        make_settings(tmp_path / "d3", schedules={"count": "1s"})


def test_the_first_jobs_are_declared(deps):
    jobs = by_name(deps.schedules)
    assert jobs["protection_queue_expiry"].interval == dt.timedelta(minutes=1)
    assert jobs["container_drift_check"].interval == dt.timedelta(minutes=15)


# -- over HTTP ---------------------------------------------------------------------------


def schedules(c) -> dict[str, dict]:
    r = c.get("/api/schedules")
    assert r.status_code == 200, r.text
    return {s["name"]: s for s in r.json()["schedules"]}


def test_get_schedules_shows_last_and_next_run(tmp_path, clock):
    with live_api(tmp_path / "data", clock=clock) as live:
        reader = live.new_key("reader", "readonly")
        with live.client(key=reader) as c:
            before = schedules(c)
            assert set(before) >= {"protection_queue_expiry", "container_drift_check"}
            expiry = before["protection_queue_expiry"]
            assert expiry["enabled"] and expiry["interval_s"] == 60
            assert expiry["last_run"] is None
            assert expiry["next_run_at"] == START.isoformat() + "Z"

            # Every declared job is due at the first tick (other features' jobs included).
            assert set(live.deps.scheduler.tick()) == set(live.deps.scheduler.jobs)
            after = schedules(c)
        expiry = after["protection_queue_expiry"]
        assert expiry["last_run"] == {
            "started_at": START.isoformat() + "Z",
            "finished_at": START.isoformat() + "Z",
            "status": "succeeded",
            "result": {"expired": 0},
            "error": None,
        }
        assert expiry["next_run_at"] == (START + dt.timedelta(minutes=1)).isoformat() + "Z"
        drift = after["container_drift_check"]
        assert drift["last_run"]["result"] == {"containers": 0, "note": "nothing to check"}
        assert drift["next_run_at"] == (START + dt.timedelta(minutes=15)).isoformat() + "Z"
        with live.client() as c:
            logged = c.get("/api/protection/logs", params={"operation": "scheduled_job"}).json()
            # No operation was started for an empty registry.
            assert c.get("/api/operations").json()["total"] == 0
        assert sorted(r["target"] for r in logged["logs"]) == sorted(after)


def test_queue_expiry_runs_through_the_scheduler(tmp_path, clock):
    with live_api(tmp_path / "data", clock=clock) as live, live.client() as c:
        assert c.post("/api/projects", json={"name": "shop"}).status_code == 201
        r = c.delete("/api/projects/shop")
        assert r.status_code == 202, r.text
        entry_id = r.json()["entry"]["id"]
        live.deps.scheduler.tick()
        assert c.get(f"/api/protection/queue/{entry_id}").json()["status"] == "pending"
        clock.advance(hours=48 + 7 * 24, seconds=1)
        assert "protection_queue_expiry" in live.deps.scheduler.tick()
        assert c.get(f"/api/protection/queue/{entry_id}").json()["status"] == "expired"
        expiry = schedules(c)["protection_queue_expiry"]
        assert expiry["last_run"]["result"] == {"expired": 1}


def test_the_serving_thread_ticks_and_stops(tmp_path, clock):
    """With CODEB_SCHEDULER_TICK_S the thread runs due jobs by itself; leaving live_api stops
    it (shutdown wakes it at once)."""
    with live_api(tmp_path / "data", clock=clock, scheduler_tick_s=1) as live, live.client() as c:
        deadline = time.monotonic() + 15
        while schedules(c)["protection_queue_expiry"]["last_run"] is None:
            assert time.monotonic() < deadline, "the scheduler thread never ran the job"
            time.sleep(0.1)
        thread = live.deps.scheduler._thread
        assert thread is not None and thread.is_alive()
    assert not thread.is_alive()


def test_the_drift_check_starts_an_operation_once_containers_are_registered(tmp_path, clock):
    with live_api(tmp_path / "data", clock=clock) as live, live.client() as c:
        assert c.post("/api/projects", json={"name": "shop"}).status_code == 201
        r = c.post(
            "/api/servers",
            json={"name": "app1", "ip": "10.2.0.7", "role": "app", "bootstrap": False},
        )
        assert r.status_code == 201, r.text
        with live.deps.db.connection_context():
            Container.create(
                id="ct_sched1", project=Project.get(Project.name == "shop").id,
                environment="staging", server_type="app", server_ip="10.2.0.7",
                container_name="shop-staging-app", image="registry.example/shop:1",
                status="running",
            )  # fmt: skip
        assert "container_drift_check" in live.deps.scheduler.tick()
        result = schedules(c)["container_drift_check"]["last_run"]["result"]
        assert result["containers"] == 1
        op = c.get(f"/api/operations/{result['operation']}").json()
        assert op["kind"] == "drift_check" and op["key_name"] == "codeb"
        gate = c.get("/api/protection/logs", params={"operation": "container_drift_check"})
        assert [row["status"] for row in gate.json()["logs"]] == ["executed"]


def test_schedules_on_both_backends(api):
    """The claim (INSERT .. ON CONFLICT DO NOTHING, the conditional UPDATE) on SQLite and
    PostgreSQL alike."""
    clock = api.clock
    with api.client() as c:
        jobs = api.deps.scheduler.jobs
        assert set(api.deps.scheduler.tick()) == set(jobs)
        assert api.deps.scheduler.tick() == []
        clock.advance(minutes=1)
        every_minute = {n for n, j in jobs.items() if j.interval <= dt.timedelta(minutes=1)}
        assert "protection_queue_expiry" in every_minute
        assert set(api.deps.scheduler.tick()) == every_minute
        expiry = schedules(c)["protection_queue_expiry"]
        assert expiry["last_run"]["status"] == "succeeded"
        assert expiry["next_run_at"] == (clock.now() + dt.timedelta(minutes=1)).isoformat() + "Z"


def test_run_now_goes_through_the_gate_and_the_next_tick_runs_it(tmp_path, clock):
    with live_api(
        tmp_path / "data", clock=clock, schedules={"container_drift_check": "off"}
    ) as live:
        reader = live.new_key("reader", "readonly")
        live.deps.scheduler.tick()  # both ran at start; the expiry is due again in a minute
        clock.advance(seconds=20)
        assert live.deps.scheduler.tick() == []
        with live.client() as c, live.client(key=reader) as ro:
            assert ro.post("/api/schedules/protection_queue_expiry/run").status_code == 403
            assert c.post("/api/schedules/nope/run").status_code == 404
            assert c.post("/api/schedules/container_drift_check/run").status_code == 409
            r = c.post("/api/schedules/protection_queue_expiry/run")
            assert r.status_code == 200, r.text
            assert r.json()["schedule"]["next_run_at"] == clock.now().isoformat() + "Z"
            assert live.deps.scheduler.tick() == ["protection_queue_expiry"]
            after = schedules(c)["protection_queue_expiry"]
            assert after["last_run"]["started_at"] == clock.now().isoformat() + "Z"
            logged = c.get("/api/protection/logs", params={"operation": "schedule_run"}).json()
            assert [row["status"] for row in logged["logs"]] == ["executed"]


def test_an_unknown_job_in_the_settings_stops_the_start(tmp_path):
    with pytest.raises(SettingError, match="CODEB_SCHEDULES: no job named backup_drill"):
        with live_api(tmp_path / "data", schedules={"backup_drill": "1d"}):
            pass
