"""codeb's metrics (issue 13), without any HTTP: a `Metrics` object per app holds a
prometheus_client registry with

- the HTTP requests it served, by method, route template and status, and their latency
  (fed by `observe_request`, which the API's middleware calls; counted per thread without
  a lock: codeb.metrics.requests);
- what the database says at scrape time (`codeb.metrics.state`): operations by kind and
  outcome with a histogram of their durations, operations waiting for or holding a runner,
  protection queue entries pending and the age of the oldest, per server its registry status
  and the last statistics read from it, per scheduled job its last success;
- every collector a feature declared in its includeme (`config.add_metrics(...)`, carried
  by the wiring): backups and certificates add theirs that way, in the feature's own
  package, without touching this one;
- this process's own figures (memory, CPU, open files).

`exposition()` is the Prometheus text format; `summary()` the same figures as JSON (the
original design's "overall metrics"). Reads happen on the caller's database connection (the
request's); nothing here opens an SSH connection or runs a playbook: a scrape only reads."""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from codeb.metrics.requests import RequestTally

log = logging.getLogger("codeb.metrics")

# What a feature contributes: a name and a function reading its figures (the app's Deps in,
# prometheus_client metric families out: GaugeMetricFamily, CounterMetricFamily, ...).
CollectFn = Callable[[Any], Iterable[Metric]]
UNMATCHED_ROUTE = "(unmatched)"
# The methods HTTP and WebDAV define, and Falcon's WEBSOCKET: falcon.COMBINED_METHODS,
# written out because nothing below the HTTP layer imports Falcon (a test compares them).
KNOWN_METHODS = frozenset(
    ("CONNECT DELETE GET HEAD OPTIONS PATCH POST PUT TRACE QUERY CHECKIN CHECKOUT COPY LOCK "
     "MKCOL MOVE PROPFIND PROPPATCH REPORT UNCHECKIN UNLOCK UPDATE VERSION-CONTROL "
     "WEBSOCKET").split()
)  # fmt: skip
OTHER_METHOD = "(other)"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class FeatureCollector:
    """A feature's metrics: `collect(deps)` yields metric families, read at scrape time.
    Names should start with `codeb_<feature>_`. A collector that raises costs only its own
    figures: the scrape goes on and `codeb_metrics_collector_up{collector}` says 0."""

    name: str
    collect: CollectFn
    description: str = ""


class _Features:
    """Adapts feature collectors to prometheus_client's collector interface."""

    def __init__(self, deps: Any, collectors: list[FeatureCollector]) -> None:
        self._deps = deps
        self._collectors = collectors

    def describe(self) -> list[Metric]:
        return []  # collected fresh at each scrape; no name checks at registration

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "codeb_metrics_collector_up",
            "1 if the collector's last read worked, 0 if it failed (its figures are missing)",
            labels=["collector"],
        )
        for collector in self._collectors:
            try:
                families = list(collector.collect(self._deps))
            except Exception:
                log.exception("metrics collector %s failed", collector.name)
                up.add_metric([collector.name], 0)
                continue
            up.add_metric([collector.name], 1)
            yield from families
        yield up


class Metrics:
    """One app's metrics. `collectors` defaults to the built-in state collector and every
    declared feature collector."""

    def __init__(self, deps: Any, collectors: list[FeatureCollector] | None = None) -> None:
        from codeb.metrics.state import STATE

        self.deps = deps
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = RequestTally(LATENCY_BUCKETS)
        self.registry.register(self.requests)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        if collectors is None:
            wired = getattr(getattr(deps, "wiring", None), "metrics", ())
            collectors = [STATE, *wired]
        chosen = collectors
        self.collectors = chosen
        self.registry.register(_Features(deps, chosen))

    def observe_request(self, method: str, route: str | None, status: int, seconds: float) -> None:
        """One answered request. Every label has a bounded set of values, whatever a client
        sends: `route` is the route template (`/api/projects/{project}`), never the raw path
        (None: no route matched), and a method HTTP does not define counts as OTHER_METHOD
        (any token is a method on the wire: one series per invented name would grow the
        server's memory and every scrape without bound)."""
        if method not in KNOWN_METHODS:
            method = OTHER_METHOD
        self.requests.observe(method, route or UNMATCHED_ROUTE, str(status), max(0.0, seconds))

    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def summary(self) -> dict[str, Any]:
        """The same figures as JSON: headline numbers first, then every family."""
        from codeb.metrics.summary import summarize

        started = time.monotonic()
        families = list(self.registry.collect())
        return summarize(families, time.monotonic() - started)


_APPS: weakref.WeakKeyDictionary[Any, Metrics] = weakref.WeakKeyDictionary()
_APPS_LOCK = threading.Lock()


def metrics_for(deps: Any) -> Metrics:
    """The app's one Metrics, shared by the request-timing middleware and the route (one per
    database: the app, and the Deps it is rebuilt with, keep theirs)."""
    with _APPS_LOCK:
        found = _APPS.get(deps.db)
        if found is None:
            found = _APPS[deps.db] = Metrics(deps)
        return found


__all__ = [
    "CONTENT_TYPE_LATEST",
    "UNMATCHED_ROUTE",
    "FeatureCollector",
    "Metrics",
    "metrics_for",
]
