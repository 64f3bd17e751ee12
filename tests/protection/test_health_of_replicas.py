"""A production deploy needs the image tested in staging: with several staging replicas, every
replica running that image must be healthy (rule: no sick replica passes for a tested image)."""

from __future__ import annotations

from codeb.protection.predicates import health_check_passed, staging_tested
from codeb.protection.tokens import Target
from codeb.store.models import Container, Project

IMAGE = "registry.example/shop:v7"


def replica(project: Project, n: int, health: str | None, status: str = "running") -> None:
    Container.create(
        id=f"ctr_{project.name}_{n}",
        project=project,
        environment="staging",
        server_type="app",
        server_ip=f"127.0.0.{n + 10}",
        container_name=f"{project.name}-staging-app",
        image=IMAGE,
        status=status,
        health_status=health,
    )


def test_every_running_staging_replica_of_the_image_must_be_healthy(sqlite_api):
    with sqlite_api.client() as c:
        assert c.post("/api/projects", json={"name": "shop"}).status_code == 201
    deps = sqlite_api.deps
    with deps.db.connection_context():
        project = Project.get(Project.name == "shop")
        target = Target("environment", project.id, "shop/production", project.id, "production")
        params = {"image": IMAGE}
        assert not health_check_passed(target, params)  # nothing runs it yet
        replica(project, 1, "healthy")
        replica(project, 2, "unhealthy")
        assert staging_tested(target, params)
        assert not health_check_passed(target, params)
        Container.update(health_status="starting").where(Container.id == "ctr_shop_2").execute()
        assert not health_check_passed(target, params)
        Container.update(health_status="healthy").where(Container.id == "ctr_shop_2").execute()
        assert health_check_passed(target, params)
        # A stopped replica does not serve the image: it neither passes nor fails the check.
        replica(project, 3, "unhealthy", status="stopped")
        assert health_check_passed(target, params)
        assert not health_check_passed(target, {"image": "registry.example/shop:v8"})
