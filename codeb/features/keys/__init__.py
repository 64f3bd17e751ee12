"""API keys: who may do what (the middleware authenticates with codeb.features.keys.service)."""

from __future__ import annotations

from codeb.api.declare import Op, answer, path
from codeb.features.keys import schemas, service
from codeb.features.protection.schemas import PENDING
from codeb.wiring import Configurator


def includeme(config: Configurator) -> None:
    # Imported here so a service import never pulls in Falcon (the HTTP layer).
    from codeb.features.keys import api

    config.add_appliers(service.APPLIERS)
    config.add_route(
        "/api/keys",
        api.Keys,
        get=Op("API keys (admin)", {200: answer(schemas.ApiKeyList, "keys")}, (403,)),
        post=Op(
            "Create an API key (admin; api_key_create LOW for a non-admin key of the caller's "
            "principal, else api_key_grant: queued for another admin's approval); the key is "
            "shown once",
            {201: answer(schemas.ApiKeyCreated, "created"), 202: PENDING},
            (403, 404, 409, 410),
            body=schemas.ApiKeyCreate,
            guarded=True,
        ),
    )
    config.add_route(
        "/api/keys/{name}",
        api.Key,
        params=(path("name"),),
        delete=Op(
            "Revoke an API key (admin; api_key_revoke)",
            {200: answer(schemas.ApiKey, "revoked"), 202: PENDING},
            (403, 404, 409, 410),
            guarded=True,
        ),
    )
