"""The WSGI application: `create_app(deps)` wires routes to injected collaborators;
`get_app()` builds the real ones from the settings (what waitress serves)."""

from __future__ import annotations

import logging

import falcon

from codeb.api import errors, resources
from codeb.api.middleware import Authentication, DatabaseSession, RequestId
from codeb.clock import Clock, SystemClock
from codeb.config import Settings, load_settings
from codeb.secretbox import SecretBox
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
    ("/api/servers/{ip}", resources.Server),
    ("/api/keys", resources.Keys),
    ("/api/keys/{name}", resources.Key),
)


def build_deps(settings: Settings, clock: Clock | None = None) -> Deps:
    """Open the database (applying migrations) and the secret box."""
    db = open_database(
        settings.resolved_database_url, busy_timeout_ms=settings.sqlite_busy_timeout_ms
    )
    migrate(db)
    box = SecretBox.from_key_file(settings.resolved_secret_key_file)
    return Deps(settings=settings, db=db, box=box, clock=clock or SystemClock())


def create_app(deps: Deps) -> falcon.App:
    app = falcon.App(
        middleware=[RequestId(), DatabaseSession(deps), Authentication(deps)],
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
    return create_app(build_deps(settings))
