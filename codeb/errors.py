"""Domain errors. Each carries a stable code, an HTTP status and JSON-safe details; the API
renders them all with one serializer. Messages never include secrets."""

from __future__ import annotations

from typing import Any


class CodebError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class BadRequest(CodebError):
    status = 400
    code = "bad_request"


class UnsupportedMediaType(CodebError):
    status = 415
    code = "unsupported_media_type"


class ValidationFailed(CodebError):
    status = 422
    code = "validation_failed"


class Unauthorized(CodebError):
    status = 401
    code = "unauthorized"


class Forbidden(CodebError):
    status = 403
    code = "forbidden"


class NotFound(CodebError):
    status = 404
    code = "not_found"


class Conflict(CodebError):
    status = 409
    code = "conflict"


class PortsExhausted(Conflict):
    code = "ports_exhausted"


class ProtectionRefused(CodebError):
    """A dangerous operation that the Protection Layer does not (yet) allow."""

    status = 403
    code = "protection_refused"


class ConfirmationNameMismatch(ValidationFailed):
    """The confirmation that must type the target's name typed something else (or nothing)."""

    code = "typed_name_mismatch"


class ConfirmTokenUnknown(NotFound):
    code = "confirm_token_unknown"


class ProtectionEntryClosed(Conflict):
    """The queue entry was already executed, cancelled or failed: its token is spent."""

    code = "protection_entry_closed"


class ProtectionEntryExpired(CodebError):
    status = 410
    code = "protection_entry_expired"


class AlreadyQueued(Conflict):
    code = "already_queued"


class ServiceUnavailable(CodebError):
    status = 503
    code = "service_unavailable"
