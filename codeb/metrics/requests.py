"""The HTTP requests an app answered, counted without a lock: every thread adds to its own
tally and a scrape adds the tallies up.

prometheus_client's Counter and Histogram take a lock for each of the three updates a request
made (count, sum, bucket); with waitress's threads queueing for the GIL that was a seventh of
codeb's own time on a cached `GET /api/projects` (issue 15). A thread's tally is written by
that thread only, so no update is lost. A scrape copies each record with one C-level call,
which the GIL keeps whole: it never sees a half-written number, though between a request's
two updates (its latency, then its bucket) it may see the one without the other.

One record per (method, route, status): the latency sum and the count in each bucket. The
request count is the sum of the buckets, so `codeb_http_requests_total` and the histogram's
`_count` always agree."""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

REQUESTS = "codeb_http_requests"
LATENCY = "codeb_http_request_duration_seconds"

Series = tuple[str, str, str]  # method, route template, status


class RequestTally:
    """`observe` from any thread; `collect` (prometheus_client's collector interface) at a
    scrape."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self._bounds = tuple(float(b) for b in buckets)
        self._local = threading.local()
        self._lock = threading.Lock()  # only when a thread brings its first request
        self._tallies: list[dict[Series, list[float]]] = []
        self._created = time.time()

    def observe(self, method: str, route: str, status: str, seconds: float) -> None:
        try:
            tally = self._local.tally
        except AttributeError:
            tally = self._local.tally = {}
            with self._lock:
                self._tallies.append(tally)
        record = tally.get((method, route, status))
        if record is None:
            # [latency sum, one count per bucket, +Inf last]
            record = tally[(method, route, status)] = [0.0] * (len(self._bounds) + 2)
        record[0] += seconds
        # bisect_left: the first bound >= seconds, Prometheus's "le".
        record[1 + bisect.bisect_left(self._bounds, seconds)] += 1

    def totals(self) -> dict[Series, list[float]]:
        """Every series summed over the threads: [latency sum, count per bucket ...]."""
        with self._lock:
            tallies = list(self._tallies)
        merged: dict[Series, list[float]] = {}
        for tally in tallies:
            for series, record in list(tally.items()):
                merged[series] = _added(merged.get(series), list(record))
        return merged

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            REQUESTS,
            "HTTP requests served, by method, route template and status",
            labels=["method", "route", "status"],
        )
        latency = HistogramMetricFamily(
            LATENCY,
            "Time to answer an HTTP request, by method and route template",
            labels=["method", "route"],
        )
        by_route: dict[tuple[str, str], list[float]] = {}
        for (method, route, status), record in sorted(self.totals().items()):
            requests.add_metric([method, route, status], sum(record[1:]), created=self._created)
            by_route[(method, route)] = _added(by_route.get((method, route)), record)
        for (method, route), record in by_route.items():
            cumulative, buckets = 0.0, []
            for bound, count in zip((*self._bounds, float("inf")), record[1:], strict=True):
                cumulative += count
                # `le` as prometheus_client writes it: 0.005, 1.0, +Inf.
                buckets.append((floatToGoString(bound), cumulative))
            latency.add_metric([method, route], buckets, record[0])
        yield requests
        yield latency


def _added(into: list[float] | None, record: list[float]) -> list[float]:
    """Two records of one series added up (`into` absent: the record itself)."""
    return record if into is None else [a + b for a, b in zip(into, record, strict=True)]
