"""Which hosts a deploy touches (issue 15): the selection rule of
codeb/features/containers/touch.py on real SQLite rows, with the live check against real
servers on loopback (an HTTP server answering /health, a port held by something that is not
PostgreSQL). No fleet: every route that makes a host touched again is checked here, the
whole deploy on the fleet (test_deploy_touch_fleet.py)."""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import threading
from collections.abc import Iterator

import pytest

from codeb.features.containers import touch
from codeb.features.containers.service import deploy_plan_hash
from codeb.render.units import EnvironmentUnits
from codeb.store.db import open_database
from codeb.store.models import (
    ALL_MODELS,
    AppliedHostPlan,
    Environment,
    Operation,
    Project,
    Server,
)
from tests.support import free_port

T0 = dt.datetime(2026, 11, 30, 12, 0, 0)
HASHES = {"app": "a" * 64, "db": "d" * 64, "cache": "c" * 64}


class _Clock:
    def now(self) -> dt.datetime:
        return T0 + dt.timedelta(hours=1)


class _Deps:
    clock = _Clock()

    def __init__(self, db) -> None:
        self.db = db

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        with self.db.atomic():
            yield


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def http_server(ip: str, port: int) -> Iterator[None]:
    server = http.server.ThreadingHTTPServer((ip, port), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def store(tmp_path):
    database = open_database(f"sqlite:///{tmp_path / 't.db'}")
    with database.connection_context():
        database.create_tables(ALL_MODELS)
        project = Project.create(id="p_1", name="shop", type="nodejs", local_db_password="x")
        env = Environment.create(
            id="e_1", project=project.id, name="staging", db_password="x", redis_password="x"
        )
        for i, name in enumerate(("app", "db", "cache"), start=1):
            Server.create(name=name, ip=f"127.0.0.{i}", role=name)
        ports = {"app": free_port(), "db": free_port(), "redis": free_port()}
        units = EnvironmentUnits(
            project="shop", environment="staging", app_image="x/app:1",
            app_port=ports["app"], app_env="A=1\n", db_user="shop", db_password="p" * 32,
            db_name="shop_staging", db_port=ports["db"], redis_password="r" * 32,
            redis_port=ports["redis"],
        )  # fmt: skip
        yield _Deps(database), env, units


def applied(env, hosts=("app", "db", "cache"), op_id="op_deploy1", hashes=HASHES) -> None:
    for host in hosts:
        AppliedHostPlan.create(
            environment_id=env.id, host=host, plan_hash=hashes[host], operation_id=op_id,
            applied_at=T0,
        )  # fmt: skip


def operation(op_id: str, kind: str, targets: list[str], status: str = "succeeded", **kw):
    return Operation.create(
        id=op_id, kind=kind, status=status, targets=targets, requested_by="api",
        created_at=kw.pop("created_at", T0 + dt.timedelta(minutes=5)),
        finished_at=kw.pop("finished_at", T0 + dt.timedelta(minutes=6)), **kw,
    )  # fmt: skip


def select_app(deps, env, units, **kw) -> touch.Selection:
    """Only the app host's part of the plan: the db and Redis hosts are another test's."""
    return touch.select(deps, env, units, {"app": HASHES["app"]}, **kw)


def test_an_unchanged_healthy_host_is_left_untouched(store):
    deps, env, units = store
    applied(env)
    operation("op_deploy1", "deploy", ["app", "db", "cache"], project=env.project_id,
              params={"environment": "staging"}, created_at=T0, finished_at=T0)  # fmt: skip
    with http_server("127.0.0.1", units.app_port):
        selection = select_app(deps, env, units)
    assert selection.touch == {}
    reason = selection.untouched["app"]["reason"]
    assert reason == "plan unchanged since operation op_deploy1 at 2026-11-30T12:00:00Z, healthy"
    assert selection.binding() == {"app": "op_deploy1"}
    # Later successful deploys of this environment and drift checks are harmless.
    operation("op_deploy2", "deploy", ["app", "db", "cache"], project=env.project_id,
              params={"environment": "staging"})  # fmt: skip
    operation("op_drift", "drift_check", ["app", "db", "cache"])
    with http_server("127.0.0.1", units.app_port):
        assert select_app(deps, env, units).touch == {}


def test_no_record_or_a_changed_plan_touches(store):
    deps, env, units = store
    with http_server("127.0.0.1", units.app_port):
        assert "no deploy" in select_app(deps, env, units).touch["app"]
        applied(env, hashes={**HASHES, "app": "b" * 64})
        assert "plan changed" in select_app(deps, env, units).touch["app"]


@pytest.mark.parametrize(
    ("kind", "status", "extra"),
    [
        ("container_action", "succeeded", {}),  # a stop, restart, remove on the host
        ("server_bootstrap", "succeeded", {}),
        ("drift_check", "failed", {}),  # it may not have forgotten what it saw
        ("deploy", "failed", {"params": {"environment": "staging"}}),
        ("deploy", "succeeded", {"params": {"environment": "production"}}),  # another env
        ("deploy", "running", {"params": {"environment": "staging"}, "finished_at": None}),
    ],
)
def test_another_operation_on_the_host_touches(store, kind, status, extra):
    deps, env, units = store
    applied(env)
    operation("op_other", kind, ["app"], status=status, project=env.project_id, **extra)
    with http_server("127.0.0.1", units.app_port):
        selection = select_app(deps, env, units)
    assert selection.touch["app"] == f"{kind} op_other targeted it since op_deploy1"


def test_an_operation_by_server_id_or_on_another_host_or_before(store):
    deps, env, units = store
    applied(env)
    app_id = Server.get(Server.name == "app").id
    operation("op_before", "container_action", ["app"], created_at=T0 - dt.timedelta(hours=1),
              finished_at=T0 - dt.timedelta(minutes=30))  # fmt: skip
    operation("op_db", "container_action", ["db"])
    with http_server("127.0.0.1", units.app_port):
        assert select_app(deps, env, units).touch == {}
        operation("op_srv", "server_update", [], server=app_id)
        assert "op_srv" in select_app(deps, env, units).touch["app"]


def test_the_live_check(store):
    deps, env, units = store
    applied(env)
    # Nothing answers on the app's port.
    assert "/health" in select_app(deps, env, units).touch["app"]
    # The db's port held by something that is not PostgreSQL (an open port is not enough).
    with http_server("127.0.0.2", units.db_port):
        selection = touch.select(deps, env, units, {"db": HASHES["db"]})
    assert "PostgreSQL does not answer" in selection.touch["db"]
    selection = touch.select(deps, env, units, {"cache": HASHES["cache"]})
    assert "Redis does not answer" in selection.touch["cache"]


def test_repair_touches_every_host(store):
    deps, env, units = store
    applied(env)
    with http_server("127.0.0.1", units.app_port):
        selection = touch.select(deps, env, units, HASHES, repair=True)
    assert selection.hosts == ["app", "cache", "db"] and selection.untouched == {}
    assert set(selection.touch.values()) == {"repair requested"}


def test_failed_deploy_and_drift_forget(store):
    deps, env, _ = store
    applied(env)
    touch.forget_hosts(deps, {"app"})
    assert {r.host for r in AppliedHostPlan.select()} == {"db", "cache"}
    touch.forget_environment(deps, env.id)
    assert AppliedHostPlan.select().count() == 0


def test_record_upserts_touched_hosts_and_drops_hosts_left_the_plan(store):
    deps, env, _ = store
    applied(env, hashes={**HASHES, "app": "b" * 64})
    touch.record(deps, env, {"app": HASHES["app"], "db": HASHES["db"]}, ["app"], "op_new")
    rows = {r.host: r for r in AppliedHostPlan.select()}
    assert set(rows) == {"app", "db"}  # cache left the plan
    assert (rows["app"].plan_hash, rows["app"].operation_id) == (HASHES["app"], "op_new")
    assert rows["db"].operation_id == "op_deploy1"  # untouched: its record stays


def test_the_plan_hash_binds_the_selection():
    plan = {"app": {"files": []}}
    assert deploy_plan_hash(plan, {}) != deploy_plan_hash(plan, {}, {"db": "op_1"})
    assert deploy_plan_hash(plan, {}, {"db": "op_1"}) != deploy_plan_hash(plan, {}, {"db": "op_2"})
    assert deploy_plan_hash(plan, {}, {}) == deploy_plan_hash(plan, {})


def test_repair_must_be_a_boolean(sqlite_api):
    with sqlite_api.client() as c:
        r = c.post("/api/projects", json={"name": "repaired", "type": "nodejs"})
        assert r.status_code == 201, r.text
        r = c.post(
            "/api/containers/deploy",
            json={"project": "repaired", "environment": "staging", "image": "x/a:1", "repair": 1},
        )
        assert r.status_code == 422, r.text
        assert c.get("/api/operations").json()["total"] == 0
