"""The WSGI application, built from an explicit list of features.

`FEATURES` names the feature packages; each one's `includeme(config)` declares its routes
(with request and response shapes), appliers, runner jobs and periodic jobs (codeb.wiring).
`build_deps(settings)` wires them and opens the database; `create_app(deps)` refuses to start
half-wired and adds the routes; `get_app()` is what waitress serves."""

from __future__ import annotations

import dataclasses
import functools
import logging

import falcon

from codeb.api import errors
from codeb.api.middleware import DatabaseSession, RequestPipeline
from codeb.clock import Clock, SystemClock
from codeb.config import SettingError, Settings, load_settings
from codeb.executor.worker import Worker
from codeb.features.containers import service as containers
from codeb.features.servers import service as servers
from codeb.protection import audit
from codeb.secretbox import SecretBox
from codeb.services import gate, operations, scheduler
from codeb.services.context import Deps
from codeb.store.db import migrate, open_database
from codeb.wiring import Wiring, wire

# Adding a capability: its package under codeb/features/ and one line here.
FEATURES: tuple[str, ...] = (
    "codeb.features.core",
    "codeb.features.projects",
    "codeb.features.servers",
    "codeb.features.containers",
    "codeb.features.operations",
    "codeb.features.keys",
    "codeb.features.protection",
    "codeb.features.schedules",
    "codeb.features.domains",
    "codeb.features.recovery",
    "codeb.features.scaling",
    "codeb.features.backups",
    "codeb.features.metrics",
)


@functools.cache
def wiring() -> Wiring:
    """The features of FEATURES, wired (once per process)."""
    return wire(FEATURES)


def build_deps(settings: Settings, clock: Clock | None = None) -> Deps:
    """Open the database (applying migrations) and the secret box, with the wired features."""
    db = open_database(
        settings.resolved_database_url, busy_timeout_ms=settings.sqlite_busy_timeout_ms
    )
    migrate(db)
    box = SecretBox.from_key_file(settings.resolved_secret_key_file)
    audit.bind(db, settings.resolved_log_key_file, settings.resolved_log_anchor_file)
    deps = Deps(settings=settings, db=db, box=box, clock=clock or SystemClock(), wiring=wiring())
    # Checks the configured protection rules (a bad one stops the start) and logs overrides.
    try:
        gate.log_rule_overrides(deps)
    except ValueError as exc:
        raise SettingError(
            f"CODEB_PROTECTION_RULES / CODEB_PROTECTION_RULE_OVERRIDES: {exc}"
        ) from None
    return deps


def start_runtime(deps: Deps) -> Deps:
    """What only the serving process does: recover operations a crash left in flight, import
    runs made by hand, and start the worker and the scheduler. Returns deps with both
    attached; stop them with `deps.scheduler.shutdown()` then `deps.worker.shutdown()`."""
    # A bad CODEB_SCHEDULES stops the start before anything runs.
    scheduler.configured(scheduler.by_name(deps.schedules), deps.settings.schedules)
    interrupted = operations.recover_interrupted(deps)
    operations.import_journal(deps, deps.settings.data_dir / "journal")
    worker = Worker(deps, dict(deps.runner_jobs), servers.ssh_settings(deps.settings))
    deps = dataclasses.replace(deps, worker=worker)
    operations.clean_up_after(deps, interrupted)
    # Then the registry follows what those runs left on the hosts (issue 16).
    containers.reconcile_after_crash(deps, interrupted)
    # Periodic work starts last, once recovery has settled the state its jobs read.
    periodic = scheduler.Scheduler(deps)
    periodic.start(deps.settings.scheduler_tick_s)
    deps = dataclasses.replace(deps, scheduler=periodic)
    # Then the features' background helpers (the replicator of codeb's own database, ...).
    started = {}
    for name, start in deps.wiring.background.items():
        helper = start(deps)
        if helper is not None:
            started[name] = helper
    return dataclasses.replace(deps, background=started)


def stop_background(deps: Deps) -> None:
    """Stop what start_runtime started besides the worker: the scheduler first (a job running
    now finishes and records its run), then the background helpers."""
    if deps.scheduler is not None:
        deps.scheduler.shutdown()
    for helper in deps.background.values():
        helper.shutdown()


def check_wiring(deps: Deps, wiring: Wiring) -> None:
    """Refuse to start half-wired: every rule has an applier and every applier a rule (else a
    confirmation would fail at run time), and every method a route's resource serves is
    declared, so it is in the document (which also drives the query-parameter check)."""
    rules, _ = gate.rules_for(deps.settings)
    missing, orphans = gate.unwired(rules, wiring.appliers)
    paths = wiring.document["paths"]
    undocumented = [
        f"{method.upper()} {route.path}"
        for route in wiring.routes
        for method in ("get", "post", "put", "patch", "delete")
        if hasattr(route.resource, f"on_{method}") and method not in paths.get(route.path, {})
    ]
    problems = [
        *(f"rule {name!r} has no applier" for name in missing),
        *(f"applier {name!r} has no rule" for name in orphans),
        *(f"route {route} is missing from the OpenAPI document" for route in undocumented),
    ]
    if problems:
        raise RuntimeError("codeb is not wired up: " + "; ".join(problems))


def create_app(deps: Deps) -> falcon.App:
    wiring = deps.wiring
    check_wiring(deps, wiring)
    app = falcon.App(
        # The pipeline first: its time covers the session's opening and closing too.
        middleware=[RequestPipeline(deps, wiring.document), DatabaseSession(deps)],
        cors_enable=False,
    )
    app.req_options.strip_url_path_trailing_slash = True
    errors.register(app)
    for route in wiring.routes:
        app.add_route(route.path, route.resource(deps))
    return app


def get_app() -> falcon.App:
    settings = load_settings()
    logging.basicConfig(level=settings.log_level)
    return create_app(start_runtime(build_deps(settings)))
