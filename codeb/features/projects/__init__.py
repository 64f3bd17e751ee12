"""Projects and environments: ports, databases and .env files (use cases in service.py)."""

from __future__ import annotations

from codeb.api.declare import Op, answer, path
from codeb.features.projects import schemas
from codeb.features.projects import service as projects
from codeb.features.protection.schemas import EXECUTED, PENDING, STRICTER
from codeb.services.ports import ENVIRONMENTS
from codeb.wiring import Configurator

PROJECT = path("project", "the project's id or its name")


def includeme(config: Configurator) -> None:
    # Imported here so a service import never pulls in Falcon (the HTTP layer).
    from codeb.features.projects import api

    config.add_appliers(projects.APPLIERS)
    config.add_route(
        "/api/projects",
        api.Projects,
        get=Op(
            "List projects",
            {200: answer(schemas.ProjectList, "projects, oldest first")},
            (422,),
            params=schemas.LIST_QUERY,
        ),
        post=Op(
            "Create a project: environments, ports and .env files (passwords shown once)",
            {201: answer(schemas.ProjectCreated, "created"), 202: STRICTER},
            (403, 409),
            body=schemas.ProjectCreate,
        ),
    )
    config.add_route(
        "/api/projects/{project}",
        api.Project,
        params=(PROJECT,),
        get=Op("A project", {200: answer(schemas.Project, "the project")}, (404,)),
        put=Op(
            "Change a project's type or repository (LOW: logged, then runs)",
            {200: answer(schemas.Project, "updated"), 202: PENDING},
            (403, 404, 409, 410),
            body=schemas.ProjectUpdate,
            guarded=True,
        ),
        delete=Op(
            "Delete a project (CRITICAL: queued; see the confirm contract)",
            {200: EXECUTED, 202: PENDING},
            (403, 404, 409, 410, 422),
            guarded=True,
        ),
    )
    config.add_route(
        "/api/projects/{project}/environments",
        api.Environments,
        params=(PROJECT,),
        get=Op("A project's environments", {200: answer(schemas.EnvironmentList, "list")}, (404,)),
        post=Op(
            "Add an environment (e.g. preview); answers with its .env file",
            {201: answer(schemas.EnvironmentCreated, "created"), 202: STRICTER},
            (403, 404, 409),
            body=schemas.EnvironmentCreate,
        ),
    )
    config.add_route(
        "/api/projects/{project}/environments/{env}",
        api.Environment,
        params=(PROJECT, path("env", enum=list(ENVIRONMENTS))),
        get=Op("An environment", {200: answer(schemas.Environment, "the environment")}, (404,)),
        delete=Op(
            "Delete an environment (HIGH: queued; see the confirm contract)",
            {200: EXECUTED, 202: PENDING},
            (403, 404, 409, 410, 422),
            guarded=True,
        ),
    )
