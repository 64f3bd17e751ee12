"""codeb.metrics below the API: what the database says, as Prometheus and as JSON, on SQLite
and PostgreSQL; a feature's collector; a failing one costs only its own figures."""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets

import pytest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from codeb.metrics import FeatureCollector, Metrics
from codeb.metrics.state import STATE
from codeb.store.models import Operation, ProtectionQueue, Schedule, Server
from codeb.wiring import Configurator


def samples(metrics: Metrics) -> dict[tuple[str, tuple], float]:
    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain; version=")
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _op(kind: str, status: str, seconds: float | None, now: dt.datetime) -> None:
    started = now - dt.timedelta(seconds=(seconds or 0) + 5)
    Operation.create(
        id=f"op_{secrets.token_hex(8)}", kind=kind, status=status, created_at=started,
        started_at=started if status != "queued" else None,
        finished_at=started + dt.timedelta(seconds=seconds) if seconds is not None else None,
        targets=[], requested_by="api",
    )  # fmt: skip


def _seed(deps) -> None:
    now = deps.clock.now()
    with deps.db.atomic():
        _op("container_deploy", "succeeded", 3.0, now)
        _op("container_deploy", "succeeded", 40.0, now)
        _op("container_deploy", "failed", 7.0, now)
        _op("server_bootstrap", "running", None, now)
        _op("container_action", "queued", None, now)
        Server.create(name="app1", ip="127.0.0.5", role="app", status="ready")
        Server.create(name="db1", ip="127.0.0.6", role="db", status="unreachable")
        ProtectionQueue.create(
            id="pq_1", operation="project_delete", danger_level=4, details={},
            expires_at=now + dt.timedelta(days=3), created_at=now - dt.timedelta(hours=2),
        )  # fmt: skip
        # The rows exist (start-up made one per declared job); a run would leave these.
        Schedule.update(
            next_run_at=now + dt.timedelta(minutes=5), last_status="succeeded",
            last_finished_at=now - dt.timedelta(minutes=10),
        ).where(Schedule.name == "container_drift_check").execute()  # fmt: skip
        Schedule.update(next_run_at=now, last_status="failed", last_finished_at=now).where(
            Schedule.name == "protection_queue_expiry"
        ).execute()


def test_state_from_the_database(api):
    deps = api.deps
    with deps.db.connection_context():
        _seed(deps)
        metrics = Metrics(deps, collectors=[STATE])
        metrics.observe_request("GET", "/api/projects/{project}", 200, 0.012)
        metrics.observe_request("GET", "/api/projects/{project}", 404, 0.003)
        metrics.observe_request("GET", None, 404, 0.001)
        got = samples(metrics)
        summary = metrics.summary()
    deploy_ok = (("kind", "container_deploy"), ("status", "succeeded"))
    assert got[("codeb_operations_total", deploy_ok)] == 2
    hist = (("kind", "container_deploy"), ("outcome", "succeeded"))
    assert got[("codeb_operation_duration_seconds_count", hist)] == 2
    assert got[("codeb_operation_duration_seconds_sum", hist)] == pytest.approx(43.0, abs=0.01)
    assert (
        got[("codeb_operation_duration_seconds_bucket", tuple(sorted((*hist, ("le", "5.0")))))] == 1
    )
    assert (
        got[("codeb_operation_duration_seconds_bucket", tuple(sorted((*hist, ("le", "60.0")))))]
        == 2
    )
    assert got[("codeb_runner_operations", (("state", "queued"),))] == 1
    assert got[("codeb_runner_operations", (("state", "running"),))] == 1
    assert got[("codeb_runner_oldest_queued_age_seconds", ())] == pytest.approx(5, abs=1)
    pending = (("level", "CRITICAL"), ("operation", "project_delete"))
    assert got[("codeb_protection_queue_pending", pending)] == 1
    age = got[("codeb_protection_queue_oldest_pending_age_seconds",
               (("operation", "project_delete"),))]  # fmt: skip
    assert age == pytest.approx(7200, abs=5)
    assert got[("codeb_server_reachable", (("role", "app"), ("server", "app1")))] == 1
    assert got[("codeb_server_reachable", (("role", "db"), ("server", "db1")))] == 0
    success = got[("codeb_scheduler_job_last_success_timestamp_seconds",
                   (("job", "container_drift_check"),))]  # fmt: skip
    expected = (deps.clock.now() - dt.timedelta(minutes=10)).replace(tzinfo=dt.UTC).timestamp()
    assert success == pytest.approx(expected, abs=1)
    assert got[("codeb_scheduler_job_last_run_failed", (("job", "protection_queue_expiry"),))] == 1
    # Requests by route template, never by raw path; unmatched requests share one label.
    route = (("method", "GET"), ("route", "/api/projects/{project}"), ("status", "404"))
    assert got[("codeb_http_requests_total", route)] == 1
    assert ("codeb_http_requests_total",
            (("method", "GET"), ("route", "(unmatched)"), ("status", "404"))) in got  # fmt: skip
    assert got[("codeb_metrics_collector_up", (("collector", "state"),))] == 1
    # The JSON summary says the same.
    o = summary["overview"]
    assert o["http_requests"] == 3
    assert o["operations"] == {"failed": 1, "queued": 1, "running": 1, "succeeded": 2}
    assert o["runner"] == {"queued": 1, "running": 1}
    assert o["protection_queue_pending"] == 1
    assert o["servers"] == {"total": 2, "unreachable": ["db1"]}
    assert o["scheduled_jobs_failing"] == ["protection_queue_expiry"]
    assert "codeb_operation_duration_seconds" in summary["metrics"]
    assert not any(name.startswith("process_") for name in summary["metrics"])


def test_a_feature_contributes_its_collector_and_a_broken_one_costs_only_itself(sqlite_api):
    def backups(deps):
        family = GaugeMetricFamily(
            "codeb_backup_age_seconds", "Age of the newest backup", labels=["database"]
        )
        family.add_metric(["shop-staging"], 3600)
        yield family

    def broken(deps):
        raise RuntimeError("no storage")

    good = FeatureCollector("test_backups", backups)
    # Declared in a feature's includeme, on the Configurator; a name is taken once.
    config = Configurator()
    config.add_metrics(good)
    with pytest.raises(ValueError):
        config.add_metrics(FeatureCollector("test_backups", broken))
    wired = config.finish().metrics
    assert wired == (good,)
    base = sqlite_api.deps
    deps = dataclasses.replace(
        base, wiring=dataclasses.replace(base.wiring, metrics=(*base.wiring.metrics, *wired))
    )
    with deps.db.connection_context():
        metrics = Metrics(deps, collectors=[STATE, good, FeatureCollector("bad", broken)])
        got = samples(metrics)
        default = Metrics(deps)
        assert good in default.collectors and STATE in default.collectors
        # The wired features' own collectors are there too (domains, recovery).
        assert {"domains", "recovery"} <= {c.name for c in default.collectors}
    assert got[("codeb_backup_age_seconds", (("database", "shop-staging"),))] == 3600
    assert got[("codeb_metrics_collector_up", (("collector", "bad"),))] == 0
    assert got[("codeb_metrics_collector_up", (("collector", "test_backups"),))] == 1
    assert ("codeb_runner_operations", (("state", "queued"),)) in got
