"""How a feature declares its HTTP side once, and the OpenAPI 3.1 document generated from it.

Request and response shapes are msgspec Structs (`Shape`, `Request` in codeb/api/shapes.py);
a route's operations are `Op`s (summary, body, responses, errors, query parameters) given to
`Configurator.add_route` next to the route in the feature's `includeme`. The same Struct that
the document publishes validates the body (codeb/api/body.py), so the two cannot drift apart.
No falcon here: the document is data, built at start-up."""

from __future__ import annotations

import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union, get_args, get_origin

import msgspec

from codeb import __version__

REF = "#/components/schemas/{name}"
# What the API refuses in every string it is given (body, path, query): control characters.
NO_CONTROL_CHARACTERS = r"^[^\u0000-\u001f\u007f]*$"

ERROR_WORDS = {
    400: "malformed request",
    401: "missing or invalid API key",
    403: "the key's role does not allow this, or the Protection Layer refuses it",
    404: "not found",
    409: "conflict with the current state",
    410: "the queue entry expired",
    415: "the body is not JSON",
    422: "invalid input",
    503: "a dependency could not be reached",
}

CONFIRM_CONTRACT = """\
Every mutating operation passes the Protection Layer (rules: GET /api/protection/rules).
SAFE and LOW run at once and answer as usual (200/201). Anything not executed yet answers
**202** with `status` `confirmation_required` (MEDIUM) or `queued` (HIGH, CRITICAL), a warning
in words, the unmet requirements and a `confirm_token` shown once (256 bits, stored hashed).
The token is bound to the operation, the target, the exact parameters and the requesting key.

* MEDIUM: confirm within 15 minutes with `POST /api/protection/confirm {"token"}` or by
  repeating the same request with the header `X-Confirm-Token`. Single use.
* HIGH: needs a backup, two confirmations with the same key (the second types the target's
  name as `typed_name`, or `X-Confirm-Name` on a repeated request) and a 24 h cooldown from
  the request. Confirming during the cooldown records it (202 `confirmation_recorded`, with
  `cooldown_remaining_seconds`); only a confirmation after the cooldown executes.
* CRITICAL: also needs a verified backup, approval by another admin key
  (`POST /api/protection/approve {"id"}`, never by MCP) and a 48 h cooldown.
* Queue entries expire 7 days after their cooldown; until executed they can be cancelled
  (`POST /api/protection/cancel`). A confirmation that executes answers 200
  `{"status": "executed", "result"}`.

Refusals: 403 `protection_refused` (details.reason and every unmet requirement), 404
`confirm_token_unknown`, 409 `protection_entry_closed` (token spent: executed, cancelled or
failed) or `already_queued`, 410 `protection_entry_expired`, 422 `typed_name_mismatch`.
Every step is a row of the hash-chained log (GET /api/protection/logs)."""

CONFIRM_HEADERS: tuple[dict[str, Any], ...] = (
    {
        "name": "X-Confirm-Token",
        "in": "header",
        "description": "confirm token from an earlier 202 answer to this very request",
        "schema": {"type": "string"},
    },
    {
        "name": "X-Confirm-Name",
        "in": "header",
        "description": "the target's name typed out (the second confirmation of HIGH/CRITICAL)",
        "schema": {"type": "string"},
    },
)


def path(name: str, description: str | None = None, **schema: Any) -> dict[str, Any]:
    """A path parameter (a string unless `schema` says more, e.g. enum=[...])."""
    param: dict[str, Any] = {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string", **schema},
    }
    if description:
        param["description"] = description
    return param


def query(name: str, **schema: Any) -> dict[str, Any]:
    """A query parameter; `schema` is its JSON Schema (type="integer", minimum=..., enum=...)."""
    return {"name": name, "in": "query", "schema": {"type": "string", **schema}}


def header(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "description": description, "schema": {"type": "string"}}


def paging(default: int = 100, maximum: int = 500) -> tuple[dict[str, Any], ...]:
    """limit (1..maximum, `default` when absent) and offset (0 when absent)."""
    return (
        query("limit", type="integer", minimum=1, maximum=maximum, default=default),
        query("offset", type="integer", minimum=0, maximum=2**31, default=0),
    )


@dataclass(frozen=True)
class Answer:
    """One response: a shape (a Struct, several as `anyOf`, `dict` for any object, or None
    for content without a schema) and what it means in words."""

    shape: Any
    description: str
    # Other media types the same status may answer with, and their OpenAPI content.
    also: Mapping[str, dict[str, Any]] = field(default_factory=dict)


def answer(
    shape: Any, description: str, also: Mapping[str, dict[str, Any]] | None = None
) -> Answer:
    return Answer(shape, description, dict(also or {}))


@dataclass(frozen=True)
class Op:
    """One operation of a route. `responses` maps a status to an `Answer`; `errors` are the
    statuses answered with the Error shape (401 is added unless `security` is []).
    `guarded` adds the confirm headers and the confirm contract (a Protection Layer route)."""

    summary: str
    responses: Mapping[int, Answer]
    errors: Sequence[int] = ()
    body: type[msgspec.Struct] | None = None
    params: Sequence[dict[str, Any]] = ()
    guarded: bool = False
    description: str | None = None
    security: list[Any] | None = None


@dataclass(frozen=True)
class Route:
    path: str
    resource: type
    params: tuple[dict[str, Any], ...] = ()
    ops: Mapping[str, Op] = field(default_factory=dict)


