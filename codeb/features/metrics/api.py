"""GET /api/metrics: Prometheus' text exposition, or `?format=json` the same as a summary.
Any valid key may read it (readonly is enough), from `X-API-Key` or, as Prometheus sends it,
`Authorization: Bearer <key>`."""

from __future__ import annotations

import falcon

from codeb.api.body import read_query
from codeb.api.resources import Resource
from codeb.errors import ValidationFailed
from codeb.features.keys import service as keys
from codeb.features.metrics.schemas import METRICS_QUERY
from codeb.metrics import metrics_for
from codeb.services.context import CLIENTS


def presented_key(req: falcon.Request) -> str | None:
    key = req.get_header("X-API-Key")
    if key:
        return key
    authorization = req.get_header("Authorization") or ""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


class MetricsResource(Resource):
    # Authenticated here, not by the middleware: a Bearer token counts too.
    auth_required = False

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        client = req.get_header("X-Codeb-Client") or "api"
        if client not in CLIENTS:
            raise ValidationFailed(
                "X-Codeb-Client must be one of: " + ", ".join(CLIENTS),
                {"header": "X-Codeb-Client", "allowed": list(CLIENTS)},
            )
        req.context.actor = keys.authenticate(self.deps, presented_key(req), client)
        metrics = metrics_for(self.deps)
        resp.cache_control = ["no-store"]
        if read_query(req, METRICS_QUERY)["format"] == "json":
            resp.media = metrics.summary()
            return
        body, content_type = metrics.exposition()
        resp.data = body
        resp.content_type = content_type
