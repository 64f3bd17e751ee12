"""Strict input, for every operation in the OpenAPI document: a string that ends in a newline,
carries a CR or a NUL, or any control character is refused with 422 and nothing runs. Bodies
nested too deep are a 400, never a 500 (finding 1 and 7 of the trust issue).

The rule is tested over the document, not over a list of known routes: a new operation gets
the same sweep, and a new request schema must add a valid example below (a test says so)."""

from __future__ import annotations

import copy
import re
from typing import Any

import msgspec
import pytest

from codeb.app import wiring
from codeb.store.models import ApiKey, Operation, OperationLog, Project, ProtectionQueue, Server
from tests.protection.helpers import make_project, request_shapes

# A body each request schema accepts; each sweep below changes one field of it. A shape not
# listed here is swept from its declared `example`.
_OVERRIDES: dict[str, dict[str, Any]] = {
    "ProjectCreate": {"name": "fresh", "type": "nextjs", "git_repo": "https://git.example/x"},
    "ProjectUpdate": {"type": "remix", "git_repo": "https://git.example/x"},
    "EnvironmentCreate": {"name": "preview"},
    "ServerCreate": {
        "name": "app9",
        "ip": "127.0.0.9",
        "role": "app",
        "ssh_user": "root",
        "ssh_port": 22,
        "provider": "manual",
        "provider_id": "x1",
        "bootstrap": False,
    },
    "ServerUpdate": {"role": "db", "bootstrap": False},
    "ApiKeyCreate": {"name": "ci", "role": "readonly", "principal": "ci-bot"},
    "ProtectionConfirm": {"token": "t" * 40, "typed_name": "shop"},
    "ProtectionApprove": {"id": "pq_0123"},
    "ProtectionCancel": {"id": "pq_0123", "token": "t" * 40},
    "DeployRequest": {"project": "shop", "environment": "staging", "image": "reg.example/a:1"},
}
VALID_BODIES: dict[str, dict[str, Any]] = {
    # (a missing example fails test_every_request_schema_has_a_valid_example, by name)
    name: _OVERRIDES.get(name, getattr(shape, "example", {}))
    for name, shape in request_shapes().items()
}
BAD_SUFFIXES = ("\n", "\r", "\x00", "\r\n")
BAD_INSIDE = ("a\nb", "a\rb", "a\x00b", "a\x1bb", "a\x7fb")
METHODS = ("post", "put", "patch", "delete", "get")
# Path parameters need a value that exists, or 404 could hide a missing check.
PATH_VALUES = {"project": "shop", "env": "staging", "ip": "127.0.0.7", "name": "ro"}


def _operations() -> list[tuple[str, str, dict]]:
    doc = wiring().document
    found = []
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                op = dict(item[method])
                op["parameters"] = item.get("parameters", []) + op.get("parameters", [])
                found.append((path, method, op))
    return found


def _body_schema(op: dict) -> str | None:
    body = op.get("requestBody")
    if not body:
        return None
    return body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]


def _string_fields(schema: dict) -> list[str]:
    props = schema.get("properties", {})
    names = []
    for name, prop in props.items():
        types = []
        for alternative in [prop, *prop.get("anyOf", [])]:
            kind = alternative.get("type")
            types += kind if isinstance(kind, list) else [kind]
        if "string" in types or all(isinstance(v, str) for v in prop.get("enum", [0])):
            names.append(name)
    return names


def _counts(api) -> dict[str, int]:
    with api.deps.db.connection_context():
        return {
            "projects": Project.select().count(),
            "servers": Server.select().count(),
            "keys": ApiKey.select().count(),
            "operations": Operation.select().count(),
            "queue": ProtectionQueue.select().count(),
            "executed": OperationLog.select().where(OperationLog.status == "executed").count(),
        }


def _url(path: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "x"), path)


def test_every_request_schema_has_a_valid_example():
    """Each request shape declares `example` (published in the document), and it passes."""
    shapes = request_shapes()
    schemas = {_body_schema(op) for _, _, op in _operations()} - {None}
    assert schemas == set(shapes)
    components = wiring().document["components"]["schemas"]
    for name, shape in shapes.items():
        assert isinstance(getattr(shape, "example", None), dict), f"{name} needs an example"
        msgspec.convert(shape.example, shape)  # raises if the example breaks its shape
        assert components[name]["examples"] == [shape.example]
        msgspec.convert(VALID_BODIES[name], shape)