def _shapes(shape: Any) -> list[Any]:
    """A response shape as the list of its alternatives (a tuple means anyOf)."""
    if shape is None:
        return []
    if isinstance(shape, tuple):
        return list(shape)
    return [shape]


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _plain_string(schema: dict) -> bool:
    kinds = schema.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    return "string" in kinds and not ({"enum", "pattern", "format", "anyOf"} & set(schema))


def _without_control_characters(schema: dict) -> dict:
    """`schema` saying that its strings hold no control character (nullable ones too)."""
    if _plain_string(schema):
        return {**schema, "pattern": NO_CONTROL_CHARACTERS}
    if "anyOf" in schema and "type" not in schema:
        return {**schema, "anyOf": [_without_control_characters(s) for s in schema["anyOf"]]}
    return schema


def _struct_extras(shapes: list[Any], components: dict[str, Any]) -> None:
    """What a Struct adds to its schema beyond its fields: `json_schema_extra` and `example`
    (ClassVars; every request shape has an example, which the tests send)."""
    seen: set[type] = set()

    def visit(tp: Any) -> None:
        if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
            if tp in seen:
                return
            seen.add(tp)
            extra = getattr(tp, "json_schema_extra", None)
            if extra and tp.__name__ in components:
                components[tp.__name__].update(extra)
            example = getattr(tp, "example", None)
            if example is not None and tp.__name__ in components:
                components[tp.__name__]["examples"] = [example]
            for f in msgspec.structs.fields(tp):
                visit(f.type)
        for arg in get_args(tp):
            visit(arg)

    for tp in shapes:
        visit(tp)


def build_document(routes: Sequence[Route]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `routes`: every schema generated from the Structs."""
    from codeb.api.shapes import Error

    all_shapes: list[Any] = [Error]
    for route in routes:
        for op in route.ops.values():
            if op.body is not None:
                all_shapes.append(op.body)
            for ans in op.responses.values():
                all_shapes.extend(s for s in _shapes(ans.shape) if s is not dict)
    unique = list(dict.fromkeys(all_shapes))
    generated, components = msgspec.json.schema_components(unique, ref_template=REF)
    schema_of = dict(zip(unique, generated, strict=True))
    _struct_extras(unique, components)
    for schema in components.values():
        schema.pop("title", None)

    def content(shape: Any) -> dict[str, Any]:
        alternatives = _shapes(shape)
        if not alternatives:
            return {"application/json": {}}
        schemas = [{"type": "object"} if s is dict else schema_of[s] for s in alternatives]
        return {"application/json": {"schema": schemas[0] if len(schemas) == 1 else {
            "anyOf": schemas}}}  # fmt: skip

    def errors(*statuses: int) -> dict[str, Any]:
        return {
            str(s): {"description": ERROR_WORDS[s], "content": content(Error)} for s in statuses
        }

    paths: dict[str, Any] = {}
    bodies: set[str] = set()
    for route in routes:
        item: dict[str, Any] = {}
        if route.params:
            item["parameters"] = [dict(p) for p in route.params]
        for method, op in route.ops.items():
            responses = {
                str(status): {
                    "description": ans.description,
                    "content": {**content(ans.shape), **ans.also},
                }
                for status, ans in sorted(op.responses.items())
            }
            statuses = [*op.errors] if op.security == [] else [401, *op.errors]
            if op.body is not None:
                statuses += [400, 415, 422]
                bodies.add(op.body.__name__)
            responses.update(errors(*sorted(set(statuses) - {int(s) for s in responses})))
            out: dict[str, Any] = {"summary": op.summary, "responses": responses}
            params = [dict(p) for p in op.params]
            if op.guarded:
                params += [dict(h) for h in CONFIRM_HEADERS]
            if params:
                out["parameters"] = params
            if op.guarded or op.description:
                out["description"] = op.description or CONFIRM_CONTRACT
            if op.body is not None:
                out["requestBody"] = {"required": True, "content": content(op.body)}
            if op.security is not None:
                out["security"] = op.security
            item[method] = out
        paths[route.path] = item
    _refuse_control_characters(paths, components, bodies, errors(422)["422"])
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "codeb",
            "version": __version__,
            "description": (
                "Self-hosted server manager. Every request needs X-API-Key; X-Codeb-Client "
                "(api, cli, mcp) says which client asks and is recorded, never trusted. "
                'Errors are always {"error": {"code", "message", "details"}}.'
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"apiKey": []}],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.items())),
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
            "parameters": {
                "client": {
                    "name": "X-Codeb-Client",
                    "in": "header",
                    "schema": {"type": "string", "enum": ["api", "cli", "mcp"]},
                }
            },
        },
    }


def _refuse_control_characters(
    paths: dict[str, Any], components: dict[str, Any], bodies: set[str], invalid: dict
) -> None:
    """Say in the document what the API enforces for every operation: no string it receives
    (request bodies, path and query parameters) may hold a control character."""
    for item in paths.values():
        shared = item.get("parameters", [])
        for key, op in item.items():
            if key == "parameters":
                continue
            checked = False
            for param in [*shared, *op.get("parameters", [])]:
                schema = param.get("schema", {})
                if param.get("in") in ("path", "query") and schema.get("type") == "string":
                    checked = True
                    param["schema"] = _without_control_characters(schema)
            if checked and "422" not in op["responses"]:
                op["responses"]["422"] = invalid
    for name in bodies:
        properties = components[name].get("properties", {})
        for prop, schema in properties.items():
            properties[prop] = _without_control_characters(schema)
