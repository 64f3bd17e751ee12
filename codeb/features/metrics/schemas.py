"""GET /api/metrics?format=json: the summary's shape."""

from __future__ import annotations

from typing import Any

from codeb.api.declare import query
from codeb.api.shapes import Shape

FORMATS = ("prometheus", "json")
METRICS_QUERY = (query("format", enum=list(FORMATS)),)


class Runner(Shape):
    queued: float
    running: float


class Servers(Shape):
    total: int
    unreachable: list[str]


class Overview(Shape):
    http_requests: float
    http_server_errors: float
    operations: dict[str, float]
    runner: Runner
    protection_queue_pending: float
    servers: Servers
    scheduled_jobs_failing: list[str]
    collectors_failing: list[str]


class Sample(Shape):
    value: float
    sample: str | None = None
    labels: dict[str, str] | None = None


class Family(Shape):
    type: str
    help: str
    samples: list[Sample]


class MetricsSummary(Shape):
    overview: Overview
    metrics: dict[str, Family]
    collected_in_s: float
    extra: dict[str, Any] | None = None
