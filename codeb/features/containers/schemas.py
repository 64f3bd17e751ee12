"""Containers and deploys: request and response shapes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from codeb.api.declare import query
from codeb.api.shapes import (
    NAME_PATTERN,
    NULLABLE_TIME,
    STRINGS,
    UNSET,
    Meta,
    Request,
    Shape,
    UnsetType,
)
from codeb.features.projects.schemas import EnvironmentName
from codeb.services.ports import ENVIRONMENTS, SERVER_TYPES


class Container(Shape):
    id: str
    project_id: str
    environment: str
    server_type: Literal[SERVER_TYPES]  # type: ignore[valid-type]
    server_ip: str | UnsetType = UNSET
    container_name: str
    image: str | UnsetType = UNSET
    image_id: str | UnsetType | None = UNSET
    previous_image: str | UnsetType | None = UNSET
    port_external: int | UnsetType | None = UNSET
    port_internal: int | UnsetType | None = UNSET
    volume: str | UnsetType | None = UNSET
    status: str
    health_status: str | UnsetType | None = UNSET
    health_checked_at: NULLABLE_TIME | UnsetType = UNSET
    last_operation_id: str | UnsetType | None = UNSET
    created_at: NULLABLE_TIME | UnsetType = UNSET
    updated_at: NULLABLE_TIME | UnsetType = UNSET
    live: (
        Annotated[
            dict[str, Any],
            Meta(
                description="with ?live=true: read from the host; `drift` lists how the host "
                "differs from this row (`in_sync` when it does not)"
            ),
        ]
        | UnsetType
    ) = UNSET


class ContainerList(Shape):
    containers: list[Container]


ServerName = Annotated[str, Meta(min_length=1, max_length=63, pattern=NAME_PATTERN)]


class DeployServers(Request):
    """Where to place the environment's components, by registry name (placement: see
    codeb/services/fleet.py). The app may run on several app servers (replicas)."""

    app: ServerName | Annotated[list[ServerName], Meta(min_length=1, max_length=50)] | UnsetType = (
        UNSET
    )
    db: ServerName | UnsetType = UNSET
    redis: ServerName | UnsetType = UNSET


class DeployRequest(Request):
    example = {
        "project": "shop",
        "environment": "staging",
        "image": "reg.example/a:1",
        "repair": False,
    }
    project: Annotated[str, Meta(min_length=1, max_length=100)]
    environment: EnvironmentName
    image: Annotated[
        str,
        Meta(
            pattern="^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$",
            description="image reference, e.g. registry.example/app:1.2",
        ),
    ]
    servers: (
        Annotated[
            DeployServers,
            Meta(
                description="explicit placement (default: as placed before, else the least "
                "loaded server of each role); a db or Redis with data is never moved, an app "
                "server still running a replica is only dropped by removing that container"
            ),
        ]
        | UnsetType
    ) = UNSET
    replicas: (
        Annotated[
            int,
            Meta(
                ge=1,
                le=50,
                description="app servers wanted: the app keeps its servers and gets the least "
                "loaded others (only adds)",
            ),
        ]
        | UnsetType
    ) = UNSET
    repair: (
        Annotated[
            bool,
            Meta(
                description="probe and apply every host of the environment, even those whose "
                "part of the plan is unchanged since the last deploy and that answer their "
                "health check (which a deploy otherwise leaves untouched): undoes drift made "
                "by hand"
            ),
        ]
        | UnsetType
    ) = UNSET


class Preview(Shape):
    preview: Literal[True]
    plan_hash: Annotated[str, Meta(description="send as X-Plan-Hash to apply exactly this plan")]
    changes: list[dict[str, Any]]
    restarts: STRINGS
    changed: bool
    touched: (
        Annotated[
            list[dict[str, Any]],
            Meta(description="a deploy: the hosts it would probe and apply, and why"),
        ]
        | UnsetType
    ) = UNSET
    untouched: (
        Annotated[
            list[dict[str, Any]],
            Meta(
                description="a deploy: the hosts it would leave untouched (their part of the "
                "plan unchanged since a deploy that applied it, nothing else done there since, "
                "healthy now), and why; `repair: true` touches them too"
            ),
        ]
        | UnsetType
    ) = UNSET


# A yes/no query parameter (?preview=true, ?live=1).
FLAG_VALUES = ("true", "false", "1", "0")
LIST_QUERY = (query("project", maxLength=100), query("environment", enum=list(ENVIRONMENTS)))