@pytest.fixture
def seeded(papi):
    with papi.client() as c:
        make_project(c, "shop")
        r = c.post(
            "/api/servers",
            json={"name": "app7", "ip": "127.0.0.7", "role": "app", "bootstrap": False},
        )
        assert r.status_code in (201, 202), r.text
    papi.new_key("ro", "readonly")
    return papi


def test_control_characters_in_any_body_string_are_refused(seeded):
    before = _counts(seeded)
    tried = 0
    with seeded.client() as c:
        for path, method, op in _operations():
            name = _body_schema(op)
            if name is None:
                continue
            for field in _string_fields(wiring().document["components"]["schemas"][name]):
                base = VALID_BODIES[name]
                valid = base.get(field) if isinstance(base.get(field), str) else "abc"
                values = [valid + s for s in BAD_SUFFIXES] + list(BAD_INSIDE)
                for bad in values:
                    body = copy.deepcopy(base)
                    body[field] = bad
                    r = c.request(method.upper(), _url(path, PATH_VALUES), json=body)
                    tried += 1
                    assert r.status_code == 422, (method, path, field, repr(bad), r.text)
                    assert r.json()["error"]["code"] == "validation_failed"
    assert tried > 150
    assert _counts(seeded) == before


def test_control_characters_in_path_and_query_parameters_are_refused(seeded):
    before = _counts(seeded)
    with seeded.client() as c:
        for path, method, op in _operations():
            params = op.get("parameters", [])
            body = VALID_BODIES.get(_body_schema(op) or "", None)
            for p in params:
                if p["in"] not in ("path", "query"):
                    continue  # HTTP itself forbids CR, LF and NUL in header values
                for bad in ("x%0A", "x%0D", "x%00", "ab%1B"):
                    if p["in"] == "path":
                        url = _url(path, {**PATH_VALUES, p["name"]: bad})
                    else:
                        url = _url(path, PATH_VALUES) + f"?{p['name']}={bad}"
                    r = c.request(method.upper(), url, json=body)
                    assert r.status_code == 422, (method, path, p["name"], bad, r.text)
    assert _counts(seeded) == before


def test_trailing_newline_in_names_is_refused_by_the_services_too():
    """The same rule below the HTTP layer: validators use full matches."""
    from codeb.errors import ValidationFailed
    from codeb.render import units
    from codeb.services.validation import validate_dns_label, validate_key_name

    for validate in (validate_dns_label, validate_key_name):
        with pytest.raises(ValidationFailed):
            validate("evil\n")
    for pattern, good in (
        (units._NAME, "shop"),
        (units._IMAGE, "reg/a:1"),
        (units._PASSWORD, "p" * 20),
    ):
        assert pattern.fullmatch(good)
        assert not pattern.fullmatch(good + "\n")


@pytest.mark.parametrize("depth", [40, 5000, 100_000])
def test_deeply_nested_json_is_a_4xx(papi, depth):
    body = '{"name": ' + "[" * depth + "]" * depth + "}"
    with papi.client() as c:
        r = c.post("/api/projects", content=body)
    assert r.status_code in (400, 422), r.text
    assert "error" in r.json()


@pytest.mark.parametrize("raw", [" 5", "5 ", "1_0", "\u0665", "+5", "0x10", "5.0"])
def test_integer_query_parameters_are_plain_digits(papi, raw):
    with papi.client() as c:
        r = c.get("/api/protection/queue", params={"limit": raw})
    assert r.status_code == 422, (raw, r.text)


@pytest.mark.parametrize(
    "query", ["limit=1&limit=500", "status=pending&status=all", "operation=db_drop&operation="]
)
def test_a_query_parameter_given_twice_is_refused(papi, query):
    with papi.client() as c:
        r = c.get(f"/api/protection/queue?{query}")
    assert r.status_code == 422, (query, r.text)
    assert r.json()["error"]["details"]["repeated"]


def test_every_query_parameter_of_every_route_is_refused_twice(seeded):
    """The same rule for every documented query parameter, present and future."""
    before = _counts(seeded)
    tried = 0
    with seeded.client() as c:
        for path, method, op in _operations():
            body = VALID_BODIES.get(_body_schema(op) or "", None)
            for p in op.get("parameters", []):
                if p["in"] != "query":
                    continue
                url = _url(path, PATH_VALUES) + f"?{p['name']}=1&{p['name']}=2"
                r = c.request(method.upper(), url, json=body)
                tried += 1
                assert r.status_code == 422, (method, path, p["name"], r.text)
                assert r.json()["error"]["details"]["repeated"] == [p["name"]]
    assert tried > 20
    assert _counts(seeded) == before
