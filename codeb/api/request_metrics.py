"""Request timing for GET /api/metrics: every answered request is counted and timed by
method, route template (never the raw path: the number of series stays bounded) and status.
Registered first in the middleware list, so the time covers the other middleware too."""

from __future__ import annotations

import time

import falcon

from codeb.metrics import metrics_for
from codeb.services.context import Deps


class RequestMetrics:
    def __init__(self, deps: Deps) -> None:
        self._metrics = metrics_for(deps)

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.metrics_started = time.perf_counter()

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, req_succeeded: bool
    ) -> None:
        started = getattr(req.context, "metrics_started", None)
        if started is None:
            return
        status = resp.status
        code = status if isinstance(status, int) else int(str(status).split(" ", 1)[0])
        # uri_template is None when no route matched (a 404 for an unknown path).
        route = req.uri_template if resource is not None else None
        self._metrics.observe_request(req.method, route, code, time.perf_counter() - started)
