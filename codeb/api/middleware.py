"""Cross-cutting concerns: request ids, one database connection per request, authentication
and role checks."""

from __future__ import annotations

import secrets

import falcon

from codeb.errors import Forbidden, ValidationFailed
from codeb.services import keys
from codeb.services.context import CLIENTS, Deps

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class RequestId:
    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.request_id = secrets.token_hex(8)

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, req_succeeded: bool
    ) -> None:
        resp.set_header("X-Request-Id", req.context.request_id)


class DatabaseSession:
    """Open the connection before the resource runs and close it afterwards, as Peewee
    recommends for web apps."""

    def __init__(self, deps: Deps) -> None:
        self._db = deps.db

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        self._db.connect(reuse_if_open=True)

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, req_succeeded: bool
    ) -> None:
        if not self._db.is_closed():
            self._db.close()


class Authentication:
    """Every route needs X-API-Key unless its resource says `auth_required = False`.
    readonly keys may only read; a resource marks admin-only methods in `admin_methods`."""

    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: object, params: dict
    ) -> None:
        if resource is None or not getattr(resource, "auth_required", True):
            return
        client = req.get_header("X-Codeb-Client") or "api"
        if client not in CLIENTS:
            raise ValidationFailed(
                "X-Codeb-Client must be one of: " + ", ".join(CLIENTS),
                {"header": "X-Codeb-Client", "allowed": list(CLIENTS)},
            )
        actor = keys.authenticate(self._deps, req.get_header("X-API-Key"), client)
        if req.method not in READ_METHODS and not actor.has_role("operator"):
            raise Forbidden(
                f"a {actor.role} key may only read", {"role": actor.role, "method": req.method}
            )
        if req.method in getattr(resource, "admin_methods", ()) and not actor.has_role("admin"):
            raise Forbidden("this needs an admin key", {"role": actor.role})
        req.context.actor = actor
