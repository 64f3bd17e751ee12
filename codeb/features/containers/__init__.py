"""Containers: deploys, start/stop/restart/remove, volumes, drift checks (use cases in
service.py). Every mutating route can be previewed (`?preview=true`) and then
applied exactly (`X-Plan-Hash`)."""

from __future__ import annotations

from codeb.api.declare import Op, answer, header, path, query
from codeb.features.containers import schemas
from codeb.features.containers import service as containers
from codeb.features.protection.schemas import NOT_YET, ProtectionExecuted
from codeb.wiring import Configurator

CONTAINER = path("container_id")
FLAG = {"enum": list(schemas.FLAG_VALUES)}
PREVIEW_PARAMS = (
    query("preview", **FLAG),
    header(
        "X-Plan-Hash",
        "apply exactly the previewed plan (409 plan_changed if the state moved)",
    ),
)
STARTED = answer(
    (ProtectionExecuted, *NOT_YET),
    "an operation started (LOW, or confirmed), or not executed yet (confirm token, queue entry)",
)
ANSWERS = {
    200: answer(schemas.Preview, "with ?preview=true: what would change (nothing changed)"),
    202: STARTED,
}


def _acting(summary: str, body: type | None = None) -> Op:
    return Op(
        summary,
        ANSWERS,
        (403, 404, 409, 410, 422),
        body=body,
        params=PREVIEW_PARAMS,
        guarded=True,
    )


def includeme(config: Configurator) -> None:
    # Imported here so a service import never pulls in Falcon (the HTTP layer).
    from codeb.features.containers import api

    config.add_appliers(containers.APPLIERS)
    config.add_runner_jobs(containers.JOBS)
    config.add_schedules(containers.SCHEDULES)
    config.add_route(
        "/api/containers",
        api.Containers,
        get=Op(
            "Containers, optionally of one project / environment",
            {200: answer(schemas.ContainerList, "containers")},
            (404, 422),
            params=schemas.LIST_QUERY,
        ),
    )
    config.add_route(
        "/api/containers/deploy",
        api.Deploy,
        post=_acting(
            "Deploy an image to an environment (staging LOW; production MEDIUM, needs the "
            "same image healthy in staging); the first deploy also provisions PostgreSQL "
            "and Redis; a failing version is rolled back",
            body=schemas.DeployRequest,
        ),
    )
    config.add_route(
        "/api/containers/drift-check",
        api.DriftCheck,
        post=Op(
            "Compare what runs on every host with the registry (SAFE, read-only): an "
            "operation whose result lists the containers that drifted",
            {202: STARTED},
            (403, 409),
        ),
    )
    config.add_route(
        "/api/containers/{container_id}",
        api.ContainerItem,
        params=(CONTAINER,),
        get=Op(
            "A container; ?live=true reads its state from the host",
            {200: answer(schemas.Container, "the container")},
            (404, 409, 422),
            params=(query("live", **FLAG),),
        ),
        delete=_acting("Remove a container (MEDIUM; stopped first; keeps the volume)"),
    )
    for action, summary in (
        ("start", "Start a container (LOW)"),
        ("stop", "Stop a container (MEDIUM: confirm token)"),
        ("restart", "Restart a container (LOW)"),
    ):
        resource = getattr(api, f"Container{action.title()}")
        config.add_route(
            f"/api/containers/{{container_id}}/{action}",
            resource,
            params=(CONTAINER,),
            post=_acting(summary),
        )
    config.add_route(
        "/api/containers/{container_id}/volume",
        api.ContainerVolume,
        params=(CONTAINER,),
        delete=_acting("Delete a container's data volume (HIGH: queued)"),
    )
