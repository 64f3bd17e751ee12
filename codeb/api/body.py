"""Reading JSON bodies: malformed JSON is a 400, a body that breaks its published schema a 422
naming every problem."""

from __future__ import annotations

from functools import cache
from typing import Any

import falcon
from jsonschema import Draft202012Validator

from codeb.api.openapi import SCHEMAS
from codeb.errors import BadRequest, UnsupportedMediaType, ValidationFailed


@cache
def _validator(schema_name: str) -> Draft202012Validator:
    return Draft202012Validator(SCHEMAS[schema_name])


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
    except falcon.MediaMalformedError:
        raise BadRequest("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ValidationFailed("the body must be a JSON object", {"schema": schema_name})
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
    try:
        value = int(raw)
    except ValueError:
        raise ValidationFailed(f"{name} must be an integer", {"parameter": name}) from None
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
