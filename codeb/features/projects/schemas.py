"""Projects and environments: request and response shapes."""

from __future__ import annotations

from typing import Annotated, Literal

from codeb.api.declare import paging, query
from codeb.api.shapes import NAME, TIMESTAMP, UNSET, Meta, Request, Shape, UnsetType, described
from codeb.features.projects.service import PROJECT_TYPES
from codeb.services.ports import ENVIRONMENTS

ProjectType = Literal[PROJECT_TYPES]  # type: ignore[valid-type]
EnvironmentName = Literal[ENVIRONMENTS]  # type: ignore[valid-type]
GIT_REPO = Annotated[str, Meta(max_length=2000)] | None


class Ports(Shape):
    app_port: int
    db_port: int
    redis_port: int
    redis_db: int


class Project(Shape):
    id: str
    name: str
    type: ProjectType
    git_repo: str | UnsetType | None = UNSET
    status: Literal["active", "archived", "deleted"]
    environments: dict[str, Ports]
    created_at: TIMESTAMP
    updated_at: TIMESTAMP


class ProjectCreate(Request):
    example = {"name": "fresh", "type": "nextjs", "git_repo": "https://git.example/x"}
    name: NAME
    type: ProjectType | UnsetType = UNSET
    git_repo: GIT_REPO | UnsetType = UNSET
    preview: described(bool, "also create a preview environment") | UnsetType = UNSET  # type: ignore[valid-type]


class ProjectUpdate(Request):
    """Only descriptive fields; name and status cannot be changed."""

    example = {"type": "remix", "git_repo": "https://git.example/x"}

    type: ProjectType | UnsetType = UNSET
    git_repo: GIT_REPO | UnsetType = UNSET


class EnvFiles(Shape):
    """The .env files; the only answer that ever shows the passwords."""

    local: str
    staging: str
    production: str
    preview: str | UnsetType = UNSET


class ProjectCreated(Shape):
    project: Project
    environments: dict[str, Ports]
    env_files: EnvFiles


class ProjectList(Shape):
    projects: list[Project]
    total: int
    limit: int
    offset: int


class Environment(Shape):
    id: str
    project_id: str
    project: str
    name: EnvironmentName
    app_port: int
    db_port: int
    redis_port: int
    redis_db: int | UnsetType = UNSET
    domain: str | UnsetType | None = UNSET
    status: str | UnsetType = UNSET
    db_name: str | UnsetType = UNSET
    db_user: str | UnsetType = UNSET
    created_at: TIMESTAMP | UnsetType = UNSET
    placement: (
        Annotated[
            dict[str, list[str]],
            Meta(
                description="where its components run: app, db and redis, each a list of "
                "server names (the app may run on several; a component not placed yet is "
                "absent)"
            ),
        ]
        | UnsetType
    ) = UNSET


class EnvironmentCreate(Request):
    example = {"name": "preview"}
    name: EnvironmentName


class EnvironmentCreated(Shape):
    environment: Environment
    env_file: str


class EnvironmentList(Shape):
    environments: list[Environment]


# GET /api/projects: declared once, read by the resource with read_query.
LIST_QUERY = (*paging(), query("status", enum=["active", "archived"]))
