"""Operations (long-running runs) over HTTP: list, read, follow the events, cancel."""

from __future__ import annotations

import falcon

from codeb.api.body import read_query
from codeb.api.confirm import confirmation_from, respond
from codeb.api.resources import Resource
from codeb.features.operations import cancel, schemas
from codeb.services import operations


class Operations(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = operations.list_operations(**read_query(req, schemas.LIST_QUERY))


class OperationItem(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, operation_id: str) -> None:
        resp.media = operations.get_operation(operation_id)


class OperationEvents(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, operation_id: str) -> None:
        query = read_query(req, schemas.EVENTS_QUERY)
        resp.media = operations.list_events(
            self.deps,
            operation_id,
            after=query["after"],
            limit=query["limit"],
            wait_s=query["wait"],
        )


class OperationCancel(Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response, operation_id: str) -> None:
        answer = cancel.cancel_operation(
            self.deps, req.context.actor, operation_id, confirmation_from(req)
        )
        respond(resp, answer)
