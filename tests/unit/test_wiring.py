"""codeb refuses to start half-wired: a rule without an applier (its confirmation would fail at
run time with "no applier"), an applier without a rule, or a route missing from the OpenAPI
document (which drives validation and the query-parameter check)."""

from __future__ import annotations

import dataclasses

import pytest

from codeb import app as app_module
from codeb.api.openapi import build_document
from codeb.api.resources import Resource
from tests.support import make_settings


@pytest.fixture
def deps(tmp_path):
    deps = app_module.build_deps(make_settings(tmp_path / "data"))
    yield deps
    deps.db.close()


def test_the_real_app_is_wired(deps):
    app_module.check_wiring(deps, build_document())


def test_a_rule_without_an_applier_stops_the_start(deps):
    appliers = dict(deps.appliers)
    appliers.pop("container_stop")
    with pytest.raises(RuntimeError, match="rule 'container_stop' has no applier"):
        app_module.create_app(dataclasses.replace(deps, appliers=appliers))


def test_an_applier_without_a_rule_stops_the_start(deps):
    appliers = {**deps.appliers, "contaner_stop": lambda *a: {}}
    with pytest.raises(RuntimeError, match="applier 'contaner_stop' has no rule"):
        app_module.create_app(dataclasses.replace(deps, appliers=appliers))


def test_an_undocumented_route_stops_the_start(deps, monkeypatch):
    class Secret(Resource):
        def on_post(self, req, resp) -> None: ...

    monkeypatch.setattr(app_module, "ROUTES", (*app_module.ROUTES, ("/api/secret", Secret)))
    with pytest.raises(RuntimeError, match="POST /api/secret is missing from the OpenAPI"):
        app_module.create_app(deps)
