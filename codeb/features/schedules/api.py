"""Periodic work over HTTP: what each scheduled job did last and when it runs next, and a
request to run one now (through the Protection Layer)."""

from __future__ import annotations

import falcon

from codeb.api.confirm import confirmation_from, respond
from codeb.api.resources import Resource
from codeb.features.schedules import service as schedules


class Schedules(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = schedules.list_schedules(self.deps)


class ScheduleRun(Resource):
    def on_post(self, req: falcon.Request, resp: falcon.Response, job: str) -> None:
        respond(resp, schedules.run_now(self.deps, req.context.actor, job, confirmation_from(req)))
