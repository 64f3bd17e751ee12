"""API keys over HTTP (admin only): list, create (shown once), revoke."""

from __future__ import annotations

import falcon

from codeb.api.body import read_json
from codeb.api.confirm import confirmation_from, respond
from codeb.api.resources import Resource
from codeb.features.keys import schemas, service


class Keys(Resource):
    admin_methods = ("GET", "POST")

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"keys": service.list_keys(self.deps)}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, schemas.ApiKeyCreate)
        # 201 with the key (shown once) when it runs at once; 202 queued for an admin key
        # or another principal's key. respond() marks both no-store.
        answer = service.request_key(self.deps, req.context.actor, body, confirmation_from(req))
        respond(resp, answer)


class Key(Resource):
    admin_methods = ("DELETE",)

    def on_delete(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        answer = service.request_revoke(self.deps, req.context.actor, name, confirmation_from(req))
        respond(resp, answer)
