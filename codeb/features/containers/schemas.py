"""Containers and deploys: request and response shapes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from codeb.api.shapes import NULLABLE_TIME, STRINGS, UNSET, Meta, Request, Shape, UnsetType
from codeb.features.projects.schemas import EnvironmentName
from codeb.services.ports import SERVER_TYPES


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


class DeployRequest(Request):
    project: Annotated[str, Meta(min_length=1, max_length=100)]
    environment: EnvironmentName
    image: Annotated[
        str,
        Meta(
            pattern="^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$",
            description="image reference, e.g. registry.example/app:1.2",
        ),
    ]


class Preview(Shape):
    preview: Literal[True]
    plan_hash: Annotated[str, Meta(description="send as X-Plan-Hash to apply exactly this plan")]
    changes: list[dict[str, Any]]
    restarts: STRINGS
    changed: bool
