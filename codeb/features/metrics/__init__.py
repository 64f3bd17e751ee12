"""Metrics over HTTP (issue 13): GET /api/metrics, Prometheus' exposition or a JSON summary.
The figures themselves are codeb.metrics (no HTTP); a feature adds its own with
`config.add_metrics(FeatureCollector(...))` in its includeme."""

from __future__ import annotations

from codeb.api.declare import Op, answer
from codeb.features.metrics import schemas
from codeb.wiring import Configurator


def includeme(config: Configurator) -> None:
    # Imported here so a service import never pulls in Falcon (the HTTP layer).
    from codeb.features.metrics import api

    config.add_route(
        "/api/metrics",
        api.MetricsResource,
        get=Op(
            "codeb's metrics: Prometheus' text exposition, or with format=json the same as "
            "a summary (any valid key; Authorization: Bearer <key> works too)",
            {
                200: answer(
                    schemas.MetricsSummary,
                    "format=json: the summary (application/json); otherwise the Prometheus "
                    "text exposition (text/plain; version=0.0.4)",
                    also={"text/plain": {"schema": {"type": "string"}}},
                )
            },
            (422,),
            params=schemas.METRICS_QUERY,
        ),
    )
