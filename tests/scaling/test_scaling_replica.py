"""A scale-up adds a replica of what an environment already runs, and nothing else: it is not
behind a production deploy's staging gate (staging may run the next image), so it must never
be a way around it. Without the fleet: the request cannot name an image, the image placed is
the one production's replicas run (not staging's), replicas that disagree are refused, and the
place job (run by the real worker) refuses once production runs something else than the
scale-up read, or while a deploy that would leave the replica behind is under way. The fleet
test (test_scaling_fleet.py) places a production replica while staging runs another image, and
refuses one whose tag names another image on the new server."""

from __future__ import annotations

import time

import pytest

from codeb.executor.worker import JobFailed
from codeb.features.scaling import place
from codeb.services import operations
from codeb.services.context import SYSTEM
from codeb.store.models import Container, Environment, Operation, Project, Server
from tests.providers.vultr_fake import VultrFake, serve
from tests.scaling.test_scaling_api import CLOUD, KEY

V1, V2 = "registry.example/shop:v1", "registry.example/shop:v2"
ID1, ID2 = "a" * 64, "b" * 64


def replica(project: Project, env: str, ip: str, image: str, image_id: str | None) -> Container:
    return Container.create(
        id=f"ctr_{env}_{ip.replace('.', '_')}",
        project=project,
        environment=env,
        server_type="app",
        server_ip=ip,
        container_name=f"{project.name}-{env}-app",
        image=image,
        image_id=image_id,
        status="running",
        health_status="healthy",
    )


@pytest.fixture
def shop(sqlite_api):
    """shop: production runs v1 (id ID1) on app1; staging already runs v2 (ID2)."""
    with sqlite_api.client() as c:
        assert c.post("/api/projects", json={"name": "shop"}).status_code == 201
    with sqlite_api.deps.db.connection_context():
        project = Project.get(Project.name == "shop")
        replica(project, "production", "127.0.0.21", V1, ID1)
        replica(project, "staging", "127.0.0.21", V2, "sha256:" + ID2)
    return sqlite_api, project


def envs(project: Project) -> dict[str, Environment]:
    return {e.name: e for e in Environment.select().where(Environment.project == project.id)}


def test_a_scale_up_request_cannot_name_an_image(tmp_path):
    from tests.support import live_api

    fake = VultrFake(api_key=KEY, ip_after_s=3600)
    with serve(fake) as url, live_api(tmp_path) as api, api.client() as c:
        r = c.put("/api/scaling/policy", json={"api_key": KEY, "cloud": {**CLOUD, "api_url": url}})
        assert r.status_code == 200, r.text
        for body in ({"image": V2}, {"environment": "production", "image": V2}, {"images": [V2]}):
            r = c.post("/api/scaling/up", json=body)
            assert r.status_code in (400, 422), (body, r.text)
            assert "error" in r.json()
    assert not any(m == "POST" for m, _ in fake.requests)  # nothing was bought


def test_the_replica_is_what_production_runs_not_what_staging_tests(shop):
    api, project = shop
    with api.deps.db.connection_context():
        e = envs(project)
        assert place.replica_source(project, e["production"]) == place.Source(V1, ID1, 1)
        # Staging's own replica is of staging's image (its id recorded with a prefix).
        assert place.replica_source(project, e["staging"]) == place.Source(V2, ID2, 1)
        Container.update(status="stopped").where(Container.environment == "staging").execute()
        assert place.replica_source(project, e["staging"]) is None  # nothing to replicate


@pytest.mark.parametrize(
    ("image", "image_id", "says"),
    [
        (V2, ID2, "run different images"),  # a deploy half-way
        (V1, ID2, "do not record one image id"),  # the tag named two images
        (V1, None, "do not record one image id"),  # no id: its identity cannot be checked
    ],
)
def test_replicas_that_do_not_say_one_image_are_refused(shop, image, image_id, says):
    api, project = shop
    with api.deps.db.connection_context():
        replica(project, "production", "127.0.0.22", image, image_id)
        with pytest.raises(JobFailed, match=says):
            place.replica_source(project, envs(project)["production"])


def _run_place(api, project: Project, server: Server, image: str, image_id: str) -> Operation:
    deps = api.deps
    with deps.db.connection_context():
        with deps.write():
            op = operations.create_operation(
                deps, SYSTEM, place.SCALE_PLACE, [server.name],
                {"project_id": project.id, "environment": "production",
                 "server_id": server.id, "image": image, "image_id": image_id},
                project_id=project.id,
            )  # fmt: skip
        operations.dispatch(deps, op.id)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done = Operation.get_by_id(op.id)
            if done.status not in ("queued", "running"):
                return done
            time.sleep(0.1)
    raise AssertionError(f"{op.id} did not end")


def test_the_place_job_never_places_another_image_than_production_runs(shop):
    api, project = shop
    deps = api.deps
    with deps.db.connection_context():
        server = Server.create(name="codeb-app-new", ip="127.0.0.23", role="app",
                               provider="vultr", provider_id="i-1", status="ready")  # fmt: skip
        # Since the scale-up read production (v1), a gated deploy moved it to v2.
        Container.update(image=V2, image_id=ID2).where(
            Container.environment == "production"
        ).execute()
    op = _run_place(api, project, server, V1, ID1)
    assert op.status == "failed" and "never places another image" in op.error, op.error
    # Asking for what production now runs, but under another id (a retagged v2): refused.
    op = _run_place(api, project, server, V2, ID1)
    assert op.status == "failed" and "never places another image" in op.error, op.error
    with deps.db.connection_context():
        # Nothing was run on the host and nothing recorded: production is as it was.
        assert not Container.select().where(Container.server_ip == server.ip).exists()
        rows = Container.select().where(Container.environment == "production")
        assert [(r.image, r.image_id) for r in rows] == [(V2, ID2)]
        # No playbook ran: refused before the pull.
        ran = [e.event for e in Operation.get_by_id(op.id).events]
        assert not [e for e in ran if e.startswith(("runner_", "playbook_"))], ran


def test_a_deploy_under_way_that_would_leave_the_replica_behind_refuses_it(shop):
    api, project = shop
    deps = api.deps
    with deps.db.connection_context():
        e = envs(project)["production"]
        with deps.write():
            other = operations.create_operation(
                deps, SYSTEM, "deploy", ["app1"],
                {"project_id": project.id, "environment": "production", "image": V2},
                project_id=project.id,
            )  # fmt: skip
        assert [op.id for op in place.deploys_in_flight(project, e)] == [other.id]
        params = {"image": V1, "image_id": ID1}
        with pytest.raises(JobFailed, match="under way"):
            place.ScalePlaceJob._same_source(project, e, params, also_not_deploying="new")
        # One that names the new server waits for the replica, then reaches it too.
        Operation.update(targets=["app1", "new"]).where(Operation.id == other.id).execute()
        assert place.ScalePlaceJob._same_source(project, e, params, "new").image == V1
        Operation.update(status="failed").where(Operation.id == other.id).execute()
        assert place.deploys_in_flight(project, e) == []
