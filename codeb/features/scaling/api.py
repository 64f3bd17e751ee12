"""Autoscaling over HTTP: the policy, a check (decision only), scale up and down through the
Protection Layer, and the history."""

from __future__ import annotations

import falcon

from codeb.api.body import read_json, read_query
from codeb.api.confirm import confirmation_from, respond
from codeb.api.resources import Resource
from codeb.features.scaling import schemas
from codeb.features.scaling import service as scaling


class Policy(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = scaling.policy_view(self.deps)

    def on_put(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, schemas.ScalingConfigure)
        respond(resp, scaling.configure(self.deps, req.context.actor, body, confirmation_from(req)))


class Check(Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        respond(resp, scaling.check(self.deps, req.context.actor, confirmation_from(req)))


class Up(Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        read_json(req, schemas.ScaleUp)
        respond(
            resp,
            scaling.scale_up(self.deps, req.context.actor, confirmation=confirmation_from(req)),
        )


class Down(Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, schemas.ScaleDown)
        respond(
            resp,
            scaling.scale_down(
                self.deps, req.context.actor, body.get("server"),
                confirmation=confirmation_from(req),
            ),
        )  # fmt: skip


class History(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        q = read_query(req, schemas.HISTORY_QUERY)
        resp.media = scaling.history(q["limit"], q["offset"], q.get("kind"))
