"""Core routes: liveness and the API's own description."""

from __future__ import annotations

from codeb.api.declare import Op, answer
from codeb.features.core import api, schemas
from codeb.wiring import Configurator


def includeme(config: Configurator) -> None:
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
