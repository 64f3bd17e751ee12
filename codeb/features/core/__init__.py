"""Core routes: liveness and the API's own description."""

from __future__ import annotations

from codeb.api.declare import Op, answer
from codeb.features.core import schemas
from codeb.wiring import Configurator


def includeme(config: Configurator) -> None:
    # Imported here so a service import never pulls in Falcon (the HTTP layer).
    from codeb.features.core import api

    config.add_route(
        "/api/health",
        api.Health,
        get=Op(
            "Liveness of the API (no key needed; nothing sensitive)",
            {200: answer(schemas.Health, "the API answers")},
            security=[],
        ),
    )
    config.add_route(
        "/api/openapi.json",
        api.OpenApi,
        get=Op(
            "This document (generated from the features' declarations)",
            {200: answer(None, "OpenAPI 3.1 document")},
        ),
    )
