"""Reading JSON bodies: malformed JSON is a 400, a body that breaks its published schema a 422
naming every problem."""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from typing import Any

import falcon
from jsonschema import Draft202012Validator, ValidationError, validators

from codeb.api.openapi import SCHEMAS
from codeb.errors import BadRequest, UnsupportedMediaType, ValidationFailed
from codeb.services.validation import has_control_characters

# Deeper bodies are refused before anything recurses over them (json, jsonschema, services).
MAX_DEPTH = 32
_INTEGER = re.compile(r"-?[0-9]{1,19}")


@cache
def ecma_regex(pattern: str) -> re.Pattern[str]:
    r"""A JSON Schema pattern (ECMA-262) compiled for Python. ECMA's `$` (without the m flag)
    matches only at the very end; Python's `$` also before a final newline, which let "name\n"
    through. Every unescaped `$` outside a character class becomes `\Z`."""
    out, in_class, escaped = [], False, False
    for ch in pattern:
        if escaped:
            out.append(ch)
            escaped = False
        elif ch == "\\":
            out.append(ch)
            escaped = True
        elif ch == "[":
            in_class = True
            out.append(ch)
        elif ch == "]":
            in_class = False
            out.append(ch)
        elif ch == "$" and not in_class:
            out.append(r"\Z")
        else:
            out.append(ch)
    return re.compile("".join(out))


def _pattern(validator: Any, pattern: str, instance: Any, schema: dict) -> Iterator[Any]:
    if validator.is_type(instance, "string") and not ecma_regex(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


_Validator = validators.extend(Draft202012Validator, {"pattern": _pattern})


@cache
def _validator(schema_name: str) -> Any:
    return _Validator(SCHEMAS[schema_name])


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


def read_json(req: falcon.Request, schema_name: str) -> dict[str, Any]:
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
    early = list(_depth_and_controls(body))
    if early:
        fields = sorted({p["field"] for p in early if p["field"]})
        summary = "invalid " + (", ".join(fields) if fields else "body")
        raise ValidationFailed(summary, {"schema": schema_name, "problems": early})
    problems = [
        {"field": ".".join(str(p) for p in err.absolute_path) or None, "problem": err.message}
        for err in sorted(_validator(schema_name).iter_errors(body), key=lambda e: list(e.path))
    ]
    if problems:
        fields = sorted({p["field"] for p in problems if p["field"]})
        summary = "invalid " + (", ".join(fields) if fields else "body")
        raise ValidationFailed(summary, {"schema": schema_name, "problems": problems})
    return body


def query_int(req: falcon.Request, name: str, default: int, minimum: int, maximum: int) -> int:
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
