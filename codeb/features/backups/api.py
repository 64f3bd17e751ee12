"""Backups over HTTP: take one, list and read them, restore one (to a time) into a new
container, delete one (HIGH)."""

from __future__ import annotations

import falcon

from codeb.api.body import query_choice, query_int, query_text, read_json
from codeb.api.confirm import confirmation_from, respond
from codeb.api.resources import Resource
from codeb.features.backups import drills, redis, retention, schemas, status
from codeb.features.backups import service as backups
from codeb.services.ports import ENVIRONMENTS


class Backups(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        # Every parameter is read (so checked) before either listing runs: a filter the
        # deleted projects' listing ignored would have been accepted unchecked.
        filters = {
            "project": query_text(req, "project", 100),
            "environment": query_choice(req, "environment", ENVIRONMENTS),
            "status": query_choice(req, "status", backups.STATUSES),
            "limit": query_int(req, "limit", 50, 1, 500),
            "offset": query_int(req, "offset", 0, 0, 2**31),
        }
        if query_choice(req, "deleted", ("true", "false")) == "true":
            resp.media = retention.retained_backups(self.deps, **filters)
            return
        resp.media = backups.list_backups(**filters)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, schemas.BackupCreateRequest)
        respond(
            resp,
            backups.create_backup(self.deps, req.context.actor, body, confirmation_from(req)),
        )


class BackupItem(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, backup_id: str) -> None:
        resp.media = backups.get_backup(self.deps, backup_id)

    def on_delete(self, req: falcon.Request, resp: falcon.Response, backup_id: str) -> None:
        respond(
            resp,
            backups.delete_backup(self.deps, req.context.actor, backup_id, confirmation_from(req)),
        )


class BackupRestore(Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response, backup_id: str) -> None:
        body = read_json(req, schemas.RestoreRequest)
        respond(
            resp,
            backups.restore_backup(
                self.deps, req.context.actor, backup_id, body, confirmation_from(req)
            ),
        )


class BackupVerify(Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response, backup_id: str) -> None:
        respond(
            resp,
            drills.verify_backup(self.deps, req.context.actor, backup_id, confirmation_from(req)),
        )


class BackupDrills(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, backup_id: str) -> None:
        resp.media = drills.list_drills(backup_id, limit=query_int(req, "limit", 20, 1, 200))


class BackupsStatus(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = status.backup_status(self.deps, project=query_text(req, "project", 100))


class RedisCopies(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = redis.list_copies(
            project=query_text(req, "project", 100),
            environment=query_choice(req, "environment", ENVIRONMENTS),
            limit=query_int(req, "limit", 50, 1, 500),
            offset=query_int(req, "offset", 0, 0, 2**31),
        )

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req, schemas.RedisCopyRequest)
        respond(resp, redis.create_copy(self.deps, req.context.actor, body, confirmation_from(req)))


class RedisCopyRestore(Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response, copy_id: str) -> None:
        body = read_json(req, schemas.RedisRestoreRequest)
        respond(
            resp,
            redis.restore_copy(self.deps, req.context.actor, copy_id, body, confirmation_from(req)),
        )


class RedisCopyVerify(Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response, copy_id: str) -> None:
        respond(
            resp, redis.verify_copy(self.deps, req.context.actor, copy_id, confirmation_from(req))
        )
