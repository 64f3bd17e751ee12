"""codeb refuses to start half-wired: a rule without an applier (its confirmation would fail at
run time with "no applier"), an applier without a rule, or a route missing from the OpenAPI
document (which drives validation and the query-parameter check). And features register
once: a name declared twice stops the start; only api modules import falcon."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from codeb import app as app_module
from codeb.api.resources import Resource
from codeb.config import REPO_ROOT
from codeb.wiring import Configurator, Route, wire
from tests.support import make_settings


@pytest.fixture
def deps(tmp_path):
    deps = app_module.build_deps(make_settings(tmp_path / "data"))
    yield deps
    deps.db.close()


def _rewired(deps, **changes):
    return dataclasses.replace(deps, wiring=dataclasses.replace(deps.wiring, **changes))


def test_the_real_app_is_wired(deps):
    app_module.check_wiring(deps, deps.wiring)
    assert deps.wiring.features == app_module.FEATURES


def test_a_rule_without_an_applier_stops_the_start(deps):
    appliers = dict(deps.appliers)
    appliers.pop("container_stop")
    with pytest.raises(RuntimeError, match="rule 'container_stop' has no applier"):
        app_module.create_app(_rewired(deps, appliers=appliers))


def test_an_applier_without_a_rule_stops_the_start(deps):
    appliers = {**deps.appliers, "contaner_stop": lambda *a: {}}
    with pytest.raises(RuntimeError, match="applier 'contaner_stop' has no rule"):
        app_module.create_app(_rewired(deps, appliers=appliers))


def test_an_undocumented_route_stops_the_start(deps):
    class Secret(Resource):
        def on_post(self, req, resp) -> None: ...

    routes = (*deps.wiring.routes, Route("/api/secret", Secret))
    with pytest.raises(RuntimeError, match="POST /api/secret is missing from the OpenAPI"):
        app_module.create_app(_rewired(deps, routes=routes))


def test_a_method_served_but_not_declared_stops_the_start(deps):
    route = next(r for r in deps.wiring.routes if r.path == "/api/keys")
    ops = {m: op for m, op in route.ops.items() if m != "post"}
    routes = tuple(dataclasses.replace(r, ops=ops) if r is route else r for r in deps.wiring.routes)
    with pytest.raises(RuntimeError, match="POST /api/keys is missing from the OpenAPI"):
        app_module.create_app(_rewired(deps, routes=routes))


def test_a_name_declared_twice_stops_the_start():
    config = Configurator()
    config.include("codeb.features.keys")
    with pytest.raises(ValueError, match="included twice"):
        config.include("codeb.features.keys")
    with pytest.raises(ValueError, match="applier 'api_key_create' is declared twice"):
        config.add_applier("api_key_create", lambda *a: {})
    with pytest.raises(ValueError, match="route /api/keys is declared twice"):
        config.add_route("/api/keys", Resource)
    from codeb.features.containers import service as containers

    config.include("codeb.features.containers")
    with pytest.raises(ValueError, match="applier 'deploy_staging' is declared twice"):
        config.add_appliers(containers.APPLIERS)


def test_the_app_is_built_from_the_feature_list_only():
    """A feature left out of the list is not served: nothing registers by being imported."""
    import codeb.features.keys  # noqa: F401  (imported, yet not wired below)

    partial = wire(("codeb.features.core", "codeb.features.projects"))
    assert "api_key_create" not in partial.appliers
    assert "/api/keys" not in partial.document["paths"]
    assert "/api/projects" in partial.document["paths"]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_only_api_modules_import_falcon_and_only_the_runner_ansible_runner():
    root = REPO_ROOT / "codeb"
    falcon, runner = [], []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(REPO_ROOT).as_posix()
        imported = _imports(path)
        is_api = rel.startswith("codeb/api/") or rel.endswith("/api.py") or rel == "codeb/app.py"
        if "falcon" in imported and not is_api:
            falcon.append(rel)
        if "ansible_runner" in imported and rel != "codeb/executor/runner.py":
            runner.append(rel)
    assert falcon == [], "only api modules (codeb/api/, codeb/features/*/api.py) import falcon"
    assert runner == [], "only codeb/executor/runner.py imports ansible_runner"
