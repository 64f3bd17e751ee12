"""Operations (long-running runs) over HTTP: list, read, follow the events, cancel."""

from __future__ import annotations

import falcon

from codeb.api.body import query_choice, query_int, query_text
from codeb.api.confirm import confirmation_from, respond
from codeb.api.resources import Resource
from codeb.features.operations import cancel
from codeb.services import operations


class Operations(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = operations.list_operations(
            limit=query_int(req, "limit", 50, 1, 500),
            offset=query_int(req, "offset", 0, 0, 2**31),
            status=query_choice(req, "status", operations.STATUSES),
            kind=query_text(req, "kind", 64),
        )


class OperationItem(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, operation_id: str) -> None:
        resp.media = operations.get_operation(operation_id)


class OperationEvents(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, operation_id: str) -> None:
        resp.media = operations.list_events(
            self.deps,
            operation_id,
            after=query_int(req, "after", 0, 0, 2**31),
            limit=query_int(req, "limit", 500, 1, 5000),
            wait_s=query_int(req, "wait", 0, 0, operations.MAX_WAIT_S),
        )


class OperationCancel(Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response, operation_id: str) -> None:
        answer = cancel.cancel_operation(
            self.deps, req.context.actor, operation_id, confirmation_from(req)
        )
        respond(resp, answer)
