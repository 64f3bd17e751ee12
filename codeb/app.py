"""The WSGI application: `create_app(deps)` wires routes to injected collaborators;
`get_app()` builds the real ones from the settings (what waitress serves)."""

from __future__ import annotations

import dataclasses
import logging

import falcon

from codeb.api import containers as containers_api
from codeb.api import errors, resources
from codeb.api import operations as operations_api
from codeb.api import protection as protection_api
from codeb.api import schedules as schedules_api
from codeb.api.middleware import (
    Authentication,
    DatabaseSession,
    RequestId,
    StrictParameters,
)
from codeb.api.openapi import build_document
from codeb.clock import Clock, SystemClock
from codeb.config import SettingError, Settings, load_settings
from codeb.executor.worker import Worker
from codeb.protection import audit
from codeb.secretbox import SecretBox
from codeb.services import (
    cancel,
    containers,
    keys,
    operations,
    projects,
    protection,
    scheduler,
    schedules,
    servers,
)
from codeb.services.context import Deps
from codeb.store.db import migrate, open_database

ROUTES: tuple[tuple[str, type[resources.Resource]], ...] = (
    ("/api/health", resources.Health),
    ("/api/openapi.json", resources.OpenApi),
    ("/api/projects", resources.Projects),
    ("/api/projects/{project}", resources.Project),
    ("/api/projects/{project}/environments", resources.Environments),
    ("/api/projects/{project}/environments/{env}", resources.Environment),
    ("/api/servers", resources.Servers),
    ("/api/servers/ssh-key", operations_api.ServerSshKey),
    ("/api/servers/{ip}", resources.Server),
    ("/api/servers/{ip}/stats", operations_api.ServerStats),
    ("/api/servers/{ip}/bootstrap", operations_api.ServerBootstrap),
    ("/api/containers", containers_api.Containers),
    ("/api/containers/deploy", containers_api.Deploy),
    ("/api/containers/drift-check", containers_api.DriftCheck),
    ("/api/containers/{container_id}", containers_api.ContainerItem),
    ("/api/containers/{container_id}/start", containers_api.ContainerStart),
    ("/api/containers/{container_id}/stop", containers_api.ContainerStop),
    ("/api/containers/{container_id}/restart", containers_api.ContainerRestart),
    ("/api/containers/{container_id}/volume", containers_api.ContainerVolume),
    ("/api/operations", operations_api.Operations),
    ("/api/operations/{operation_id}", operations_api.OperationItem),
    ("/api/operations/{operation_id}/events", operations_api.OperationEvents),
    ("/api/operations/{operation_id}/cancel", operations_api.OperationCancel),
    ("/api/keys", resources.Keys),
    ("/api/keys/{name}", resources.Key),
    ("/api/protection/queue", protection_api.Queue),
    ("/api/protection/queue/{entry_id}", protection_api.QueueEntry),
    ("/api/protection/confirm", protection_api.Confirm),
    ("/api/protection/approve", protection_api.Approve),
    ("/api/protection/cancel", protection_api.Cancel),
    ("/api/protection/logs", protection_api.Logs),
    ("/api/protection/logs/verify", protection_api.LogsVerify),
    ("/api/protection/rules", protection_api.Rules),
    ("/api/schedules", schedules_api.Schedules),
    ("/api/schedules/{job}/run", schedules_api.ScheduleRun),
)


# The modules whose declarations (APPLIERS, JOBS, SCHEDULES) make up the app.
DECLARING_MODULES = (projects, keys, cancel, schedules, servers, containers, protection)


def _gather(name: str) -> dict:
    out: dict = {}
    for module in DECLARING_MODULES:
        for key, value in getattr(module, name, {}).items():
            if key in out:
                raise RuntimeError(f"{name} {key!r} is declared twice")
            out[key] = value
    return out


def build_deps(settings: Settings, clock: Clock | None = None) -> Deps:
    """Open the database (applying migrations) and the secret box."""
    db = open_database(
        settings.resolved_database_url, busy_timeout_ms=settings.sqlite_busy_timeout_ms
    )
    migrate(db)
    box = SecretBox.from_key_file(settings.resolved_secret_key_file)
    audit.bind(db, settings.resolved_log_key_file, settings.resolved_log_anchor_file)
    deps = Deps(
        settings=settings,
        db=db,
        box=box,
        clock=clock or SystemClock(),
        appliers=_gather("APPLIERS"),
        runner_jobs=_gather("JOBS"),
        schedules=tuple(j for m in DECLARING_MODULES for j in getattr(m, "SCHEDULES", ())),
    )
    # Checks the configured protection rules (a bad one stops the start) and logs overrides.
    try:
        protection.log_rule_overrides(deps)
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
    return dataclasses.replace(deps, scheduler=periodic)


def check_wiring(deps: Deps, document: dict) -> None:
    """Refuse to start half-wired: every rule has an applier and every applier a rule (else a
    confirmation would fail at run time), and every route's methods are in the document
    (which also drives body validation and the query-parameter check)."""
    rules, _ = protection.rules_for(deps.settings)
    missing, orphans = protection.unwired(rules, deps.appliers)
    undocumented = [
        f"{method.upper()} {path}"
        for path, resource in ROUTES
        for method in ("get", "post", "put", "patch", "delete")
        if hasattr(resource, f"on_{method}") and method not in document["paths"].get(path, {})
    ]
    problems = [
        *(f"rule {name!r} has no applier" for name in missing),
        *(f"applier {name!r} has no rule" for name in orphans),
        *(f"route {route} is missing from the OpenAPI document" for route in undocumented),
    ]
    if problems:
        raise RuntimeError("codeb is not wired up: " + "; ".join(problems))


def create_app(deps: Deps) -> falcon.App:
    check_wiring(deps, build_document())
    app = falcon.App(
        middleware=[
            RequestId(),
            DatabaseSession(deps),
            Authentication(deps),
            StrictParameters(build_document()),
        ],
        cors_enable=False,
    )
    app.req_options.strip_url_path_trailing_slash = True
    errors.register(app)
    for path, resource in ROUTES:
        app.add_route(path, resource(deps))
    return app


def get_app() -> falcon.App:
    settings = load_settings()
    logging.basicConfig(level=settings.log_level)
    return create_app(start_runtime(build_deps(settings)))
