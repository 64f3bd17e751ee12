"""The Protection Layer over HTTP: the queue, confirm, approve, cancel, the logs and the rules.

Any resource of a guarded operation reads the confirmation with `confirmation_from(req)` and
answers with `respond(resp, answer)` (200/201 executed, 202 not executed yet)."""

from __future__ import annotations

import falcon

from codeb.api import resources
from codeb.api.body import query_choice, query_int, read_json
from codeb.api.confirm import respond
from codeb.features.protection import schemas
from codeb.features.protection.schemas import LOG_STATUSES
from codeb.protection import audit
from codeb.protection.queue import STATUSES
from codeb.protection.rules import RULES
from codeb.services import protection


class Queue(resources.Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = protection.list_queue(
            self.deps,
            status=query_choice(req, "status", (*STATUSES, "all")),
            operation=query_choice(req, "operation", tuple(RULES)),
            limit=query_int(req, "limit", 100, 1, 500),
            offset=query_int(req, "offset", 0, 0, 2**31),
        )


class QueueEntry(resources.Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, entry_id: str) -> None:
        resp.media = protection.get_entry(self.deps, entry_id)


class Confirm(resources.Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, schemas.ProtectionConfirm)
        answer = protection.confirm(
            self.deps, req.context.actor, body["token"], body.get("typed_name")
        )
        respond(resp, answer)


class Approve(resources.Resource):
    admin_methods = ("POST",)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, schemas.ProtectionApprove)
        respond(resp, protection.approve(self.deps, req.context.actor, body["id"]))


class Cancel(resources.Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, schemas.ProtectionCancel)
        answer = protection.cancel(
            self.deps, req.context.actor, entry_id=body.get("id"), token=body.get("token")
        )
        respond(resp, answer)


class Logs(resources.Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        project_ref = req.get_param("project")
        answer = audit.list_logs(
            limit=query_int(req, "limit", 100, 1, 500),
            offset=query_int(req, "offset", 0, 0, 2**31),
            operation=req.get_param("operation"),
            status=query_choice(req, "status", LOG_STATUSES),
            project_id=protection.project_id_for(project_ref) if project_ref else None,
            key_name=req.get_param("key_name"),
            target=req.get_param("target"),
        )
        if query_choice(req, "verify", ("true", "false")) == "true":
            answer["chain"] = audit.verify_report(self.deps.db)
        resp.media = answer


class LogsVerify(resources.Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = audit.verify_report(self.deps.db)


class Rules(resources.Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = protection.rules_view(self.deps)
