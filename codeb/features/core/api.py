"""Liveness and the OpenAPI document (generated from every feature's declarations)."""

from __future__ import annotations

import falcon

from codeb import __version__
from codeb.api.resources import Resource


class Health(Resource):
    auth_required = False

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        try:
            self.deps.db.execute_sql("SELECT 1")
            database = "ok"
        except Exception:
            database = "unavailable"
        resp.media = {
            "status": "ok" if database == "ok" else "degraded",
            "version": __version__,
            "database": database,
        }


class OpenApi(Resource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self.deps.wiring.document
