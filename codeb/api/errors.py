"""One JSON error shape for everything: domain errors, Falcon's own HTTP errors (404, 405,
malformed JSON, ...) and, without details, anything unexpected."""

from __future__ import annotations

import logging
import re
from typing import Any

import falcon

from codeb.errors import CodebError

log = logging.getLogger("codeb.api")


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def _slug(title: str) -> str:
    # Falcon titles read "405 Method Not Allowed": the code is the words.
    words = re.sub(r"^\d+\s*", "", title)
    return re.sub(r"[^a-z0-9]+", "_", words.lower()).strip("_") or "error"


def serialize_http_error(req: falcon.Request, resp: falcon.Response, exc: falcon.HTTPError) -> None:
    """Falcon's HTTP errors rendered in codeb's shape, always as JSON."""
    code = getattr(exc, "codeb_code", None) or _slug(exc.title or "error")
    message = exc.description or exc.title or "error"
    details = getattr(exc, "codeb_details", None) or {}
    resp.content_type = falcon.MEDIA_JSON
    resp.media = error_body(code, message, details)


def handle_codeb_error(
    req: falcon.Request, resp: falcon.Response, exc: CodebError, params: dict
) -> None:
    resp.status = falcon.code_to_http_status(exc.status)
    resp.media = error_body(exc.code, exc.message, exc.details)


def handle_unexpected(
    req: falcon.Request, resp: falcon.Response, exc: Exception, params: dict
) -> None:
    if isinstance(exc, falcon.HTTPError):
        raise exc
    # The traceback goes to the log (no request body, no locals); the client gets an id only.
    request_id = getattr(req.context, "request_id", None)
    log.exception("unexpected error (request %s)", request_id)
    resp.status = falcon.HTTP_500
    resp.media = error_body(
        "internal_error", "internal error; see the server log", {"request_id": request_id}
    )


def register(app: falcon.App) -> None:
    app.set_error_serializer(serialize_http_error)
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(CodebError, handle_codeb_error)
