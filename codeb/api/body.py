"""Reading JSON bodies: malformed JSON is a 400; a body that breaks its published shape (the
route's msgspec Struct, which the OpenAPI document is generated from) is a 422 naming the
problem: every control character and excess depth, else the shape's first problem."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

import falcon
import msgspec

from codeb.errors import BadRequest, UnsupportedMediaType, ValidationFailed
from codeb.services.validation import has_control_characters

# Deeper bodies are refused before anything recurses over them (json, msgspec, services).
MAX_DEPTH = 32
_INTEGER = re.compile(r"-?[0-9]{1,19}")
# A query string without a declared maxLength (names, targets) is still bounded.
MAX_QUERY_TEXT = 1000
# msgspec says where a problem is as `$.a.b[0]`, and some problems name the field itself.
_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_NAMED = re.compile(r"(?:unknown|required) field `(?P<name>[^`]+)`")


def problem_of(error: msgspec.ValidationError) -> dict[str, Any]:
    """msgspec's message as codeb's problem: the dotted field and what is wrong with it."""
    message = str(error)
    at = _AT.search(message)
    where = at.group("path") if at else ""
    if at:
        message = message[: at.start()]
    parts = [p for p in re.split(r"[.\[\]]+", where) if p]
    named = _NAMED.search(message)
    if named:
        parts.append(named.group("name"))
    return {"field": ".".join(parts) or None, "problem": message}


def _depth_and_controls(value: Any, path: tuple[str, ...] = ()) -> Iterator[dict[str, Any]]:
    """Problems no schema should have to repeat: nesting deeper than MAX_DEPTH, and control
    characters (newline, CR, NUL, ...) in any string or key, which end up in unit files,
    env files, log lines and playbook variables."""
    if len(path) > MAX_DEPTH:
        yield {"field": ".".join(path[:MAX_DEPTH]), "problem": f"nested deeper than {MAX_DEPTH}"}
        return
    if isinstance(value, str):
        if has_control_characters(value):
            yield {"field": ".".join(path) or None, "problem": "contains control characters"}
    elif isinstance(value, dict):
        for key, item in value.items():
            if has_control_characters(key):
                yield {"field": ".".join(path) or None, "problem": "a key has control characters"}
            yield from _depth_and_controls(item, (*path, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _depth_and_controls(item, (*path, str(index)))


def _json_numbers(value: Any) -> Any:
    """JSON Schema's view of numbers, which the document promises: 524.0 is the integer 524
    (msgspec, like Python, would call it a float)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _json_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_numbers(item) for item in value]
    return value


def read_json(req: falcon.Request, shape: type[msgspec.Struct]) -> dict[str, Any]:
    """The body as a dict, checked against `shape` (the Struct the document publishes)."""
    schema_name = shape.__name__
    media_type = (req.content_type or falcon.MEDIA_JSON).split(";", 1)[0].strip().lower()
    if media_type != falcon.MEDIA_JSON:
        raise UnsupportedMediaType(
            "the body must be application/json", {"content_type": media_type}
        )
    try:
        body = req.get_media()
    except falcon.MediaNotFoundError:
        raise BadRequest("a JSON body is required") from None
    except falcon.MediaMalformedError as exc:
        # A body nested thousands deep makes the JSON decoder itself hit the recursion limit.
        if isinstance(exc.__cause__, RecursionError):
            raise BadRequest(f"the body is nested deeper than {MAX_DEPTH}") from None
        raise BadRequest("the body is not valid JSON") from None
    except RecursionError:
        raise BadRequest(f"the body is nested deeper than {MAX_DEPTH}") from None
    if not isinstance(body, dict):
        raise ValidationFailed("the body must be a JSON object", {"schema": schema_name})
    problems = list(_depth_and_controls(body))
    if not problems:
        body = _json_numbers(body)
        try:
            msgspec.convert(body, shape)
        except msgspec.ValidationError as exc:
            problems = [problem_of(exc)]
    if problems:
        fields = sorted({p["field"] for p in problems if p["field"]})
        summary = "invalid " + (", ".join(fields) if fields else "body")
        raise ValidationFailed(summary, {"schema": schema_name, "problems": problems})
    return body


def query_int(
    req: falcon.Request, name: str, default: int | None, minimum: int, maximum: int
) -> int | None:
    raw = req.get_param(name)
    if raw is None:
        return default
    # int() alone would take " 5", "1_0" and non-ASCII digits.
    if not _INTEGER.fullmatch(raw):
        raise ValidationFailed(f"{name} must be an integer", {"parameter": name})
    value = int(raw)
    if not minimum <= value <= maximum:
        raise ValidationFailed(
            f"{name} must be between {minimum} and {maximum}", {"parameter": name}
        )
    return value


def query_choice(req: falcon.Request, name: str, choices: tuple[str, ...]) -> str | None:
    raw = req.get_param(name)
    if raw is not None and raw not in choices:
        raise ValidationFailed(f"{name} must be one of: {', '.join(choices)}", {"parameter": name})
    return raw


def query_text(req: falcon.Request, name: str, max_length: int) -> str | None:
    raw = req.get_param(name)
    if raw is not None and len(raw) > max_length:
        raise ValidationFailed(
            f"{name} must be at most {max_length} characters", {"parameter": name}
        )
    return raw


# Query strings read before, by declaration: a poller repeats the same `?limit=100`, and the
# values depend only on the declaration and the string. Each entry holds its declaration, so
# the id in the key cannot be reused by another object while the entry lives. Bounded.
_READ_QUERIES: dict[tuple[int, str], tuple[Sequence[dict[str, Any]], dict[str, Any]]] = {}
READ_QUERIES_MAX = 1024


def read_query(req: falcon.Request, params: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The query parameters a route declares (codeb.api.declare.query), read and checked by
    their declaration: integers are plain digits within minimum..maximum (absent: the
    declared default), enums one of their values, strings at most maxLength."""
    seen = (id(params), req.query_string)
    known = _READ_QUERIES.get(seen)
    if known is not None and known[0] is params:
        return dict(known[1])
    values = _read_query(req, params)
    if len(_READ_QUERIES) >= READ_QUERIES_MAX:
        _READ_QUERIES.clear()
    _READ_QUERIES[seen] = (params, values)
    return dict(values)


def _read_query(req: falcon.Request, params: Sequence[dict[str, Any]]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for param in params:
        if param.get("in") != "query":
            continue
        name, schema = param["name"], param["schema"]
        if schema.get("type") == "integer":
            values[name] = query_int(
                req, name, schema.get("default"), schema["minimum"], schema["maximum"]
            )
        elif "enum" in schema:
            values[name] = query_choice(req, name, tuple(schema["enum"]))
        else:
            values[name] = query_text(req, name, schema.get("maxLength", MAX_QUERY_TEXT))
    return values
