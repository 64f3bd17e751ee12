"""Periodic work over HTTP: what each scheduled job did last and when it runs next."""

from __future__ import annotations

import falcon

from codeb.api.resources import Resource
from codeb.services import scheduler


class Schedules(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = scheduler.list_schedules(self.deps)
