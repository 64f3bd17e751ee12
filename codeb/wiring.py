"""Features register once: each feature package's `includeme(config)` declares its routes (with
their request and response shapes), the Protection Layer's appliers, the runner's jobs and the
scheduler's jobs on a `Configurator`; `Configurator.finish()` gives the `Wiring` the app is
built from. Nothing registers by being imported (the model is Warehouse's and Pyramid's
`includeme`); the feature list is codeb.app.FEATURES."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from codeb.api.declare import Op, Route, build_document
from codeb.services.gate import Applier
from codeb.services.scheduler import Job


@dataclass(frozen=True)
class Wiring:
    """What the features declared, complete."""

    features: tuple[str, ...]
    routes: tuple[Route, ...]
    appliers: Mapping[str, Applier]
    runner_jobs: Mapping[str, Any]
    schedules: tuple[Job, ...]
    # Long-lived helpers of the serving process, by name: start(deps) -> something with a
    # shutdown() method, or None when the settings leave it off (codeb.app.start_runtime).
    background: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)
    # The features' metrics collectors (codeb.metrics.FeatureCollector), read at each scrape.
    metrics: tuple[Any, ...] = ()

    @cached_property
    def document(self) -> dict[str, Any]:
        """The OpenAPI document, generated from the routes' declarations."""
        return build_document(self.routes)


class Configurator:
    """Collects declarations; a name declared twice is an error at start-up, not a silent
    override."""

    def __init__(self) -> None:
        self._features: list[str] = []
        self._routes: dict[str, Route] = {}
        self._appliers: dict[str, Applier] = {}
        self._runner_jobs: dict[str, Any] = {}
        self._schedules: dict[str, Job] = {}
        self._background: dict[str, Callable[[Any], Any]] = {}
        self._metrics: dict[str, Any] = {}

    def include(self, feature: str) -> None:
        """Import the feature package and call its `includeme(config)`."""
        if feature in self._features:
            raise ValueError(f"feature {feature} is included twice")
        self._features.append(feature)
        importlib.import_module(feature).includeme(self)

    def add_route(
        self, path: str, resource: type, *, params: Sequence[dict[str, Any]] = (), **ops: Op
    ) -> None:
        """A route: the Falcon resource class (built with `resource(deps)`), the path's
        parameters and one `Op` per method the resource serves (get=Op(...), post=...)."""
        if path in self._routes:
            raise ValueError(f"route {path} is declared twice")
        self._routes[path] = Route(path, resource, tuple(params), dict(ops))

    def add_applier(self, operation: str, applier: Applier) -> None:
        """What performs `operation` once the Protection Layer lets it through (one per rule
        of codeb/protection/rules.py)."""
        if operation in self._appliers:
            raise ValueError(f"applier {operation!r} is declared twice")
        self._appliers[operation] = applier

    def add_appliers(self, appliers: Mapping[str, Applier]) -> None:
        for operation, applier in appliers.items():
            self.add_applier(operation, applier)

    def add_runner_job(self, kind: str, job: Any) -> None:
        """A job of the runner (codeb.executor.worker): what an operation of `kind` runs."""
        if kind in self._runner_jobs:
            raise ValueError(f"runner job {kind!r} is declared twice")
        self._runner_jobs[kind] = job

    def add_runner_jobs(self, jobs: Mapping[str, Any]) -> None:
        for kind, job in jobs.items():
            self.add_runner_job(kind, job)

    def add_schedule(self, job: Job) -> None:
        """A periodic job of the scheduler (codeb.services.scheduler)."""
        if job.name in self._schedules:
            raise ValueError(f"scheduled job {job.name!r} is declared twice")
        self._schedules[job.name] = job

    def add_schedules(self, jobs: Iterable[Job]) -> None:
        for job in jobs:
            self.add_schedule(job)

    def add_background(self, name: str, start: Callable[[Any], Any]) -> None:
        """A helper the serving process runs beside the worker and the scheduler (e.g. the
        replicator of codeb's own database): `start(deps)` returns an object with
        `shutdown()`, or None when the settings leave it off. Started after the scheduler,
        stopped before the worker."""
        if name in self._background:
            raise ValueError(f"background helper {name!r} is declared twice")
        self._background[name] = start

    def add_metrics(self, collector: Any) -> None:
        """A feature's metrics (a codeb.metrics.FeatureCollector), read at each scrape of
        GET /api/metrics; its name is unique."""
        if collector.name in self._metrics:
            raise ValueError(f"metrics collector {collector.name!r} is declared twice")
        self._metrics[collector.name] = collector

    def finish(self) -> Wiring:
        return Wiring(
            features=tuple(self._features),
            routes=tuple(self._routes.values()),
            appliers=dict(self._appliers),
            runner_jobs=dict(self._runner_jobs),
            schedules=tuple(self._schedules.values()),
            background=dict(self._background),
            metrics=tuple(self._metrics.values()),
        )


def wire(features: Iterable[str]) -> Wiring:
    config = Configurator()
    for feature in features:
        config.include(feature)
    return config.finish()
