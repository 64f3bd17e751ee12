"""The Protection Layer over HTTP: the queue, confirm, approve, cancel, the logs and the rules.

Any resource of a guarded operation reads the confirmation with `confirmation_from(req)` and
answers with `respond(resp, answer)` (200/201 executed, 202 not executed yet)."""

from __future__ import annotations

import falcon

from codeb.api import resources
from codeb.api.body import read_json, read_query
from codeb.api.confirm import respond
from codeb.features.protection import schemas
from codeb.protection import audit
from codeb.services import gate


class Queue(resources.Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = gate.list_queue(self.deps, **read_query(req, schemas.QUEUE_QUERY))


class QueueEntry(resources.Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, entry_id: str) -> None:
        resp.media = gate.get_entry(self.deps, entry_id)


class Confirm(resources.Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, schemas.ProtectionConfirm)
        answer = gate.confirm(self.deps, req.context.actor, body["token"], body.get("typed_name"))
        respond(resp, answer)


class Approve(resources.Resource):
    admin_methods = ("POST",)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, schemas.ProtectionApprove)
        respond(resp, gate.approve(self.deps, req.context.actor, body["id"]))


class Cancel(resources.Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, schemas.ProtectionCancel)
        answer = gate.cancel(
            self.deps, req.context.actor, entry_id=body.get("id"), token=body.get("token")
        )
        respond(resp, answer)


class Logs(resources.Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        query = read_query(req, schemas.LOGS_QUERY)
        project_ref, verify = query.pop("project"), query.pop("verify")
        answer = audit.list_logs(
            **query, project_id=gate.project_id_for(project_ref) if project_ref else None
        )
        if verify == "true":
            answer["chain"] = audit.verify_report(self.deps.db)
        resp.media = answer


class LogsVerify(resources.Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = audit.verify_report(self.deps.db)


class Rules(resources.Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = gate.rules_view(self.deps)
