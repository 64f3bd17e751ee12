"""Containers over HTTP. Every mutating request can be previewed with `?preview=true` (a
check-mode run; nothing changes) and then sent with `X-Plan-Hash` to apply exactly that plan."""

from __future__ import annotations

import falcon

from codeb.api.body import query_choice, read_json, read_query
from codeb.api.confirm import confirmation_from, respond
from codeb.api.resources import Resource
from codeb.features.containers import schemas
from codeb.features.containers import service as containers
from codeb.services import gate

PLAN_HEADER = "X-Plan-Hash"


def _flag(req: falcon.Request, name: str) -> bool:
    return query_choice(req, name, schemas.FLAG_VALUES) in ("true", "1")


def _answer(resp: falcon.Response, answer: gate.Answer | dict) -> None:
    if isinstance(answer, gate.Answer):
        respond(resp, answer)
    else:
        resp.media = answer  # a preview: 200, nothing changed


class Deploy(Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, schemas.DeployRequest)
        _answer(
            resp,
            containers.deploy(
                self.deps,
                req.context.actor,
                body,
                confirmation_from(req),
                preview=_flag(req, "preview"),
                expected_plan=req.get_header(PLAN_HEADER),
            ),
        )


class Containers(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = containers.list_containers(**read_query(req, schemas.LIST_QUERY))


class _Acting(Resource):
    def _act(self, req: falcon.Request, resp: falcon.Response, cid: str, action: str) -> None:
        _answer(
            resp,
            containers.container_action(
                self.deps,
                req.context.actor,
                cid,
                action,
                confirmation_from(req),
                preview=_flag(req, "preview"),
                expected_plan=req.get_header(PLAN_HEADER),
            ),
        )


class ContainerItem(_Acting):
    def on_get(self, req: falcon.Request, resp: falcon.Response, container_id: str) -> None:
        resp.media = containers.get_container(self.deps, container_id, live=_flag(req, "live"))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, container_id: str) -> None:
        self._act(req, resp, container_id, "remove")


class ContainerAction(_Acting):
    action = ""

    def on_post(self, req: falcon.Request, resp: falcon.Response, container_id: str) -> None:
        self._act(req, resp, container_id, self.action)


class ContainerStart(ContainerAction):
    action = "start"


class ContainerStop(ContainerAction):
    action = "stop"


class ContainerRestart(ContainerAction):
    action = "restart"


class ContainerVolume(_Acting):
    def on_delete(self, req: falcon.Request, resp: falcon.Response, container_id: str) -> None:
        self._act(req, resp, container_id, "volume_delete")


class DriftCheck(Resource):
    """Starts a read-only operation comparing every container's host state with the
    registry (what a scheduler will also call)."""

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        respond(resp, containers.drift_check(self.deps, req.context.actor, confirmation_from(req)))
